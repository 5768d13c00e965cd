r"""Linear probes of two debtags feature directions, on validation only (issue 12, goal 1).

  python -m multilabel_jax.studies.probes --out=results/probes/debtags.json

A cheap way to ask whether a direction can lift debtags' P@1 before a neural run tries it:
LibMultiLabel's linear one-vs-rest (LIBLINEAR's L2-loss SVM, C = 1, the peers' setting) on

* ``bag``: the neural runs' own bag of words (``experiments/debtags.py``'s source), the
  model's linear special case;
* ``bag+bigrams``: that bag beside the word bigrams of the text fields (sublinear TF-IDF over
  bigrams seen in at least 2 train records; each row L2-normalised again);
* ``bag+knn``: the ``bag`` scores plus ``weight`` times a k-nearest-neighbour vote (cosine
  similarity of the bags, the train neighbours' label sets averaged with those weights);
* ``bag+depends``: the ``bag`` scores plus ``weight`` times the label sets of the train
  packages linked to the record by ``depends`` (:func:`dependency_votes`).

Only validation P@1 and P@5 are computed: these are probes for a choice, not results. Each
probe is stored as soon as it finishes. LibMultiLabel is in the ``results`` extra.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import time

import numpy as np
import scipy.sparse

from multilabel_jax import metrics
from multilabel_jax.data import debtags
from multilabel_jax.studies import peers

KNN = ((10, 0.25), (10, 0.5), (20, 0.25), (20, 0.5))  # (neighbours, weight of the vote)
DEPENDS = (0.1, 0.25)  # Weights of the dependency-link vote.


def precision_at(scores: np.ndarray, labels: scipy.sparse.csr_matrix, k: int) -> float:
  """Mean P@k (:func:`multilabel_jax.metrics.precision_at_k`) of 0/1 CSR ``labels``."""
  return float(metrics.precision_at_k(np.asarray(scores, np.float32), labels.toarray(), k).mean())


def knn_votes(x_eval, x_train, y_train, k: int) -> np.ndarray:
  """``[N, C]``: the label sets of each row's ``k`` most similar train rows (dot product of
  L2-normalised bags), averaged with their similarities as weights."""
  sim = (x_eval @ x_train.T).toarray()
  near = np.argpartition(-sim, k, axis=1)[:, :k]
  w = np.take_along_axis(sim, near, axis=1)
  votes = np.zeros((x_eval.shape[0], y_train.shape[1]))
  for j in range(k):
    votes += w[:, j:j + 1] * y_train[near[:, j]].toarray()
  return votes / np.maximum(w.sum(1, keepdims=True), 1e-12)


def source_records(path, labels: dict, class_names) -> dict:
  """``{split: [record]}``: the file's raw records in the source's order (the file's order
  within each split, checked against the source's ``labels``: ``{split: CSR}``)."""
  records = {s: [] for s in labels}
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      if line.strip():
        record = json.loads(line)
        split = debtags.split_of(record["package"])
        if split in labels:
          records[split].append(record)
  known = set(class_names)
  for split, y in labels.items():
    source_tags = [{class_names[c] for c in y[n].indices} for n in range(y.shape[0])]
    if source_tags != [set(r["tags"]) & known for r in records[split]]:
      raise ValueError(f"{path}: the {split} records are not in the source's order")
  return records


def bigram_features(records: dict, fields) -> dict:
  """``{split: CSR}``: sublinear TF-IDF of the text ``fields``' word bigrams in ``records``
  (:func:`source_records`), fit on train."""
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  texts = {s: ["\n".join(str(r.get(k, "")) for k in fields) for r in rs]
           for s, rs in records.items()}
  vectorizer = TfidfVectorizer(ngram_range=(2, 2), min_df=2, sublinear_tf=True)
  vectorizer.fit(texts["train"])
  return {s: vectorizer.transform(t) for s, t in texts.items()}


def dependency_votes(eval_records, train_records, y_train) -> np.ndarray:
  """``[N, C]``: the label sets of the train packages each record is linked to by
  ``depends`` (those it depends on and those that depend on it), averaged with weights
  ``1 / log(2 + d)``, ``d`` the other end's number of links (a link to ``libc6`` says
  little). Rows with no train link are 0."""
  row = {r["package"]: n for n, r in enumerate(train_records)}
  depends = {r["package"]: set(r.get("depends", ())) for r in train_records}
  dependants = {}
  for package, deps in depends.items():
    for d in deps:
      dependants.setdefault(d, set()).add(package)
  votes = np.zeros((len(eval_records), y_train.shape[1]))
  for n, r in enumerate(eval_records):
    links = [(d, 1 / np.log(2 + len(dependants.get(d, ()))))
             for d in set(r.get("depends", ())) if d in row]
    links += [(q, 1 / np.log(2 + len(depends[q]))) for q in dependants.get(r["package"], ())]
    if links:
      for q, w in links:
        votes[n] += w * y_train[row[q]].toarray().ravel()
      votes[n] /= sum(w for _, w in links)
  return votes


def _l2_rows(x):
  norm = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
  return scipy.sparse.diags(1.0 / np.maximum(norm, 1e-12)) @ x


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m multilabel_jax.studies.probes",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="results/probes/debtags.json")
  args = parser.parse_args(argv)
  import libmultilabel.linear as linear  # pylint: disable=g-import-not-at-top
  config, source = peers.load_source("experiments/debtags.py")
  splits = ("train", "validation")
  _, bag, y = peers.read_splits(source, splits)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  stored = {"data": config.data.name, "split": "validation", "probes": {}}

  def probe(name, scores, start, **extra):
    stored["probes"][name] = dict(
        extra, precision_at_1=precision_at(scores, y["validation"], 1),
        precision_at_5=precision_at(scores, y["validation"], 5), seconds=time.time() - start)
    out.write_text(json.dumps(stored, indent=1))
    print(name, stored["probes"][name], flush=True)

  def linear_scores(x):
    model = linear.train_1vsrest(y["train"], x["train"], options="-s 2 -m 1", verbose=False)
    return np.asarray(linear.predict_values(model, x["validation"]))

  start = time.time()
  base = linear_scores(bag)
  probe("bag", base, start, num_features=bag["train"].shape[1])
  for k, weight in KNN:
    start = time.time()
    votes = knn_votes(bag["validation"], bag["train"], y["train"], k)
    probe(f"bag+knn_k{k}_w{weight:g}", base + weight * votes, start, knn_alone_precision_at_1=(
        precision_at(votes, y["validation"], 1)))
  path = debtags.resolve_path(config.data.options.get("path"))
  records = source_records(path, y, list(source.info.class_names))
  for weight in DEPENDS:
    start = time.time()
    votes = dependency_votes(records["validation"], records["train"], y["train"])
    probe(f"bag+depends_w{weight:g}", base + weight * votes, start,
          depends_alone_precision_at_1=precision_at(votes, y["validation"], 1),
          records_with_links=float((votes.sum(1) > 0).mean()))
  start = time.time()
  bigrams = bigram_features(records, debtags.debtags_config(str(path)).text_fields)
  both = {s: _l2_rows(scipy.sparse.hstack([bag[s], bigrams[s]]).tocsr()) for s in splits}
  probe("bag+bigrams", linear_scores(both), start, num_features=both["train"].shape[1])
  return 0


if __name__ == "__main__":
  sys.exit(main())
