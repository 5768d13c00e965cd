"""Input pipeline: any :class:`~multilabel_jax.data.base.Source` -> per-process numpy batches.

* Training: the global batch at step ``s`` is a pure function of ``(seed, s)``; a resumed run
  (``start_step``) sees exactly the batches of an uninterrupted one. A finite split is walked
  epoch by epoch through a keyed Feistel permutation (a bijection of ``[0, N)`` computed per
  index: O(batch) work, no permutation held in memory); an unbounded stream is read in order
  (its examples are already i.i.d.). Optional inverse-square-root frequency resampling
  (Mahajan et al. 2018) draws examples with probability proportional to the mean or max over
  their labels of ``1 / sqrt(count_c)``, with replacement, from ``uniform(seed, s, row)``.
* Evaluation: every example exactly once (or the first ``max_examples``); the last global
  batch is padded and ``mask`` is False on the padding (whose ``label_ids`` are all -1).
* Sharding: process ``p`` of ``P`` gets rows ``[p B/P, (p+1) B/P)`` of each global batch.
* Prefetch: ``tf.data`` runs ``source.read`` (via ``tf.numpy_function``) ahead in background
  threads; label checks run on the consumer side so ``strict`` raises a plain ValueError.
* Bad labels (ids outside ``[0, C)``, more than ``max_labels`` ids, empty rows) are fixed
  (dropped / truncated), counted in ``pipeline.stats`` and ``source.info.stats``, or raise
  ValueError when ``strict``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Iterator, Optional

import numpy as np

from multilabel_jax import metrics
from multilabel_jax.data import base

_SHUFFLE, _RESAMPLE = 11, 12  # Hash streams.


# --------------------------------------------------------------------------- Index maps.

def feistel_permutation(positions, n: int, key) -> np.ndarray:
  """A keyed pseudo-random bijection of ``[0, n)``, applied elementwise to ``positions``.

  Four-round balanced Feistel network on ``2 * half`` bits (domain < 4n) with cycle walking
  back into ``[0, n)`` (Black & Rogaway 2002). ``key``: a tuple of ints.
  """
  x = np.asarray(positions, np.int64).copy()
  if n <= 1:
    return np.zeros_like(x)
  half = max(1, math.ceil(math.log2(n) / 2))
  mask = (1 << half) - 1

  def encrypt(v):
    left, right = v >> half, v & mask
    for r in range(4):
      f = (base.hash_keys(*key, r, right) & np.uint64(mask)).astype(np.int64)
      left, right = right, left ^ f
    return (left << half) | right

  todo = np.ones(x.shape, bool)
  while todo.any():
    x[todo] = encrypt(x[todo])
    todo = x >= n
  return x


def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> np.ndarray:
  if global_batch_size % process_count:
    raise ValueError(f"Global batch size {global_batch_size} is not divisible by the "
                     f"{process_count} processes.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
  b = global_batch_size // process_count
  return np.arange(process_index * b, (process_index + 1) * b, dtype=np.int64)


def train_indices(step: int, *, global_batch_size: int, seed: int,
                  num_examples: Optional[int], process_index: int = 0, process_count: int = 1,
                  sampling_cdf: Optional[np.ndarray] = None) -> np.ndarray:
  """Example indices int64 ``[global_batch_size / process_count]`` of this process at ``step``.

  Args:
    num_examples: N of a finite split (epoch-wise permutation keyed by ``(seed, epoch)``),
      or None for an unbounded stream (index = global position).
    sampling_cdf: float64 ``[N]`` cumulative example weights: sample with replacement.
  """
  rows = _local_rows(global_batch_size, process_index, process_count)
  pos = step * global_batch_size + rows
  if sampling_cdf is not None:
    u = base.uniform(seed, _RESAMPLE, step, rows) * sampling_cdf[-1]
    return np.minimum(np.searchsorted(sampling_cdf, u, side="right"), len(sampling_cdf) - 1)
  if num_examples is None:
    return pos
  epoch, within = pos // num_examples, pos % num_examples
  out = np.empty_like(pos)
  for e in np.unique(epoch):
    sel = epoch == e
    out[sel] = feistel_permutation(within[sel], num_examples, (seed, _SHUFFLE, int(e)))
  return out


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return -(-num_examples // global_batch_size)


def eval_indices(batch: int, *, num_examples: int, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1):
  """``(indices int64 [b], mask bool [b])`` of global eval batch ``batch`` on this process;
  padding rows point at example 0 and are masked out."""
  rows = _local_rows(global_batch_size, process_index, process_count)
  pos = batch * global_batch_size + rows
  mask = pos < num_examples
  return np.where(mask, pos, 0), mask


# ------------------------------------------------------------------------- Label checks.

def sanitize_labels(label_ids, num_classes: int, max_labels: int, *, strict: bool = False,
                    allow_empty: bool = False, mask=None):
  """Checks and repairs a batch's ``label_ids`` ``[B, L']``.

  Ids outside ``[0, num_classes)`` (other than -1) are dropped, repeats within a row are
  dropped silently, valid ids are compacted to the left and cut to ``max_labels`` columns.
  Rows where ``mask`` is False are ignored (and returned all -1).

  Returns:
    ``(ids int32 [B, max_labels], DataStats)`` with ``out_of_range_ids``,
    ``truncated_labels`` and ``empty_label_sets`` (rows with no valid id left).

  Raises:
    ValueError: if ``strict`` and anything was dropped or truncated, or a row is empty
      (unless ``allow_empty``, for sources whose rows may legitimately be empty).
  """
  ids = np.asarray(label_ids)
  if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"`label_ids` must be integer [batch, labels], got {ids.dtype} {ids.shape}.")
  ids = ids.astype(np.int64)
  live = np.ones(len(ids), bool) if mask is None else np.asarray(mask, bool)
  bad = ((ids < -1) | (ids >= num_classes)) & live[:, None]
  valid = (ids >= 0) & (ids < num_classes) & live[:, None]
  earlier = np.tril(np.ones((ids.shape[1],) * 2, bool), -1)
  repeat = ((ids[:, :, None] == ids[:, None, :]) & earlier & valid[:, None, :]).any(-1)
  valid &= ~repeat  # A repeated id counts once (labels.py convention); not an error.
  order = np.argsort(~valid, axis=1, kind="stable")
  packed = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(ids, order, 1), -1)
  n_valid = valid.sum(1)
  stats = base.DataStats(out_of_range_ids=int(bad.sum()),
                         truncated_labels=int(np.maximum(n_valid - max_labels, 0).sum()),
                         empty_label_sets=int(((n_valid == 0) & live).sum()))
  if strict:
    problems = {k: v for k, v in stats.as_dict().items() if v and not (
        allow_empty and k == "empty_label_sets")}
    if problems:
      raise ValueError(f"Bad labels in batch (strict mode): {problems}.")
  out = np.full((len(ids), max_labels), -1, np.int32)
  w = min(max_labels, packed.shape[1])
  out[:, :w] = packed[:, :w]
  return out, stats


# --------------------------------------------------------------------------- Label stats.

@dataclasses.dataclass(frozen=True)
class LabelStats:
  """Label statistics of the first ``num_examples`` training examples (sanitised labels).

  Attributes:
    counts: int64 ``[C]`` examples carrying each class (PSP@k propensities, PMI, resampling).
    num_examples: examples counted.
    labels_per_example: int64 ``[max_labels + 1]`` histogram of the number of labels.
  """
  counts: np.ndarray
  num_examples: int
  labels_per_example: np.ndarray

  @property
  def mean_labels_per_example(self) -> float:
    return float(np.arange(len(self.labels_per_example)) @ self.labels_per_example /
                 max(self.num_examples, 1))

  def frequencies(self) -> np.ndarray:
    return self.counts / max(self.num_examples, 1)

  def propensities(self, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """``[C]`` propensities for PSP@k (:func:`multilabel_jax.metrics.propensities`)."""
    return np.asarray(metrics.propensities(self.counts, self.num_examples, a, b))


def _scan(source: base.Source, split: str, n: int, chunk: int, fn, start: int = 0):
  info = source.info
  for s in range(start, n, chunk):
    ids = base.read_labels(source, split, np.arange(s, min(s + chunk, n)))
    ids, _ = sanitize_labels(ids, info.num_classes, info.max_labels)
    fn(s, ids)


def compute_label_stats(source: base.Source, split: str = "train",
                        num_examples: Optional[int] = None, chunk: int = 8192, *,
                        process_index: int = 0, process_count: int = 1) -> LabelStats:
  """Counts labels over the first ``num_examples`` (default: the whole finite split).

  With ``process_count`` > 1 only this process's share of them, the contiguous rows
  ``[p n / P, (p + 1) n / P)``: the counts of all processes add up to those of the whole
  (``num_examples`` stays ``n``), see :meth:`InputPipeline.label_stats`.
  """
  n = num_examples if num_examples is not None else source.num_examples(split)
  if n is None:
    raise ValueError(f"Split {split!r} is unbounded: pass `num_examples`.")
  c, lmax = source.info.num_classes, source.info.max_labels
  counts = np.zeros(c, np.int64)
  hist = np.zeros(lmax + 1, np.int64)

  def add(_, ids):
    v = ids[ids >= 0]
    counts[:] += np.bincount(v, minlength=c)
    hist[:] += np.bincount((ids >= 0).sum(1), minlength=lmax + 1)

  _scan(source, split, n * (process_index + 1) // process_count, chunk, add,
        start=n * process_index // process_count)
  return LabelStats(counts, n, hist)


def example_weights(source: base.Source, stats: LabelStats, *, reduce: str = "mean",
                    split: str = "train", chunk: int = 8192) -> np.ndarray:
  """float64 ``[N]``: ``reduce`` (mean|max) over each example's labels of
  ``1 / sqrt(count_c)`` (Mahajan et al. 2018); 0 for an example without labels."""
  if reduce not in ("mean", "max"):
    raise ValueError(f"`reduce` must be 'mean' or 'max', got {reduce!r}.")
  inv = 1.0 / np.sqrt(np.maximum(stats.counts, 1))
  out = np.zeros(stats.num_examples)

  def score(s, ids):
    v = np.where(ids >= 0, inv[np.maximum(ids, 0)], 0.0)
    k = (ids >= 0).sum(1)
    out[s:s + len(ids)] = v.max(1) if reduce == "max" else v.sum(1) / np.maximum(k, 1)

  _scan(source, split, stats.num_examples, chunk, score)
  return out


# ------------------------------------------------------------------------------ Pipeline.

class InputPipeline:
  """Deterministic, sharded, prefetched batches of one source.

  Args:
    source: any ``base.Source``.
    global_batch_size: B across all processes (divisible by ``process_count``).
    seed: shuffling / resampling seed.
    process_index, process_count: default ``jax.process_index()`` / ``jax.process_count()``.
    strict: raise ValueError on bad labels instead of counting and repairing them.
    allow_empty_labels: with ``strict``, empty label sets are still only counted (e.g.
      hashtag_world training rows that lost all tags to missing-label noise).
    resample: None, ``"mean"`` or ``"max"``: inverse-sqrt-frequency example resampling.
    num_train_examples: train on the first N examples (needed to resample or count an
      unbounded stream); default ``source.num_examples("train")``.
    stats_examples: examples counted by ``label_stats`` when the training split is unbounded.
    prefetch: batches prepared ahead by tf.data; 0 reads each batch when it is asked for,
      in the caller's thread, without TensorFlow (plain tracebacks; machines without it).

  Batches are dicts of numpy arrays: the source's inputs ``[b, ...]``, ``label_ids`` int32
  ``[b, max_labels]`` and, for evaluation, ``mask`` bool ``[b]`` (``b = B / process_count``).
  """

  def __init__(self, source: base.Source, *, global_batch_size: int, seed: int = 0,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               strict: bool = False, allow_empty_labels: bool = False,
               resample: Optional[str] = None, num_train_examples: Optional[int] = None,
               stats_examples: int = 100_000, prefetch: int = 2):
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    _local_rows(global_batch_size, process_index, process_count)  # Validates.
    if not isinstance(prefetch, int) or prefetch < 0:
      raise ValueError(f"`prefetch` must be an int >= 0 (0: no tf.data), got {prefetch!r}.")
    if resample not in (None, "mean", "max"):
      raise ValueError(f"`resample` must be None, 'mean' or 'max', got {resample!r}.")
    self.source, self.info = source, source.info
    self.global_batch_size, self.seed = global_batch_size, seed
    self.process_index, self.process_count = process_index, process_count
    self.strict, self.allow_empty_labels = strict, allow_empty_labels
    self.resample, self.prefetch = resample, prefetch
    n = num_train_examples if num_train_examples is not None else source.num_examples("train")
    self.num_train_examples = n
    if resample and n is None:
      raise ValueError("Resampling needs a finite training split: pass `num_train_examples`.")
    self.stats_examples = stats_examples
    self.stats = base.DataStats()
    self._lock = threading.Lock()
    self._label_stats = None
    self._cdf = None

  # -------------------------------------------------------------------- Statistics.

  @property
  def label_stats(self) -> LabelStats:
    """Computed once: over the training split, or its first ``stats_examples`` if unbounded.

    In a multi-process job each process reads the labels of its share of those examples
    and the counts are summed over the processes (the same statistics on every process).
    """
    if self._label_stats is None:
      n = self.num_train_examples if self.num_train_examples is not None else self.stats_examples
      import jax  # pylint: disable=g-import-not-at-top
      if jax.process_count() > 1 and self.process_count == jax.process_count():
        from multilabel_jax import multihost  # pylint: disable=g-import-not-at-top
        part = compute_label_stats(self.source, "train", n, process_index=self.process_index,
                                   process_count=self.process_count)
        counts, hist = multihost.sum_arrays_over_processes(part.counts, part.labels_per_example)
        self._label_stats = LabelStats(counts, n, hist)
      else:
        self._label_stats = compute_label_stats(self.source, "train", n)
    return self._label_stats

  @property
  def sampling_cdf(self) -> Optional[np.ndarray]:
    if self.resample and self._cdf is None:
      w = example_weights(self.source, self.label_stats, reduce=self.resample)
      if not w.any():
        raise ValueError("No training example has a label: nothing to resample.")
      self._cdf = np.cumsum(w)
    return self._cdf

  # ----------------------------------------------------------------------- Indices.

  def train_indices(self, step: int) -> np.ndarray:
    return train_indices(step, global_batch_size=self.global_batch_size, seed=self.seed,
                         num_examples=self.num_train_examples,
                         process_index=self.process_index, process_count=self.process_count,
                         sampling_cdf=self.sampling_cdf)

  def num_eval_batches(self, split: str, max_examples: int = 0) -> int:
    return num_eval_batches(self._eval_size(split, max_examples), self.global_batch_size)

  def eval_indices(self, split: str, batch: int, max_examples: int = 0):
    return eval_indices(batch, num_examples=self._eval_size(split, max_examples),
                        global_batch_size=self.global_batch_size,
                        process_index=self.process_index, process_count=self.process_count)

  def _eval_size(self, split, max_examples: int = 0):
    n = self.source.num_examples(split)
    if n is None:
      raise ValueError(f"Cannot evaluate on the unbounded split {split!r}.")
    return min(n, max_examples) if max_examples else n

  # ----------------------------------------------------------------------- Batches.

  def _finish(self, raw: dict, mask=None, count: bool = True) -> dict:
    ids, stats = sanitize_labels(raw["label_ids"], self.info.num_classes, self.info.max_labels,
                                 strict=self.strict, allow_empty=self.allow_empty_labels,
                                 mask=mask)
    if count:
      with self._lock:
        self.stats.update(stats)
        self.info.stats.update(stats)
    out = {k: np.asarray(v) for k, v in raw.items() if k != "label_ids"}
    out["label_ids"] = ids
    if mask is not None:
      out["mask"] = np.asarray(mask, bool)
    return out

  def train_batch(self, step: int, *, count: bool = True) -> dict:
    """This process's training batch at ``step`` (synchronous, no prefetch).

    ``count=False``: leave ``stats`` alone (a batch read for shapes, not trained on).
    """
    return self._finish(self.source.read("train", self.train_indices(step)), count=count)

  def eval_batch(self, split: str, batch: int, max_examples: int = 0) -> dict:
    idx, mask = self.eval_indices(split, batch, max_examples)
    return self._finish(self.source.read(split, idx), mask)

  def train_iter(self, start_step: int = 0, num_steps: Optional[int] = None) -> Iterator[dict]:
    """Batches of steps ``start_step, start_step + 1, ...`` (forever unless ``num_steps``)."""
    self.sampling_cdf  # pylint: disable=pointless-statement  (computed before threads start)
    stop = start_step + num_steps if num_steps is not None else 2**62
    for step, raw in self._prefetched(start_step, stop, lambda s: self.source.read(
        "train", self.train_indices(s))):
      yield self._finish(raw)

  def eval_iter(self, split: str, max_examples: int = 0) -> Iterator[dict]:
    """Every example of ``split`` once, or its first ``max_examples`` (0: all); the last
    batch padded, see ``mask``. Every process gets the same number of batches."""
    def read(b):
      return self.source.read(split, self.eval_indices(split, b, max_examples)[0])

    for b, raw in self._prefetched(0, self.num_eval_batches(split, max_examples), read):
      yield self._finish(raw, self.eval_indices(split, b, max_examples)[1])

  def _prefetched(self, start: int, stop: int, read):
    """Yields ``(step, raw batch)`` for steps in ``[start, stop)``, read ahead by tf.data
    (``prefetch`` > 0) or in this thread."""
    if self.prefetch == 0:  # The same arrays as tf.data's: the inputs and the label ids.
      dtypes = {k: v.dtype for k, v in self.info.inputs.items()} | {"label_ids": np.int32}
      for step in range(start, stop):
        raw = read(step)
        yield step, {k: np.asarray(raw[k], d) for k, d in dtypes.items()}
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    names = list(self.info.inputs) + ["label_ids"]
    dtypes = [tf.as_dtype(self.info.inputs[k].dtype) for k in self.info.inputs] + [tf.int32]
    errors = []

    def py_read(step):
      try:
        raw = read(int(step))
        return [np.asarray(raw[k], d.as_numpy_dtype) for k, d in zip(names, dtypes)]
      except Exception as e:  # Re-raised as itself on the consumer side.
        errors.append(e)
        raise

    def tf_read(step):
      return tuple(tf.numpy_function(py_read, [step], dtypes, stateful=False))

    ds = tf.data.Dataset.range(start, stop).map(
        tf_read, num_parallel_calls=max(1, self.prefetch), deterministic=True)
    ds = ds.prefetch(self.prefetch)
    step = start
    it = ds.as_numpy_iterator()
    while True:
      try:
        values = next(it)
      except StopIteration:
        return
      except tf.errors.OpError as e:
        if errors:
          raise errors[0] from e
        raise
      yield step, dict(zip(names, values))
      step += 1
