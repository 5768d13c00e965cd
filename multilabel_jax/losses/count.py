"""Count x distribution: multi-hot targets factorised as ``y ~ Z * P``, and the abs-KL loss.

``P = softmax(logits)`` says *which* labels, ``Z = exp(log_count)`` says *how many*. The
scores ``Z * P`` are expected label indicators, and the natural decoder takes the top
``round(Z)`` classes of each row (:func:`multilabel_jax.losses.decoders.by_count`).
This is the "partition function" view of a softmax classifier for multi-label data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common
from multilabel_jax.losses.softmax import softmax_xent

# Beyond this log-count, exp() continues linearly: Z = e^30 (1e13 labels) is already absurd,
# and log_count = 1e4 must not overflow.
_MAX_LOG_COUNT = 30.0


def _safe_exp(x):
  """exp(x) for x <= 30, then its tangent line: finite and convex for any input."""
  capped = jnp.minimum(x, _MAX_LOG_COUNT)
  return jnp.exp(capped) * (1 + x - capped)


def _check_log_count(log_count, batch_size):
  log_count = jnp.asarray(log_count)
  if log_count.ndim == 2 and log_count.shape[-1] == 1:
    log_count = log_count[:, 0]
  if log_count.shape != (batch_size,):
    raise ValueError(f"`log_count` must have shape ({batch_size},) or ({batch_size}, 1), "
                     f"got {jnp.shape(log_count)}.")
  labels_lib.check_float(log_count, "log_count")
  return log_count.astype(_common.compute_dtype(log_count))


def label_count(labels) -> jax.Array:
  """``[B]`` float target count: number of ids, or the sum of dense weights."""
  labels = jnp.asarray(labels)
  if labels_lib.is_ids(labels):
    return labels_lib.num_positives(labels).astype(jnp.float32)
  return jnp.sum(labels.astype(jnp.float32), axis=-1)


def poisson_nll(log_rate, counts) -> jax.Array:
  """Poisson negative log-likelihood ``Z - n log Z + log n!`` with ``Z = exp(log_rate)``."""
  return _safe_exp(log_rate) - counts * log_rate + jax.lax.lgamma(counts + 1)


def count_distribution(logits, log_count, labels, *, count_weight: float = 1.0,
                       where=None) -> jax.Array:
  """Softmax distribution plus Poisson label count.

  ``loss_b = softmax_xent(logits_b, y_b) + count_weight * PoissonNLL(n_b | Z_b)`` where
  ``n_b`` is the number of labels (sum of weights for dense input). A row with no labels has
  no distribution term (0) but keeps the count term, which teaches ``Z`` that a row may
  carry no label at all.

  Args:
    logits: float ``[B, C]`` distribution logits.
    log_count: float ``[B]`` or ``[B, 1]``, the predicted log label count.
    labels: dense ``[B, C]`` or ids ``[B, L]``.
    count_weight: weight of the count term.
    where: optional bool ``[B]``.

  Returns:
    ``[B]`` per-example losses.
  """
  logits, labels, where = _common.prepare(logits, labels, where)
  log_count = _check_log_count(log_count, logits.shape[0])
  loss = softmax_xent(logits, labels)
  loss = loss + count_weight * poisson_nll(log_count, label_count(labels))
  return _common.finalize(loss, where)


def count_scores(logits, log_count) -> jax.Array:
  """``Z * softmax(logits)`` ``[B, C]``: expected label indicators."""
  logits = jnp.asarray(logits)
  logits = logits.astype(_common.compute_dtype(logits))
  log_count = _check_log_count(log_count, logits.shape[0])
  log_z = jnp.minimum(log_count, _MAX_LOG_COUNT)[:, None]
  return jnp.exp(jax.nn.log_softmax(logits, axis=-1) + log_z)


def expected_count(log_count) -> jax.Array:
  """``Z = exp(log_count)`` as ``[B]``, the count used by the count-based decoder."""
  log_count = jnp.asarray(log_count)
  if log_count.ndim == 2:
    log_count = log_count[:, 0]
  return jnp.exp(jnp.minimum(log_count.astype(_common.compute_dtype(log_count)),
                             _MAX_LOG_COUNT))


def abs_kl(scores, labels, *, eps: float = 1e-6, where=None) -> jax.Array:
  """Symmetrised KL between unnormalised pseudo-distributions.

  ``loss_b = sum_c |(P_c - Q_c) log(P_c / Q_c)|`` with ``P = max(scores, eps)`` and
  ``Q = max(y, eps)``. Each term is the Jeffreys divergence of two unnormalised masses and is
  >= 0; the absolute value guards rounding. With ``scores = Z * P`` (see
  :func:`count_scores`) this trains count and distribution jointly. Id labels are densified
  (``scores`` is dense already). A row with no labels pushes every score towards eps.

  The loss's count is biased low when ``P`` is uncertain: a unit of mass on a wrong class
  costs about ``log(P_c / eps)`` (~10 for eps=1e-6), more than a missed label gains, so
  the best ``Z`` shrinks. With 3 labels holding 0.1 each and 0.7 spread over 100 wrong
  classes, the best ``Z`` is ~0.5, not 3. Trained on hashtag_world 20k it gives
  ``round(Z) = 0`` for every test example, so decode its scores by rank (average-K or
  top-k), not by count.

  Args:
    scores: non-negative float ``[B, C]``.
    labels: dense ``[B, C]`` or ids ``[B, L]``.
    eps: clipping floor > 0 for both P and Q.
    where: optional bool ``[B]``.

  Returns:
    ``[B]`` per-example losses.
  """
  if not eps > 0:
    raise ValueError(f"`eps` must be > 0, got {eps}.")
  scores, labels, where = _common.prepare(scores, labels, where, logits_name="scores")
  p = jnp.maximum(scores, eps)
  q = jnp.maximum(labels_lib.label_weights(labels, scores.shape[-1], dtype=scores.dtype), eps)
  loss = jnp.sum(jnp.abs((p - q) * (jnp.log(p) - jnp.log(q))), axis=-1)
  return _common.finalize(loss, where)
