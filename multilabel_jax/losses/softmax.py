"""Softmax cross-entropy with 1/k-normalised targets (Mahajan et al. 2018, "Exploring the
Limits of Weakly Supervised Pretraining").

Natural decoder: top-k of ``softmax(logits)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common


def softmax_xent(logits, labels, *, where=None) -> jax.Array:
  """Softmax cross-entropy against targets normalised to sum to 1.

  ``loss_b = logsumexp(z_b) - sum_c (y_bc / sum_c' y_bc') z_bc``: each of k positives weighs
  1/k (dense weights are normalised the same way). Equals
  ``optax.softmax_cross_entropy(logits, y / y.sum(-1, keepdims=True))`` on rows with labels.

  Rows with no labels have no target distribution: they contribute 0 and count as masked
  (see :func:`multilabel_jax.labels.has_labels` for the matching reduction mask).

  Args:
    logits: float ``[B, C]``.
    labels: dense ``[B, C]`` non-negative weights or ids ``[B, L]`` (-1 padded).
    where: optional bool ``[B]``; masked examples give 0.

  Returns:
    ``[B]`` per-example losses.

  Example:
    >>> softmax_xent(jnp.zeros((1, 4)), jnp.array([[0, 3]]))  # log(4)
    Array([1.3862944], dtype=float32)
  """
  logits, labels, where = _common.prepare(logits, labels, where)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = labels_lib.weighted_sum(logits, labels, normalize=True)
  loss = jnp.where(labels_lib.has_labels(labels), lse - target_logit, 0.)
  return _common.finalize(loss, where)


def softmax_scores(logits) -> jax.Array:
  """Per-class scores ``softmax(logits)`` ``[B, C]`` for decoding."""
  return jax.nn.softmax(jnp.asarray(logits).astype(_common.compute_dtype(logits)), axis=-1)
