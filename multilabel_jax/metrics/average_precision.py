"""Exact mean average precision at any number of classes, in two streaming passes.

sklearn's ``average_precision_score`` ranks all ``N * C`` (score, label) pairs. AP only needs,
per positive p, ``AP = (1 / n_pos) * sum_p TP(>= s_p) / (TP(>= s_p) + FP(>= s_p))`` (ties count
together, as in sklearn). Pass 1 keeps each positive's score (O(P) memory), which gives every
``TP(>= s_p)``. Pass 2 counts negatives with jit-able functions run per batch on the device,
whose small outputs are added on the host in int64:

* macro: :func:`column_counts`, the negatives of p's class with score ``>= s_p``, on the
  columns ``scores[:, positive_classes]`` (gathered, or ``x @ W[:, classes] + b`` for a fused
  head), in blocks of positives;
* micro: :func:`pooled_counts`, a histogram of all negative entries over the sorted pooled
  positive scores, one class chunk at a time.

Negatives are recognised by label id, so pass 2 need not reproduce pass 1's scores bit for bit.
The largest score below each positive comes too, so
:meth:`ExactAveragePrecision.class_thresholds` equals ``decoders.calibrate_class_thresholds``.
Scores are compared in float32 and must not be NaN. State: O(P + C).

Usage::

  ap = ExactAveragePrecision(C)
  for ids, scores, mask in data:
    ap.add_positives(ids, labels_lib.gather_at_ids(scores, ids), mask)
  ap.finish_pass_one()
  for ids, scores, mask in data:
    update_dense(ap, scores, ids, mask)  # Or column_counts / pooled_counts by hand.
  ap.compute()  # {"map_macro", "map_micro", "num_classes_with_positives", "num_positives"}

Source: sklearn ``average_precision_score`` (step-wise, tied scores form one step).
"""

from __future__ import annotations

from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import labels as labels_lib

_INT32_MAX = 2**31 - 1


def midpoint_between(upper, lower, dtype):
  """A threshold t with ``lower < t <= upper`` in ``dtype`` (the calibration rule of
  ``decoders.calibrate_average_k`` and of the per-class F1 thresholds)."""
  upper, lower = dtype.type(upper), dtype.type(lower)
  t = dtype.type((np.float64(upper) + np.float64(lower)) / 2)
  return t if lower < t <= upper else upper


# -------------------------------------------------------------------- device functions


def _check_ids(label_ids, batch_size=None, num_classes=None):
  label_ids = labels_lib.check_labels(label_ids, num_classes=num_classes, batch_size=batch_size,
                                      name="label_ids")
  if not labels_lib.is_ids(label_ids):
    raise ValueError(f"`label_ids` must be integer ids [B, L], got dtype {label_ids.dtype}.")
  return label_ids


def _check_scores(scores, name: str):
  scores = jnp.asarray(scores)
  labels_lib.check_rank(scores, 2, name)
  labels_lib.check_float(scores, name)
  return scores.astype(jnp.float32)


def _is_label(label_ids, classes):
  """``[B, P']`` bool: whether ``classes[p]`` is among row i's label ids (padding never is)."""
  valid = label_ids >= 0
  return jnp.any((label_ids[:, :, None] == classes[None, None, :]) & valid[:, :, None], axis=1)


def _row_mask(mask, batch_size: int):
  where = labels_lib.check_where(mask, batch_size, "mask")
  return jnp.ones((batch_size,), bool) if where is None else where


@jax.jit
def column_counts(column_scores, thresholds, classes, label_ids, mask=None):
  """Negatives of each positive's class that score at least as high as it (macro pass 2).

  Args:
    column_scores: float ``[B, P']``; ``column_scores[i, p]`` is row i's score at class
      ``classes[p]``.
    thresholds: float ``[P']``, the positives' scores (``positive_scores`` block).
    classes: int ``[P']``, their classes (``positive_classes`` block).
    label_ids: int ``[B, L]`` padded with -1.
    mask: optional bool ``[B]``; masked rows are not counted.

  Returns:
    ``(count_ge, max_below)``: int32 ``[P']`` negative rows (class not a label of the row)
    with score ``>= thresholds[p]``, and float32 ``[P']`` the largest negative score
    ``< thresholds[p]`` (-inf if none).
  """
  col = _check_scores(column_scores, "column_scores")
  b, p = col.shape
  thresholds = jnp.asarray(thresholds, jnp.float32)
  classes = jnp.asarray(classes)
  for name, x in (("thresholds", thresholds), ("classes", classes)):
    if x.shape != (p,):
      raise ValueError(f"`{name}` must have shape ({p},) to match `column_scores`, "
                       f"got {x.shape}.")
  label_ids = _check_ids(label_ids, b)
  negative = ~_is_label(label_ids, classes) & _row_mask(mask, b)[:, None]
  ge = col >= thresholds[None, :]
  below = negative & (col < thresholds[None, :])
  return (jnp.sum(negative & ge, axis=0, dtype=jnp.int32),
          jnp.max(jnp.where(below, col, -jnp.inf), axis=0, initial=-jnp.inf))


@jax.jit
def pooled_counts(scores, class_offset, sorted_thresholds, label_ids, mask=None):
  """Histogram of the negative entries of a class chunk over the pooled positive scores.

  Args:
    scores: float ``[B, c]``, classes ``[class_offset, class_offset + c)``.
    class_offset: int (may be traced), the first class of the chunk.
    sorted_thresholds: float ``[P]`` ascending (``pooled_thresholds``).
    label_ids: int ``[B, L]`` padded with -1.
    mask: optional bool ``[B]``; masked rows are not counted.

  Returns:
    ``(hist, bin_max)``: int32 ``[P + 1]`` and float32 ``[P + 1]``. A negative entry with score
    s falls in bin ``searchsorted(sorted_thresholds, s, side="right")``; ``hist`` counts the
    entries per bin and ``bin_max`` keeps their largest score (-inf for empty bins).
  """
  scores = _check_scores(scores, "scores")
  b, c = scores.shape
  sorted_thresholds = jnp.asarray(sorted_thresholds, jnp.float32)
  labels_lib.check_rank(sorted_thresholds, 1, "sorted_thresholds")
  label_ids = _check_ids(label_ids, b)
  # Unmasked entries (i, class_offset + j) that are not labels; other ids are dropped.
  local = label_ids - class_offset
  local = jnp.where((label_ids >= 0) & (local >= 0) & (local < c), local, c)
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], label_ids.shape)
  negative = jnp.broadcast_to(_row_mask(mask, b)[:, None], (b, c))
  negative = negative.at[rows, local].set(False, mode="drop")
  bins = jnp.searchsorted(sorted_thresholds, scores, side="right")  # [B, c] in [0, P].
  size = sorted_thresholds.shape[0] + 1
  hist = jnp.zeros((size,), jnp.int32).at[bins].add(negative.astype(jnp.int32))
  bin_max = jnp.full((size,), -jnp.inf, jnp.float32).at[bins].max(
      jnp.where(negative, scores, -jnp.inf))
  return hist, bin_max


# -------------------------------------------------------------------------- host state


def _group_end(*keys):
  """For sorted keys ``[P]``, the index of the last element of each element's run."""
  n = keys[0].shape[0]
  same = np.ones(max(n - 1, 0), bool)  # Element i ties with i + 1 on every key.
  for k in keys:
    same &= k[1:] == k[:-1]
  idx = np.where(np.append(~same, True), np.arange(n), n - 1)
  return np.minimum.accumulate(idx[::-1])[::-1]


class ExactAveragePrecision:
  """Exact macro and micro mAP (sklearn's) from two passes over the evaluation data.

  Pass 1: :meth:`add_positives` per batch, then :meth:`finish_pass_one`. Pass 2:
  :meth:`add_column_counts` and :meth:`add_pooled_counts` with the outputs of
  :func:`column_counts` and :func:`pooled_counts` (or :func:`update_dense`). Macro averages
  over the classes with at least one positive; masked rows are left out everywhere.

  Attributes (after :meth:`finish_pass_one`): ``positive_classes`` int32 ``[P]`` (ascending)
  and ``positive_scores`` float32 ``[P]`` (descending within a class), the order of
  :func:`column_counts` blocks; ``pooled_thresholds`` float32 ``[P]`` ascending;
  ``num_positives`` P.
  """

  def __init__(self, num_classes: int):
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
      raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
    self.num_classes = int(num_classes)
    self._parts = []  # Pass 1: (classes, scores) per batch.
    self._num_rows = 0
    self._finished = False

  # ------------------------------------------------------------------------ pass 1

  def add_positives(self, label_ids, label_scores, mask=None) -> None:
    """Keeps the positives of a batch.

    Args:
      label_ids: int ``[B, L]`` padded with -1; duplicates in a row count once.
      label_scores: float ``[B, L]``, row i's score at ``label_ids[i, j]`` (e.g.
        :func:`multilabel_jax.labels.gather_at_ids`); ignored at padding and repeats.
      mask: optional bool ``[B]``.
    """
    if self._finished:
      raise ValueError("add_positives() after finish_pass_one(); pass 1 is over.")
    ids = _check_ids(label_ids, num_classes=self.num_classes)
    scores = jnp.asarray(label_scores)
    labels_lib.check_float(scores, "label_scores")
    if scores.shape != ids.shape:
      raise ValueError(f"`label_scores` must have the shape of `label_ids` {ids.shape}, "
                       f"got {scores.shape}.")
    row_ok = np.asarray(_row_mask(mask, ids.shape[0]))
    keep = np.asarray(labels_lib.unique_mask(ids)) & row_ok[:, None]
    self._parts.append((np.asarray(ids)[keep].astype(np.int32),
                        np.asarray(scores.astype(jnp.float32))[keep]))
    self._num_rows += int(row_ok.sum())

  def finish_pass_one(self) -> None:
    """Sorts the positives (per class, and pooled) and sets up the pass-2 state."""
    if self._finished:
      raise ValueError("finish_pass_one() was already called.")
    cls = np.concatenate([c for c, _ in self._parts] + [np.zeros(0, np.int32)])
    s = np.concatenate([s for _, s in self._parts] + [np.zeros(0, np.float32)])
    self._parts = None
    order = np.lexsort((-s, cls))  # Classes ascending, scores descending.
    self._classes, self._scores = cls[order], s[order]
    self._counts = np.bincount(cls, minlength=self.num_classes).astype(np.int64)
    self._ptr = np.concatenate([[0], np.cumsum(self._counts)])
    self._pooled = np.sort(s)
    p = s.shape[0]
    self._fp = np.zeros(p, np.int64)  # Macro: negatives >= s_p, per positive.
    self._below = np.full(p, -np.inf, np.float32)
    self._visits = np.zeros(p, np.int64)
    self._hist = np.zeros(p + 1, np.int64)  # Micro.
    self._bin_max = np.full(p + 1, -np.inf, np.float32)
    self._pooled_added = False
    self._finished = True

  def require_pass_two(self, what: str):
    """Raises ValueError naming `what` unless pass one is finished."""
    if not self._finished:
      raise ValueError(f"{what} needs finish_pass_one() first (pass 1 is not finished).")

  positive_classes = property(lambda self: self._get("positive_classes", "_classes"))
  positive_scores = property(lambda self: self._get("positive_scores", "_scores"))
  pooled_thresholds = property(lambda self: self._get("pooled_thresholds", "_pooled"))
  num_positives = property(lambda self: int(self._get("num_positives", "_scores").shape[0]))

  def _get(self, name: str, attr: str):
    self.require_pass_two(name)
    return getattr(self, attr)

  # ------------------------------------------------------------------------ pass 2

  def add_column_counts(self, start: int, count_ge, max_below) -> None:
    """Adds :func:`column_counts` of positives ``[start, start + P')`` for one batch.

    A last block padded to the block size may be passed whole: entries past
    ``num_positives`` are dropped.
    """
    self.require_pass_two("add_column_counts()")
    count_ge = np.asarray(count_ge)
    max_below = np.asarray(max_below, np.float32)
    if count_ge.ndim != 1 or max_below.shape != count_ge.shape:
      raise ValueError(f"`count_ge` and `max_below` must be [P'] of one shape, got "
                       f"{count_ge.shape} and {max_below.shape}.")
    p = self.num_positives
    if not isinstance(start, (int, np.integer)) or not 0 <= start < max(p, 1):
      raise ValueError(f"`start` must be an int in [0, num_positives={p}), got {start!r}.")
    end = min(start + count_ge.shape[0], p)
    self._fp[start:end] += count_ge[:end - start].astype(np.int64)
    np.maximum(self._below[start:end], max_below[:end - start], out=self._below[start:end])
    self._visits[start:end] += 1

  def add_pooled_counts(self, hist, bin_max) -> None:
    """Adds :func:`pooled_counts` of one (batch, class chunk)."""
    self.require_pass_two("add_pooled_counts()")
    hist, bin_max = np.asarray(hist), np.asarray(bin_max, np.float32)
    size = self.num_positives + 1
    for name, x in (("hist", hist), ("bin_max", bin_max)):
      if x.shape != (size,):
        raise ValueError(f"`{name}` must have shape ({size},) (num_positives + 1), got "
                         f"{x.shape}.")
    self._hist += hist.astype(np.int64)
    np.maximum(self._bin_max, bin_max, out=self._bin_max)
    self._pooled_added = True

  # ----------------------------------------------------------------------- results

  def _macro_terms(self):
    """Per positive (CSR order): TP and FP at its score, index of the end of its tie group."""
    self.require_pass_two("per-class results")
    if self.num_positives and not self._visits.any():
      raise ValueError("per-class results need add_column_counts() (pass 2) first.")
    if self._visits.size and self._visits.min() != self._visits.max():
      raise ValueError(f"add_column_counts() covered positives unevenly (between "
                       f"{self._visits.min()} and {self._visits.max()} batches): a block of "
                       "positives was missed or added twice.")
    end = _group_end(self._classes, self._scores)
    tp = end - self._ptr[self._classes] + 1
    return tp, self._fp, end

  def _micro_terms(self):
    """Per pooled positive (ascending): TP and FP at its score, first index of its tie group."""
    self.require_pass_two("micro results")
    if not self._pooled_added:
      raise ValueError("micro results need add_pooled_counts() (pass 2) first.")
    p = self.num_positives
    expected = self._num_rows * self.num_classes - p
    if self._hist.sum() != expected:
      raise ValueError(f"add_pooled_counts() saw {self._hist.sum()} negative entries but pass "
                       f"1 implies {expected} ({self._num_rows} rows x {self.num_classes} "
                       "classes - positives): both passes must cover the same rows, all classes.")
    t = self._pooled
    first = np.searchsorted(t, t, side="left")
    after = np.searchsorted(t, t, side="right")
    suffix = np.concatenate([np.cumsum(self._hist[::-1])[::-1], [0]])  # suffix[b] = bins >= b.
    return p - first, suffix[after], first

  def per_class(self) -> np.ndarray:
    """float64 ``[C]`` AP per class, NaN for classes without a positive."""
    tp, fp, _ = self._macro_terms()
    total = np.bincount(self._classes, weights=tp / (tp + fp), minlength=self.num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(self._counts > 0, total / self._counts, np.nan)

  def compute(self) -> dict:
    """``{"map_macro", "map_micro", "num_classes_with_positives", "num_positives"}``.

    A mean whose pass-2 counts were never added, or that has no positive, is NaN.
    """
    self.require_pass_two("compute()")
    macro = micro = float("nan")
    has_pos = self._counts > 0
    if has_pos.any() and self._visits.any():
      macro = float(np.mean(self.per_class()[has_pos]))
    if self.num_positives and self._pooled_added:
      tp, fp, _ = self._micro_terms()
      micro = float(np.mean(tp / (tp + fp)))
    return {"map_macro": macro, "map_micro": micro,
            "num_classes_with_positives": int(has_pos.sum()), "num_positives": self.num_positives}

  def micro_pr_curve(self, max_points: int = 256) -> dict:
    """Micro precision and recall of ``score >= t`` at the distinct positive scores.

    Exact at each returned threshold (thresholds decreasing, at most ``max_points``, evenly
    subsampled, the highest and lowest kept).

    Returns:
      ``{"threshold": [T], "precision": [T], "recall": [T]}`` as lists of floats.
    """
    if max_points < 2:
      raise ValueError(f"`max_points` must be >= 2, got {max_points}.")
    tp, fp, first = self._micro_terms()
    groups = np.unique(first)[::-1]  # One per distinct score, highest first.
    if groups.size > max_points:
      keep = np.unique(np.round(np.linspace(0, groups.size - 1, max_points)).astype(int))
      groups = groups[keep]
    tp, fp = tp[groups], fp[groups]
    return {"threshold": self._pooled[groups].astype(np.float64).tolist(),
            "precision": (tp / (tp + fp)).tolist(),
            "recall": (tp / max(self.num_positives, 1)).tolist()}

  def _global_cut(self) -> np.float32:
    """The micro-F1-optimal threshold over all pooled scores (``_best_f1_cut`` on them)."""
    p = self.num_positives
    if p == 0:
      return np.float32(np.inf)
    tp, fp, first = self._micro_terms()
    f1 = 2 * tp / (p + tp + fp)
    best = int(np.flatnonzero(f1 == f1.max())[-1])  # Highest score among equal F1.
    lo = first[best]
    below_pos = self._pooled[lo - 1] if lo > 0 else -np.inf
    below_neg = np.maximum.accumulate(self._bin_max)[lo]  # Negatives in bins <= lo are < t.
    return self._cut(self._pooled[best], max(below_pos, below_neg))

  @staticmethod
  def _cut(upper, lower) -> np.float32:
    dtype = np.dtype(np.float32)
    return upper if lower == -np.inf else midpoint_between(upper, lower, dtype)

  def class_thresholds(self, *, min_positives: int = 1,
                       fallback: Union[str, float] = "global") -> np.ndarray:
    """Per-class F1-optimal thresholds, equal to ``decoders.calibrate_class_thresholds``.

    Args:
      min_positives: positives a class needs for its own threshold (>= 1).
      fallback: for the other classes: ``"global"`` (micro-F1-optimal threshold over all
        pooled scores; needs the pooled counts), ``"never"`` (+inf), or a number.

    Returns:
      float32 ``[C]`` thresholds for :func:`multilabel_jax.losses.decoders.threshold`.
    """
    if min_positives < 1:
      raise ValueError(f"`min_positives` must be >= 1, got {min_positives}.")
    if not (fallback in ("global", "never") or isinstance(fallback, (int, float))):
      raise ValueError(f"`fallback` must be 'global', 'never' or a number, got {fallback!r}.")
    tp, fp, end = self._macro_terms()
    cls, s, ptr = self._classes, self._scores, self._ptr
    out = np.full(self.num_classes, np.inf, np.float32)
    if cls.size:
      f1 = 2 * tp / (self._counts[cls] + tp + fp)  # As _best_f1_cut: exact ints, float64.
      with_pos = np.flatnonzero(self._counts > 0)
      starts = ptr[with_pos]
      seg_max = np.maximum.reduceat(f1, starts)
      seg = np.repeat(np.arange(with_pos.size), self._counts[with_pos])
      # First positive (highest score) reaching the class's best F1.
      best = np.minimum.reduceat(np.where(f1 == seg_max[seg], np.arange(cls.size), cls.size),
                                 starts)
      nxt = np.minimum(end[best] + 1, cls.size - 1)
      below_pos = np.where((end[best] + 1 < cls.size) & (cls[nxt] == with_pos), s[nxt], -np.inf)
      lower = np.maximum(below_pos, self._below[best])
      out[with_pos] = [self._cut(u, l) for u, l in zip(s[best], lower)]
    missing = self._counts < min_positives
    if missing.any():
      value = (self._global_cut() if fallback == "global" else
               np.inf if fallback == "never" else fallback)
      out[missing] = value
    return out


# ------------------------------------------------------------------ dense convenience


def _bucket(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()  # The next power of two >= n.


@jax.jit
def _column_blocks(scores, classes, thresholds, label_ids, mask):
  """:func:`column_counts` for ``[K, blk]`` blocks of positives, gathered from ``[B, C]``."""

  def one(_, block):
    cls, thr = block
    return None, column_counts(jnp.take(scores, cls, axis=1), thr, cls, label_ids, mask)

  _, (count, below) = jax.lax.scan(one, None, (classes, thresholds))
  return count.reshape(-1), below.reshape(-1)


def _as_ids(labels):
  if labels_lib.is_ids(labels):
    return labels
  width = int(jnp.max(labels_lib.num_positives(labels), initial=0))
  return labels_lib.dense_to_ids(labels, max(width, 1))[0]


def update_dense(ap: ExactAveragePrecision, scores, labels, mask=None, *,
                 block: int = 4096) -> None:
  """Pass 2 for one batch of dense scores.

  Args:
    ap: after :meth:`ExactAveragePrecision.finish_pass_one`.
    scores: float ``[B, C]``.
    labels: ids ``[B, L]`` or dense ``[B, C]`` (relevance > 0), as in pass 1.
    mask: optional bool ``[B]``.
    block: positives per :func:`column_counts` block (bounds memory at ``B * block``).
  """
  ap.require_pass_two("update_dense()")
  scores = _check_scores(scores, "scores")
  b, c = scores.shape
  if c != ap.num_classes:
    raise ValueError(f"`scores` has {c} classes (shape {scores.shape}), the metric "
                     f"{ap.num_classes}.")
  ids = _as_ids(labels_lib.check_labels(labels, num_classes=c, batch_size=b))
  p = ap.num_positives
  if p:
    blk = min(block, _bucket(p))
    k = -(-p // blk)
    pad = k * blk - p  # Padded positives (class 0, +inf) are dropped by add_column_counts.
    classes = np.pad(ap.positive_classes, (0, pad)).reshape(k, blk)
    thr = np.pad(ap.positive_scores, (0, pad), constant_values=np.inf).reshape(k, blk)
    ap.add_column_counts(0, *_column_blocks(scores, classes, thr, ids, mask))
  # +inf-padded thresholds: few shapes across P; bins past P only hold +inf scores.
  thr = np.pad(ap.pooled_thresholds, (0, _bucket(p) - p), constant_values=np.inf)
  chunk = c if b * c <= _INT32_MAX else max(1, _INT32_MAX // max(b, 1))  # int32 histogram.
  for lo in range(0, c, chunk):
    hist, bin_max = map(np.asarray, pooled_counts(scores[:, lo:lo + chunk], lo, thr, ids, mask))
    ap.add_pooled_counts(np.append(hist[:p], hist[p:].sum()),
                         np.append(bin_max[:p], bin_max[p:].max()))


def average_precision_dense(scores, labels, mask=None) -> dict:
  """Both passes on an in-memory ``[N, C]`` score matrix; returns ``compute()``'s dict.

  Args:
    scores: float ``[N, C]`` (compared in float32).
    labels: ids ``[N, L]`` or dense ``[N, C]`` (relevance > 0).
    mask: optional bool ``[N]``.
  """
  scores = _check_scores(scores, "scores")
  labels = labels_lib.check_labels(labels, num_classes=scores.shape[1], batch_size=scores.shape[0])
  ap = ExactAveragePrecision(scores.shape[1])
  ids = _as_ids(labels)
  ap.add_positives(ids, labels_lib.gather_at_ids(scores, ids), mask)
  ap.finish_pass_one()
  update_dense(ap, scores, ids, mask)
  return ap.compute()
