"""The final evaluation of a run and its report (``report.json`` and ``report.md``).

:func:`final_evaluation` calibrates every decoder on validation, evaluates the test split
under every decoder and metric, and does the same with the simulator's Bayes-optimal
marginals when the data source has them (the oracle). The same evaluation path serves every
head (:mod:`multilabel_jax.evaluate`).
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from absl import logging

from multilabel_jax import calibration as calibration_lib
from multilabel_jax import evaluate, scoring



def eval_r(config, num_classes: int) -> int:
  """Candidates per row: ``eval.max_set_size``, at least the largest k, at most C."""
  return min(max(config.eval.max_set_size, max(config.eval.top_ks)), num_classes)


def validation(config, eval_data, objective, scorer, info, label_stats, *,
               keep_values=False) -> dict:
  """Ranking metrics (exact mAP) on ``eval.validation_examples`` validation rows."""
  n = config.eval.validation_examples
  return evaluate.evaluate(
      scorer, lambda: eval_data.eval_iter("validation", n), objective=objective,
      num_classes=info.num_classes, top_ks=config.eval.top_ks,
      r=eval_r(config, info.num_classes), propensity=label_stats.propensities(),
      max_examples=n, keep_values=keep_values)


def final_evaluation(config, source, eval_data, objective, scorer, label_stats) -> dict:
  """Calibrate on validation, evaluate the test split (model, and oracle if available).

  The calibrated decoders are also scored on validation (one pass, no mAP), and the
  decoder that prediction uses is chosen there (``config.predict.decoder``, by default the
  best validation micro-F1; :func:`calibration.choose_decoder`).

  Returns:
    ``{"objective", "natural_decoder", "evaluation_path", "calibration", "predict",
    "validation", "test"}`` and ``"oracle"`` on simulated data; ``"_calibration"`` holds the
    thresholds (per-class ones included) for :func:`calibration.save_artifact`.
  """
  info = source.info
  r = eval_r(config, info.num_classes)
  common = dict(num_classes=info.num_classes, top_ks=config.eval.top_ks, r=r,
                propensity=label_stats.propensities(), max_examples=config.eval.test_examples)
  if config.eval.frequency_buckets:
    common["class_buckets"] = evaluate.frequency_buckets(label_stats.counts,
                                                         config.eval.frequency_buckets)

  def validation_batches():  # The pipeline cuts them: the same rows on every process.
    return eval_data.eval_iter("validation", config.eval.validation_examples)

  def test_batches():
    return eval_data.eval_iter("test", config.eval.test_examples)

  def run(scorer, objective, k):
    val = validation(config, eval_data, objective, scorer, info, label_stats, keep_values=True)
    count = calibration_lib.counter(scorer, validation_batches, config.eval.validation_examples)
    calibration = calibration_lib.calibrate(
        val.pop("_calibration_inputs"), num_classes=info.num_classes, k=k,
        average_ks=config.eval.average_ks, count_at_least=count)
    test = evaluate.evaluate(scorer, test_batches, objective=objective,
                             calibration=calibration, pr_curve=True, **common)
    return calibration, val, test

  calibration, val, test = run(scorer, objective, objective.average_k)
  sets_only = {k: v for k, v in common.items() if k != "class_buckets"}
  sets_only["max_examples"] = config.eval.validation_examples
  val_sets = evaluate.evaluate(scorer, validation_batches, objective=objective,
                               calibration=calibration, exact_map=False, **sets_only)["decoders"]
  decoder, rule = calibration_lib.choose_decoder(predict_decoder(config),
                                                 objective.natural_decoder, val_sets)
  report = {"objective": objective.name, "natural_decoder": objective.natural_decoder,
            "evaluation_path": f"top_{r}",
            "calibration": {"average_k": calibration["average_k"],
                            "average_k_at": calibration["average_k_at"]},
            "predict": {"decoder": decoder, "chosen_by": rule,
                        "validation_f1_micro": {n: m["f1_micro"] for n, m in val_sets.items()}},
            "validation": {"num_examples": val["num_examples"], "ranking": val["ranking"]},
            "test": test, "_calibration": calibration}
  oracle = oracle_scorer(config, source, r)
  if oracle is not None:
    report["oracle"] = run(oracle, evaluate.PROBABILITIES, None)[2]
    report["against_oracle"] = against_oracle(test, report["oracle"])
    if jax.process_count() == 1:  # The marginals are of this process's rows.
      rel = reliability(scorer, source.oracle_marginals_from_inputs, test_batches,
                        objective.reads_as)
      if rel is not None:
        report["reliability"] = rel
    else:
      logging.info("reliability against the oracle: single-process runs only; not computed.")
  return report


RELIABILITY_EDGES = np.logspace(-4, 0, 9)  # Half-decade bins of the score, 1e-4 to 1.


def reliability(scorer, marginals_fn, batches, reads_as: str,
                edges: np.ndarray = RELIABILITY_EDGES):
  """The model's scores against the exact marginals, on each row's top-r classes.

  Each (row, class) pair among a row's top-r by score falls in a bin of its score (the
  half-decades of ``edges``; below the first edge in the first bin, expected counts above 1
  in the last) and adds its score and its oracle target: the marginal ``P(y_c = 1 | x)``,
  or for a distribution (``reads_as == "distribution"``) the class's share of the row's
  marginals, ``m_c / sum_c' m_c'``. A calibrated model's mean score equals the mean target
  in every bin (the diagonal of a reliability diagram).

  Args:
    scorer: the model's :class:`scoring.Scorer`.
    marginals_fn: ``batch -> [B, C]`` exact marginals (the simulator's oracle).
    batches: ``() -> iterator`` of batches (the test split).
    reads_as: the objective's ``reads_as``; ``""`` (margins, cosines): returns None.
    edges: bin edges, increasing.

  Returns:
    ``{"reads_as", "edges", "count", "score", "oracle", "ece", "mean_abs_error"}``: per bin
    the number of pairs, their mean score and mean target (None where empty); ``ece`` the
    pair-weighted mean of ``|mean score - mean target|`` over bins and ``mean_abs_error``
    the mean of ``|score - target|`` over pairs.
  """
  if not reads_as:
    return None
  nb = len(edges) - 1
  count, score_sum, target_sum, abs_err = np.zeros(nb), np.zeros(nb), np.zeros(nb), 0.0
  for batch in batches():
    one = scorer.pass_one(batch, np.asarray([0.5], np.float32))
    _, mask = scorer.rows(batch)
    m = np.asarray(marginals_fn(batch), np.float64)
    ids, values = np.asarray(one.ids), np.asarray(one.values, np.float64)
    target = np.take_along_axis(m, np.maximum(ids, 0), axis=1)
    if reads_as == "distribution":
      target = target / np.maximum(m.sum(1, keepdims=True), 1e-300)
    keep = np.asarray(mask, bool)[:, None] & (ids >= 0) & np.isfinite(values)
    values, target = values[keep], target[keep]
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, nb - 1)
    count += np.bincount(bins, minlength=nb)
    score_sum += np.bincount(bins, values, minlength=nb)
    target_sum += np.bincount(bins, target, minlength=nb)
    abs_err += float(np.abs(values - target).sum())
  n = max(count.sum(), 1.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_score, mean_target = score_sum / count, target_sum / count
  gap = np.where(count > 0, np.abs(mean_score - mean_target), 0.0)
  as_list = lambda a: [None if c == 0 else float(v) for v, c in zip(a, count)]
  return {"reads_as": reads_as, "edges": [float(e) for e in edges],
          "count": [int(c) for c in count], "score": as_list(mean_score),
          "oracle": as_list(mean_target), "ece": float((count * gap).sum() / n),
          "mean_abs_error": abs_err / n}


def against_oracle(test: dict, oracle: dict) -> dict:
  """The model against the Bayes-optimal scores on the same test rows: its fraction of the
  oracle's P@1, and each decoder's samples-F1 regret against the Bayes-optimal sets (the
  oracle's ``expected_f1`` decoder: the expected-F1 top-k set of the exact marginals, read
  as independent; :mod:`losses.expected_f1`). A negative regret beats that set."""
  best = oracle["decoders"]["expected_f1"]["f1_samples"]
  return {"fraction_of_oracle_p1": test["ranking"]["precision_at_1"]
                                   / max(oracle["ranking"]["precision_at_1"], 1e-12),
          "bayes_f1_samples": best,
          "regret_f1_samples": {name: best - m["f1_samples"]
                                for name, m in test["decoders"].items()}}


def oracle_scorer(config, source, r: int):
  """The scorer of the source's Bayes-optimal marginals, or None: no oracle asked for, none
  known, or more classes than the source computes dense marginals for (they are ``[B, C]``
  arrays on the host; hashtag_world's limit is ``MAX_DENSE_CLASSES``)."""
  limit = getattr(source, "max_dense_marginal_classes", 0)
  if not (config.eval.oracle and hasattr(source, "oracle_marginals_from_inputs")
          and source.info.num_classes <= limit):
    return None
  return scoring.array_scorer(source.oracle_marginals_from_inputs, r)


def predict_decoder(config) -> str:
  """``config.predict.decoder``; "" for a config stored before it existed."""
  return config.get("predict", {}).get("decoder", "")


def check_predict_decoder(config, objective, num_classes: int) -> None:
  """Before any compute: ValueError if ``config.predict.decoder`` names a decoder that does
  not apply to ``objective`` (the message lists those that do)."""
  wanted = predict_decoder(config)
  if wanted in ("", "natural"):
    return
  any_threshold = {"average_k": {"threshold": 0.0}, "class_thresholds": True,
                   "average_k_at": {k: 0.0 for k in config.eval.average_ks if k <= num_classes}}
  names = evaluate.decoder_rules(objective, any_threshold, top_ks=config.eval.top_ks,
                                 r=eval_r(config, num_classes))
  if wanted not in names:
    raise ValueError(f"`config.predict.decoder` {wanted!r} does not apply to objective "
                     f"{objective.name!r}; choose '', 'natural' or one of {list(names)}.")


def prediction_data(source) -> dict:
  """What prediction needs of the data source: classes, inputs (name -> ``[shape,
  dtype]``), the embedding rows of bag-of-words inputs, and the class names when no label
  map is saved with the vocabulary."""
  info = source.info
  names = info.class_names
  return {"name": info.name, "num_classes": info.num_classes,
          "inputs": {k: [list(v.shape), v.dtype] for k, v in info.inputs.items()},
          "num_embeddings": getattr(source, "num_embeddings", None),
          "ids_by_frequency": getattr(source, "ids_by_frequency", False),
          "class_names": None if names is None or hasattr(source, "save_vocab") else list(names)}


def data_summary(info, label_stats, load_stats, train_stats: dict, eval_stats: dict) -> dict:
  """The report's ``data`` part: the dataset, and what loading and batching skipped
  (``train_stats``, ``eval_stats``: the pipelines' counts, summed over processes)."""
  return {"name": info.name, "num_classes": info.num_classes, "max_labels": info.max_labels,
          "num_train_examples": info.num_train_examples,
          "mean_train_labels": label_stats.mean_labels_per_example,
          "stats": {"load": load_stats, "train_batches": train_stats,
                    "eval_batches": eval_stats}}


def write_report(workdir, report) -> None:
  """``report.json`` and a readable ``report.md``; the tables are also printed."""
  workdir = pathlib.Path(workdir)
  (workdir / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
  md = [f"# Report: {report['objective']} on {report['data']['name']}", ""]
  md.append(evaluate.format_tables(report["test"], natural=report["natural_decoder"],
                                   title=f"Test ({report['test']['num_examples']} examples)"))
  if "oracle" in report:
    md.append(evaluate.format_tables(report["oracle"], title="Oracle (Bayes-optimal scores)"))
  if "against_oracle" in report:
    vs = report["against_oracle"]
    md += [f"P@1 is {vs['fraction_of_oracle_p1']:.1%} of the oracle's. Samples-F1 regret of "
           f"each decoder against the Bayes-optimal sets (oracle expected_f1, samples-F1 "
           f"{vs['bayes_f1_samples']:.4f}):", "", "| decoder | regret |", "|---|---|"]
    md += [f"| {name} | {value:+.4f} |"
           for name, value in sorted(vs["regret_f1_samples"].items(), key=lambda kv: kv[1])]
    md.append("")
  if "reliability" in report:
    rel = report["reliability"]
    md += [f"Reliability against the oracle (scores read as {rel['reads_as']}, each row's top "
           f"classes): calibration error {rel['ece']:.4f} (bins), mean |score - oracle| "
           f"{rel['mean_abs_error']:.4f}.", ""]
  cal = report["calibration"]["average_k"]
  md += [f"Average-K threshold {cal['threshold']} for K = {cal['k']:.3f} (validation); "
         f"evaluation path: {report['evaluation_path']}; mAP: {report['test']['map_method']}.",
         ""]
  if "predict" in report:
    md += [f"Prediction decoder: **{report['predict']['decoder']}** "
           f"({report['predict']['chosen_by']}); thresholds in calibration.json.", ""]
  md += [f"Training: {json.dumps(report['train'])}", "",
         f"Data: {json.dumps(report['data'])}", "", "## Config", "", "```json",
         json.dumps(report["config"], indent=2), "```", ""]
  text = "\n".join(md)
  (workdir / "report.md").write_text(text)
  print(text.split("Average-K threshold")[0])


def _json_default(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  return float(x)
