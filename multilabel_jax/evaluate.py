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

from multilabel_jax import streaming_metrics
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


def calibrate(val_scores, val_labels, *, k: float, min_positives: int = 5) -> dict:
  """Thresholds from validation: average-K (global) and per-class F1 (classes with fewer
  than ``min_positives`` validation positives use the micro-F1-optimal global threshold)."""
  return {
      "average_k": {"k": k, "threshold": decoders_lib.calibrate_average_k(val_scores, k)},
      "class_thresholds": decoders_lib.calibrate_class_thresholds(
          val_scores, val_labels, min_positives=min_positives),
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
  t_class = jnp.asarray(calibration["class_thresholds"])
  out["class_thresholds"] = functools.partial(decoders_lib.threshold, t=t_class,
                                              max_labels=slots)
  wrapped = {name: (lambda fn: lambda s, c: fn(s))(fn) for name, fn in out.items()}
  if has_counts:
    wrapped["by_count"] = lambda s, c: decoders_lib.by_count(s, c, max_labels=slots)
  return {name: jax.jit(fn) for name, fn in wrapped.items()}


def evaluate(predict: Predictor, batches: Iterable[dict], *, decoders: Mapping[str, Callable],
             num_classes: int, top_ks, propensity=None, bin_edges=None,
             max_examples: int = 0) -> dict:
  """Streaming ranking metrics of the scores and set metrics of each decoder's sets.

  Returns:
    ``{"num_examples", "ranking": {metric: value}, "decoders": {name: {metric: value,
    "num_truncated": int}}}``.
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
  n = 0
  for batch in iterate(batches, max_examples):
    mask = jnp.asarray(batch["mask"])
    labels = jnp.asarray(batch["label_ids"])
    scores, counts = predict(batch)
    n += int(mask.sum())
    update = ranking_update(scores, labels, mask)
    ranking = update if ranking is None else ranking.merge(update)
    for name, decode in decoders.items():
      sets = decode(scores, counts)
      truncated[name] += int(jnp.sum(jnp.where(mask, sets.num_truncated, 0)))
      preds = jnp.where(sets.mask, sets.ids, -1)
      update = sets_update(preds, labels, mask)
      per_decoder[name] = update if per_decoder[name] is None else per_decoder[name].merge(update)
  if ranking is None:
    raise ValueError("evaluation saw no batch: is the split empty?")
  result = {"num_examples": n, "ranking": _floats(ranking.compute()), "decoders": {}}
  for name, metrics in per_decoder.items():
    result["decoders"][name] = dict(_floats(metrics.compute()), num_truncated=truncated[name])
  return result


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


def top_decoders(*, threshold_t=None, average_k_t=None, top_ks=(), has_counts=False):
  """Decoder name -> ``(values [B, r], ids [B, r], counts) -> (ids [B, r] -1 padded,
  truncated [B])`` on top-r candidates."""
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
  if has_counts:
    def by_count(v, i, c):
      n = np.clip(np.round(c), 0, None).astype(int)
      return (np.where(np.arange(i.shape[1])[None] < np.minimum(n, i.shape[1])[:, None], i, -1),
              np.maximum(n - i.shape[1], 0))
    out["by_count"] = by_count
  return out


def evaluate_top(predict_top, batches, *, decoders, num_classes: int, top_ks, propensity,
                 max_examples: int = 0) -> dict:
  """:func:`evaluate` from per-row top-r candidates: ``predict_top(batch) -> (values [B, r],
  ids [B, r], counts [B] or None)``. Same result layout; no mAP, no per-class thresholds."""
  inv_p = 1.0 / np.asarray(propensity, np.float64)
  Sets = streaming_metrics.make_collection((), num_classes=num_classes, sets=True)
  sets_update = jax.jit(lambda p, y, m: Sets.single_from_model_output(
      predictions=p, labels=y, mask=m))
  sums, per_decoder, truncated, n = {}, {name: None for name in decoders}, {}, 0
  for batch in iterate(batches, max_examples):
    mask = np.asarray(batch["mask"])
    labels = np.asarray(batch["label_ids"])
    values, ids, counts = (None if a is None else np.asarray(a) for a in predict_top(batch))
    r = ids.shape[1]
    terms = top_ranking_terms(ids, labels, [k for k in top_ks if k <= r], inv_p)
    for key, v in terms.items():
      sums[key] = sums.get(key, 0.0) + float(v[mask].sum())
    n += int(mask.sum())
    for name, decode in decoders.items():
      preds, trunc = decode(values, ids, counts)
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
  return {"num_examples": n, "ranking": ranking, "decoders": {
      name: dict(_floats(m.compute()), num_truncated=truncated[name])
      for name, m in per_decoder.items()}}
