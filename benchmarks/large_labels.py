"""The generic JSONL path at tens of thousands of labels: a synthetic debtags-schema file
through ``experiments/debtags.py`` by the path override alone, timed (issue 12, goal 2).

The file has the size of the held-out Debian dataset the issue describes: 57,000 records
and 37,000 labels (Zipf-distributed, and each of them given to a record or two so that the
train split holds nearly all), text inputs only (``depends`` empty). Each label has
a few signature words, and a record's synopsis and description draw from its labels'
words and from common filler, so the model has something to learn; the numbers are a
check that training works, not a result. The run is the documented command:

  python -m experiments.run --config=experiments/debtags.py \\
      --config.data.options.path=FILE --workdir=W

and the script reports its wall time, peak memory, the phases' times from the run's
report (train seconds, and the rest: loading, label statistics, evaluation, report) and
the test P@1/P@5, as JSON.

  python benchmarks/large_labels.py --out benchmarks/results/large_labels.json
  python benchmarks/large_labels.py --records 5000 --labels 3000 --out /tmp/small.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_dataset(path, records: int, labels: int, seed: int = 0) -> dict:
  """Writes the synthetic JSONL (gzip); returns its figures."""
  rng = np.random.default_rng(seed)
  zipf = 1.0 / np.arange(1, labels + 1) ** 0.9
  zipf /= zipf.sum()
  vocab = [f"w{i}" for i in range(4 * labels)]
  signature = rng.integers(0, len(vocab), size=(labels, 4))
  filler = [f"common{i}" for i in range(500)]
  counts = np.minimum(1 + rng.poisson(1.5, size=records), 30)
  written = 0
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for i in range(records):
      # Zipf draws, and two labels in turn so that every label occurs (about twice): the
      # train split then holds nearly all of them, as a real file's label set does.
      turn = {i % labels, (i + labels // 2) % labels} if i < 2 * labels else set()
      tags = sorted(set(rng.choice(labels, size=counts[i], p=zipf).tolist()) | turn)
      written += len(tags)
      words = [vocab[w] for t in tags for w in signature[t][rng.random(4) < 0.7]]
      words += rng.choice(filler, size=12).tolist()
      rng.shuffle(words)
      f.write(json.dumps({"package": f"pkg{i}-{rng.integers(1e9)}", "section": "misc",
                          "synopsis": " ".join(words[:6]), "description": " ".join(words),
                          "depends": [], "tags": [f"label{t}" for t in tags]}) + "\n")
  return {"records": records, "labels": labels, "mean_labels": written / records}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--records", type=int, default=57_000)
  p.add_argument("--labels", type=int, default=37_000)
  p.add_argument("--config", default="experiments/debtags.py")
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "large_labels.json"))
  p.add_argument("--keep", default="", help="Keep the data and workdir in this folder.")
  args = p.parse_args()
  folder = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="large_labels-"))
  folder.mkdir(parents=True, exist_ok=True)
  data, workdir = folder / "synthetic.jsonl.gz", folder / "run"
  t0 = time.time()
  figures = write_dataset(data, args.records, args.labels)
  figures["write_s"] = time.time() - t0
  cmd = [sys.executable, "-m", "experiments.run", f"--config={args.config}",
         f"--config.data.options.path={data}", f"--workdir={workdir}"]
  print(" ".join(cmd), flush=True)
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                        capture_output=True, text=True)
  wall = time.time() - t0
  if proc.returncode:
    sys.exit(f"the run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  report = json.loads((workdir / "report.json").read_text())
  train_s = report["train"]["seconds_this_run"]
  test = report["test"]["ranking"]
  out = {"data": figures, "command": " ".join(cmd[1:]), "wall_s": wall, "train_s": train_s,
         "other_s": wall - train_s,
         "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
         "classes": report["data"]["num_classes"], "fused_head": report["train"]["fused_head"],
         "wide_path_dropped": "config.head.wide: no wide path" in proc.stderr,
         "test": {k: test[k] for k in ("precision_at_1", "precision_at_3", "precision_at_5")},
         "validation_p1": report["validation"]["ranking"]["precision_at_1"],
         "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
         "date": time.strftime("%Y-%m-%d")}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
