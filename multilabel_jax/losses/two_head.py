"""The two-head Average-K loss (Garcin, Servajean, Joly, Salmon, "A two-head loss function
for deep Average-K classification", 2023).

A softmax head learns the label distribution; a second, multi-label head learns which
labels belong in an average-K set, from pseudo-labels mined from the softmax head. The
natural decoder is a global threshold on ``sigmoid(multilabel_logits)`` calibrated on
validation so that sets hold K labels on average
(:func:`multilabel_jax.losses.decoders.calibrate_average_k`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common
from multilabel_jax.losses.sigmoid import sigmoid_bce
from multilabel_jax.losses.softmax import softmax_xent


def average_k_pseudo_labels(softmax_logits, labels, k: float, where=None) -> jax.Array:
  """Bool ``[B, C]``: the observed labels plus batch-mined pseudo-labels (no gradient).

  The rule: let ``n`` be the number of active rows (``where``) and ``m = round(k * n) -
  (#observed labels in active rows)``. Among all (row, class) pairs of active rows that are
  not observed labels, the ``m`` with the highest softmax probability become positive, i.e.
  everything at or above one batch-global threshold (ties at the threshold are all
  included). If the observed labels already reach ``k * n``, no pseudo-label is added.
  A single global threshold, rather than a per-row top-k, is what lets confident rows
  keep small sets and ambiguous rows large ones: the average-K setting of the paper. The
  probabilities go through ``stop_gradient``.
  """
  softmax_logits = jnp.asarray(softmax_logits)
  batch, num_classes = softmax_logits.shape
  active = jnp.ones((batch,), bool) if where is None else where
  observed = labels_lib.label_weights(labels, num_classes) > 0
  observed = observed & active[:, None]
  max_pseudo = min(int(math.ceil(k * batch)), batch * num_classes)
  if max_pseudo == 0:
    return observed
  probs = jax.nn.softmax(jax.lax.stop_gradient(softmax_logits).astype(jnp.float32), axis=-1)
  candidates = jnp.where(observed | ~active[:, None], -1.0, probs)  # probs >= 0 > -1
  top = jax.lax.top_k(candidates.reshape(-1), max_pseudo)[0]
  target = jnp.round(k * jnp.sum(active)).astype(jnp.int32)
  m = jnp.clip(target - jnp.sum(observed), 0, max_pseudo)
  threshold = jnp.where(m > 0, top[jnp.maximum(m - 1, 0)], jnp.inf)
  return observed | ((candidates >= threshold) & (candidates >= 0))


def two_head_average_k(softmax_logits, multilabel_logits, labels, *, k: float,
                       weight: float = 1.0, where=None) -> jax.Array:
  """Two-head Average-K loss.

  ``loss_b = softmax_xent(softmax_logits_b, y_b) + weight * sigmoid_bce(multilabel_logits_b,
  pseudo_b)``, with 1/k-normalised targets for multi-label rows and ``pseudo`` from
  :func:`average_k_pseudo_labels`. The BCE is summed over classes, like
  :func:`multilabel_jax.losses.sigmoid_bce`.

  Rows with no labels contribute 0 to the softmax term (masked) but still train the
  multi-label head, on whatever pseudo-labels the batch assigns them (possibly none).

  Args:
    softmax_logits: float ``[B, C]``.
    multilabel_logits: float ``[B, C]``.
    labels: dense ``[B, C]`` or ids ``[B, L]``.
    k: the target average set size K > 0 (may be fractional).
    weight: weight of the multi-label head's BCE.
    where: optional bool ``[B]``; masked rows give 0 and take no part in pseudo-labelling.

  Returns:
    ``[B]`` per-example losses.
  """
  if not k > 0:
    raise ValueError(f"`k` must be > 0, got {k}.")
  softmax_logits, labels, where = _common.prepare(softmax_logits, labels, where,
                                                  logits_name="softmax_logits")
  multilabel_logits = jnp.asarray(multilabel_logits)
  if multilabel_logits.shape != softmax_logits.shape:
    raise ValueError(f"`multilabel_logits` has shape {multilabel_logits.shape} but "
                     f"`softmax_logits` has shape {softmax_logits.shape}.")
  pseudo = average_k_pseudo_labels(softmax_logits, labels, k, where)
  loss = softmax_xent(softmax_logits, labels)
  loss = loss + weight * sigmoid_bce(multilabel_logits, pseudo.astype(jnp.float32))
  return _common.finalize(loss, where)
