"""Average precision in expectation over the orders of tied scores.

sklearn's AP (:mod:`.average_precision`, :func:`.ranking.average_precision_per_class`)
counts a group of tied scores as one step: every positive in it gets the precision at the
group's end. That is the right reading of a model's scores, which rarely tie, but it
misreads scores that tie by design, such as Bayes-optimal marginals that depend on a
discrete latent (hashtag_world's context labels: every example of a topic gets the same
probability; there it reads them low). Any order of the ties is as good as another, and a
strict ranking must pick one; this module gives the mean AP over all those orders, in
closed form.

For one class, sort by score and take a tie group of ``n`` items with ``a`` positives,
after ``S`` items and ``R`` positives ranked strictly above it. A positive at the group's
position ``j`` (each holds a positive with probability ``a / n``) sees on average
``(j - 1) (a - 1) / (n - 1)`` of the group's other positives above it, so the group adds

  ``(a / n) * sum_j (R + 1 + (j - 1)(a - 1)/(n - 1)) / (S + j)``
  ``= (a / n) * ((R + 1) H + (a - 1)/(n - 1) * (n - (S + 1) H))``,  ``H = sum_j 1/(S + j)``,

to the sum of precisions, which is then divided by the class's positives. Without ties
this is sklearn's AP exactly.

Source: McSherry and Najork, "Computing Information Retrieval Performance Measures
Efficiently in the Presence of Tied Scores", ECIR 2008.

Example:
  >>> expected_average_precision_per_class(np.array([[0.5], [0.5]]), np.array([[1.], [0.]]))
  array([0.75])

(sklearn gives 0.5: both items share one step; the two orders give AP 1 and 1/2.)
"""

from __future__ import annotations

import numpy as np

from multilabel_jax import labels as labels_lib


def _dense_relevance(labels, scores) -> np.ndarray:
  """bool ``[N, C]`` from dense labels (> 0) or ids ``[N, L]`` (-1 padded)."""
  n, c = scores.shape
  labels = labels_lib.check_labels(labels, num_classes=c, batch_size=n)
  if labels_lib.is_ids(labels):
    return np.asarray(labels_lib.ids_to_dense(labels, c, bool))
  return np.asarray(labels) > 0


def expected_average_precision_per_class(scores, labels, *, where=None,
                                         block: int = 1024) -> np.ndarray:
  """Per-class AP, averaged over the orders of tied scores (exact, on the host).

  Args:
    scores: float ``[N, C]`` (compared in float32, like the project's other AP functions;
      no NaN).
    labels: dense ``[N, C]`` (relevance > 0) or int ids ``[N, L]`` padded with -1.
    where: optional bool ``[N]``; masked rows are left out.
    block: classes sorted at a time (memory ``O(N * block)``).

  Returns:
    float64 ``[C]``, NaN for a class without a positive (macro mAP: ``np.nanmean``).
  """
  scores = np.asarray(scores, np.float32)
  labels_lib.check_rank(scores, 2, "scores")
  if np.isnan(scores).any():
    raise ValueError("`scores` contains NaN; AP needs ordered scores.")
  rel = _dense_relevance(labels, scores)
  if where is not None:
    keep = np.asarray(labels_lib.check_where(where, scores.shape[0]), bool)
    scores, rel = scores[keep], rel[keep]
  n, c = scores.shape
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])  # H_k, k <= n.
  out = np.full(c, np.nan)
  for lo in range(0, c, block):
    out[lo:lo + block] = _block(scores[:, lo:lo + block].T, rel[:, lo:lo + block].T, harmonic)
  return out


def _block(scores: np.ndarray, rel: np.ndarray, harmonic: np.ndarray) -> np.ndarray:
  """``[K]`` expected AP of K classes, rows of ``scores`` and ``rel`` ``[K, N]``."""
  k, n = scores.shape
  order = np.argsort(-scores, axis=1, kind="stable")
  s = np.take_along_axis(scores, order, axis=1).ravel()
  y = np.take_along_axis(rel, order, axis=1).ravel()
  row = np.repeat(np.arange(k), n)
  pos = np.tile(np.arange(n), k)  # Items ranked above (within the class).
  starts = np.flatnonzero((pos == 0) | np.append(True, s[1:] != s[:-1]))
  size = np.diff(np.append(starts, s.size)).astype(np.float64)
  a = np.add.reduceat(y.astype(np.float64), starts)
  cum = np.concatenate([[0], np.cumsum(y)])  # Positives before each flat index.
  r = cum[starts] - cum[row[starts] * n]  # ... within the class.
  above = pos[starts]
  h = harmonic[above + size.astype(np.int64)] - harmonic[above]
  spread = np.divide(a - 1, size - 1, out=np.zeros_like(a), where=size > 1)
  gain = a / size * ((r + 1) * h + spread * (size - (above + 1) * h))
  total = np.bincount(row[starts], weights=gain, minlength=k)
  num_pos = rel.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(num_pos > 0, total / num_pos, np.nan)
