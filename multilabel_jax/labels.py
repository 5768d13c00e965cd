"""Label formats: dense multi-hot and padded class ids.

Every loss, decoder and metric in multilabel_jax accepts labels in either format:

* **dense**: float or bool ``[B, C]``; multi-hot, or non-negative per-class weights.
* **ids**: integer ``[B, L]`` class indices, padded with ``-1``. An integer dtype means ids.

Conventions shared by the whole package:

* A row may have no labels. What each loss does with such a row is in its docstring.
* Duplicate ids in a row count **once**, exactly as ``ids_to_dense`` does, so the dense and
  id paths of every function agree.
* Shapes, ranks and dtypes are checked at trace time and raise ``ValueError`` naming the
  argument. Values (ids in range, non-negative weights) are checked when the array is
  concrete, i.e. outside ``jit``; inside ``jit`` out-of-range ids are dropped like padding,
  so validate in the input pipeline with :func:`validate_ids`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

PAD_ID = -1


def is_ids(labels) -> bool:
  """True if ``labels`` holds padded class ids (integer dtype), False if dense."""
  return jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer)


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_rank(x, rank: int, name: str):
  """Raises ValueError unless ``x`` has the given rank."""
  if jnp.ndim(x) != rank:
    raise ValueError(
        f"`{name}` must have rank {rank}, got shape {jnp.shape(x)} (rank {jnp.ndim(x)}).")


def check_float(x, name: str):
  """Raises ValueError unless ``x`` has a floating dtype."""
  dtype = jnp.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"`{name}` must have a floating dtype, got {dtype} (shape {jnp.shape(x)}).")


def check_where(where, batch_size: int, name: str = "where"):
  """Checks a per-example mask ``[B]`` and returns it as bool (or None)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.shape != (batch_size,):
    raise ValueError(f"`{name}` must have shape ({batch_size},) to match the batch, "
                     f"got {where.shape}.")
  return where.astype(bool)


def check_labels(labels, *, num_classes: Optional[int] = None,
                 batch_size: Optional[int] = None, name: str = "labels",
                 max_weight: Optional[float] = None):
  """Checks labels in either format and returns them as an array.

  Args:
    labels: dense ``[B, C]`` (float/bool) or ids ``[B, L]`` (integer, -1 padded).
    num_classes: if given, dense labels must have ``C == num_classes``; concrete ids must
      be ``< num_classes``.
    batch_size: if given, the leading dimension must match.
    name: the argument name used in error messages.
    max_weight: if given, concrete dense weights must be ``<= max_weight`` (e.g. 1 for
      the binary targets of BCE-type losses).

  Raises:
    ValueError: wrong rank, batch, class dimension or dtype; for concrete arrays also
      negative dense weights and out-of-range ids.
  """
  # Values are checked on the host copy of a concrete input (never on a traced value, even
  # when a concrete array is captured inside jit).
  values = None if isinstance(labels, jax.core.Tracer) else np.asarray(labels)
  labels = jnp.asarray(labels)
  check_rank(labels, 2, name)
  if batch_size is not None and labels.shape[0] != batch_size:
    raise ValueError(f"`{name}` has batch size {labels.shape[0]} (shape {labels.shape}) "
                     f"but the scores/logits have batch size {batch_size}.")
  dtype = labels.dtype
  if is_ids(labels):
    if values is not None and values.size:
      lo, hi = int(values.min()), int(values.max())
      if lo < PAD_ID:
        raise ValueError(f"`{name}` (ids) contains {lo}; ids must be >= 0, or -1 for padding.")
      if num_classes is not None and hi >= num_classes:
        raise ValueError(f"`{name}` (ids) contains id {hi} but num_classes is {num_classes}.")
  elif dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.floating):
    if num_classes is not None and labels.shape[1] != num_classes:
      raise ValueError(f"`{name}` (dense) has {labels.shape[1]} classes (shape {labels.shape}) "
                       f"but {num_classes} are expected.")
    if values is not None and dtype != jnp.bool_ and values.size and bool((values < 0).any()):
      raise ValueError(f"`{name}` (dense) contains negative weights; "
                       "dense labels must be multi-hot or non-negative.")
    if (max_weight is not None and values is not None and dtype != jnp.bool_ and values.size
        and bool((values > max_weight).any())):
      raise ValueError(f"`{name}` (dense) contains {float(values.max())}; this loss takes "
                       f"targets in [0, {max_weight}].")
  else:
    raise ValueError(f"`{name}` must be float/bool dense labels or integer ids, got dtype {dtype}.")
  return labels


def validate_ids(ids, num_classes: int) -> None:
  """Validates padded ids on the host (input pipelines, tests). Not for use under jit.

  Raises:
    ValueError: naming the first offending row, column and value, if ``ids`` is not an
      integer rank-2 array or holds a value outside ``[0, num_classes)`` other than -1.
  """
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"`ids` must have rank 2 [batch, max_labels], got shape {ids.shape}.")
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"`ids` must have an integer dtype, got {ids.dtype} (shape {ids.shape}).")
  bad = (ids < PAD_ID) | (ids >= num_classes)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise ValueError(f"`ids` row {row}, column {col} holds id {ids[row, col]}, outside "
                     f"[0, {num_classes}) and not the padding value -1 "
                     f"({int(bad.sum())} bad ids in total).")


def unique_mask(ids: jax.Array) -> jax.Array:
  """``[B, L]`` bool: True where an id is valid (>= 0) and not a repeat within its row."""
  ids = jnp.asarray(ids)
  order = jnp.argsort(ids, axis=-1, stable=True)
  sorted_ids = jnp.take_along_axis(ids, order, axis=-1)
  first = jnp.concatenate(
      [jnp.ones_like(sorted_ids[:, :1], bool), sorted_ids[:, 1:] != sorted_ids[:, :-1]], axis=-1)
  keep_sorted = first & (sorted_ids >= 0)
  inverse = jnp.argsort(order, axis=-1)
  return jnp.take_along_axis(keep_sorted, inverse, axis=-1)


def ids_to_dense(ids, num_classes: int, dtype=jnp.float32) -> jax.Array:
  """Converts padded ids ``[B, L]`` to multi-hot ``[B, num_classes]``.

  Padding (-1) and, under jit, out-of-range ids are dropped; duplicates count once.

  Example:
    >>> ids_to_dense(jnp.array([[2, 0, -1]]), 4)
    Array([[1., 0., 1., 0.]], dtype=float32)
  """
  ids = check_labels(ids, num_classes=num_classes, name="ids")
  if not is_ids(ids):
    raise ValueError(f"`ids` must be integer ids, got dtype {ids.dtype}.")
  b = ids.shape[0]
  safe = jnp.where(ids >= 0, ids, num_classes)  # Out of bounds: dropped by the scatter.
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], ids.shape)
  dense = jnp.zeros((b, num_classes), dtype)
  return dense.at[rows, safe].set(jnp.ones((), dtype), mode="drop")


def dense_to_ids(dense, max_labels: int, *, on_overflow: str = "count"):
  """Converts dense labels ``[B, C]`` to padded ids ``[B, max_labels]``.

  Positive entries are kept in order of decreasing weight (ties: lower class first);
  weights themselves are not kept. Rows with more than ``max_labels`` positives are
  truncated, and the truncation is reported.

  Args:
    dense: float/bool ``[B, C]``.
    max_labels: static width of the output.
    on_overflow: ``"count"`` (jit-safe) returns the per-row number of dropped labels;
      ``"raise"`` (concrete inputs only) raises ValueError naming the first row that
      overflows.

  Returns:
    ``(ids, num_dropped)``: int32 ``[B, max_labels]`` padded with -1, and int32 ``[B]``.
  """
  dense = check_labels(dense, name="dense")
  if is_ids(dense):
    raise ValueError(f"`dense` must be float/bool multi-hot, got integer dtype {dense.dtype}.")
  if on_overflow not in ("count", "raise"):
    raise ValueError(f"`on_overflow` must be 'count' or 'raise', got {on_overflow!r}.")
  num_classes = dense.shape[1]
  if not 0 < max_labels:
    raise ValueError(f"`max_labels` must be positive, got {max_labels}.")
  k = min(max_labels, num_classes)
  weights = dense.astype(jnp.float32)
  top_w, top_ids = jax.lax.top_k(weights, k)
  ids = jnp.where(top_w > 0, top_ids, PAD_ID).astype(jnp.int32)
  if k < max_labels:
    ids = jnp.pad(ids, ((0, 0), (0, max_labels - k)), constant_values=PAD_ID)
  num_dropped = (jnp.sum(weights > 0, axis=1) - jnp.sum(top_w > 0, axis=1)).astype(jnp.int32)
  if on_overflow == "raise":
    if not _is_concrete(num_dropped):
      raise ValueError("dense_to_ids(on_overflow='raise') needs concrete inputs; "
                       "use on_overflow='count' under jit.")
    dropped = np.asarray(num_dropped)
    if dropped.any():
      row = int(np.argmax(dropped > 0))
      raise ValueError(f"`dense` row {row} has {int(dropped[row]) + max_labels} labels, more than "
                       f"max_labels={max_labels} ({int(dropped.sum())} labels would be dropped).")
  return ids, num_dropped


def num_positives(labels) -> jax.Array:
  """``[B]`` number of distinct positive classes per row (dense: entries > 0)."""
  labels = jnp.asarray(labels)
  if is_ids(labels):
    return jnp.sum(unique_mask(labels), axis=-1).astype(jnp.int32)
  return jnp.sum(labels > 0, axis=-1).astype(jnp.int32)


def has_labels(labels) -> jax.Array:
  """``[B]`` bool: whether a row has at least one positive label."""
  return num_positives(labels) > 0


def gather_at_ids(values: jax.Array, ids: jax.Array) -> jax.Array:
  """``values[b, ids[b, j]]`` as ``[B, L]``, with 0 where the id is padding or a repeat."""
  keep = unique_mask(ids)
  safe = jnp.where(keep, ids, 0)
  gathered = jnp.take_along_axis(values, safe, axis=-1)
  return jnp.where(keep, gathered, jnp.zeros((), values.dtype))


def label_weights(labels, num_classes: int, *, normalize: bool = False,
                  dtype=jnp.float32) -> jax.Array:
  """Dense target weights ``[B, C]`` from either format, optionally normalised to sum to 1.

  Rows with no labels stay all-zero when normalised.
  """
  labels = jnp.asarray(labels)
  dense = ids_to_dense(labels, num_classes, dtype) if is_ids(labels) else labels.astype(dtype)
  if normalize:
    total = jnp.sum(dense, axis=-1, keepdims=True)
    dense = dense / jnp.where(total > 0, total, 1)
  return dense


def weighted_sum(values: jax.Array, labels, *, normalize: bool = False) -> jax.Array:
  """``sum_c y_c * values[b, c]`` as ``[B]``, without densifying id labels.

  With ``normalize=True`` the label weights are divided by their row sum (1/k per
  positive), and rows without labels give 0.
  """
  labels = jnp.asarray(labels)
  if is_ids(labels):
    keep = unique_mask(labels)
    total = jnp.sum(gather_at_ids(values, labels), axis=-1)
    if normalize:
      count = jnp.sum(keep, axis=-1)
      total = total / jnp.maximum(count, 1).astype(total.dtype)
    return total
  weights = labels.astype(values.dtype)
  total = jnp.sum(weights * values, axis=-1)
  if normalize:
    norm = jnp.sum(weights, axis=-1)
    total = total / jnp.where(norm > 0, norm, 1)
  return total
