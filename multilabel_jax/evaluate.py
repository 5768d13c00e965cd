"""Evaluation: every applicable decoder under every metric, calibrated on validation.

The flow of a final evaluation:

1. Validation scores ``[N_val, C]`` (``config.eval.validation_examples`` rows) calibrate the
   average-K threshold (K = the mean number of validation labels, or the two-head's k) and
   per-class F1 thresholds.
2. One pass over the test split updates streaming ``clu`` metrics: ranking metrics of the
   scores (P@k, R@k, nDCG@k, PSP@k, mAP with its error bound) and, for each decoder, set
   metrics of its label sets. No ``[N_test, C]`` array is kept.
3. On hashtag_world the same is done with the simulator's Bayes-optimal marginals (oracle).
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Iterable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import labels as labels_lib
from multilabel_jax.metrics import streaming as streaming_metrics
from multilabel_jax.losses import decoders as decoders_lib

SET_COLUMNS = ("mean_set_size", "precision_micro", "recall_micro", "f1_micro", "f1_macro",
               "f1_samples", "hamming_loss", "average_k_accuracy")

# A predictor maps a batch to (scores [B, C], counts [B] or None).
Predictor = Callable[[Mapping[str, np.ndarray]], tuple]


def iterate(batches: Iterable[dict], max_examples: int = 0):
  """Eval batches, with ``mask`` cut so that at most ``max_examples`` rows count (0: all)."""
  seen = 0
  for batch in batches:
    if max_examples:
      mask = np.asarray(batch["mask"]).copy()
      keep = np.cumsum(mask) + seen <= max_examples
      batch = dict(batch, mask=mask & keep)
    seen += int(np.asarray(batch["mask"]).sum())
    yield batch
    if max_examples and seen >= max_examples:
      return


def collect(predict: Predictor, batches: Iterable[dict], max_examples: int = 0):
  """``(scores [N, C], label_ids [N, L], counts [N] or None)`` of the unmasked rows."""
  scores, labels, counts = [], [], []
  for batch in iterate(batches, max_examples):
    mask = np.asarray(batch["mask"])
    s, c = predict(batch)
    scores.append(np.asarray(s)[mask])
    labels.append(np.asarray(batch["label_ids"])[mask])
    if c is not None:
      counts.append(np.asarray(c)[mask])
  return (np.concatenate(scores), np.concatenate(labels),
          np.concatenate(counts) if counts else None)


def mean_labels(label_ids: np.ndarray) -> float:
  """Mean number of distinct labels per row of padded ids."""
  ids = np.asarray(label_ids)
  return float(np.mean([len(set(r[r >= 0].tolist())) for r in ids])) if len(ids) else 0.0


def calibrate(val_scores, val_labels, *, k: float, min_positives: int = 5,
              average_ks=()) -> dict:
  """Thresholds from validation: average-K (global) and per-class F1 (classes with fewer
  than ``min_positives`` validation positives use the micro-F1-optimal global threshold).

  ``average_ks``: further set sizes K; ``"average_k_at"`` maps each to its global threshold
  (sets of K labels on average, for the average-K error at fixed K).
  """
  c = np.asarray(val_scores).shape[1]
  return {
      "average_k": {"k": k, "threshold": decoders_lib.calibrate_average_k(val_scores, k)},
      "class_thresholds": decoders_lib.calibrate_class_thresholds(
          val_scores, val_labels, min_positives=min_positives),
      "average_k_at": {int(kk): decoders_lib.calibrate_average_k(val_scores, kk)
                       for kk in average_ks if kk <= c},
  }


def make_decoders(*, objective_name: str, has_counts: bool, calibration: dict,
                  top_ks, max_set_size: int, num_classes: int) -> Dict[str, Callable]:
  """Decoder name -> jitted ``(scores, counts) -> DecodedSets`` for every applicable one."""
  slots = min(max_set_size, num_classes)
  out = {}
  prefix = "nearest" if objective_name == "embedding" else "top"
  for k in top_ks:
    if k <= num_classes:
      out[f"{prefix}_{k}"] = functools.partial(decoders_lib.top_k, k=k)
  if objective_name != "embedding":  # Cosine scores have no natural 0.5.
    out["threshold_0.5"] = functools.partial(decoders_lib.threshold, t=0.5, max_labels=slots)
  t_avg = calibration["average_k"]["threshold"]
  out["average_k"] = functools.partial(decoders_lib.threshold, t=t_avg, max_labels=slots)
  for kk, t in calibration.get("average_k_at", {}).items():
    out[f"average_k_{kk}"] = functools.partial(decoders_lib.threshold, t=t, max_labels=slots)
  t_class = jnp.asarray(calibration["class_thresholds"])
  out["class_thresholds"] = functools.partial(decoders_lib.threshold, t=t_class,
                                              max_labels=slots)
  wrapped = {name: (lambda fn: lambda s, c: fn(s))(fn) for name, fn in out.items()}
  if has_counts:
    wrapped["by_count"] = lambda s, c: decoders_lib.by_count(s, c, max_labels=slots)
  return {name: jax.jit(fn) for name, fn in wrapped.items()}


def evaluate(predict: Predictor, batches: Iterable[dict], *, decoders: Mapping[str, Callable],
             num_classes: int, top_ks, propensity=None, bin_edges=None,
             max_examples: int = 0, class_buckets=None, pr_curve: bool = False) -> dict:
  """Streaming ranking metrics of the scores and set metrics of each decoder's sets.

  Args:
    class_buckets: optional int ``[C]`` bucket of each class (e.g. from
      :func:`frequency_buckets`); adds ``"buckets"`` (per-bucket mAP, and per decoder the
      per-bucket micro recall and macro F1; see :func:`bucket_metrics`).
    pr_curve: adds ``"pr_curve"``, the micro precision-recall curve of the scores at the
      histogram edges (see :func:`micro_pr_curve`).

  Returns:
    ``{"num_examples", "ranking": {metric: value}, "decoders": {name: {metric: value,
    "num_truncated": int}}}``, plus ``"buckets"`` and ``"pr_curve"`` when asked.
  """
  Ranking = streaming_metrics.make_collection(
      tuple(k for k in top_ks if k <= num_classes), num_classes=num_classes,
      propensity=propensity, average_precision=True, bin_edges=bin_edges)
  Sets = streaming_metrics.make_collection((), num_classes=num_classes, sets=True)
  ranking_update = jax.jit(lambda s, y, m: Ranking.single_from_model_output(
      scores=s, labels=y, mask=m))
  sets_update = jax.jit(lambda p, y, m: Sets.single_from_model_output(
      predictions=p, labels=y, mask=m))
  ranking, per_decoder = None, {name: None for name in decoders}
  truncated = {name: 0 for name in decoders}
  sizes = {name: {} for name in ("labels", *decoders)}
  n = 0
  for batch in iterate(batches, max_examples):
    mask = jnp.asarray(batch["mask"])
    labels = jnp.asarray(batch["label_ids"])
    scores, counts = predict(batch)
    n += int(mask.sum())
    update = ranking_update(scores, labels, mask)
    ranking = update if ranking is None else ranking.merge(update)
    _count_sizes(sizes["labels"], labels_lib.unique_mask(labels) & (labels >= 0), mask)
    for name, decode in decoders.items():
      sets = decode(scores, counts)
      _count_sizes(sizes[name], sets.mask, mask)
      truncated[name] += int(jnp.sum(jnp.where(mask, sets.num_truncated, 0)))
      preds = jnp.where(sets.mask, sets.ids, -1)
      update = sets_update(preds, labels, mask)
      per_decoder[name] = update if per_decoder[name] is None else per_decoder[name].merge(update)
  if ranking is None:
    raise ValueError("evaluation saw no batch: is the split empty?")
  result = {"num_examples": n, "ranking": _floats(ranking.compute()), "decoders": {},
            "set_size_counts": _size_lists(sizes)}
  for name, metrics in per_decoder.items():
    result["decoders"][name] = dict(_floats(metrics.compute()), num_truncated=truncated[name])
  if class_buckets is not None:
    result["buckets"] = bucket_metrics(class_buckets, ap=ranking.map, sets=per_decoder)
  if pr_curve:
    result["pr_curve"] = micro_pr_curve(ranking.map)
  return result


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
  """Per-bucket metrics from per-class streaming states.

  Args:
    class_buckets: int ``[C]`` bucket of each class, in ``[0, B)``.
    ap: optional :class:`HistogramAveragePrecision` state: adds ``"map"`` ``[B]``, the mean
      AP (bracket midpoint) over the bucket's classes that have a test positive.
    sets: optional ``{decoder: set-metric collection with an "f1_macro" field}``: adds
      ``"decoders": {name: {"recall_micro": [B], "f1_macro": [B]}}`` (macro over the
      bucket's classes with a positive or a prediction, as sklearn's labels=...).

  Returns:
    ``{"num_classes": [B], "num_positives": [B], ...}`` as lists.
  """
  buckets = np.asarray(class_buckets, np.int64)
  nb = int(buckets.max()) + 1 if len(buckets) else 0
  out = {"num_classes": np.bincount(buckets, minlength=nb).tolist()}

  def per_bucket(values, keep):
    return [float(values[(buckets == b) & keep].mean()) if ((buckets == b) & keep).any()
            else float("nan") for b in range(nb)]

  if ap is not None:
    lower, upper, has_pos = ap.compute_per_class()
    out["map"] = per_bucket((lower + upper) / 2, has_pos)
    positives = np.asarray(ap.positives).sum(1)
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


def micro_pr_curve(ap) -> dict:
  """Micro precision and recall of ``score >= edge`` for each histogram edge, from a
  :class:`HistogramAveragePrecision` state (pooled over classes; exact at the edges).

  Returns:
    ``{"threshold": [E], "precision": [E], "recall": [E]}``, thresholds decreasing.
  """
  pos = np.asarray(ap.positives, np.float64).sum(0)[::-1]  # Highest bin first.
  tot = np.asarray(ap.totals, np.float64).sum(0)[::-1]
  tp, predicted = np.cumsum(pos)[:-1], np.cumsum(tot)[:-1]  # Bin i+1 starts at edge[-1-i].
  return {"threshold": np.asarray(ap.bin_edges, np.float64)[::-1].tolist(),
          "precision": np.where(predicted > 0, tp / np.maximum(predicted, 1), 1.0).tolist(),
          "recall": (tp / max(pos.sum(), 1.0)).tolist()}


def _floats(d):
  return {k: float(np.asarray(v)) for k, v in d.items()}


def cosine_bin_edges(num_bins: int = 128) -> np.ndarray:
  """Histogram edges for cosine scores in [-1, 1] (mAP of the embedding objective)."""
  return np.linspace(-1.0, 1.0, num_bins + 1)


def format_tables(result: dict, *, natural: Optional[str] = None, title: str = "") -> str:
  """Markdown tables: ranking metrics, then decoder x set metric."""
  lines = []
  if title:
    lines += [f"### {title}", ""]
  r = result["ranking"]
  keys = [k for k in r if not k.endswith("_error")]
  lines.append("| " + " | ".join(keys) + " |")
  lines.append("|" + "---|" * len(keys))
  cells = []
  for k in keys:
    err = r.get(f"{k}_error")
    cells.append(f"{r[k]:.4f}" + (f" ± {err:.4f}" if err is not None else ""))
  lines += ["| " + " | ".join(cells) + " |", ""]
  lines.append("| decoder | " + " | ".join(SET_COLUMNS) + " | truncated |")
  lines.append("|---|" + "---|" * (len(SET_COLUMNS) + 1))
  for name, m in result["decoders"].items():
    label = f"**{name}** (natural)" if name == natural else name
    lines.append(f"| {label} | " + " | ".join(f"{m.get(c, float('nan')):.4f}"
                                                for c in SET_COLUMNS)
                 + f" | {m['num_truncated']} |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------- The top-r path (100k-1M classes)
#
# When the head is fused, scores ``[B, C]`` are never built: a streaming top-k
# (``losses.linear_top_k``) gives each row's r best (score, class) pairs. Every @k metric
# with k <= r is exact from them, and so are the decoders that only keep top-ranked labels
# (top-k, thresholds, average-K, by-count) as long as a set fits in r slots. For thresholds,
# ``num_truncated`` counts *rows* whose r-th score still passes (their sets may be longer);
# for by-count it counts the labels beyond r. Per-class thresholds and mAP need
# every score and are not computed on this path.


def top_ranking_terms(top_ids, label_ids, ks, inv_propensity) -> dict:
  """Per-example sums ``{metric: [B] float64}`` of P@k, R@k, nDCG@k and the PSP@k terms."""
  top_ids, label_ids = np.asarray(top_ids), np.asarray(label_ids)
  valid = (label_ids >= 0) & _first_occurrence(label_ids)
  hits = ((top_ids[:, :, None] == label_ids[:, None, :]) & valid[:, None, :]).any(-1)
  n_pos = valid.sum(1)
  disc = 1.0 / np.log2(np.arange(2, top_ids.shape[1] + 2))
  ideal = np.concatenate([[0.0], np.cumsum(disc)])
  gains = np.where(valid, inv_propensity[np.maximum(label_ids, 0)], 0.0)
  best = -np.sort(-gains, axis=1)
  out = {}
  for k in ks:
    h = hits[:, :k]
    out[f"precision_at_{k}"] = h.sum(1) / k
    out[f"recall_at_{k}"] = np.where(n_pos > 0, h.sum(1) / np.maximum(n_pos, 1), 0.0)
    idcg = ideal[np.minimum(n_pos, k)]
    out[f"ndcg_at_{k}"] = np.where(n_pos > 0, (h * disc[:k]).sum(1) / np.where(
        idcg > 0, idcg, 1.0), 0.0)
    out[f"psp_num_{k}"] = np.where(h, inv_propensity[top_ids[:, :k]], 0.0).sum(1) / k
    out[f"psp_den_{k}"] = best[:, :k].sum(1) / k
  return out


def _first_occurrence(ids):
  """``[B, L]`` True at the first occurrence of each id in its row."""
  eq = ids[:, :, None] == ids[:, None, :]
  earlier = np.tril(np.ones((ids.shape[1],) * 2, bool), -1)
  return ~(eq & earlier[None]).any(-1)


def top_decoders(*, threshold_t=None, average_k_t=None, top_ks=(), has_counts=False,
                 average_k_at=None):
  """Decoder name -> ``(values [B, r], ids [B, r], counts) -> (ids [B, r] -1 padded,
  truncated [B])`` on top-r candidates. ``average_k_at``: ``{K: threshold}`` adds
  ``average_k_<K>`` decoders."""
  def keep_first(n):
    return lambda v, i, c: (np.where(np.arange(i.shape[1]) < n, i, -1), np.zeros(len(i), int))

  def keep_above(t):
    def fn(v, i, c):
      keep = v >= t
      return np.where(keep, i, -1), keep[:, -1].astype(int)  # Last slot passes: may have more.
    return fn

  out = {f"top_{k}": keep_first(k) for k in top_ks}
  if threshold_t is not None:
    out["threshold_0.5"] = keep_above(threshold_t)
  if average_k_t is not None:
    out["average_k"] = keep_above(average_k_t)
  for kk, t in (average_k_at or {}).items():
    out[f"average_k_{kk}"] = keep_above(t)
  if has_counts:
    def by_count(v, i, c):
      n = np.clip(np.round(c), 0, None).astype(int)
      return (np.where(np.arange(i.shape[1])[None] < np.minimum(n, i.shape[1])[:, None], i, -1),
              np.maximum(n - i.shape[1], 0))
    out["by_count"] = by_count
  return out


def evaluate_top(predict_top, batches, *, decoders, num_classes: int, top_ks, propensity,
                 max_examples: int = 0, class_buckets=None) -> dict:
  """:func:`evaluate` from per-row top-r candidates: ``predict_top(batch) -> (values [B, r],
  ids [B, r], counts [B] or None)``. Same result layout; no mAP, no per-class thresholds,
  and ``"buckets"`` (with ``class_buckets``) holds the decoders' per-bucket metrics only."""
  inv_p = 1.0 / np.asarray(propensity, np.float64)
  Sets = streaming_metrics.make_collection((), num_classes=num_classes, sets=True)
  sets_update = jax.jit(lambda p, y, m: Sets.single_from_model_output(
      predictions=p, labels=y, mask=m))
  sums, per_decoder, truncated, n = {}, {name: None for name in decoders}, {}, 0
  sizes = {name: {} for name in ("labels", *decoders)}
  for batch in iterate(batches, max_examples):
    mask = np.asarray(batch["mask"])
    labels = np.asarray(batch["label_ids"])
    _count_sizes(sizes["labels"], (labels >= 0) & _first_occurrence(labels), mask)
    values, ids, counts = (None if a is None else np.asarray(a) for a in predict_top(batch))
    r = ids.shape[1]
    terms = top_ranking_terms(ids, labels, [k for k in top_ks if k <= r], inv_p)
    for key, v in terms.items():
      sums[key] = sums.get(key, 0.0) + float(v[mask].sum())
    n += int(mask.sum())
    for name, decode in decoders.items():
      preds, trunc = decode(values, ids, counts)
      _count_sizes(sizes[name], np.asarray(preds) >= 0, mask)
      truncated[name] = truncated.get(name, 0) + int(np.asarray(trunc)[mask].sum())
      update = sets_update(jnp.asarray(preds), jnp.asarray(labels), jnp.asarray(mask))
      per_decoder[name] = update if per_decoder[name] is None else per_decoder[name].merge(update)
  if not n:
    raise ValueError("evaluation saw no example: is the split empty?")
  ranking = {}
  for key, total in sums.items():
    if key.startswith("psp_num_"):
      k = key.rsplit("_", 1)[1]
      den = sums[f"psp_den_{k}"]
      ranking[f"psp_at_{k}"] = total / den if den > 0 else 0.0
    elif not key.startswith("psp_den_"):
      ranking[key] = total / n
  result = {"num_examples": n, "ranking": ranking, "decoders": {
      name: dict(_floats(m.compute()), num_truncated=truncated[name])
      for name, m in per_decoder.items()}, "set_size_counts": _size_lists(sizes)}
  if class_buckets is not None:
    result["buckets"] = bucket_metrics(class_buckets, sets=per_decoder)
  return result
