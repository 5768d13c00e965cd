r"""Peers on the neural runs' own features and split: LibMultiLabel and omikuji.

  python -m multilabel_jax.studies.peers --config=experiments/debtags.py --out=results/peers
  python -m multilabel_jax.studies.peers --config=experiments/debtags.py \
      --data_path=../shared/data/debsuggests.jsonl.gz --dataset=debsuggests --out=results/peers

Each peer reads exactly the bag of words the config's run reads (its source, its
featurizer: text, ``depends=`` tokens and the package name's character n-grams) as a sparse
``[N, V]`` matrix, trains on the train split and scores validation and test; its scores go
through the neural runs' evaluation (:func:`ovr_baseline.evaluate_scores`), so P@k and mAP
are computed by the same code. One JSON per peer is written as soon as it finishes.

* ``libmultilabel_1vsrest``: LibMultiLabel's linear one-vs-rest, LIBLINEAR L2-loss SVM
  (``-s 2``, C = 1), Lin et al. 2023.
* ``libmultilabel_tree``: its label tree of linear classifiers (Khandagale et al. 2020).
* ``omikuji``: Partitioned Label Trees, 3 trees, Parabel-like defaults (Prabhu et al. 2018).

The packages are in the ``results`` extra (``pip install -e '.[results]'``), never in the
core install.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from typing import Callable, Dict

import numpy as np
import scipy.sparse

from multilabel_jax import builders, labels as labels_lib
from multilabel_jax.data import pipeline
from multilabel_jax.studies import ovr_baseline


def label_csr(label_ids, num_classes: int) -> scipy.sparse.csr_matrix:
  """Padded label ids ``[N, L]`` (-1 padding) as a 0/1 CSR ``[N, num_classes]``."""
  dense = np.asarray(labels_lib.ids_to_dense(label_ids, num_classes)) > 0
  return scipy.sparse.csr_matrix(dense.astype(np.float64))


def read_splits(source, splits=("train", "validation", "test")):
  """``(arrays, x, y)``, each ``{split: ...}``: a source's whole splits as its arrays, their
  bags of words as a CSR ``[N, V]`` and their labels as a 0/1 CSR ``[N, C]``."""
  arrays = {s: source.read(s, np.arange(source.num_examples(s))) for s in splits}
  x = {s: ovr_baseline.bag_to_csr(d["token_ids"], d["token_weights"], source.num_embeddings)
       for s, d in arrays.items()}
  y = {s: label_csr(d["label_ids"], source.info.num_classes) for s, d in arrays.items()}
  return arrays, x, y


def libmultilabel_1vsrest(x, y, evals):
  import libmultilabel.linear as linear  # pylint: disable=g-import-not-at-top
  model = linear.train_1vsrest(y["train"], x["train"], options="-s 2 -m 1", verbose=False)
  return [np.asarray(linear.predict_values(model, x[s])) for s in evals]


def libmultilabel_tree(x, y, evals):
  import libmultilabel.linear as linear  # pylint: disable=g-import-not-at-top
  model = linear.train_tree(y["train"], x["train"], options="-s 2 -m 1", verbose=False)
  return [np.asarray(linear.predict_values(model, x[s])) for s in evals]


def _write_xmc(path, x, y):
  """The Extreme Classification Repository format omikuji trains from."""
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"{x.shape[0]} {x.shape[1]} {y.shape[1]}\n")
    for i in range(x.shape[0]):
      labels = ",".join(str(j) for j in y[i].indices)
      row = x[i]
      feats = " ".join(f"{j}:{v:.6g}" for j, v in zip(row.indices, row.data))
      f.write(f"{labels} {feats}\n")


def omikuji_trees(x, y, evals, top_k: int = 64):
  import omikuji  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "train.txt"
    _write_xmc(path, x["train"], y["train"])
    model = omikuji.Model.train_on_data(str(path), omikuji.Model.default_hyper_param(),
                                        n_threads=1)
  out = []
  for s in evals:
    scores = np.full((x[s].shape[0], y["train"].shape[1]), -1.0, np.float32)
    for i in range(x[s].shape[0]):
      row = x[s][i]
      for label, score in model.predict(list(zip(row.indices.tolist(), row.data.tolist())),
                                        top_k=top_k):
        scores[i, label] = score
    out.append(scores)
  return out


PEERS: Dict[str, Callable] = {"libmultilabel_1vsrest": libmultilabel_1vsrest,
                              "libmultilabel_tree": libmultilabel_tree,
                              "omikuji": omikuji_trees}


def run_peer(name: str, source, dataset: str = "") -> dict:
  """One peer's report: ``{"peer", "test", "validation_ranking", "train": {seconds}}``
  (``dataset``: the name it is stored and shown under; default the source's)."""
  start = time.time()
  info = source.info
  split, x, y = read_splits(source)
  val_scores, test_scores = PEERS[name](x, y, ("validation", "test"))
  seconds = time.time() - start
  counts = np.asarray(y["train"].sum(0)).ravel()
  propensity = pipeline.LabelStats(counts=counts, num_examples=len(split["train"]["label_ids"]),
                                   labels_per_example=np.zeros(1, np.int64)).propensities()
  report = ovr_baseline.evaluate_scores(
      val_scores, split["validation"]["label_ids"], test_scores, split["test"]["label_ids"],
      num_classes=info.num_classes, propensity=propensity)
  return {"peer": name, "data": {"name": dataset or info.name, "num_classes": info.num_classes,
                                 "num_features": source.num_embeddings},
          "validation_ranking": report["validation_ranking"], "test": report["test"],
          "train": {"seconds_this_run": seconds}}


def load_source(config_path: str, data_path: str = ""):
  """``(config, source)`` of an experiment config file (``data_path``: another file for
  its source, ``config.data.options.path``)."""
  # Configs are files of the repository (run from its root, like experiments.run).
  from experiments import run as run_lib  # pylint: disable=g-import-not-at-top
  config = run_lib.load_config(config_path)
  if data_path:
    with config.unlocked():
      config.data.options.path = data_path
  return config, builders.build_source(config)


def fit_config(config_path: str, name: str, data_path: str = "", dataset: str = "") -> dict:
  """:func:`run_peer` on the source of a config file (the results sweep's peer runs)."""
  config, source = load_source(config_path, data_path)
  return run_peer(name, source, dataset or config.data.name)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m multilabel_jax.studies.peers",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="experiments/debtags.py",
                      help="the experiment config whose source and features the peers read")
  parser.add_argument("--out", default="results/peers")
  parser.add_argument("--only", default="", help="comma-separated peer names")
  parser.add_argument("--data_path", default="",
                      help="another file for the config's source (config.data.options.path)")
  parser.add_argument("--dataset", default="", help="the name to store and show the runs under")
  args = parser.parse_args(argv)
  config, source = load_source(args.config, args.data_path)
  dataset = args.dataset or config.data.name
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  for name in [n for n in PEERS if not args.only or n in args.only.split(",")]:
    report = run_peer(name, source, dataset)
    path = out / f"{dataset}_{name}.json"
    path.write_text(json.dumps(report, default=float, indent=1))
    r = report["test"]["ranking"]
    print(f"{name}: test P@1 {r['precision_at_1']:.4f} P@3 {r['precision_at_3']:.4f} "
          f"P@5 {r['precision_at_5']:.4f} ({report['train']['seconds_this_run']:.0f} s) -> {path}",
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
