"""Ranking metrics for multi-label classification: P@k, R@k, nDCG@k, PSP@k, mAP, LRAP.

Every function takes scores ``[N, C]`` (float; higher is better) and labels in either format
of :mod:`multilabel_jax.labels`: dense ``[N, C]`` (float/bool, relevance is ``label > 0``)
or ids ``[N, L]`` (integer, -1 padded, duplicates count once).

Per-example metrics return ``[N]`` so that callers and the streaming metrics
(:mod:`multilabel_jax.metrics.streaming`) can average them. ``where`` (bool ``[N]``) zeroes
masked rows; average with :func:`masked_mean`, i.e. ``values.sum() / where.sum()``.

Ties: the ``@k`` metrics take the top ``k`` with :func:`jax.lax.top_k`, which puts the lower
class index first among equal scores. The whole-ranking metrics (AP, LRAP, coverage) group
ties exactly as sklearn does.

Set metrics (F1, precision/recall of decoded sets, Hamming loss) live in
:mod:`multilabel_jax.metrics.sets`; both are re-exported by :mod:`multilabel_jax.metrics`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import labels as labels_lib


# ----------------------------------------------------------------------------- helpers


def masked_mean(values, where=None) -> jax.Array:
  """Mean of per-example ``values [N]`` over the rows where ``where [N]`` is True (0 if none)."""
  values = jnp.asarray(values, jnp.float32)
  if where is None:
    return jnp.mean(values) if values.size else jnp.zeros((), jnp.float32)
  where = labels_lib.check_where(where, values.shape[0])
  total = jnp.sum(jnp.where(where, values, 0.0))
  count = jnp.sum(where)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _check(scores, labels):
  """Validates ``scores [N, C]`` and labels; returns them as arrays."""
  scores = jnp.asarray(scores)
  labels_lib.check_rank(scores, 2, "scores")
  labels_lib.check_float(scores, "scores")
  labels = labels_lib.check_labels(labels, num_classes=scores.shape[1],
                                   batch_size=scores.shape[0])
  return scores, labels


def _relevance(labels, num_classes: int) -> jax.Array:
  """Binary relevance ``[N, C]`` bool from either label format."""
  if labels_lib.is_ids(labels):
    return labels_lib.ids_to_dense(labels, num_classes, jnp.bool_)
  return labels > 0


def _mask_rows(values, where):
  where = labels_lib.check_where(where, values.shape[0])
  return values if where is None else jnp.where(where, values, jnp.zeros((), values.dtype))


def _check_k(k: int, num_classes: int):
  if not 0 < k <= num_classes:
    raise ValueError(f"`k` must be in [1, num_classes={num_classes}], got {k}.")


def top_k_hits(scores, labels, k: int):
  """Which of the top ``k`` classes are relevant.

  Args:
    scores: float ``[N, C]``.
    labels: dense ``[N, C]`` or ids ``[N, L]``.
    k: static, ``1 <= k <= C``.

  Returns:
    ``(hits, top_ids)``: bool ``[N, k]`` and int32 ``[N, k]``, best first (ties: lower id).
  """
  scores, labels = _check(scores, labels)
  _check_k(k, scores.shape[1])
  _, top_ids = jax.lax.top_k(scores, k)
  return hits_of_top(top_ids, labels), top_ids


def hits_of_top(top_ids, labels):
  """bool ``[N, k]``: whether each ranked class ``top_ids [N, k]`` (best first) is relevant.

  ``top_ids`` may hold -1 (no candidate): never a hit. ``labels`` dense ``[N, C]`` or ids.
  """
  top_ids = jnp.asarray(top_ids)
  labels = jnp.asarray(labels)
  if labels_lib.is_ids(labels):
    ids = jnp.where(labels_lib.unique_mask(labels), labels, labels_lib.PAD_ID)
    return jnp.any((top_ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] >= 0), axis=-1)
  safe = jnp.clip(top_ids, 0, labels.shape[1] - 1)
  return jnp.take_along_axis(labels > 0, safe, axis=-1) & (top_ids >= 0)


def _top_ids(scores, labels, k):
  scores, labels = _check(scores, labels)
  _check_k(k, scores.shape[1])
  return jax.lax.top_k(scores, k)[1], labels


# ------------------------------------------------------------------------ metrics at k
#
# Each ``*_at_k(scores, ...)`` ranks the scores and calls its ``*_from_top(top_ids, ...)``
# form, which the evaluation loop calls directly on per-row top-r candidates (fused heads of
# 100k-1M classes never build scores ``[N, C]``): one implementation for both.


def precision_at_k(scores, labels, k: int, *, where=None) -> jax.Array:
  """Per-example precision@k ``[N]``: relevant classes among the top ``k``, divided by ``k``.

  Rows without labels give 0 and count in the average, as in pyxclib.

  Example:
    >>> precision_at_k(jnp.array([[0.9, 0.1, 0.5]]), jnp.array([[0, -1]]), k=2)
    Array([0.5], dtype=float32)

  Source: pyxclib ``xclib.evaluation.xc_metrics.precision``.
  """
  top_ids, labels = _top_ids(scores, labels, k)
  return precision_from_top(top_ids, labels, k, where=where)


def precision_from_top(top_ids, labels, k: int, *, where=None) -> jax.Array:
  """:func:`precision_at_k` from ranked class ids ``[N, r]``, ``r >= k`` (best first)."""
  hits = hits_of_top(jnp.asarray(top_ids)[:, :k], labels)
  return _mask_rows(jnp.sum(hits, axis=-1).astype(jnp.float32) / k, where)


def recall_at_k(scores, labels, k: int, *, where=None) -> jax.Array:
  """Per-example recall@k ``[N]``: relevant classes in the top ``k`` over ``|Y|``.

  Rows without labels give 0 (pyxclib divides by ``max(|Y|, 1)``).

  Example:
    >>> recall_at_k(jnp.array([[0.9, 0.1, 0.5]]), jnp.array([[0, 1]]), k=2)
    Array([0.5], dtype=float32)

  Source: pyxclib ``xclib.evaluation.xc_metrics.recall``.
  """
  top_ids, labels = _top_ids(scores, labels, k)
  return recall_from_top(top_ids, labels, k, where=where)


def recall_from_top(top_ids, labels, k: int, *, where=None) -> jax.Array:
  """:func:`recall_at_k` from ranked class ids ``[N, r]``, ``r >= k``."""
  hits = hits_of_top(jnp.asarray(top_ids)[:, :k], labels)
  num_pos = labels_lib.num_positives(labels)
  recall = jnp.sum(hits, axis=-1) / jnp.maximum(num_pos, 1)
  return _mask_rows(recall.astype(jnp.float32), where)


def _discounts(n: int) -> jax.Array:
  return 1.0 / jnp.log2(jnp.arange(n, dtype=jnp.float32) + 2.0)


def ndcg_at_k(scores, labels, k: int, *, where=None) -> jax.Array:
  """Per-example nDCG@k ``[N]`` with binary relevance.

  ``DCG@k = sum_{j<k} rel_j / log2(j + 2)`` over the top ``k``, divided by the ideal
  ``IDCG = sum_{j < min(k, |Y|)} 1 / log2(j + 2)``. Rows without labels give 0 (as sklearn's
  ``ndcg_score``; pyxclib's DCG is 0 there too). Equals ``sklearn.metrics.ndcg_score(k=k)``
  on binary labels when the scores have no ties.

  Example:
    >>> ndcg_at_k(jnp.array([[0.9, 0.1, 0.5]]), jnp.array([[2, -1]]), k=2)  # 1 / log2(3)
    Array([0.63092977], dtype=float32)

  Source: pyxclib ``xclib.evaluation.xc_metrics.ndcg``; Jarvelin & Kekalainen (2002).
  """
  top_ids, labels = _top_ids(scores, labels, k)
  return ndcg_from_top(top_ids, labels, k, where=where)


def ndcg_from_top(top_ids, labels, k: int, *, where=None) -> jax.Array:
  """:func:`ndcg_at_k` from ranked class ids ``[N, r]``, ``r >= k``."""
  hits = hits_of_top(jnp.asarray(top_ids)[:, :k], labels)
  disc = _discounts(k)
  dcg = jnp.sum(hits * disc, axis=-1)
  n_ideal = jnp.minimum(labels_lib.num_positives(labels), k)
  ideal = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(disc)])[n_ideal]
  return _mask_rows(jnp.where(n_ideal > 0, dcg / jnp.where(n_ideal > 0, ideal, 1.0), 0.0), where)


# ----------------------------------------------------------------------------- PSP at k


def propensities(train_label_counts, num_train_examples: int, a: float = 0.55,
                 b: float = 1.5) -> jax.Array:
  """Label propensities ``p_l`` ``[C]`` from training label counts (Jain et al. 2016).

  ``p_l = 1 / (1 + c * exp(-a * log(n_l + b)))`` with ``c = (log N - 1) * (b + 1) ** a``.
  Typical ``(a, b)``: (0.55, 1.5); Wikipedia (0.5, 0.4); Amazon (0.6, 2.6).

  Args:
    train_label_counts: ``[C]`` number of training examples carrying each label; see
      :func:`label_counts`.
    num_train_examples: ``N >= 3``, the size of the training set (for smaller N the
      constant ``c`` is <= 0 and p leaves (0, 1]).

  Example:
    >>> propensities(jnp.array([0., 10., 1000.]), 10_000)  # rarer labels: smaller p
    Array([0.0842..., 0.2199..., 0.7668...], dtype=float32)

  Source: Jain, Prabhu & Varma, "Extreme multi-label loss functions for recommendation,
  tagging, ranking & other missing label applications", KDD 2016; pyxclib
  ``compute_inv_propesity`` (which returns ``1 / p``).
  """
  counts = jnp.asarray(train_label_counts, jnp.float32)
  labels_lib.check_rank(counts, 1, "train_label_counts")
  if num_train_examples < 3:
    raise ValueError(f"`num_train_examples` must be >= 3, got {num_train_examples}: the model "
                     "needs log N > 1, otherwise p is negative or above 1.")
  c = (np.log(num_train_examples) - 1.0) * (b + 1.0) ** a
  return 1.0 / (1.0 + c * jnp.exp(-a * jnp.log(counts + b)))


def label_counts(labels, num_classes: int) -> jax.Array:
  """``[C]`` number of rows carrying each class (relevance ``> 0``; ids count once per row)."""
  labels = labels_lib.check_labels(labels, num_classes=num_classes)
  if labels_lib.is_ids(labels):
    keep = labels_lib.unique_mask(labels)
    safe = jnp.where(keep, labels, num_classes)
    return jnp.zeros((num_classes,), jnp.int32).at[safe].add(1, mode="drop")
  return jnp.sum(labels > 0, axis=0).astype(jnp.int32)


class PSPTerms(NamedTuple):
  """Per-example terms of PSP@k: ``PSP@k = sum(numerator) / sum(denominator)``.

  Attributes:
    numerator: ``[N]`` ``(1/k) * sum_{top k} rel_l / p_l`` of the predicted ranking.
    denominator: ``[N]`` the same for the best ranking (true labels ordered by ``1 / p``).
  """
  numerator: jax.Array
  denominator: jax.Array


def psp_at_k_terms(scores, labels, propensity, k: int, *, where=None) -> PSPTerms:
  """Per-example numerators and denominators ``[N]`` of propensity-scored precision@k.

  Args:
    scores: float ``[N, C]``.
    labels: dense ``[N, C]`` or ids ``[N, L]``; relevance is binary.
    propensity: ``[C]`` from :func:`propensities`.
    k: static, ``1 <= k <= C``.
    where: optional bool ``[N]``; masked rows give 0 in both terms.

  Source: pyxclib ``xclib.evaluation.xc_metrics.psprecision``.
  """
  num_classes = jnp.shape(scores)[-1]
  if jnp.shape(propensity) != (num_classes,):
    raise ValueError(f"`propensity` must have shape ({num_classes},), got "
                     f"{jnp.shape(propensity)}.")
  top_ids, labels = _top_ids(scores, labels, k)
  return psp_terms_from_top(top_ids, labels, propensity, k, where=where)


def psp_terms_from_top(top_ids, labels, propensity, k: int, *, where=None) -> PSPTerms:
  """:func:`psp_at_k_terms` from ranked class ids ``[N, r]``, ``r >= k``."""
  top_ids = jnp.asarray(top_ids)[:, :k]
  labels = jnp.asarray(labels)
  inv_p = 1.0 / jnp.asarray(propensity, jnp.float32)
  hits = hits_of_top(top_ids, labels)
  numerator = jnp.sum(jnp.where(hits, inv_p[jnp.maximum(top_ids, 0)], 0.0), axis=-1) / k
  if labels_lib.is_ids(labels):
    keep = labels_lib.unique_mask(labels)
    gains = jnp.where(keep, inv_p[jnp.where(keep, labels, 0)], 0.0)  # [N, L]
  else:
    gains = jnp.where(labels > 0, inv_p[None, :], 0.0)  # [N, C]
  best, _ = jax.lax.top_k(gains, min(k, gains.shape[1]))
  denominator = jnp.sum(best, axis=-1) / k
  return PSPTerms(_mask_rows(numerator, where), _mask_rows(denominator, where))


def psp_at_k(scores, labels, propensity, k: int, *, where=None) -> jax.Array:
  """Propensity-scored precision@k (scalar): ``sum(numerator) / sum(denominator)``, 0 if empty.

  Example:
    >>> p = jnp.array([0.5, 0.25, 1.0])
    >>> psp_at_k(jnp.array([[0.9, 0.1, 0.5]]), jnp.array([[0, 1]]), p, k=1)  # 2 / 4
    Array(0.5, dtype=float32)

  Source: pyxclib ``psprecision`` (Jain et al. 2016).
  """
  terms = psp_at_k_terms(scores, labels, propensity, k, where=where)
  num, den = jnp.sum(terms.numerator), jnp.sum(terms.denominator)
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


# ------------------------------------------------------------- whole-ranking metrics


def _tie_group_precision_sum(scores, relevant, valid):
  """Sum over relevant items of the precision at the end of their tie group.

  Args:
    scores: float ``[R, M]``; each row is ranked on its own (descending).
    relevant: bool ``[R, M]``.
    valid: bool ``[R, M]``; invalid items are ranked after all valid ones and ignored.

  Returns:
    float32 ``[R]``: ``sum_{relevant j} TP(>= s_j) / #(>= s_j)``, sklearn's step-wise AP
    numerator (and LRAP's, whose "max" ranks are the same tie-group ends).
  """
  m = scores.shape[-1]
  invalid, neg_s, rel = jax.lax.sort(
      ((~valid).astype(jnp.int32), -scores, relevant.astype(jnp.int32)), dimension=1,
      num_keys=2)
  tp = jnp.cumsum(rel, axis=1)
  new_group = (neg_s[:, 1:] != neg_s[:, :-1]) | (invalid[:, 1:] != invalid[:, :-1])
  is_end = jnp.concatenate([new_group, jnp.ones((scores.shape[0], 1), bool)], axis=1)
  # Index of the last item of each item's tie group.
  end = jax.lax.cummin(jnp.where(is_end, jnp.arange(m), m - 1), axis=1, reverse=True)
  precision = jnp.take_along_axis(tp, end, axis=1) / (end + 1).astype(jnp.float32)
  return jnp.sum(jnp.where(rel > 0, precision, 0.0), axis=1)


def average_precision_per_class(scores, labels, *, where=None):
  """Per-class average precision ``[C]`` and whether each class has a positive ``[C]``.

  AP is sklearn's ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over the
  distinct score thresholds, so tied scores form one step. Classes without positives get 0.

  Source: sklearn ``average_precision_score``.
  """
  scores, labels = _check(scores, labels)
  rel = _relevance(labels, scores.shape[1])
  valid = jnp.ones_like(rel) if where is None else jnp.broadcast_to(
      labels_lib.check_where(where, scores.shape[0])[:, None], rel.shape)
  rel = rel & valid
  num_pos = jnp.sum(rel, axis=0)
  total = _tie_group_precision_sum(scores.T, rel.T, valid.T)
  return total / jnp.maximum(num_pos, 1), num_pos > 0


def mean_average_precision(scores, labels, average: str = "macro", *, where=None) -> jax.Array:
  """Mean average precision (scalar), sklearn's ``average_precision_score``.

  Args:
    scores: float ``[N, C]``.
    labels: dense ``[N, C]`` or ids ``[N, L]``.
    average: ``"macro"``: mean of per-class AP over the classes with at least one positive
      (sklearn would count the others as 0); ``"micro"``: AP of all ``N * C`` (score,
      label) pairs ranked together.
    where: optional bool ``[N]``; masked rows are left out.

  Cost: sorts each class's ``N`` scores (micro: all ``N * C``), so it needs the whole
  ``[N, C]`` score matrix; for large eval sets use the streaming, bounded
  :class:`multilabel_jax.metrics.histogram_average_precision.HistogramAveragePrecision`.

  Example:
    >>> mean_average_precision(jnp.array([[0.9, 0.2], [0.3, 0.8]]),
    ...                        jnp.array([[1.0, 0.0], [1.0, 1.0]]))  # (1 + 1) / 2
    Array(1., dtype=float32)

  Source: sklearn ``average_precision_score`` (step-wise, no interpolation).
  """
  if average == "macro":
    ap, has_pos = average_precision_per_class(scores, labels, where=where)
    count = jnp.sum(has_pos)
    return jnp.where(count > 0, jnp.sum(jnp.where(has_pos, ap, 0.0)) / jnp.maximum(count, 1), 0.)
  if average != "micro":
    raise ValueError(f"`average` must be 'macro' or 'micro', got {average!r}.")
  scores, labels = _check(scores, labels)
  rel = _relevance(labels, scores.shape[1])
  valid = jnp.ones_like(rel) if where is None else jnp.broadcast_to(
      labels_lib.check_where(where, scores.shape[0])[:, None], rel.shape)
  rel = rel & valid
  num_pos = jnp.sum(rel)
  total = _tie_group_precision_sum(scores.reshape(1, -1), rel.reshape(1, -1),
                                   valid.reshape(1, -1))[0]
  return total / jnp.maximum(num_pos, 1)


def label_ranking_average_precision(scores, labels, *, where=None) -> jax.Array:
  """Per-example label ranking average precision ``[N]`` (sklearn semantics).

  ``LRAP_i = mean_{j in Y_i} |{l in Y_i: s_l >= s_j}| / |{l: s_l >= s_j}|``; ties share the
  worst ("max") rank. Rows with no labels (or all labels relevant) give 1, as in sklearn.
  ``masked_mean`` of the result equals ``sklearn.metrics.label_ranking_average_precision_score``.

  Example:
    >>> label_ranking_average_precision(jnp.array([[0.9, 0.1, 0.5]]), jnp.array([[1, -1]]))
    Array([0.33333334], dtype=float32)

  Source: sklearn ``label_ranking_average_precision_score``; Tsoumakas et al. (2010).
  """
  scores, labels = _check(scores, labels)
  rel = _relevance(labels, scores.shape[1])
  num_pos = jnp.sum(rel, axis=1)
  total = _tie_group_precision_sum(scores, rel, jnp.ones_like(rel))
  lrap = jnp.where(num_pos > 0, total / jnp.maximum(num_pos, 1), 1.0)
  return _mask_rows(lrap, where)


def coverage_error(scores, labels, *, where=None) -> jax.Array:
  """Per-example coverage error ``[N]``: how far down the ranking all true labels are found.

  ``|{l: s_l >= min_{j in Y_i} s_j}|`` (ties count against the model); rows with no labels
  give 0, as in sklearn. Not in [0, 1]: it ranges over ``[|Y_i|, C]``.

  Example:
    >>> coverage_error(jnp.array([[0.9, 0.1, 0.5]]), jnp.array([[2, -1]]))
    Array([2.], dtype=float32)

  Source: sklearn ``coverage_error``.
  """
  scores, labels = _check(scores, labels)
  if labels_lib.is_ids(labels):
    keep = labels_lib.unique_mask(labels)
    rel_scores = jnp.take_along_axis(scores, jnp.where(keep, labels, 0), axis=1)
  else:
    keep = labels > 0
    rel_scores = scores
  lowest = jnp.min(jnp.where(keep, rel_scores, jnp.inf), axis=1)
  coverage = jnp.sum(scores >= lowest[:, None], axis=1).astype(jnp.float32)
  return _mask_rows(jnp.where(jnp.any(keep, axis=1), coverage, 0.0), where)
