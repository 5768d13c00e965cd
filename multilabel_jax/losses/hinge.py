"""Squared hinge, the per-class L2-loss SVM of linear extreme classifiers.

``sum_c max(0, margin - s_c z_c)^2`` with ``s_c = +1`` for a label of the example and
``-1`` otherwise: LIBLINEAR's L2-loss SVM (Fan et al. 2008, "LIBLINEAR: A Library for Large
Linear Classification", solver 2), one binary problem per class as in DiSMEC (Babbar &
Schölkopf 2017) and LibMultiLabel's one-vs-rest. Unlike the logistic loss, a class whose
margin is met contributes nothing, so easy negatives (most of the C - k classes) stop
pulling at the model: on debtags it ranks better than BCE (docs/RESULTS.md).

Natural decoder: logit > 0 (``sigmoid(logit) > 0.5``, the threshold the objective uses).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common


def squared_hinge(logits, labels, *, margin: float = 1.0, where=None) -> jax.Array:
  """Per-example ``sum_c max(0, margin - s_c z_c)^2``, ``s_c = +-1``.

  Args:
    logits: float ``[B, C]`` margins ``z``.
    labels: dense ``[B, C]`` (entries > 0 are labels) or padded ids ``[B, L]`` (-1 padding).
    margin: the margin (1 in LIBLINEAR).
    where: optional bool ``[B]``; masked rows give 0.

  Returns:
    ``[B]`` (float32, or float64 for float64 logits). A row without labels still pays for every positive logit.

  Example:
    >>> squared_hinge(jnp.array([[2.0, 0.5, -3.0]]), jnp.array([[0, -1]]))  # label 0
    Array([2.25], dtype=float32)
  """
  logits, labels, where = _common.prepare(logits, labels, where)
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  sign = 2.0 * (labels_lib.label_weights(labels, z.shape[-1], dtype=z.dtype) > 0) - 1.0
  loss = jnp.sum(jnp.square(jnp.maximum(margin - sign * z, 0.0)), axis=-1)
  return _common.finalize(loss, where)
