r"""The shipped debtags config against its peers: store its runs, write its table.

  python -m experiments.run --config=experiments/debtags.py --config.seed=S --workdir=W
  python -m multilabel_jax.studies.shipped --workdir=W --variant=default --out=results
  python -m multilabel_jax.studies.peers --config=experiments/debtags.py --out=results/peers

``store`` copies a finished run's report (rounded, :func:`sweep_runner.compact`) to
``results/shipped/<dataset>_<variant>_s<seed>.json`` with its sweep metadata, so that
docs/RESULTS.md (:mod:`multilabel_jax.studies.report`) draws the table from stored runs
only; :func:`section` is that table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import List

from multilabel_jax.studies import stats as rs
from multilabel_jax.studies import sweep_runner

GROUP = "shipped"
METRICS = (("test P@1", "precision_at_1"), ("test P@3", "precision_at_3"),
           ("test P@5", "precision_at_5"), ("test mAP", "map"))


def store(workdir, variant: str, out, dataset: str = "") -> pathlib.Path:
  """Copies ``workdir/report.json`` into ``out/shipped/``; returns the stored path.
  ``dataset``: the name to store it under (default the report's data name; another file
  read through the config's path override is still named after the config's source)."""
  report = json.loads(pathlib.Path(workdir, "report.json").read_text())
  seed, dataset = report["config"]["seed"], dataset or report["data"]["name"]
  name = f"{dataset}_{variant}_s{seed}"
  report["sweep"] = {"group": GROUP, "name": name, "dataset": dataset, "variant": variant,
                     "seed": seed, "machine": sweep_runner.machine()}
  path = pathlib.Path(out) / GROUP / f"{name}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(sweep_runner.compact(report), indent=1, sort_keys=True,
                             default=float))
  return path


def _val_p1(report) -> float:
  return report["validation"]["ranking"]["precision_at_1"]


def section(reports: List[dict]) -> List[str]:
  """The markdown of the shipped configs and the peers (empty when none is stored)."""
  shipped = rs.by_key(reports, GROUP, ("dataset", "variant"))
  peers = [r for r in reports if "peer" in r]
  if not shipped and not peers:
    return []
  lines = ["## debtags: the shipped config and its peers", "",
           "`python -m experiments.run --config=debtags.py` as shipped (`default`) and its "
           "ablations, each a stored run (mean ± sd over seeds), beside LibMultiLabel and "
           "omikuji trained by `python -m multilabel_jax.studies.peers` on the same features "
           "and split. Validation chose; test is reported once. Other files run through "
           "the same config by its path override (debsuggests: docs/DATA.md) follow, each "
           "with its own peers.", ""]
  body = []  # Each dataset's runs, then its peers; debtags first.
  order = lambda name: (name != "debtags", name)
  for dataset in sorted({k[0] for k in shipped} | {r["data"]["name"] for r in peers}, key=order):
    for (d, variant), runs in sorted(shipped.items()):
      if d == dataset:
        body.append([f"{dataset}: {variant}", str(len(runs)), rs.stat(runs, _val_p1).fmt()]
                    + [rs.stat(runs, lambda r, m=m: rs.ranking(r, m)).fmt() for _, m in METRICS]
                    + [rs.stat(runs, lambda r: r["train"]["seconds_this_run"]).fmt(0)])
    for r in sorted((r for r in peers if r["data"]["name"] == dataset), key=lambda r: r["peer"]):
      body.append([f"{dataset}: {r['peer']}", "1",
                   f"{r['validation_ranking']['precision_at_1']:.3f}"]
                  + [f"{r['test']['ranking'][m]:.3f}" for _, m in METRICS]
                  + [f"{r['train']['seconds_this_run']:.0f}"])
  lines += rs.table(["run", "seeds", "val P@1"] + [n for n, _ in METRICS] + ["train s"], body)
  return lines + _probes([r for r in reports if "probes" in r])


def _probes(stored: List[dict]) -> List[str]:
  """The validation probes: linear probes of feature directions
  (:mod:`multilabel_jax.studies.probes`) and score ensembles (:mod:`.ensembles`)."""
  lines = []
  for report in stored:
    body = [[name, f"{p['precision_at_1']:.4f}", f"{p['precision_at_5']:.4f}"]
            for name, p in report["probes"].items()]
    lines += [report.get("title") or (
        f"Linear probes of feature directions on {report['data']} (validation only; "
        "LibMultiLabel's linear one-vs-rest on the runs' own bag and on that bag with "
        "each direction; `python -m multilabel_jax.studies.probes`):"), ""]
    runs = report.get("members", {}).get("runs", {})
    if runs:
      lines += ["Trained members: " + "; ".join(
          f"{name} = {r['objective']} {r['model']}, {r['total_steps']} steps, seed {r['seed']}"
          for name, r in runs.items()) + ".", ""]
    lines += rs.table(["probe", "val P@1", "val P@5"], body)
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m multilabel_jax.studies.shipped")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--variant", default="default")
  parser.add_argument("--dataset", default="", help="default: the report's data name")
  parser.add_argument("--out", default="results")
  args = parser.parse_args(argv)
  print(store(args.workdir, args.variant, args.out, args.dataset))
  return 0


if __name__ == "__main__":
  sys.exit(main())
