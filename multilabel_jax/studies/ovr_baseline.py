r"""Classical baseline: one-vs-rest logistic regression on debtags' TF-IDF features.

  python -m multilabel_jax.studies.ovr_baseline   # prints the report (about 2-4 minutes)

The features are exactly those the neural runs read (:func:`multilabel_jax.data.debtags`:
package, section, synopsis, description and depends; sublinear TF-IDF, L2-normalised, the
fixed md5 split), as a sparse ``[N, V]`` matrix. scikit-learn's ``OneVsRestClassifier``
fits one ``LogisticRegression`` (liblinear) per tag; C is chosen on validation P@1 from
a small grid. Its probabilities go through the same evaluation as the neural runs
(:func:`multilabel_jax.evaluate.evaluate`: ranking metrics, top-k, threshold 0.5,
average-K and per-class thresholds calibrated on validation), so the numbers compare.
"""

from __future__ import annotations

import json
import time

import numpy as np
import scipy.sparse
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from multilabel_jax import calibration as calibration_lib
from multilabel_jax import evaluate, labels as labels_lib, scoring
from multilabel_jax.data import debtags, memory, pipeline

C_GRID = (8.0,)  # One value: the shared CPU machine has no time for a search.


def bag_to_csr(token_ids, token_weights, num_features: int) -> scipy.sparse.csr_matrix:
  """Padded bags ``[N, T]`` (id 0 = padding) to a CSR ``[N, num_features]`` matrix."""
  ids, w = np.asarray(token_ids), np.asarray(token_weights)
  rows = np.repeat(np.arange(len(ids)), ids.shape[1])
  keep = ids.ravel() != 0
  return scipy.sparse.csr_matrix((w.ravel()[keep], (rows[keep], ids.ravel()[keep])),
                                 shape=(len(ids), num_features))


def fit_predict(x_train, y_train, x_eval_list, *, c: float):
  """Fits OvR logistic regression; returns the positive-class probabilities of each eval
  matrix, float32 ``[N, C]``. Classes without a train positive score 0."""
  model = OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear"), n_jobs=1)
  present = y_train.any(0)
  model.fit(x_train, y_train[:, present])
  out = []
  for x in x_eval_list:
    probs = np.zeros((x.shape[0], y_train.shape[1]), np.float32)
    probs[:, present] = model.predict_proba(x)
    out.append(probs)
  return out


def _batches(scores, labels, batch_size):
  def gen():
    for s in range(0, len(scores), batch_size):
      sl = slice(s, s + batch_size)
      yield {"scores": scores[sl], "label_ids": labels[sl], "mask": np.ones(len(scores[sl]), bool)}
  return gen


def evaluate_scores(val_scores, val_labels, test_scores, test_labels, *, num_classes,
                    propensity, top_ks=(1, 3, 5), average_ks=(1, 3, 5), batch_size=512,
                    class_buckets=None, max_set_size: int = 64) -> dict:
  """The neural runs' final evaluation (:mod:`multilabel_jax.report`), on precomputed
  probabilities."""
  r = min(max(max_set_size, max(top_ks)), num_classes)
  scorer = scoring.array_scorer(lambda b: b["scores"], r)
  val_batches = _batches(val_scores, val_labels, batch_size)
  common = dict(objective=evaluate.PROBABILITIES, num_classes=num_classes, top_ks=top_ks, r=r)
  val = evaluate.evaluate(scorer, val_batches, keep_values=True, **common)
  calibration = calibration_lib.calibrate(
      val.pop("_calibration_inputs"), num_classes=num_classes, k=None, average_ks=average_ks,
      count_at_least=calibration_lib.counter(scorer, val_batches))
  test = evaluate.evaluate(scorer, _batches(test_scores, test_labels, batch_size),
                           calibration=calibration, propensity=propensity,
                           class_buckets=class_buckets, pr_curve=True, **common)
  return {"calibration": {"average_k": calibration["average_k"]}, "evaluation_path": f"top_{r}",
          "validation_ranking": val["ranking"], "test": test}


def run(*, tiny: bool = False, source: memory.ArraySource = None) -> dict:
  """The baseline's report (same layout as a train report's ``test``/``train`` parts).

  ``tiny``: the first 600 train records and one C (for tests).
  """
  start = time.time()
  source = source or debtags.load_debtags()
  info = source.info
  split = {s: source.read(s, np.arange(source.num_examples(s))) for s in
           ("train", "validation", "test")}
  if tiny:
    split["train"] = {k: v[:600] for k, v in split["train"].items()}
  v = source.num_embeddings
  x = {s: bag_to_csr(d["token_ids"], d["token_weights"], v) for s, d in split.items()}
  y = {s: np.asarray(labels_lib.ids_to_dense(d["label_ids"], info.num_classes)) > 0
       for s, d in split.items()}
  counts = y["train"].sum(0)
  n = len(y["train"])
  propensity = pipeline.LabelStats(counts=counts, num_examples=n,
                                   labels_per_example=np.zeros(1, np.int64)).propensities()
  grid = C_GRID[:1] if tiny else C_GRID
  best = None
  for c in grid:
    val_scores, test_scores = fit_predict(x["train"], y["train"].astype(int),
                                          [x["validation"], x["test"]], c=c)
    p1 = float(np.mean(y["validation"][np.arange(len(val_scores)), val_scores.argmax(1)]))
    if best is None or p1 > best[0]:
      best = (p1, c, val_scores, test_scores)
  p1, c, val_scores, test_scores = best
  report = evaluate_scores(val_scores, split["validation"]["label_ids"], test_scores,
                           split["test"]["label_ids"], num_classes=info.num_classes,
                           propensity=propensity,
                           class_buckets=evaluate.frequency_buckets(counts))
  report.update(
      objective="ovr_logreg", natural_decoder="threshold_0.5",
      model={"estimator": "OneVsRestClassifier(LogisticRegression(solver='liblinear'))",
             "C": c, "C_grid": list(grid), "validation_precision_at_1": p1},
      data={"name": info.name, "num_classes": info.num_classes, "num_train_examples": n,
            "num_features": v},
      train={"seconds_this_run": time.time() - start, "steps": 0})
  return report


if __name__ == "__main__":
  result = run()
  print(json.dumps({k: result[k] for k in ("model", "train")}, indent=1))
  print(evaluate.format_tables(result["test"], natural="threshold_0.5"))
