"""Evaluation: one streaming path for every head, dense or fused.

A scorer (:mod:`multilabel_jax.scoring`) answers two passes over a split:

1. per batch, each row's top-r candidates ``(values, ids)`` (r = ``eval.max_set_size``, at
   least the largest k), the predicted counts, and the scores at the row's labels. Every
   @k ranking metric comes from the candidates (:mod:`multilabel_jax.metrics.ranking`'s
   ``*_from_top``), and every decoder picks its set from them (:func:`make_decoders`); set
   metrics stream per decoder. No ``[N, C]`` array is kept.
2. the negatives' counts of exact mAP (:class:`metrics.ExactAveragePrecision`), macro and
   micro, equal to sklearn's ``average_precision_score``; on validation the same counts
   give the per-class F1 thresholds.

Every decoder's set equals the dense decoder's with ``max_labels=r`` (threshold sets keep
their r largest margins), and ``num_truncated`` counts the labels that qualified but did not
fit, exactly: pass one also counts, over all C classes, those that pass each threshold.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import labels as labels_lib
from multilabel_jax import metrics as metrics_lib
from multilabel_jax.losses import expected_f1 as expected_f1_lib
from multilabel_jax.metrics import average_precision as ap_lib
from multilabel_jax.metrics import streaming as streaming_metrics

SET_COLUMNS = ("mean_set_size", "precision_micro", "recall_micro", "f1_micro", "f1_macro",
               "f1_samples", "hamming_loss", "average_k_accuracy")
AP_BLOCK = 16_384  # Positives per pass-two call (bounds the [B, P'] column scores).
MAP_METHOD = "exact two-pass (sklearn average_precision_score)"


def iterate(batches: Iterable[dict], max_examples: int = 0, rows: Optional[Callable] = None):
  """``(batch, label_ids, mask)`` of each eval batch, with at most ``max_examples`` rows
  counted (0: all).

  ``rows``: ``batch -> (label_ids, mask)`` of the whole global batch, in the order of the
  scorer's outputs (:meth:`scoring.Scorer.rows`; in a multi-process run each process reads
  only its rows). None: the batch's own. Where the cut drops rows, the batch's ``mask`` is
  cut too; in a multi-process run the batches must come cut (``eval_iter(split,
  max_examples)``), since a process cannot cut the others' rows.
  """
  seen = 0
  for batch in batches:
    if rows is None:
      labels, mask = np.asarray(batch["label_ids"]), np.asarray(batch["mask"], bool)
    else:
      labels, mask = (np.asarray(a) for a in rows(batch))
      mask = mask.astype(bool)
    if max_examples:
      keep = mask & (np.cumsum(mask) + seen <= max_examples)
      if (keep != mask).any():
        if len(mask) != len(batch["mask"]):
          raise ValueError(f"max_examples={max_examples} cuts a global batch that this "
                           "process holds a part of: read the eval batches cut "
                           "(InputPipeline.eval_iter(split, max_examples)).")
        batch = dict(batch, mask=keep)
      mask = keep
    seen += int(mask.sum())
    yield batch, labels, mask
    if max_examples and seen >= max_examples:
      return


# ------------------------------------------------------------------ decoders on top-r
#
# A decoder maps pass one's output (:class:`scoring.PassOne`) to a :class:`Decoded`: the set
# a dense decoder with ``max_labels=r`` returns, the labels that qualified but did not fit
# (``num_truncated``), and the scores of the set. The same functions decode numpy arrays on
# the host (evaluation) and jax arrays in a compiled function (``xp=jax.numpy``: the
# :class:`inference.Predictor` and its exported form), so prediction decodes as evaluation
# does.


class ScoreDecoding(NamedTuple):
  """What :func:`make_decoders` asks of an objective, for scores that have none (the
  oracle's marginals, a baseline's probabilities): see :class:`losses.Objective`."""
  top_k_prefix: str = "top"
  fixed_threshold: Optional[float] = 0.5
  counts_fn: Optional[Callable] = None
  marginals: bool = False


# Per-class probabilities (the oracle's marginals, a one-vs-rest baseline's): top-k,
# threshold 0.5, the calibrated decoders and expected_f1.
PROBABILITIES = ScoreDecoding(marginals=True)


class Decoded(NamedTuple):
  """A decoder's sets for one batch.

  Attributes:
    ids: int ``[B, r]`` class ids, best first, -1 after the set.
    num_truncated: int ``[B]`` labels that qualified but did not fit in r slots.
    scores: float ``[B, r]`` the scores at ``ids`` (-inf after the set).
  """
  ids: Any
  num_truncated: Any
  scores: Any


def _kept(keep, ids, values, truncated, xp) -> Decoded:
  return Decoded(xp.where(keep, ids, -1), truncated, xp.where(keep, values, -xp.inf))


def _keep_first(n):
  def fn(p, xp=np):
    keep = xp.arange(p.ids.shape[1])[None, :] < n
    return _kept(keep, p.ids, p.values, xp.zeros(p.ids.shape[0], xp.int32), xp)
  return fn


def _keep_above(t, j):
  """Scalar threshold ``t``, the ``j``-th of pass one's thresholds: candidates are ranked by
  score, so the kept ones are the set's r best; ``above`` counts all that pass."""
  def fn(p, xp=np):
    keep = (p.values >= t) & (p.ids >= 0)
    return _kept(keep, p.ids, p.values, xp.asarray(p.above)[:, j] - keep.sum(1), xp)
  return fn


def _keep_class_thresholds(p, xp=np):
  keep = p.margin_values > -xp.inf  # Margin candidates are the passing classes, best first.
  return _kept(keep, p.margin_ids, p.margin_scores, xp.asarray(p.class_above) - keep.sum(1),
               xp)


def _by_count(num_classes):
  """The best ``round(count)`` labels, at most C (as :func:`losses.decoders.by_count`)."""
  def fn(p, xp=np):
    n = xp.clip(xp.round(p.counts), 0, num_classes).astype(xp.int32)
    r = p.ids.shape[1]
    keep = xp.arange(r)[None, :] < xp.minimum(n, r)[:, None]
    return _kept(keep, p.ids, p.values, xp.maximum(n - r, 0), xp)
  return fn


def _expected_f1(p, xp=np):
  """The top-k set of highest expected instance-wise F1 with k >= 1, reading the scores as
  independent marginals (:func:`losses.expected_f1.expected_f1_sets`; the classes outside
  the top r enter through the row's score sum as a Poisson count)."""
  probs = xp.clip(xp.where(p.ids >= 0, p.values, 0.0), 0.0, 1.0)
  tail = None
  if p.score_sums is not None:
    tail = xp.maximum(xp.asarray(p.score_sums, probs.dtype) - probs.sum(1), 0.0)
  k, _ = expected_f1_lib.expected_f1_sets(probs, tail, min_k=min(1, probs.shape[1]), xp=xp)
  keep = (xp.arange(probs.shape[1])[None, :] < k[:, None]) & (p.ids >= 0)
  return _kept(keep, p.ids, p.values, xp.zeros(p.ids.shape[0], xp.int32), xp)


def scalar_thresholds(objective, calibration: Mapping) -> Dict[str, float]:
  """Decoder name -> scalar threshold, for the objective's fixed one and the calibrated
  average-K ones."""
  out = {}
  if objective.fixed_threshold is not None:
    out[f"threshold_{objective.fixed_threshold}"] = objective.fixed_threshold
  average = calibration.get("average_k", {}).get("threshold")
  if average is not None:
    out["average_k"] = average
  for k, t in calibration.get("average_k_at", {}).items():
    out[f"average_k_{k}"] = t
  return out


def decoder_rules(objective, calibration: Mapping, *, top_ks, r: int) -> Dict[str, dict]:
  """Decoder name -> its rule, as data: ``{"rule": "top_k", "k": k}``, ``{"rule":
  "threshold", "threshold": t}`` (the fixed and the average-K ones), ``{"rule":
  "class_thresholds"}`` (per-class F1 thresholds), ``{"rule": "by_count"}`` (the best
  ``round(predicted count)`` labels) or ``{"rule": "expected_f1"}`` (the expected-F1 top-k
  set of marginals): every decoder that applies to ``objective`` under ``calibration``, in
  :func:`make_decoders` order."""
  out = {f"{objective.top_k_prefix}_{k}": {"rule": "top_k", "k": int(k)}
         for k in top_ks if k <= r}
  for name, t in scalar_thresholds(objective, calibration).items():
    out[name] = {"rule": "threshold", "threshold": float(t)}
  if calibration.get("class_thresholds") is not None:
    out["class_thresholds"] = {"rule": "class_thresholds"}
  if objective.counts_fn is not None:
    out["by_count"] = {"rule": "by_count"}
  if getattr(objective, "marginals", False):
    out["expected_f1"] = {"rule": "expected_f1"}
  return out


def make_decoders(objective, calibration: Mapping, *, top_ks, r: int,
                  num_classes: int) -> Dict[str, Callable]:
  """Decoder name -> ``(PassOne, xp=numpy) -> Decoded``: every decoder that applies to
  ``objective`` (:func:`decoder_rules`), with the thresholds of ``calibration``
  (:func:`calibrate`; empty for periodic validation). Scalar thresholds are in
  :func:`scalar_thresholds` order, the order of pass one's ``above``."""
  out, j = {}, 0
  for name, rule in decoder_rules(objective, calibration, top_ks=top_ks, r=r).items():
    if rule["rule"] == "top_k":
      out[name] = _keep_first(rule["k"])
    elif rule["rule"] == "threshold":
      out[name], j = _keep_above(rule["threshold"], j), j + 1
    else:
      out[name] = {"class_thresholds": _keep_class_thresholds, "expected_f1": _expected_f1,
                   "by_count": _by_count(num_classes)}[rule["rule"]]
  return out


def decoder_inputs(objective, calibration: Mapping, name: str):
  """``(thresholds [m], class_thresholds [C] or None)``: what pass one must count for the
  decoder ``name`` of :func:`make_decoders` (nothing for top-k and by-count sets)."""
  scalar = scalar_thresholds(objective, calibration)
  thresholds = np.asarray(list(scalar.values()) if name in scalar else [], np.float32)
  class_thresholds = None
  if name == "class_thresholds":
    class_thresholds = np.asarray(calibration["class_thresholds"], np.float32)
  return thresholds, class_thresholds


# ------------------------------------------------------------------ the two passes


def _ap_targets(ap):
  """Pass-two inputs in fixed-size blocks: (classes, thresholds) padded, and the pooled."""
  p = ap.num_positives
  size = min(AP_BLOCK, max(p, 1))
  blocks = []
  for start in range(0, max(p, 1), size):
    cls = np.zeros(size, np.int32)
    thr = np.full(size, np.inf, np.float32)  # Padding: no negative reaches +inf.
    n = min(size, p - start)
    cls[:n], thr[:n] = ap.positive_classes[start:start + n], ap.positive_scores[start:start + n]
    blocks.append((start, n, cls, thr))
  return blocks, np.asarray(ap.pooled_thresholds, np.float32)


def _pass_two(scorer, batches, ap, max_examples):
  blocks, pooled = _ap_targets(ap)
  for batch, _, _ in iterate(batches(), max_examples, getattr(scorer, "rows", None)):
    for j, (start, n, cls, thr) in enumerate(blocks):
      count_ge, max_below, hist, bin_max = scorer.pass_two(batch, cls, thr, pooled)
      ap.add_column_counts(start, np.asarray(count_ge)[:n], np.asarray(max_below)[:n])
      if j == 0:
        ap.add_pooled_counts(hist, bin_max)


def evaluate(scorer, batches: Callable[[], Iterable[dict]], *, objective, num_classes: int,
             top_ks, r: int, calibration: Optional[Mapping] = None, propensity=None,
             max_examples: int = 0, class_buckets=None, pr_curve: bool = False,
             keep_values: bool = False, exact_map: bool = True) -> dict:
  """Ranking metrics (exact mAP included) and every decoder's set metrics on one split.

  Args:
    scorer: a :class:`scoring.Scorer`.
    batches: ``() -> iterator`` of eval batches (``label_ids``, ``mask``, inputs); called
      once per pass.
    objective: the :class:`losses.Objective` (its decoders, prefix and counts).
    r: candidates per row.
    calibration: thresholds for the calibrated decoders (None: only the fixed ones).
    class_buckets: int ``[C]`` bucket of each class (:func:`frequency_buckets`): adds
      ``"buckets"``: per-bucket mAP, and per decoder the micro recall and macro F1.
    pr_curve: adds ``"pr_curve"``, the exact micro precision-recall curve.
    keep_values: also return the top-r values, ids and labels (for calibration) and the
      :class:`metrics.ExactAveragePrecision` state, under ``"_calibration_inputs"``.
    exact_map: False: one pass only, without mAP (the decoders' set metrics and ranking at
      k; e.g. to compare calibrated decoders on validation).

  Returns:
    ``{"num_examples", "ranking": {metric: value}, "decoders": {name: {metric: value,
    "num_truncated": int}}, "set_size_counts", "map_method"}`` (+ the optional keys).
  """
  ks = tuple(k for k in top_ks if k <= r)
  calibration = calibration or {}
  decoders = make_decoders(objective, calibration, top_ks=top_ks, r=r, num_classes=num_classes)
  thresholds = np.asarray(list(scalar_thresholds(objective, calibration).values()), np.float32)
  class_thresholds = calibration.get("class_thresholds")
  if class_thresholds is not None:
    class_thresholds = np.asarray(class_thresholds, np.float32)
  inv_p = None if propensity is None else jnp.asarray(propensity, jnp.float32)
  ap = ap_lib.ExactAveragePrecision(num_classes)
  sums, per_decoder, truncated, n = {}, {name: None for name in decoders}, {}, 0
  sizes = {name: {} for name in ("labels", *decoders)}
  kept = {"values": [], "ids": [], "labels": []}
  for batch, labels, mask in iterate(batches(), max_examples, getattr(scorer, "rows", None)):
    one = scorer.pass_one(batch, thresholds, class_thresholds)
    values, ids = one.values, one.ids
    ap.add_positives(labels, one.label_scores, mask)
    _count_sizes(sizes["labels"], labels_lib.unique_mask(labels) & (labels >= 0), mask)
    for key, v in _ranking_terms(ids, labels, mask, inv_p, ks=ks).items():
      sums[key] = sums.get(key, 0.0) + float(np.sum(np.asarray(v, np.float64)))
    n += int(mask.sum())
    for name, decode in decoders.items():
      preds, trunc, _ = decode(one)
      _count_sizes(sizes[name], preds >= 0, mask)
      truncated[name] = truncated.get(name, 0) + int(np.asarray(trunc)[mask].sum())
      update = _sets_update(jnp.asarray(preds), jnp.asarray(labels), jnp.asarray(mask),
                            num_classes=num_classes)
      per_decoder[name] = update if per_decoder[name] is None else per_decoder[name].merge(update)
    if keep_values:
      kept["values"].append(values[mask])
      kept["ids"].append(ids[mask])
      kept["labels"].append(labels[mask])
  if not n:
    raise ValueError("evaluation saw no example: is the split empty?")
  ranking = _ranking(sums, n, ks, propensity is not None)
  if exact_map:
    ap.finish_pass_one()
    _pass_two(scorer, batches, ap, max_examples)
    exact = ap.compute()
    ranking.update(map=exact["map_macro"], map_micro=exact["map_micro"])
  result = {"num_examples": n, "ranking": ranking, "map_method": MAP_METHOD, "decoders": {
      name: dict(_floats(m.compute()), num_truncated=truncated[name])
      for name, m in per_decoder.items()}, "set_size_counts": _size_lists(sizes)}
  if class_buckets is not None:
    result["buckets"] = bucket_metrics(class_buckets, ap=ap, sets=per_decoder)
  if pr_curve:
    result["pr_curve"] = ap.micro_pr_curve()
  if keep_values:
    result["_calibration_inputs"] = dict(
        {k: np.concatenate(v) for k, v in kept.items()}, ap=ap)
  return result


@functools.lru_cache(maxsize=None)
def _sets_collection(num_classes: int):
  return streaming_metrics.make_collection((), num_classes=num_classes, sets=True)


@functools.partial(jax.jit, static_argnames="num_classes")
def _sets_update(preds, labels, mask, *, num_classes):
  """One batch's set-metric state (compiled once per shape, not per evaluation)."""
  return _sets_collection(num_classes).single_from_model_output(
      predictions=preds, labels=labels, mask=mask)


@functools.partial(jax.jit, static_argnames="ks")
def _ranking_terms(top_ids, labels, mask, propensity, *, ks):
  """Per-example @k metric values (one implementation: ``metrics.*_from_top``), compiled
  once per shape, not per evaluation."""
  out = {}
  for k in ks:
    out[f"precision_at_{k}"] = metrics_lib.precision_from_top(top_ids, labels, k, where=mask)
    out[f"recall_at_{k}"] = metrics_lib.recall_from_top(top_ids, labels, k, where=mask)
    out[f"ndcg_at_{k}"] = metrics_lib.ndcg_from_top(top_ids, labels, k, where=mask)
    if propensity is not None:
      terms = metrics_lib.psp_terms_from_top(top_ids, labels, propensity, k, where=mask)
      out[f"psp_num_{k}"], out[f"psp_den_{k}"] = terms.numerator, terms.denominator
  return out


def _ranking(sums, n, ks, psp):
  out = {}
  for k in ks:
    for m in ("precision", "recall", "ndcg"):
      out[f"{m}_at_{k}"] = sums[f"{m}_at_{k}"] / n
    if psp:
      den = sums[f"psp_den_{k}"]
      out[f"psp_at_{k}"] = sums[f"psp_num_{k}"] / den if den > 0 else 0.0
  return out


# ------------------------------------------------------------------ helpers and buckets


def _count_sizes(counts: dict, selected, mask) -> None:
  """Adds the rows' set sizes (``selected`` bool ``[B, L]``, rows where ``mask``) to a
  ``{size: rows}`` histogram."""
  row_sizes = np.asarray(selected).sum(1)[np.asarray(mask, bool)]
  for size, rows in zip(*np.unique(row_sizes, return_counts=True)):
    counts[int(size)] = counts.get(int(size), 0) + int(rows)


def _size_lists(sizes: dict) -> dict:
  """``{name: [rows with set size 0, 1, ...]}`` from ``{name: {size: rows}}``."""
  return {name: [c.get(i, 0) for i in range(max(c, default=-1) + 1)]
          for name, c in sizes.items()}


def frequency_buckets(counts, num_buckets: int = 3) -> np.ndarray:
  """int ``[C]`` bucket of each class by training frequency: 0 = rarest.

  Classes are sorted by count (ties by id) and cut so that each bucket holds about
  ``1 / num_buckets`` of all label occurrences; the last (frequent) bucket is a few classes
  on a Zipf law, the first (rare) one most of them. Classes never seen are in bucket 0.
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or num_buckets < 1:
    raise ValueError(f"`counts` must be 1-D and `num_buckets` >= 1, got shape {counts.shape} "
                     f"and {num_buckets}.")
  order = np.argsort(counts, kind="stable")  # Rarest first.
  share = np.cumsum(counts[order]) / max(counts.sum(), 1.0)
  out = np.empty(len(counts), np.int64)
  out[order] = np.minimum((share * num_buckets - 1e-9).astype(np.int64), num_buckets - 1)
  return np.maximum(out, 0)


def bucket_metrics(class_buckets, *, ap=None, sets=None) -> dict:
  """Per-bucket metrics from per-class states.

  Args:
    class_buckets: int ``[C]`` bucket of each class, in ``[0, B)``.
    ap: optional :class:`metrics.ExactAveragePrecision` after both passes: adds ``"map"``
      ``[B]``, the mean AP over the bucket's classes that have a positive, and
      ``"num_positives"``.
    sets: optional ``{decoder: set-metric collection with an "f1_macro" field}``: adds
      ``"decoders": {name: {"recall_micro": [B], "f1_macro": [B]}}`` (macro over the
      bucket's classes with a positive or a prediction, as sklearn's labels=...).

  Returns:
    ``{"num_classes": [B], ...}`` as lists.
  """
  buckets = np.asarray(class_buckets, np.int64)
  nb = int(buckets.max()) + 1 if len(buckets) else 0
  out = {"num_classes": np.bincount(buckets, minlength=nb).tolist()}

  def per_bucket(values, keep):
    return [float(values[(buckets == b) & keep].mean()) if ((buckets == b) & keep).any()
            else float("nan") for b in range(nb)]

  if ap is not None:
    per_class = ap.per_class()
    has_pos = ~np.isnan(per_class)
    out["map"] = per_bucket(np.nan_to_num(per_class), has_pos)
    positives = np.bincount(ap.positive_classes, minlength=len(buckets))
    out["num_positives"] = np.bincount(buckets, weights=positives, minlength=nb).tolist()
  if sets:
    out["decoders"] = {}
    for name, collection in sets.items():
      m = collection.f1_macro
      tp, pred, true = (np.asarray(x, np.float64) for x in (m.tp, m.pred, m.true))
      f1 = np.where(pred + true > 0, 2 * tp / np.maximum(pred + true, 1), 0.0)
      tp_b = np.bincount(buckets, weights=tp, minlength=nb)
      true_b = np.bincount(buckets, weights=true, minlength=nb)
      out["decoders"][name] = {
          "recall_micro": np.where(true_b > 0, tp_b / np.maximum(true_b, 1), np.nan).tolist(),
          "f1_macro": per_bucket(f1, pred + true > 0)}
  return out


def _floats(d):
  return {k: float(np.asarray(v)) for k, v in d.items()}


def format_tables(result: dict, *, natural: Optional[str] = None, title: str = "") -> str:
  """Markdown tables: ranking metrics, then decoder x set metric."""
  lines = []
  if title:
    lines += [f"### {title}", ""]
  r = result["ranking"]
  lines.append("| " + " | ".join(r) + " |")
  lines.append("|" + "---|" * len(r))
  lines += ["| " + " | ".join(f"{v:.4f}" for v in r.values()) + " |", ""]
  lines.append("| decoder | " + " | ".join(SET_COLUMNS) + " | truncated |")
  lines.append("|---|" + "---|" * (len(SET_COLUMNS) + 1))
  for name, m in result["decoders"].items():
    label = f"**{name}** (natural)" if name == natural else name
    lines.append(f"| {label} | " + " | ".join(f"{m.get(c, float('nan')):.4f}"
                                                for c in SET_COLUMNS)
                 + f" | {m['num_truncated']} |")
  return "\n".join(lines) + "\n"
