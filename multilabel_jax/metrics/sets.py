"""Metrics of decoded label sets: precision, recall, F1, Hamming loss, set size, coverage.

Predictions are sets, in any of these forms:

* dense bool ``[N, C]`` (True = predicted);
* ids, integer ``[N, K]`` padded with -1 (duplicates count once), e.g.
  ``jnp.where(sets.mask, sets.ids, -1)`` for decoded sets;
* any object with ``.ids`` (int ``[N, K]``) and ``.mask`` (bool ``[N, K]``) attributes, such as
  the decoders' ``DecodedSets``.

Labels are dense ``[N, C]`` (float/bool, relevant where ``> 0``) or ids ``[N, L]``; see
:mod:`multilabel_jax.labels`. Nothing is densified when a side is given as ids; the number
of classes ``C`` comes from a dense side or ``num_classes`` and is needed only for per-class
counts (``average="macro"``/``None``, :func:`hamming_loss`).

The ``average`` options follow sklearn's ``precision_recall_fscore_support``:

* ``"micro"``: from the totals ``TP, FP, FN`` over all examples and classes;
* ``"macro"``: unweighted mean of the per-class values over **all** ``C`` classes, so a
  class absent from both labels and predictions contributes ``zero_division`` (sklearn).
  ``macro_classes="present"`` restricts the mean to classes that occur in the labels or the
  predictions (sklearn with ``labels=present_classes``);
* ``"samples"``: mean over examples of the per-example values;
* ``None``: per-class values ``[C]``.

``zero_division`` is the value of a ratio whose denominator is 0 (sklearn's
``zero_division``, default 0).

Source: sklearn ``precision_score``/``recall_score``/``f1_score``/``hamming_loss``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib

_AVERAGES = ("micro", "macro", "samples", None)


class SetCounts(NamedTuple):
  """Confusion counts of predicted sets against labels (int32).

  Attributes:
    tp_ex, pred_ex, true_ex: ``[N]`` per example: correct predictions, set size, labels.
    tp, pred, true: ``[C]`` per class (None when ``C`` is unknown): correct predictions,
      times predicted, times relevant. ``fp = pred - tp``, ``fn = true - tp``.
  """
  tp_ex: jax.Array
  pred_ex: jax.Array
  true_ex: jax.Array
  tp: Optional[jax.Array] = None
  pred: Optional[jax.Array] = None
  true: Optional[jax.Array] = None


def as_prediction_array(predictions) -> jax.Array:
  """Returns predictions as dense bool ``[N, C]`` or int ids ``[N, K]`` (-1 padded)."""
  if hasattr(predictions, "ids") and hasattr(predictions, "mask"):
    ids, mask = jnp.asarray(predictions.ids), jnp.asarray(predictions.mask, bool)
    if ids.shape != mask.shape:
      raise ValueError(f"`predictions.ids` {ids.shape} and `.mask` {mask.shape} differ.")
    predictions = jnp.where(mask, ids, labels_lib.PAD_ID)
  predictions = jnp.asarray(predictions)
  labels_lib.check_rank(predictions, 2, "predictions")
  if not (predictions.dtype == jnp.bool_ or labels_lib.is_ids(predictions)):
    raise ValueError(
        f"`predictions` must be a bool [N, C] set mask or integer ids [N, K], got dtype "
        f"{predictions.dtype}; threshold or decode scores first.")
  return predictions


def _num_classes(predictions, labels, num_classes):
  """``C`` from the dense sides or ``num_classes`` (None if unknown); checks consistency."""
  dense = [x.shape[1] for x in (predictions, labels) if not labels_lib.is_ids(x)]
  if num_classes is not None:
    dense.append(num_classes)
  if len(set(dense)) > 1:
    raise ValueError(f"Inconsistent numbers of classes: dense predictions/labels and "
                     f"`num_classes` give {dense}.")
  return dense[0] if dense else None


def _valid(x, where, num_classes):
  """Bool ``[N, C]`` (dense) or ``[N, K]`` (ids) of the set members, masked rows dropped."""
  if labels_lib.is_ids(x):
    valid = labels_lib.unique_mask(x)
    if num_classes is not None:
      valid &= x < num_classes
  else:
    valid = x > 0
  return valid if where is None else valid & where[:, None]


def _class_counts(x, valid, num_classes):
  if not labels_lib.is_ids(x):
    return jnp.sum(valid, axis=0, dtype=jnp.int32)
  safe = jnp.where(valid, x, num_classes)
  return jnp.zeros((num_classes,), jnp.int32).at[safe].add(1, mode="drop")


def set_counts(predictions, labels, *, num_classes: Optional[int] = None, where=None,
               per_class: bool = True) -> SetCounts:
  """Per-example and (if ``C`` is known and ``per_class``) per-class confusion counts.

  Args:
    predictions: dense bool ``[N, C]``, ids ``[N, K]`` or an object with ``.ids``/``.mask``.
    labels: dense ``[N, C]`` or ids ``[N, L]``.
    num_classes: ``C``; needed for per-class counts when both sides are ids.
    where: optional bool ``[N]``; masked rows count nothing.
    per_class: also compute the ``[C]`` counts (raises ValueError if ``C`` is unknown).

  Example:
    >>> c = set_counts(jnp.array([[0, 2, -1]]), jnp.array([[2, 1]]), num_classes=3)
    >>> c.tp_ex, c.pred_ex, c.true_ex, c.tp
    (Array([1], dtype=int32), Array([2], dtype=int32), Array([2], dtype=int32),
     Array([0, 0, 1], dtype=int32))
  """
  predictions = as_prediction_array(predictions)
  n = predictions.shape[0]
  c = _num_classes(predictions, jnp.asarray(labels), num_classes)
  labels = labels_lib.check_labels(labels, num_classes=c, batch_size=n)
  if labels_lib.is_ids(predictions):
    labels_lib.check_labels(predictions, num_classes=c, name="predictions")
  if per_class and c is None:
    raise ValueError("Per-class counts need the number of classes: pass `num_classes` "
                     "when both predictions and labels are ids.")
  where = labels_lib.check_where(where, n)
  p_valid, l_valid = _valid(predictions, where, c), _valid(labels, where, c)

  # Hits on an ids side (no [N, C] array) or, with both sides dense, elementwise.
  if labels_lib.is_ids(predictions):
    anchor = predictions
    if labels_lib.is_ids(labels):
      true_ids = jnp.where(l_valid, labels, -2)
      hits = jnp.any(predictions[:, :, None] == true_ids[:, None, :], axis=-1) & p_valid
    else:
      hits = jnp.take_along_axis(l_valid, jnp.where(p_valid, predictions, 0), axis=1) & p_valid
  elif labels_lib.is_ids(labels):
    anchor = labels
    hits = jnp.take_along_axis(p_valid, jnp.where(l_valid, labels, 0), axis=1) & l_valid
  else:
    anchor = None
    hits = p_valid & l_valid

  counts = SetCounts(tp_ex=jnp.sum(hits, axis=1, dtype=jnp.int32),
                     pred_ex=jnp.sum(p_valid, axis=1, dtype=jnp.int32),
                     true_ex=jnp.sum(l_valid, axis=1, dtype=jnp.int32))
  if not per_class:
    return counts
  if anchor is None:
    tp = jnp.sum(hits, axis=0, dtype=jnp.int32)
  else:
    tp = _class_counts(anchor, hits, c)
  return counts._replace(tp=tp, pred=_class_counts(predictions, p_valid, c),
                         true=_class_counts(labels, l_valid, c))


# ------------------------------------------------------------------ ratios from counts


def safe_divide(num, den, zero_division: float = 0.0) -> jax.Array:
  """``num / den`` in float32, ``zero_division`` where ``den == 0``."""
  num, den = jnp.asarray(num, jnp.float32), jnp.asarray(den, jnp.float32)
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), zero_division)


def ratio(metric: str, tp, pred, true, zero_division: float = 0.0) -> jax.Array:
  """Precision ``tp/pred``, recall ``tp/true`` or F1 ``2tp/(pred+true)``, elementwise."""
  if metric == "precision":
    return safe_divide(tp, pred, zero_division)
  if metric == "recall":
    return safe_divide(tp, true, zero_division)
  if metric == "f1":
    return safe_divide(2 * jnp.asarray(tp, jnp.float32), jnp.asarray(pred, jnp.float32) + true,
                       zero_division)
  raise ValueError(f"`metric` must be 'precision', 'recall' or 'f1', got {metric!r}.")


def macro_mean(per_class, pred, true, macro_classes: str = "all",
               zero_division: float = 0.0) -> jax.Array:
  """Mean of per-class values ``[C]`` over all classes or over the present ones."""
  if macro_classes == "all":
    return jnp.mean(per_class)
  if macro_classes != "present":
    raise ValueError(f"`macro_classes` must be 'all' or 'present', got {macro_classes!r}.")
  present = (jnp.asarray(pred) > 0) | (jnp.asarray(true) > 0)
  return safe_divide(jnp.sum(jnp.where(present, per_class, 0.0)), jnp.sum(present),
                     zero_division)


def _score(metric, predictions, labels, average, zero_division, num_classes, macro_classes,
           where):
  if average not in _AVERAGES:
    raise ValueError(f"`average` must be one of {_AVERAGES}, got {average!r}.")
  per_class = average in ("macro", None)
  counts = set_counts(predictions, labels, num_classes=num_classes, where=where,
                      per_class=per_class)
  if average == "micro":
    return ratio(metric, jnp.sum(counts.tp_ex), jnp.sum(counts.pred_ex),
                 jnp.sum(counts.true_ex), zero_division)
  if average == "samples":
    values = ratio(metric, counts.tp_ex, counts.pred_ex, counts.true_ex, zero_division)
    n = counts.tp_ex.shape[0]
    w = jnp.ones((n,), bool) if where is None else labels_lib.check_where(where, n)
    return safe_divide(jnp.sum(jnp.where(w, values, 0.0)), jnp.sum(w))
  values = ratio(metric, counts.tp, counts.pred, counts.true, zero_division)
  if average is None:
    return values
  return macro_mean(values, counts.pred, counts.true, macro_classes, zero_division)


_ARGS_DOC = """
  Args:
    predictions: dense bool ``[N, C]``, ids ``[N, K]`` (-1 padded) or an object with
      ``.ids``/``.mask``.
    labels: dense ``[N, C]`` or ids ``[N, L]``.
    average: ``"micro"`` (default), ``"macro"``, ``"samples"`` or ``None`` (per class ``[C]``).
    zero_division: value of a ratio with a zero denominator (sklearn, default 0).
    num_classes: ``C``; needed for macro/None when both sides are ids.
    macro_classes: ``"all"`` (sklearn) or ``"present"`` (classes in labels or predictions).
    where: optional bool ``[N]``; masked rows are left out.
"""


def precision_score(predictions, labels, *, average: Optional[str] = "micro",
                    zero_division: float = 0.0, num_classes: Optional[int] = None,
                    macro_classes: str = "all", where=None) -> jax.Array:
  """Precision of predicted sets, ``TP / (TP + FP)``; sklearn ``precision_score``.

  Example:
    >>> precision_score(jnp.array([[0, 2, -1]]), jnp.array([[2, 1]]))
    Array(0.5, dtype=float32)
  """
  return _score("precision", predictions, labels, average, zero_division, num_classes,
                macro_classes, where)


def recall_score(predictions, labels, *, average: Optional[str] = "micro",
                 zero_division: float = 0.0, num_classes: Optional[int] = None,
                 macro_classes: str = "all", where=None) -> jax.Array:
  """Recall of predicted sets, ``TP / (TP + FN)``; sklearn ``recall_score``.

  Example:
    >>> recall_score(jnp.array([[0, 2, -1]]), jnp.array([[2, 1]]))
    Array(0.5, dtype=float32)
  """
  return _score("recall", predictions, labels, average, zero_division, num_classes,
                macro_classes, where)


def f1_score(predictions, labels, *, average: Optional[str] = "micro",
             zero_division: float = 0.0, num_classes: Optional[int] = None,
             macro_classes: str = "all", where=None) -> jax.Array:
  """F1 of predicted sets, ``2 TP / (2 TP + FP + FN)``; sklearn ``f1_score``.

  ``average="samples"`` is the example-based F1 (mean of per-example F1).

  Example:
    >>> f1_score(jnp.array([[0, 2, -1]]), jnp.array([[2, 1]]), average="samples")
    Array(0.5, dtype=float32)
  """
  return _score("f1", predictions, labels, average, zero_division, num_classes,
                macro_classes, where)


for _fn in (precision_score, recall_score, f1_score):
  _fn.__doc__ += _ARGS_DOC


def hamming_loss(predictions, labels, *, num_classes: Optional[int] = None,
                 where=None) -> jax.Array:
  """Fraction of wrong (example, class) decisions, ``(FP + FN) / (N * C)``; sklearn.

  Example:
    >>> hamming_loss(jnp.array([[0, 2, -1]]), jnp.array([[2, 1]]), num_classes=4)
    Array(0.5, dtype=float32)
  """
  counts = set_counts(predictions, labels, num_classes=num_classes, where=where)
  wrong = jnp.sum(counts.pred_ex) + jnp.sum(counts.true_ex) - 2 * jnp.sum(counts.tp_ex)
  n = counts.tp_ex.shape[0] if where is None else jnp.sum(jnp.asarray(where, bool))
  return safe_divide(wrong, n * counts.tp.shape[0])


def mean_set_size(predictions, *, where=None) -> jax.Array:
  """Mean number of distinct predicted classes per example (scalar).

  Example:
    >>> mean_set_size(jnp.array([[0, 2, -1], [1, -1, -1]]))
    Array(1.5, dtype=float32)
  """
  predictions = as_prediction_array(predictions)
  where = labels_lib.check_where(where, predictions.shape[0])
  sizes = jnp.sum(_valid(predictions, where, None), axis=1)
  n = predictions.shape[0] if where is None else jnp.sum(where)
  return safe_divide(jnp.sum(sizes), n)


def average_k_accuracy(predictions, labels, *, zero_division: float = 0.0,
                       where=None) -> jax.Array:
  """Fraction of all true labels covered by the predicted sets (micro): ``TP / #labels``.

  With sets from an average-k decoder this is the "average-k accuracy" of set-valued
  classification; it equals micro recall.

  Example:
    >>> average_k_accuracy(jnp.array([[0, 2, -1]]), jnp.array([[2, 1]]))
    Array(0.5, dtype=float32)
  """
  counts = set_counts(predictions, labels, where=where, per_class=False)
  return safe_divide(jnp.sum(counts.tp_ex), jnp.sum(counts.true_ex), zero_division)
