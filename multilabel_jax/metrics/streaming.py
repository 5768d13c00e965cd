"""Streaming (``clu.metrics``) versions of the ranking and set metrics, for eval loops.

Every class is a ``flax.struct`` dataclass with ``from_model_output``, ``merge``, ``empty`` and
``compute``, and keeps no ``[N, C]`` state:

* :class:`PrecisionAtK`, :class:`RecallAtK`, :class:`NdcgAtK`: sum and count of per-example
  values (exact).
* :class:`PSPAtK`: sums of the per-example numerators and denominators (exact).
* :class:`SetMetric`: per-class ``tp, pred, true`` vectors ``[C]`` (macro) or their totals
  (micro), or per-example sums (samples) (exact).
* :class:`HistogramAveragePrecision` (in :mod:`multilabel_jax.metrics.histogram_average_precision`):
  mAP from per-class score histograms, with a rigorous error bound.

Parameters (``k``, propensities, ``average``...) are class attributes, set by the
``with_*`` factories, which return new metric classes:

  >>> P5 = PrecisionAtK.with_k(5)
  >>> m = P5.empty()
  >>> for scores, labels in batches:  # doctest: +SKIP
  ...   m = m.merge(P5.from_model_output(scores=scores, labels=labels))
  >>> m.compute()  # doctest: +SKIP

Model outputs are passed by keyword, as ``clu.metrics.Collection`` does: ``scores [N, C]``
(float), ``labels`` (dense ``[N, C]`` or ids ``[N, L]``), ``predictions`` (decoded sets, see
:mod:`multilabel_jax.metrics.sets`) and ``mask`` (bool ``[N]``, False for padding examples).
:func:`make_collection` builds a collection for a set of ``k``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from multilabel_jax.metrics import ranking as metrics
from multilabel_jax.metrics import sets as set_metrics
from multilabel_jax.metrics.histogram_average_precision import (  # pylint: disable=unused-import
    APEstimate, HistogramAveragePrecision, average_precision_bracket, default_bin_edges)


def _subclass(base, name: str, **attrs):
  """A pytree-registered subclass of ``base`` with the given class attributes."""
  return flax.struct.dataclass(type(name, (base,), dict(attrs)))


# ----------------------------------------------------------------------- metrics at k


def _ranked(scores, top_ids, k, labels):
  """``top_ids [N, >= k]``, given or ranked from ``scores [N, C]`` (exactly one of them)."""
  if (scores is None) == (top_ids is None):
    raise ValueError("pass exactly one of `scores` [N, C] and `top_ids` [N, r].")
  if top_ids is None:
    return metrics.top_k_hits(scores, labels, k)[1]
  top_ids = jnp.asarray(top_ids)
  if top_ids.ndim != 2 or top_ids.shape[1] < k:
    raise ValueError(f"`top_ids` must be [N, r] with r >= k = {k}, got {top_ids.shape}.")
  return top_ids


@flax.struct.dataclass
class _AtK(clu_metrics.Average):
  """Average of a per-example ``@k`` metric over examples (rows with ``mask`` False skipped)."""
  k = 1

  @staticmethod
  def _per_example(top_ids, labels, k):
    raise NotImplementedError

  @classmethod
  def with_k(cls, k: int):
    """Returns this metric class for a given static ``k``."""
    if k < 1:
      raise ValueError(f"`k` must be positive, got {k}.")
    return _subclass(cls, f"{cls.__name__}{k}", k=k)

  @classmethod
  def from_model_output(cls, *, labels, scores=None, top_ids=None, mask=None, **_):
    """From ``scores [N, C]`` or from ranked candidates ``top_ids [N, r >= k]``."""
    values = cls._per_example(_ranked(scores, top_ids, cls.k, labels), labels, cls.k)
    return super().from_model_output(values=values, mask=mask)


@flax.struct.dataclass
class PrecisionAtK(_AtK):
  """Streaming precision@k (exact); see :func:`multilabel_jax.metrics.precision_at_k`."""
  _per_example = staticmethod(metrics.precision_from_top)


@flax.struct.dataclass
class RecallAtK(_AtK):
  """Streaming recall@k (exact); see :func:`multilabel_jax.metrics.recall_at_k`."""
  _per_example = staticmethod(metrics.recall_from_top)


@flax.struct.dataclass
class NdcgAtK(_AtK):
  """Streaming nDCG@k (exact); see :func:`multilabel_jax.metrics.ndcg_at_k`."""
  _per_example = staticmethod(metrics.ndcg_from_top)


@flax.struct.dataclass
class PSPAtK(clu_metrics.Metric):
  """Streaming propensity-scored precision@k (exact): ``sum(numerator) / sum(denominator)``.

  State: two float32 scalars. Build with ``PSPAtK.with_options(k, propensity)`` where
  ``propensity [C]`` comes from :func:`multilabel_jax.metrics.propensities`.

  Source: pyxclib ``psprecision``; Jain et al. (2016).
  """
  numerator: jnp.ndarray
  denominator: jnp.ndarray
  k = 1
  propensity = None

  @classmethod
  def with_options(cls, k: int, propensity):
    return _subclass(cls, f"PSPAt{k}", k=k, propensity=np.asarray(propensity, np.float32))

  @classmethod
  def empty(cls):
    return cls(numerator=jnp.zeros((), jnp.float32), denominator=jnp.zeros((), jnp.float32))

  @classmethod
  def from_model_output(cls, *, labels, scores=None, top_ids=None, mask=None, **_):
    if cls.propensity is None:
      raise ValueError("Use PSPAtK.with_options(k, propensity) to set the propensities.")
    top_ids = _ranked(scores, top_ids, cls.k, labels)
    terms = metrics.psp_terms_from_top(top_ids, labels, cls.propensity, cls.k, where=mask)
    return cls(numerator=jnp.sum(terms.numerator), denominator=jnp.sum(terms.denominator))

  def merge(self, other):
    return type(self)(numerator=self.numerator + other.numerator,
                      denominator=self.denominator + other.denominator)

  def compute(self):
    return set_metrics.safe_divide(self.numerator, self.denominator)


# ------------------------------------------------------------------------ set metrics

_SET_METRICS = ("precision", "recall", "f1", "hamming_loss", "mean_set_size",
                "average_k_accuracy")


@flax.struct.dataclass
class SetMetric(clu_metrics.Metric):
  """Streaming metric of decoded sets (exact); see :mod:`multilabel_jax.metrics.sets`.

  Build with ``SetMetric.with_options(metric, average=..., num_classes=...)``; then
  ``from_model_output(predictions=..., labels=..., mask=None)``.

  State (int32 unless noted): ``tp, pred, true`` of shape ``[C]`` for ``average="macro"``
  (``3 * C * 4`` bytes) and scalars otherwise; ``samples_total`` (float32, the sum of
  per-example values for ``average="samples"``) and ``count`` (examples seen).
  """
  tp: jnp.ndarray
  pred: jnp.ndarray
  true: jnp.ndarray
  samples_total: jnp.ndarray
  count: jnp.ndarray
  metric = "f1"
  average = "micro"
  zero_division = 0.0
  num_classes = None
  macro_classes = "all"

  @classmethod
  def with_options(cls, metric: str, *, average: str = "micro", zero_division: float = 0.0,
                   num_classes: Optional[int] = None, macro_classes: str = "all"):
    """Args: as :func:`multilabel_jax.metrics.sets.f1_score`; ``metric`` is one of
    precision, recall, f1 (any ``average`` but None), hamming_loss (needs ``num_classes``),
    mean_set_size, average_k_accuracy (the last three ignore ``average``)."""
    if metric not in _SET_METRICS:
      raise ValueError(f"`metric` must be one of {_SET_METRICS}, got {metric!r}.")
    if metric not in ("precision", "recall", "f1"):
      average = "micro"
    if average not in ("micro", "macro", "samples"):
      raise ValueError(f"`average` must be 'micro', 'macro' or 'samples', got {average!r}.")
    if (average == "macro" or metric == "hamming_loss") and num_classes is None:
      raise ValueError(f"{metric} with average={average!r} needs `num_classes`.")
    name = f"Set_{metric}_{average}"
    return _subclass(cls, name, metric=metric, average=average, zero_division=zero_division,
                     num_classes=num_classes, macro_classes=macro_classes)

  @classmethod
  def empty(cls):
    shape = (cls.num_classes,) if cls.average == "macro" else ()
    zeros = jnp.zeros(shape, jnp.int32)
    return cls(tp=zeros, pred=zeros, true=zeros, samples_total=jnp.zeros((), jnp.float32),
               count=jnp.zeros((), jnp.int32))

  @classmethod
  def from_model_output(cls, *, predictions, labels, mask=None, **_):
    macro = cls.average == "macro"
    counts = set_metrics.set_counts(predictions, labels, num_classes=cls.num_classes,
                                    where=mask, per_class=macro)
    n = counts.tp_ex.shape[0]
    where = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask, bool)
    samples_total = jnp.zeros((), jnp.float32)
    if cls.average == "samples":
      values = set_metrics.ratio(cls.metric, counts.tp_ex, counts.pred_ex, counts.true_ex,
                                 cls.zero_division)
      samples_total = jnp.sum(jnp.where(where, values, 0.0))
    if macro:
      tp, pred, true = counts.tp, counts.pred, counts.true
    else:
      tp, pred, true = (jnp.sum(x) for x in (counts.tp_ex, counts.pred_ex, counts.true_ex))
    return cls(tp=tp, pred=pred, true=true, samples_total=samples_total,
               count=jnp.sum(where, dtype=jnp.int32))

  def merge(self, other):
    return type(self)(tp=self.tp + other.tp, pred=self.pred + other.pred,
                      true=self.true + other.true,
                      samples_total=self.samples_total + other.samples_total,
                      count=self.count + other.count)

  def compute(self):
    tp, pred, true = self.tp, self.pred, self.true
    if self.metric == "hamming_loss":
      return set_metrics.safe_divide(pred + true - 2 * tp, self.count * self.num_classes)
    if self.metric == "mean_set_size":
      return set_metrics.safe_divide(pred, self.count)
    if self.metric == "average_k_accuracy":
      return set_metrics.safe_divide(tp, true, self.zero_division)
    if self.average == "samples":
      return set_metrics.safe_divide(self.samples_total, self.count)
    values = set_metrics.ratio(self.metric, tp, pred, true, self.zero_division)
    if self.average == "micro":
      return values
    return set_metrics.macro_mean(values, pred, true, self.macro_classes, self.zero_division)


# ------------------------------------------------------------------------- collection


def _flatten(name, value, out):
  if isinstance(value, APEstimate):
    out[name], out[f"{name}_error"] = value.value, value.error
  elif isinstance(value, dict):
    for suffix, v in value.items():
      _flatten(name + suffix, v, out)
  else:
    out[name] = value


def _flat_compute(self):
  """``Collection.compute`` returning a flat dict of scalars (``APEstimate`` -> 2 entries)."""
  out = {}
  for name, value in clu_metrics.Collection.compute(self).items():
    _flatten(name, value, out)
  return out


def make_collection(ks: Sequence[int] = (1, 3, 5), *, num_classes: Optional[int] = None,
                    propensity=None, average_precision: bool = False, bin_edges=None,
                    sets: bool = False, zero_division: float = 0.0):
  """A ``clu.metrics.Collection`` class with the usual eval metrics.

  Args:
    ks: the ``k`` of ``precision_at_k``, ``recall_at_k`` and ``ndcg_at_k`` (always included).
    num_classes: ``C``; needed for ``average_precision`` and the macro set metrics.
    propensity: ``[C]`` propensities; adds ``psp_at_k`` for each ``k``.
    average_precision: adds ``map`` and ``map_micro`` from score histograms (see
      :class:`HistogramAveragePrecision`); ``compute()`` also returns ``map_error`` and
      ``map_micro_error``, the half-widths of the rigorous brackets.
    bin_edges: histogram edges for ``average_precision`` (default: :func:`default_bin_edges`).
    sets: adds set metrics of ``predictions``: ``f1_micro``, ``f1_samples``,
      ``precision_micro``, ``recall_micro``, ``mean_set_size``, ``average_k_accuracy``, and
      with ``num_classes`` also ``f1_macro`` and ``hamming_loss``.
    zero_division: for the set metrics.

  Returns:
    A ``Collection`` subclass; use ``single_from_model_output(scores=..., labels=...,
    predictions=..., mask=...)``, ``merge``, and ``compute()`` (a flat dict of scalars).

  Example:
    >>> Metrics = make_collection((1, 5))
    >>> m = Metrics.single_from_model_output(scores=s, labels=y)  # doctest: +SKIP
    >>> m.compute()  # {"precision_at_1": ..., "ndcg_at_5": ..., ...}  # doctest: +SKIP
  """
  fields = {}
  for k in ks:
    fields[f"precision_at_{k}"] = PrecisionAtK.with_k(k)
    fields[f"recall_at_{k}"] = RecallAtK.with_k(k)
    fields[f"ndcg_at_{k}"] = NdcgAtK.with_k(k)
    if propensity is not None:
      fields[f"psp_at_{k}"] = PSPAtK.with_options(k, propensity)
  if average_precision:
    if num_classes is None:
      raise ValueError("`average_precision` needs `num_classes`.")
    fields["map"] = HistogramAveragePrecision.with_options(  # One histogram, both averages.
        num_classes, bin_edges=bin_edges, average="both")
  if sets:
    opts = dict(zero_division=zero_division, num_classes=num_classes)
    for metric, average in (("f1", "micro"), ("f1", "samples"), ("precision", "micro"),
                            ("recall", "micro")):
      fields[f"{metric}_{average}"] = SetMetric.with_options(metric, average=average, **opts)
    for metric in ("mean_set_size", "average_k_accuracy"):
      fields[metric] = SetMetric.with_options(metric, **opts)
    if num_classes is not None:
      fields["f1_macro"] = SetMetric.with_options("f1", average="macro", **opts)
      fields["hamming_loss"] = SetMetric.with_options("hamming_loss", **opts)
  return flax.struct.dataclass(type("MultilabelMetrics", (clu_metrics.Collection,),
                                    {"__annotations__": fields, "compute": _flat_compute}))
