r"""Score ensembles on debtags validation: how far can averaging models lift P@1? (issue 12)

  python -m experiments.run --config=debtags.py --workdir=/tmp/ens/default_s0
  python -m experiments.run --config=debtags.py --workdir=/tmp/ens/default_s1 --config.seed=1
  python -m multilabel_jax.studies.ensembles \
      --workdirs=/tmp/ens/default_s0,/tmp/ens/default_s1 --out=results/probes/debtags_ensembles.json

Goal 1 of issue 12 asks the default debtags command for test P@1 >= 0.955, while every
single model measured so far (ours, LibMultiLabel, omikuji) sits at validation P@1
0.950-0.953. This probe asks whether any combination of those models gets there: the
members are the trained runs given (scored on validation through
:class:`multilabel_jax.inference.Predictor`), LibMultiLabel's linear one-vs-rest and omikuji
on the same bag (:mod:`multilabel_jax.studies.peers`). Each member's ``[N, C]`` scores are
standardised over the whole matrix (mean 0, sd 1) and every subset of members is averaged
with equal weights (nothing is fitted on validation). Only validation is read: these are
probes for a choice, not results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import sys
import time

import numpy as np

from multilabel_jax import inference
from multilabel_jax.studies import peers, probes

TITLE = ("Score ensembles on {data} (validation only; each member's scores standardised, "
         "members averaged with equal weights; `python -m multilabel_jax.studies.ensembles`):")


def standardise(scores: np.ndarray) -> np.ndarray:
  """``scores`` with mean 0 and standard deviation 1 over the whole matrix."""
  scores = np.asarray(scores, np.float64)
  return (scores - scores.mean()) / max(float(scores.std()), 1e-12)


def combinations(members: dict, labels) -> dict:
  """``{"a+b": {precision_at_1, precision_at_5}}`` of every non-empty subset of ``members``
  (``{name: standardised [N, C] scores}``), averaged with equal weights."""
  out = {}
  names = list(members)
  for size in range(1, len(names) + 1):
    for subset in itertools.combinations(names, size):
      mean = sum(members[n] for n in subset) / size
      out["+".join(subset)] = {"members": size,
                               "precision_at_1": probes.precision_at(mean, labels, 1),
                               "precision_at_5": probes.precision_at(mean, labels, 5)}
  return out


def run_scores(workdir: str, data: dict, class_names) -> np.ndarray:
  """A trained run's ``[N, C]`` scores of the source's arrays ``data``; ValueError if the
  run's classes are not the source's ``class_names``, in order."""
  predictor = inference.Predictor.from_workdir(workdir)
  if list(predictor.label_names) != list(class_names):
    raise ValueError(f"{workdir}: the run's {predictor.num_classes} classes are not the "
                     "source's, in order: a run of another config or file.")
  return predictor.scores({k: v for k, v in data.items() if k != "label_ids"})


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m multilabel_jax.studies.ensembles",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="experiments/debtags.py")
  parser.add_argument("--workdirs", default="", help="comma-separated trained runs of --config")
  parser.add_argument("--out", default="results/probes/debtags_ensembles.json")
  args = parser.parse_args(argv)
  config, source = peers.load_source(args.config)
  data, x, y = peers.read_splits(source, ("train", "validation"))
  members, seconds, runs = {}, {}, {}
  for i, workdir in enumerate(w for w in args.workdirs.split(",") if w):
    start = time.time()
    scores = run_scores(workdir, data["validation"], source.info.class_names)
    members[f"run{i}"] = standardise(scores)
    seconds[f"run{i}"] = time.time() - start
    run_config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    runs[f"run{i}"] = {"workdir": workdir, "seed": run_config["seed"],
                       "objective": run_config["objective"], "model": run_config["model"],
                       "total_steps": run_config["total_steps"]}
  for name in ("libmultilabel_1vsrest", "omikuji"):
    start = time.time()
    (scores,) = peers.PEERS[name](x, y, ("validation",))
    if name == "omikuji":  # Probabilities of its top 64 labels; -1 elsewhere means "not ranked".
      scores = np.where(scores < 0, 0.0, scores)
    members[name] = standardise(scores)
    seconds[name] = time.time() - start
    print(name, f"{seconds[name]:.0f} s", flush=True)
  stored = {"data": config.data.name, "split": "validation",
            "title": TITLE.format(data=config.data.name),
            "members": {"runs": runs, "seconds": seconds},
            "probes": combinations(members, y["validation"])}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(stored, indent=1))
  for name, p in stored["probes"].items():
    print(f"{name}: val P@1 {p['precision_at_1']:.4f} P@5 {p['precision_at_5']:.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
