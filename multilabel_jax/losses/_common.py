"""Argument checks and small numerics shared by the loss modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib


def compute_dtype(x) -> jnp.dtype:
  """Losses compute in at least float32, so bfloat16 logits of +-1e4 stay finite."""
  return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def prepare(logits, labels, where=None, *, logits_name="logits", max_weight=None):
  """Checks ``logits [B, C]``, labels in either format and ``where [B]``.

  ``max_weight``: the largest dense label value the loss accepts (1 for binary targets).

  Returns ``(logits, labels, where)`` with logits cast to the compute dtype.
  """
  logits = jnp.asarray(logits)
  labels_lib.check_rank(logits, 2, logits_name)
  labels_lib.check_float(logits, logits_name)
  batch, num_classes = logits.shape
  labels = labels_lib.check_labels(labels, num_classes=num_classes, batch_size=batch,
                                   max_weight=max_weight)
  where = labels_lib.check_where(where, batch)
  return logits.astype(compute_dtype(logits)), labels, where


def finalize(per_example: jax.Array, where) -> jax.Array:
  """Zeroes masked-out examples (``where`` False) of a per-example loss ``[B]``."""
  if where is None:
    return per_example
  return jnp.where(where, per_example, jnp.zeros((), per_example.dtype))


def binary_loss_sum(logits: jax.Array, labels, pos_fn, neg_fn) -> jax.Array:
  """``sum_c y_c * pos_fn(z_c) + (1 - y_c) * neg_fn(z_c)`` as ``[B]``.

  For id labels this is ``sum_c neg_fn(z_c) + sum_{c in ids} (pos_fn - neg_fn)(z_c)``, so no
  dense target is built; for dense labels ``y`` may be soft and the loss is linear in it.
  """
  neg = neg_fn(logits)
  if labels_lib.is_ids(labels):
    keep = labels_lib.unique_mask(labels)
    z_pos = jnp.take_along_axis(logits, jnp.where(keep, labels, 0), axis=-1)
    correction = jnp.where(keep, pos_fn(z_pos) - neg_fn(z_pos), 0.)
    return jnp.sum(neg, axis=-1) + jnp.sum(correction, axis=-1)
  y = labels.astype(logits.dtype)
  return jnp.sum(y * pos_fn(logits) + (1 - y) * neg, axis=-1)
