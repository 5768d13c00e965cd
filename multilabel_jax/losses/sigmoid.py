"""Per-class logistic losses: sigmoid BCE, focal loss and the asymmetric loss (ASL).

All three treat the C classes as independent binary problems and sum over classes. A row
with no labels is a legitimate all-negative example: it pushes every score down and is
*not* masked. Natural decoder: a threshold of 0.5 on ``sigmoid(logits)``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from multilabel_jax.losses import _common


def sigmoid_bce(logits, labels, *, label_smoothing: float = 0.0, where=None) -> jax.Array:
  """Sigmoid binary cross-entropy summed over classes.

  ``loss_b = sum_c t_c * softplus(-z_c) + (1 - t_c) * softplus(z_c)`` with smoothed targets
  ``t = y * (1 - label_smoothing) + label_smoothing / 2``. Equals
  ``optax.sigmoid_binary_cross_entropy(logits, t).sum(-1)``.

  Args:
    logits: float ``[B, C]``.
    labels: dense ``[B, C]`` targets in [0, 1] or int ids ``[B, L]`` (-1 padded).
    label_smoothing: in [0, 1).
    where: optional bool ``[B]``; masked examples give 0.

  Returns:
    ``[B]`` per-example losses (float32 or wider).

  Example:
    >>> sigmoid_bce(jnp.zeros((1, 3)), jnp.array([[2, -1]]))  # 3 * log(2)
    Array([2.0794415], dtype=float32)
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}.")
  logits, labels, where = _common.prepare(logits, labels, where, max_weight=1.0)
  ls = label_smoothing
  pos = lambda z: (1 - ls / 2) * jax.nn.softplus(-z) + ls / 2 * jax.nn.softplus(z)
  neg = lambda z: ls / 2 * jax.nn.softplus(-z) + (1 - ls / 2) * jax.nn.softplus(z)
  return _common.finalize(_common.binary_loss_sum(logits, labels, pos, neg), where)


def _focusing(log_p, gamma):
  """``p ** gamma`` computed from ``log p``: finite gradients at p = 0 for any gamma >= 0."""
  return jnp.exp(gamma * log_p) if gamma else jnp.ones_like(log_p)


def focal(logits, labels, *, gamma: float = 2.0, alpha: Optional[float] = 0.25,
          where=None) -> jax.Array:
  """Sigmoid focal loss summed over classes (Lin et al. 2017, "Focal Loss for Dense Object
  Detection").

  Per class ``-alpha_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` for positives and
  ``1 - p`` for negatives, ``alpha_t = alpha`` / ``1 - alpha`` (no weighting if alpha is
  None). Equals ``optax.sigmoid_focal_loss(logits, y, alpha, gamma).sum(-1)`` for binary y;
  dense soft targets interpolate linearly between the positive and negative terms.

  Args:
    logits: float ``[B, C]``.
    labels: dense ``[B, C]`` or ids ``[B, L]``.
    gamma: focusing parameter >= 0.
    alpha: positive-class weight in [0, 1], or None.
    where: optional bool ``[B]``.

  Returns:
    ``[B]`` per-example losses.
  """
  if gamma < 0:
    raise ValueError(f"`gamma` must be >= 0, got {gamma}.")
  logits, labels, where = _common.prepare(logits, labels, where, max_weight=1.0)
  a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
  pos = lambda z: a_pos * _focusing(jax.nn.log_sigmoid(-z), gamma) * jax.nn.softplus(-z)
  neg = lambda z: a_neg * _focusing(jax.nn.log_sigmoid(z), gamma) * jax.nn.softplus(z)
  return _common.finalize(_common.binary_loss_sum(logits, labels, pos, neg), where)


def asymmetric(logits, labels, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0,
               clip: float = 0.05, eps: float = 1e-8, where=None) -> jax.Array:
  """Asymmetric loss (ASL) summed over classes (Ridnik et al. 2021, "Asymmetric Loss For
  Multi-Label Classification").

  Positives: ``-(1 - p)^gamma_pos log(p)``. Negatives use the shifted probability
  ``p_m = max(p - clip, 0)``: ``-p_m^gamma_neg log(1 - p_m)``, so easy negatives
  (p < clip) are discarded entirely. Gradients flow through the focusing weights.

  Numerics: both logs are computed in log-sigmoid form, exactly and without clamping, so a
  confidently wrong class (logit +-1e4) costs about ``|logit|`` and keeps its gradient. The
  reference implementation instead clamps each probability at ``eps`` inside the log, which
  caps a class's loss at ``-log(eps)`` (18.4) and zeroes its gradient beyond ``|z| > 18.4``.
  Here ``eps`` floors ``1 - p_m`` only when ``clip > 0``, where ``1 - p_m >= clip``, so it
  has an effect only if ``eps > clip``. With ``gamma_pos = gamma_neg = clip = 0`` the loss
  equals :func:`sigmoid_bce` for every logit.

  Args:
    logits: float ``[B, C]``.
    labels: dense ``[B, C]`` or ids ``[B, L]``.
    gamma_pos, gamma_neg: focusing parameters >= 0 (paper defaults 0 and 4).
    clip: probability margin in [0, 1) (paper default 0.05).
    eps: floor of ``1 - p_m`` inside the negative log when ``clip > 0``.
    where: optional bool ``[B]``.

  Returns:
    ``[B]`` per-example losses.
  """
  if gamma_pos < 0 or gamma_neg < 0:
    raise ValueError(f"`gamma_pos`/`gamma_neg` must be >= 0, got {gamma_pos}, {gamma_neg}.")
  if not 0.0 <= clip < 1.0:
    raise ValueError(f"`clip` must be in [0, 1), got {clip}.")
  logits, labels, where = _common.prepare(logits, labels, where, max_weight=1.0)

  def pos(z):
    return _focusing(jax.nn.log_sigmoid(-z), gamma_pos) * jax.nn.softplus(-z)

  def neg(z):
    if clip == 0:
      return _focusing(jax.nn.log_sigmoid(z), gamma_neg) * jax.nn.softplus(z)
    one_minus_pm = jnp.minimum(jax.nn.sigmoid(-z) + clip, 1.0)  # 1 - max(p - clip, 0)
    pm = jnp.maximum(jax.nn.sigmoid(z) - clip, 0.0)
    safe_pm = jnp.where(pm > 0, pm, 1.0)
    weight = jnp.where(pm > 0, _focusing(jnp.log(safe_pm), gamma_neg), 0.0 if gamma_neg else 1.0)
    return -weight * jnp.log(jnp.maximum(one_minus_pm, eps))

  return _common.finalize(_common.binary_loss_sum(logits, labels, pos, neg), where)
