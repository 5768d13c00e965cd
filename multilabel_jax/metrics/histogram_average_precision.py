"""Streaming mean average precision from per-class score histograms, with an error bound.

Exact AP needs every (score, label) pair; at 100k classes that is an ``[N, C]`` state. Here
each class keeps two histograms over fixed bin edges: the number of positives and of all
examples per score bin. Memory: ``2 * C * num_bins * 4`` bytes (int32), e.g. 100 MB for
C = 100k and 128 bins.

Bins are ordered by score and disjoint, so everything in a higher bin outranks everything in
a lower one; only the order inside a bin is unknown. For a bin with ``p`` positives and ``n``
negatives, after ``TP`` positives and ``A`` items in higher bins:

* upper bound: the bin's positives ranked first, tied with each other (sklearn gives tied
  positives the precision at the end of their tie group): ``p * (TP + p) / (A + p)``;
* lower bound: the positives ranked last, one by one:
  ``sum_{j=1..p} (TP + j) / (A + n + j)``.

Every positive's precision lies between these (precision ``(TP + t) / (A + t)`` grows with
``t``), so the exact AP, ties grouped as sklearn's ``average_precision_score`` does, lies in
``[lower, upper]``; both are attained by some ranking consistent with the histogram, so
refining the bins (adding edges) can only shrink the bracket. ``compute()`` returns the
midpoint and half the width as a guaranteed error bound.

The lower-bound sum is exact for the first 16 terms of each bin; the rest is bounded from
below by the midpoint rule, which underestimates sums of the concave ``(TP + x) / (D + x)``.
The bracket is computed on the host in float64 (``compute()`` is not jit-able).

Source: sklearn ``average_precision_score`` (definition of AP); the binning follows the
usual streaming PR-curve approach (e.g. ``tf.keras.metrics.AUC(curve="PR")``, which
interpolates instead of bounding).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
import clu.values

from multilabel_jax import labels as labels_lib

_EXACT_TERMS = 16


def default_bin_edges(num_bins: int = 128, max_logit: float = 12.0) -> np.ndarray:
  """Edges for scores in [0, 1] (sigmoid probabilities), spaced uniformly in logit.

  That is log-spaced near 0 (``sigmoid(x) ~ exp(x)``) and near 1 alike. Gives
  ``num_bins - 1`` edges: ``sigmoid(linspace(-max_logit, max_logit))``; the first and last
  bins are open (``(-inf, e_0)`` and ``[e_last, inf)``), so any score is counted.

  Example:
    >>> default_bin_edges(4, 2.0)  # sigmoid([-2, 0, 2])
    array([0.11920292, 0.5       , 0.88079708])
  """
  if num_bins < 2:
    raise ValueError(f"`num_bins` must be at least 2, got {num_bins}.")
  return 1.0 / (1.0 + np.exp(-np.linspace(-max_logit, max_logit, num_bins - 1)))


class APEstimate(NamedTuple):
  """AP known to lie in ``[lower, upper]``; ``value`` is the midpoint, ``error`` the half-width."""
  value: float
  error: float
  lower: float
  upper: float


def _lower_sum(tp, d, p):
  """Lower bound of ``sum_{j=1..p} (tp + j) / (d + j)`` (float64 arrays, ``d >= tp``)."""
  total = np.zeros_like(tp)
  for j in range(1, _EXACT_TERMS + 1):
    total += np.where(j <= p, (tp + j) / np.maximum(d + j, 1), 0.0)
  m = np.minimum(p, _EXACT_TERMS)
  rest = p - m
  # Midpoint rule on [m + 1/2, p + 1/2]: integral of 1 - (d - tp) / (d + x).
  tail = rest - (d - tp) * np.log1p(rest / (d + m + 0.5))
  return total + np.where(rest > 0, tail, 0.0)


def average_precision_bracket(positives, totals):
  """Per-row AP bounds from histograms.

  Args:
    positives: int ``[R, B]`` positives per bin, bins in increasing score order.
    totals: int ``[R, B]`` all items per bin.

  Returns:
    ``(lower, upper, num_positives)``: float64 ``[R]``, ``[R]`` and int ``[R]``; rows
    without positives give 0.
  """
  pos = np.asarray(positives, np.float64)[:, ::-1]  # Highest scores first.
  tot = np.asarray(totals, np.float64)[:, ::-1]
  tp_before = np.cumsum(pos, axis=1) - pos
  all_before = np.cumsum(tot, axis=1) - tot
  upper = np.where(pos > 0, pos * (tp_before + pos) / np.maximum(all_before + pos, 1), 0.0)
  lower = _lower_sum(tp_before, all_before + (tot - pos), pos)
  num_pos = pos.sum(axis=1)
  denom = np.maximum(num_pos, 1)
  return lower.sum(axis=1) / denom, upper.sum(axis=1) / denom, num_pos.astype(np.int64)


def _estimate(lower, upper) -> APEstimate:
  lower, upper = float(lower), float(upper)
  return APEstimate((lower + upper) / 2, (upper - lower) / 2, lower, upper)


@flax.struct.dataclass
class HistogramAveragePrecision(clu_metrics.Metric):
  """Streaming mAP with a rigorous bracket, from per-class score histograms.

  Build with ``HistogramAveragePrecision.with_options(num_classes, bin_edges=None,
  average="macro")``; ``from_model_output(scores=[N, C], labels=..., mask=None)``.
  ``compute()`` returns an :class:`APEstimate` (``average="both"``: a dict
  ``{"": macro, "_micro": micro}``); macro averages over classes with a positive.

  State: ``positives`` and ``totals``, int32 ``[C, num_bins]`` (``2 * C * num_bins * 4``
  bytes), where ``num_bins = len(bin_edges) + 1``.
  """
  positives: jnp.ndarray
  totals: jnp.ndarray
  num_classes = None
  bin_edges = None
  average = "macro"

  @classmethod
  def with_options(cls, num_classes: int, *, bin_edges=None, average: str = "macro"):
    """Args: ``num_classes`` C; ``bin_edges`` increasing ``[E]`` (default
    :func:`default_bin_edges`); ``average`` "macro", "micro" or "both"."""
    edges = default_bin_edges() if bin_edges is None else np.asarray(bin_edges, np.float32)
    if edges.ndim != 1 or np.any(np.diff(edges) <= 0):
      raise ValueError(f"`bin_edges` must be a strictly increasing 1-D array, got {edges}.")
    if average not in ("macro", "micro", "both"):
      raise ValueError(f"`average` must be 'macro', 'micro' or 'both', got {average!r}.")
    return flax.struct.dataclass(type(
        "HistogramAveragePrecision", (cls,),
        {"num_classes": num_classes, "bin_edges": edges.astype(np.float32), "average": average}))

  @classmethod
  def _num_bins(cls):
    if cls.num_classes is None:
      raise ValueError("Use HistogramAveragePrecision.with_options(num_classes, ...).")
    return len(cls.bin_edges) + 1

  @classmethod
  def empty(cls):
    zeros = jnp.zeros((cls.num_classes, cls._num_bins()), jnp.int32)
    return cls(positives=zeros, totals=zeros)

  @classmethod
  def from_model_output(cls, *, scores, labels, mask=None, **_):
    scores = jnp.asarray(scores)
    labels_lib.check_rank(scores, 2, "scores")
    labels_lib.check_float(scores, "scores")
    n, c = scores.shape
    nb = cls._num_bins()
    if c != cls.num_classes:
      raise ValueError(f"`scores` has {c} classes, the metric {cls.num_classes}.")
    labels = labels_lib.check_labels(labels, num_classes=c, batch_size=n)
    where = labels_lib.check_where(mask, n)
    row_ok = jnp.ones((n,), bool) if where is None else where
    edges = jnp.asarray(cls.bin_edges, scores.dtype)
    bins = jnp.searchsorted(edges, scores, side="right")  # [N, C] in [0, nb).
    flat = jnp.arange(c)[None, :] * nb + bins
    totals = jnp.zeros((c * nb,), jnp.int32).at[flat].add(
        jnp.broadcast_to(row_ok[:, None], flat.shape).astype(jnp.int32))
    if labels_lib.is_ids(labels):
      keep = labels_lib.unique_mask(labels) & row_ok[:, None]
      safe = jnp.where(keep, labels, 0)
      pos_flat = safe * nb + jnp.take_along_axis(bins, safe, axis=1)
      weight = keep
    else:
      pos_flat, weight = flat, (labels > 0) & row_ok[:, None]
    positives = jnp.zeros((c * nb,), jnp.int32).at[pos_flat].add(weight.astype(jnp.int32))
    return cls(positives=positives.reshape(c, nb), totals=totals.reshape(c, nb))

  def merge(self, other):
    return type(self)(positives=self.positives + other.positives,
                      totals=self.totals + other.totals)

  def compute_per_class(self):
    """``(lower, upper, has_positive)``: float64 ``[C]``, ``[C]``, bool ``[C]`` (host)."""
    lower, upper, num_pos = average_precision_bracket(
        jax.device_get(self.positives), jax.device_get(self.totals))
    return lower, upper, num_pos > 0

  def _macro(self) -> APEstimate:
    lower, upper, has_pos = self.compute_per_class()
    if not has_pos.any():
      return _estimate(0.0, 0.0)
    return _estimate(lower[has_pos].mean(), upper[has_pos].mean())

  def _micro(self) -> APEstimate:
    pos = np.asarray(jax.device_get(self.positives), np.int64).sum(0, keepdims=True)
    tot = np.asarray(jax.device_get(self.totals), np.int64).sum(0, keepdims=True)
    lower, upper, _ = average_precision_bracket(pos, tot)
    return _estimate(lower[0], upper[0])

  def compute(self):
    if self.average == "macro":
      return self._macro()
    if self.average == "micro":
      return self._micro()
    return {"": self._macro(), "_micro": self._micro()}

  def compute_value(self):
    value = self.compute()
    return clu.values.Scalar((value[""] if isinstance(value, dict) else value).value)
