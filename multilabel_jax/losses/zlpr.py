"""ZLPR, the zero-bounded log-sum-exp & pairwise rank-based loss (Su et al. 2022, "ZLPR: A
Novel Loss for Multi-label Classification").

Natural decoder: logit > 0, i.e. a threshold of 0.5 on ``sigmoid(logits)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common


def _log1p_sum_exp(x, mask):
  """``log(1 + sum_{mask} exp(x))`` per row, stable for any x."""
  x = jnp.where(mask, x, -jnp.inf)
  zeros = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
  return jax.nn.logsumexp(jnp.concatenate([zeros, x], axis=-1), axis=-1)


def zlpr(logits, labels, *, where=None) -> jax.Array:
  """``log(1 + sum_{neg} e^{s}) + log(1 + sum_{pos} e^{-s})`` per example.

  Positives are the ids, or dense entries > 0 (weights are not used). A row with no labels
  keeps only the negative term: it pushes all scores below 0 and is not masked.

  Args:
    logits: float ``[B, C]``.
    labels: dense ``[B, C]`` or ids ``[B, L]``.
    where: optional bool ``[B]``.

  Returns:
    ``[B]`` per-example losses.
  """
  logits, labels, where = _common.prepare(logits, labels, where)
  positive = labels_lib.label_weights(labels, logits.shape[-1], dtype=logits.dtype) > 0
  loss = _log1p_sum_exp(logits, ~positive) + _log1p_sum_exp(-logits, positive)
  return _common.finalize(loss, where)
