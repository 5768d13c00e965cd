"""Decoders: from per-class scores to label sets.

A decoder returns :class:`DecodedSets`, padded ids plus a validity mask, so rows can have
sets of different sizes; ``dense=True`` returns a bool ``[B, C]`` array instead. Decoders
that produce variable-size sets take a static ``max_labels`` (default C: exact, no
truncation); labels that qualify but do not fit are *counted* in ``num_truncated``.

Calibration functions run on the host (numpy) over a validation set and return thresholds
to pass to :func:`threshold`. Which decoder suits which objective:

==================  ==================================================
objective           natural decoder
==================  ==================================================
sigmoid, focal,     ``threshold(sigmoid(logits), 0.5)``
ASL, ZLPR
softmax             ``top_k(softmax(logits), k)``
two-head            ``threshold(sigmoid(ml_logits), calibrate_average_k(...))``
count x dist.       ``by_count(Z * P, Z)``
embedding           ``top_k(cosine scores, k)`` (nearest label embeddings)
==================  ==================================================
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import labels as labels_lib
from multilabel_jax.metrics.average_precision import midpoint_between


class DecodedSets(NamedTuple):
  """Variable-size label sets.

  Attributes:
    ids: int32 ``[B, K]`` class ids in order of decreasing score, -1 where ``mask`` is False.
    mask: bool ``[B, K]``, True for slots that hold a predicted label.
    num_truncated: int32 ``[B]`` labels that qualified but did not fit in K slots.
  """
  ids: jax.Array
  mask: jax.Array
  num_truncated: jax.Array

  @property
  def sizes(self) -> jax.Array:
    """``[B]`` set sizes."""
    return jnp.sum(self.mask, axis=-1)

  def to_dense(self, num_classes: int) -> jax.Array:
    """Bool ``[B, num_classes]`` membership."""
    return labels_lib.ids_to_dense(self.ids, num_classes, jnp.bool_)


def _check_scores(scores):
  scores = jnp.asarray(scores)
  labels_lib.check_rank(scores, 2, "scores")
  labels_lib.check_float(scores, "scores")
  return scores


def _check_k(k: int, num_classes: int, name: str = "k"):
  if not isinstance(k, (int, np.integer)) or not 1 <= k <= num_classes:
    raise ValueError(f"`{name}` must be an int in [1, C={num_classes}], got {k!r}.")


def _select(margin, keep_count, max_labels: Optional[int]) -> DecodedSets:
  """The ``keep_count [B]`` highest entries of ``margin`` per row, in at most K slots."""
  num_classes = margin.shape[-1]
  k = num_classes if max_labels is None else max_labels
  _check_k(k, num_classes, "max_labels")
  _, ids = jax.lax.top_k(margin, k)
  mask = jnp.arange(k)[None, :] < keep_count[:, None]
  return DecodedSets(jnp.where(mask, ids, labels_lib.PAD_ID).astype(jnp.int32), mask,
                     jnp.zeros(margin.shape[:1], jnp.int32))


def top_k(scores, k: int, *, dense: bool = False) -> Union[DecodedSets, jax.Array]:
  """The k highest-scoring classes of each row.

  Args:
    scores: float ``[B, C]``.
    k: static set size, ``1 <= k <= C``.
    dense: return bool ``[B, C]`` instead of :class:`DecodedSets`.

  Example:
    >>> top_k(jnp.array([[0.1, 0.7, 0.2]]), 2).ids
    Array([[1, 2]], dtype=int32)
  """
  scores = _check_scores(scores)
  _check_k(k, scores.shape[-1])
  _, ids = jax.lax.top_k(scores, k)
  sets = DecodedSets(ids.astype(jnp.int32), jnp.ones(ids.shape, bool),
                     jnp.zeros(scores.shape[:1], jnp.int32))
  return sets.to_dense(scores.shape[-1]) if dense else sets


def threshold(scores, t, *, max_labels: Optional[int] = None,
              dense: bool = False) -> Union[DecodedSets, jax.Array]:
  """All classes with ``scores >= t``; ``t`` is a scalar or per-class ``[C]``.

  The comparison is exact in at least float32 (bfloat16 scores are compared with the
  float32 value of ``t``, not with ``t`` rounded to bfloat16).

  Args:
    scores: float ``[B, C]``.
    t: scalar, or ``[C]`` per-class thresholds (e.g. from
      :func:`calibrate_class_thresholds`).
    max_labels: static slot count K of the result (default C). Sets are ordered by margin
      ``scores - t``; qualifying labels beyond K are counted in ``num_truncated``.
    dense: return bool ``[B, C]``.
  """
  scores = _check_scores(scores)
  t = jnp.asarray(t)
  if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != scores.shape[-1]):
    raise ValueError(f"`t` must be a scalar or have shape ({scores.shape[-1]},), got {t.shape}.")
  # Compare in at least float32: rounding a float32 t to bfloat16 scores would admit
  # scores just below it.
  dtype = jnp.promote_types(scores.dtype, jnp.float32)
  scores, t = scores.astype(dtype), t.astype(dtype)
  qualifies = scores >= t
  if dense:
    return qualifies
  count = jnp.sum(qualifies, axis=-1)
  margin = jnp.where(scores == t, 0, scores - t)  # Equal infinities: 0, not NaN.
  sets = _select(jnp.where(qualifies, margin, -jnp.inf), count, max_labels)
  kept = jnp.sum(sets.mask, axis=-1)
  return sets._replace(num_truncated=(count - kept).astype(jnp.int32))


def by_count(scores, counts, *, max_labels: Optional[int] = None,
             dense: bool = False) -> Union[DecodedSets, jax.Array]:
  """For each row, the top ``round(counts)`` classes (count-based decoding).

  Args:
    scores: float ``[B, C]``.
    counts: float ``[B]`` predicted label counts (e.g. ``Z`` of count x distribution).
    max_labels: static slot count K (default C); rounded counts above K are truncated and
      counted in ``num_truncated``.
    dense: return bool ``[B, C]``.
  """
  scores = _check_scores(scores)
  counts = jnp.asarray(counts)
  if counts.shape != scores.shape[:1]:
    raise ValueError(f"`counts` must have shape ({scores.shape[0]},), got {counts.shape}.")
  num_classes = scores.shape[-1]
  wanted = jnp.clip(jnp.round(counts), 0, num_classes).astype(jnp.int32)
  if dense:
    ranks = jnp.argsort(jnp.argsort(-scores, axis=-1), axis=-1)
    return ranks < wanted[:, None]
  sets = _select(scores, wanted, max_labels)
  return sets._replace(num_truncated=(wanted - jnp.sum(sets.mask, axis=-1)).astype(jnp.int32))


def _is_float(x: np.ndarray) -> bool:
  """Floating dtype, bfloat16 included (numpy's own issubdtype does not know it)."""
  return jnp.issubdtype(x.dtype, jnp.floating)


def calibrate_average_k(val_scores, k: float, *, where=None,
                        num_classes: Optional[int] = None) -> float:
  """Global threshold such that validation sets hold k labels on average (average-K).

  With the n (unmasked) rows' scores pooled and sorted in decreasing order, the threshold
  is the midpoint between positions ``m-1`` and ``m`` (0-based), ``m = round(n * k)``, so
  ``threshold(val_scores, t)`` selects exactly m labels when there are no ties there. If
  the scores at ``m-1`` and ``m`` are equal, t is that score and the whole tie group is
  selected (more than m labels): ties are never split.

  At large C, pass each row's top-r scores ``[N, r]`` (e.g. from a streaming top-k) together
  with ``num_classes=C``: the result is exact when no row has more than r labels above
  the threshold, and a ValueError says so otherwise.

  Args:
    val_scores: float ``[N, C]``, or ``[N, r]`` per-row top scores with ``num_classes``.
    k: average set size, ``0 <= k <= C``.
    where: optional bool ``[N]`` rows to use (e.g. the padding mask).
    num_classes: C when ``val_scores`` holds per-row top-r scores.

  Returns:
    The threshold, as a Python float (+inf if m = 0, -inf if every label is selected).
  """
  scores = np.asarray(val_scores)
  if scores.ndim != 2:
    raise ValueError(f"`val_scores` must have rank 2, got shape {scores.shape}.")
  if not _is_float(scores):
    raise ValueError(f"`val_scores` must be floating, got {scores.dtype}.")
  c = scores.shape[1] if num_classes is None else num_classes
  if not 0 <= k <= c:
    raise ValueError(f"`k` must be in [0, C={c}], got {k}.")
  if where is not None:
    scores = scores[np.asarray(where, bool)]
  n, r = scores.shape
  m = int(round(n * k))
  if m == 0:
    return float("inf")
  if m >= n * c:
    return float("-inf")
  if m >= n * r:
    raise ValueError(f"k={k} needs {m} labels but only the top {r} scores of each of {n} rows "
                     "were given; pass more scores per row.")
  flat = scores.reshape(-1)
  part = np.partition(flat, [flat.size - m - 1, flat.size - m])
  upper, lower = part[flat.size - m], part[flat.size - m - 1]
  t = midpoint_between(upper, lower, scores.dtype)
  if r < c and np.any(scores.min(axis=1) >= t):
    raise ValueError("a row has all of its given top scores above the calibrated threshold, "
                     "so it may have more; pass more scores per row.")
  return float(t)


def calibrate_class_thresholds(val_scores, val_labels, metric: str = "f1", *,
                               fallback: Union[str, float] = "global",
                               min_positives: int = 1, class_chunk: int = 1024) -> np.ndarray:
  """Per-class thresholds maximising each class's F1 on validation.

  For each class the cut is searched over its distinct validation scores (ties are never
  split) and the threshold is the midpoint between the last score kept and the next one.
  Classes with fewer than ``min_positives`` validation positives (a per-class optimum on
  one or two positives overfits) get ``fallback``: ``"global"`` (the threshold that
  maximises micro-F1 over all pooled scores), ``"never"`` (+inf), or a number.

  Args:
    val_scores: float ``[N, C]``.
    val_labels: dense ``[N, C]`` or ids ``[N, L]``.
    metric: only ``"f1"``.
    fallback: see above.
    min_positives: validation positives a class needs for its own threshold (>= 1).
    class_chunk: classes processed at a time (bounds memory at ``N * class_chunk``).

  Returns:
    float ``[C]`` thresholds for :func:`threshold`.
  """
  if metric != "f1":
    raise ValueError(f"`metric` must be 'f1', got {metric!r}.")
  scores = np.asarray(val_scores)
  if scores.ndim != 2 or not _is_float(scores):
    raise ValueError(f"`val_scores` must be a float [N, C] array, got {scores.dtype} "
                     f"{scores.shape}.")
  n, c = scores.shape
  y = np.asarray(labels_lib.label_weights(
      labels_lib.check_labels(val_labels, num_classes=c, batch_size=n, name="val_labels"),
      c)) > 0
  out = np.empty(c, scores.dtype)
  for lo in range(0, c, class_chunk):
    s, t = scores[:, lo:lo + class_chunk], y[:, lo:lo + class_chunk]
    out[lo:lo + class_chunk] = _best_f1_cut(s, t)
  if min_positives < 1:
    raise ValueError(f"`min_positives` must be >= 1, got {min_positives}.")
  missing = y.sum(axis=0) < min_positives
  if missing.any():
    if fallback == "global":
      value = _best_f1_cut(scores.reshape(-1, 1), y.reshape(-1, 1))[0]
    elif fallback == "never":
      value = np.inf
    elif isinstance(fallback, (int, float)):
      value = fallback
    else:
      raise ValueError(f"`fallback` must be 'global', 'never' or a number, got {fallback!r}.")
    out[missing] = value
  return out


def _best_f1_cut(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
  """Per column, the F1-optimal threshold (NaN-free; +inf when a column has no positive)."""
  n, c = scores.shape
  order = np.argsort(-scores, axis=0, kind="stable")
  s = np.take_along_axis(scores, order, axis=0)
  tp = np.cumsum(np.take_along_axis(positive, order, axis=0), axis=0)
  n_pos = tp[-1]
  boundary = np.ones((n, c), bool)
  boundary[:-1] = s[:-1] != s[1:]  # Only cut between distinct scores.
  f1 = np.where(boundary, 2 * tp / (n_pos[None, :] + np.arange(1, n + 1)[:, None]), -1.0)
  best = np.argmax(f1, axis=0)
  cols = np.arange(c)
  upper = s[best, cols]
  lower = s[np.minimum(best + 1, n - 1), cols]
  t = np.array([midpoint_between(u, l, scores.dtype) if b < n - 1 else u
                for u, l, b in zip(upper, lower, best)], scores.dtype)
  return np.where(n_pos > 0, t, np.inf).astype(scores.dtype)
