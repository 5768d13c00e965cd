"""Scores for evaluation: the two passes every head answers, dense or fused alike.

Evaluation (:mod:`multilabel_jax.evaluate`) asks a scorer two things per batch, and nothing
else, so a 1M-class fused head and a 600-class dense head take the same path:

* ``pass_one(batch, thresholds [m], class_thresholds [C] or None) -> PassOne``: each row's
  top-r classes by score (best first; r at least the largest k), the predicted label counts
  of count objectives, the scores at the row's label ids (the positives of exact mAP), how
  many classes pass each scalar threshold, and for per-class thresholds the top-r classes by
  margin ``score - t_c`` with the number that pass: so every threshold decoder's set, and
  its truncation, are those of the dense decoder with ``max_labels=r``.
* ``pass_two(batch, classes [P'], thresholds [P'], pooled [P]) -> (count_ge [P'],
  max_below [P'], hist [P+1], bin_max [P+1])``: the negatives' counts of exact mAP
  (:mod:`multilabel_jax.metrics.average_precision`).

A dense head computes its scores ``[B, C]`` for one batch at a time; a fused head
(:class:`losses.FusedHead`) streams them over class chunks. :func:`eval_fns` builds both
from a model and its objective; :func:`array_scorer` wraps any ``batch -> scores [B, C]``
function (the simulator's oracle).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from multilabel_jax import models
from multilabel_jax.losses import fused_heads, streaming_top_k
from multilabel_jax.metrics import average_precision as ap_lib


class PassOne(NamedTuple):
  """What pass one returns per batch (numpy after :class:`Scorer`).

  Attributes:
    values, ids: ``[B, r]`` the top-r scores and their classes, best first.
    counts: ``[B]`` predicted label counts, or None.
    label_scores: ``[B, L]`` the scores at the batch's ``label_ids`` (0 at padding).
    above: int ``[B, m]`` classes with ``score >= thresholds[j]``.
    margin_values, margin_ids: ``[B, r]`` the top-r classes by ``score - class_thresholds``
      among those that pass (-inf after them), or None.
    class_above: int ``[B]`` classes with ``score >= class_thresholds``, or None.
    margin_scores: ``[B, r]`` the scores at ``margin_ids``, or None.
    score_sums: ``[B]`` each row's sum of scores over all classes (the expected label
      count of marginals, for the ``expected_f1`` decoder's classes outside the top r).
  """
  values: jax.Array
  ids: jax.Array
  counts: Optional[jax.Array]
  label_scores: jax.Array
  above: jax.Array
  margin_values: Optional[jax.Array] = None
  margin_ids: Optional[jax.Array] = None
  class_above: Optional[jax.Array] = None
  margin_scores: Optional[jax.Array] = None
  score_sums: Optional[jax.Array] = None


def _label_scores(scores, label_ids):
  ids = jnp.asarray(label_ids)
  got = jnp.take_along_axis(scores, jnp.maximum(ids, 0), axis=1)
  return jnp.where(ids >= 0, got, 0.0)


def _margins(scores, t):
  """``score - t`` where the class passes (0 at equality, also for infinities), else -inf."""
  passes = scores >= t
  return jnp.where(passes, jnp.where(scores == t, 0.0, scores - t), -jnp.inf), passes


def threshold_stats(scores, thresholds, class_thresholds, r: int, start=0):
  """``(above [B, m], margin top-r or None, class_above or None)`` of one chunk of scores
  ``[B, w]`` whose first class is ``start``; the margin top-r is ``(values, (ids,
  scores))``."""
  above = jnp.stack([jnp.sum(scores >= thresholds[j], axis=1, dtype=jnp.int32)
                     for j in range(thresholds.shape[0])], axis=1) if thresholds.shape[0] \
      else jnp.zeros((scores.shape[0], 0), jnp.int32)
  if class_thresholds is None:
    return above, None, None
  t = jax.lax.dynamic_slice_in_dim(class_thresholds, start, scores.shape[1])
  margin, passes = _margins(scores, t[None, :])
  mv, mi = jax.lax.top_k(margin, min(r, scores.shape[1]))
  at = jnp.take_along_axis(scores, mi, axis=1)
  return (above, (mv, ((mi + start).astype(jnp.int32), at)),
          jnp.sum(passes, axis=1, dtype=jnp.int32))


def dense_pass_one(scores, counts, label_ids, r: int, thresholds, class_thresholds=None,
                   score_sums: bool = False):
  """:func:`pass_one` of dense scores ``[B, C]`` (``score_sums``: with the rows' sums, for
  marginals)."""
  values, ids = jax.lax.top_k(scores, r)
  above, margin, class_above = threshold_stats(scores, thresholds, class_thresholds, r)
  mv, (mi, ms) = margin if margin is not None else (None, (None, None))
  return PassOne(values, ids, counts, _label_scores(scores, label_ids), above, mv, mi,
                 class_above, ms, jnp.sum(scores, axis=1) if score_sums else None)


def _fused_threshold_stats(head, x, heads, outputs, thresholds, class_thresholds, r, opts):
  """:func:`threshold_stats` over every class chunk of a fused head (``opts``: chunk size,
  mesh and the row stats)."""
  b = x.shape[0]
  init = [jnp.zeros((b, thresholds.shape[0]), jnp.int32), None, None]
  if class_thresholds is None and not thresholds.shape[0]:
    return tuple(init)  # Nothing to count: no pass over the classes.
  if class_thresholds is not None:
    init[1] = (jnp.full((b, r), -jnp.inf, jnp.float32),
               (jnp.full((b, r), -1, jnp.int32), jnp.zeros((b, r), jnp.float32)))
    init[2] = jnp.zeros((b,), jnp.int32)

  def add(carry, scores, start):
    above, margin, class_above = threshold_stats(scores, thresholds, class_thresholds, r, start)
    if margin is None:
      return (carry[0] + above, None, None)
    merged = streaming_top_k.merge_top_k(*carry[1], *margin, r)
    return (carry[0] + above, merged, carry[2] + class_above)

  return fused_heads.fold_scores(head, x, heads, outputs, add, tuple(init), **opts)


def dense_pass_two(scores, label_ids, mask, classes, thresholds, pooled):
  """:func:`pass_two` of dense scores ``[B, C]``."""
  count_ge, max_below = ap_lib.column_counts(scores[:, classes], thresholds, classes,
                                             label_ids, mask)
  hist, bin_max = ap_lib.pooled_counts(scores, 0, pooled, label_ids, mask)
  return count_ge, max_below, hist, bin_max


def eval_fns(model, objective, *, r: int, use_fused: bool, chunk_size: int, mesh=None):
  """Pure ``pass_one(state, batch)`` and ``pass_two(state, batch, classes, thresholds,
  pooled)`` of a model's objective (``state`` holds ``params`` and ``model_state``)."""
  head = objective.fused if use_fused else None
  skip = head.heads if head else ()

  def apply(state, batch):
    variables = {"params": state["params"], **state["model_state"]}
    return model.apply(variables, batch, skip_heads=skip)

  def fused_inputs(state, outputs):
    heads = fused_heads.head_arrays(head, lambda n: models.head_params(state["params"], n))
    return outputs["pre_logits"].astype(jnp.float32), heads

  counts_fn = objective.counts_fn or (lambda outputs: None)

  def pass_one(state, batch, thresholds, class_thresholds=None):
    outputs = apply(state, batch)
    if head is None:
      return dense_pass_one(objective.scores(outputs), counts_fn(outputs), batch["label_ids"], r,
                            thresholds, class_thresholds, objective.marginals)
    x, heads = fused_inputs(state, outputs)
    opts = dict(chunk_size=chunk_size, mesh=mesh)
    opts["stats"] = fused_heads.row_stats(head, x, heads, outputs, **opts)  # Computed once.
    values, ids = fused_heads.top_scores(head, x, heads, outputs, r, **opts)
    at = fused_heads.scores_at(head, x, heads, outputs, batch["label_ids"], **opts)
    above, margin, class_above = _fused_threshold_stats(head, x, heads, outputs, thresholds,
                                                        class_thresholds, r, opts)
    mv, (mi, ms) = margin if margin is not None else (None, (None, None))
    sums = fused_heads.fold_scores(  # One more pass over the chunks, for expected_f1 only.
        head, x, heads, outputs, lambda total, scores, _: total + jnp.sum(scores, axis=1),
        jnp.zeros(x.shape[:1], jnp.float32), **opts) if objective.marginals else None
    return PassOne(values, ids, counts_fn(outputs), at, above, mv, mi, class_above, ms, sums)

  def pass_two(state, batch, classes, thresholds, pooled):
    outputs = apply(state, batch)
    label_ids, mask = batch["label_ids"], batch["mask"]
    if head is None:
      return dense_pass_two(objective.scores(outputs), label_ids, mask, classes, thresholds,
                            pooled)
    x, heads = fused_inputs(state, outputs)
    opts = dict(chunk_size=chunk_size, mesh=mesh)
    opts["stats"] = fused_heads.row_stats(head, x, heads, outputs, **opts)
    cols = fused_heads.scores_at(head, x, heads, outputs, classes, **opts)
    count_ge, max_below = ap_lib.column_counts(cols, thresholds, classes, label_ids, mask)

    def add(carry, scores, start):
      hist, bin_max = ap_lib.pooled_counts(scores, start, pooled, label_ids, mask)
      return carry[0] + hist, jnp.maximum(carry[1], bin_max)

    init = (jnp.zeros(pooled.shape[0] + 1, jnp.int32),
            jnp.full(pooled.shape[0] + 1, -jnp.inf, jnp.float32))
    hist, bin_max = fused_heads.fold_scores(head, x, heads, outputs, add, init, **opts)
    return count_ge, max_below, hist, bin_max

  return pass_one, pass_two


def gather(tree):
  """Global arrays as numpy on every process. A global array replicated on every device is
  read from a local copy; any other (sharded, or this process's own rows) is all-gathered
  across processes, the rows of each process in turn."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, tree)

  def one(a):
    if isinstance(a, jax.Array) and a.is_fully_replicated and not a.is_fully_addressable:
      return np.asarray(a.addressable_data(0))
    return multihost_utils.process_allgather(a, tiled=True)

  return jax.tree_util.tree_map(one, tree)


class Scorer:
  """Binds jitted ``pass_one`` / ``pass_two`` to a state; ``to_device`` places a batch.

  In a multi-process run each process passes its rows of a global batch and gets the
  outputs of the whole batch (all-gathered); :meth:`rows` gives the labels and mask of the
  whole batch in the same order, for the host-side metrics.
  """

  def __init__(self, pass_one: Callable, pass_two: Callable, state=None, *,
               to_device: Callable = lambda b: b, process_local: bool = False):
    """``process_local``: the passes compute on this process's rows only (host scores), so
    pass two's counts are added up, and its maxima taken, across processes."""
    self._one, self._two, self._state, self._put = pass_one, pass_two, state, to_device
    self._local = process_local

  def pass_one(self, batch, thresholds, class_thresholds=None) -> PassOne:
    return gather(self._one(self._state, self._put(batch), thresholds, class_thresholds))

  def pass_two(self, batch, classes, thresholds, pooled):
    out = self._two(self._state, self._put(batch), classes, thresholds, pooled)
    if not self._local or jax.process_count() == 1:
      return gather(out)
    count_ge, max_below, hist, bin_max = multihost_utils.process_allgather(out)  # [P, ...]
    return (count_ge.sum(0, dtype=count_ge.dtype), max_below.max(0),
            hist.sum(0, dtype=hist.dtype), bin_max.max(0))

  def rows(self, batch):
    """``(label_ids, mask)`` of the global batch as numpy, in the order of the outputs."""
    rows = {"label_ids": batch["label_ids"], "mask": batch["mask"]}
    if jax.process_count() == 1:
      return np.asarray(rows["label_ids"]), np.asarray(rows["mask"])
    rows = gather(self._put(rows))
    return rows["label_ids"], rows["mask"]


def array_scorer(scores_fn: Callable, r: int, counts_fn: Optional[Callable] = None) -> Scorer:
  """A :class:`Scorer` of ``scores_fn(batch) -> [B, C]`` host scores (e.g. the oracle)."""
  one = jax.jit(lambda s, c, y, t, tc: dense_pass_one(s, c, y, r, t, tc, score_sums=True))
  two = jax.jit(lambda s, y, m, cl, t, p: dense_pass_two(s, y, m, cl, t, p))

  def pass_one(_, batch, thresholds, class_thresholds=None):
    counts = None if counts_fn is None else jnp.asarray(counts_fn(batch))
    return one(jnp.asarray(scores_fn(batch), jnp.float32), counts, batch["label_ids"],
               thresholds, class_thresholds)

  def pass_two(_, batch, classes, thresholds, pooled):
    return two(jnp.asarray(scores_fn(batch), jnp.float32), batch["label_ids"], batch["mask"],
               classes, thresholds, pooled)

  return Scorer(pass_one, pass_two, process_local=True)
