"""Calibration on validation: the thresholds of the calibrated decoders.

* average-K (Garcin et al.): the global threshold that gives sets of K labels on average,
  by the midpoint rule of :func:`losses.decoders.calibrate_average_k`. It comes from the
  rows' top-r candidates when they hold the threshold (the usual case), and otherwise from
  an exact search over the pooled scores, by counting passes (:func:`pooled_order_statistic`):
  never a wrong number, at any C.
* per-class F1 thresholds, from the counts of exact mAP
  (:meth:`metrics.ExactAveragePrecision.class_thresholds`), equal to
  :func:`losses.decoders.calibrate_class_thresholds` on the full validation scores.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from multilabel_jax import evaluate
from multilabel_jax.losses import decoders as decoders_lib
from multilabel_jax.metrics import average_precision as ap_lib

_SPLITS = 15  # Thresholds per target and pass: 4 bits of the float32 key a pass.


def _key(x):
  """Order-preserving map of float32 to uint32 (``-inf`` -> smallest, ``+inf`` -> largest)."""
  bits = np.asarray(x, np.float32).view(np.uint32)
  return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31)).astype(np.uint32)


def _value(key):
  key = np.asarray(key, np.uint32)
  bits = np.where(key >> 31, key & np.uint32(0x7FFFFFFF), ~key).astype(np.uint32)
  return bits.view(np.float32)


def pooled_order_statistic(count_at_least: Callable[[np.ndarray], np.ndarray], qs) -> list:
  """The q-th largest pooled score for each ``q`` in ``qs`` (1-based), exactly.

  ``count_at_least(thresholds [m]) -> int [m]`` counts the pooled scores ``>= t`` (one
  pass over the data). A k-ary search over the float32 order: 8 passes of 15 thresholds
  per target.
  """
  qs = [int(q) for q in qs]
  lo = [np.uint32(_key(-np.inf))] * len(qs)  # count(>= value(lo)) >= q
  hi = [np.uint64(_key(np.inf)) + 1] * len(qs)  # count(>= value(hi)) < q (hi may be 2^32)
  while any(int(h) - int(l) > 1 for l, h in zip(lo, hi)):
    cands = []
    for l, h in zip(lo, hi):
      width = int(h) - int(l)
      steps = sorted({int(l) + max(1, (width * i) // (_SPLITS + 1)) for i in range(1, _SPLITS + 1)
                      if int(l) + max(1, (width * i) // (_SPLITS + 1)) < int(h)})
      cands.append(steps)
    flat = np.array([c for cs in cands for c in cs], np.uint32)
    counts = np.asarray(count_at_least(_value(flat)), np.int64)
    i = 0
    for j, cs in enumerate(cands):
      for c in cs:
        if counts[i] >= qs[j]:
          lo[j] = max(lo[j], np.uint32(c))
        else:
          hi[j] = min(hi[j], np.uint64(c))
        i += 1
  return [float(_value(l)) for l in lo]


def average_k_threshold(values, k: float, *, num_classes: int, num_rows: int,
                        count_at_least: Optional[Callable] = None) -> float:
  """The average-K threshold of :func:`decoders.calibrate_average_k` over all ``num_rows x
  num_classes`` validation scores, from the rows' top-r ``values`` when they hold it, else
  by :func:`pooled_order_statistic` with ``count_at_least``."""
  try:
    return decoders_lib.calibrate_average_k(values, k, num_classes=num_classes)
  except ValueError:
    if count_at_least is None:
      raise
  m = int(round(num_rows * k))  # calibrate_average_k returned for m == 0 and m >= n * C.
  upper, lower = pooled_order_statistic(count_at_least, [m, m + 1])
  return float(ap_lib.midpoint_between(upper, lower, np.dtype(np.float32)))


def calibrate(inputs: Mapping, *, num_classes: int, k: Optional[float], average_ks=(),
              min_positives: int = 5, count_at_least: Optional[Callable] = None) -> dict:
  """Thresholds from a validation :func:`evaluate.evaluate` run with ``keep_values=True``.

  Args:
    inputs: its ``"_calibration_inputs"`` (top-r values, labels, the exact-AP state).
    num_classes: C.
    k: K of ``average_k`` (None: the validation mean label count).
    average_ks: further K: ``average_k_at`` maps each (K <= C) to its threshold.
    min_positives: validation positives a class needs for its own F1 threshold (others
      use the micro-F1-optimal global threshold).
    count_at_least: ``thresholds [m] -> int [m]`` pooled counts over the same validation
      rows (:func:`counter`), for K whose threshold lies beyond some row's top-r.

  Returns:
    ``{"average_k": {"k", "threshold"}, "average_k_at": {K: t}, "class_thresholds": [C]}``.
  """
  values = inputs["values"]
  k = mean_labels(inputs["labels"]) if k is None else k

  def threshold(kk):
    return average_k_threshold(values, kk, num_classes=num_classes, num_rows=len(values),
                               count_at_least=count_at_least)

  return {"average_k": {"k": k, "threshold": threshold(k)},
          "average_k_at": {int(kk): threshold(kk) for kk in average_ks if kk <= num_classes},
          "class_thresholds": inputs["ap"].class_thresholds(min_positives=min_positives,
                                                            fallback="global")}


def counter(scorer, batches: Callable[[], Iterable[dict]], max_examples: int = 0):
  """``thresholds -> counts`` of pooled scores ``>= t`` over the rows that
  :func:`evaluate.evaluate` sees, one pass of ``scorer.pass_one`` per call."""
  def count_at_least(thresholds):
    thresholds = np.asarray(thresholds, np.float32)
    total = np.zeros(len(thresholds), np.int64)
    for batch in evaluate.iterate(batches(), max_examples):
      mask = np.asarray(batch["mask"], bool)
      total += np.asarray(scorer.pass_one(batch, thresholds).above, np.int64)[mask].sum(0)
    return total
  return count_at_least


def mean_labels(label_ids: np.ndarray) -> float:
  """Mean number of distinct labels per row of padded ids."""
  ids = np.asarray(label_ids)
  return float(np.mean([len(set(r[r >= 0].tolist())) for r in ids])) if len(ids) else 0.0
