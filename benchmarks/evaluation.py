"""Benchmark: the evaluation path (two passes, exact mAP) for dense and fused heads.

A linear head on fixed random features (``pre_logits [N, D]``, kernel ``[D, C]``, 1-8
labels a row) evaluated by :func:`multilabel_jax.evaluate.evaluate` with the sigmoid
objective, through the dense scorer (``[B, C]`` scores of one batch) and the fused one
(class chunks). Reported per row: the wall time of the whole evaluation (pass one: top-r,
decoders and set metrics; pass two: the exact mAP counts), median over ``--runs`` after
one warm-up (which compiles); the exact macro and micro mAP; and the process's peak RSS.

Usage:
  .venv/bin/python benchmarks/evaluation.py --quick           # ~1 min
  .venv/bin/python benchmarks/evaluation.py --out benchmarks/results/evaluation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import evaluate, losses, scoring


class _LinearModel:
  """``apply`` of a linear head on given features, in the shape scoring expects."""

  def __init__(self, d):
    self.d = d

  def apply(self, variables, batch, skip_heads=()):
    x = batch["features"]
    out = {"pre_logits": x}
    if "logits" not in skip_heads:
      p = variables["params"]["head_logits"]
      out["logits"] = x @ p["kernel"] + p["bias"]
    return out


def _data(n, d, c, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)).astype(np.float32)
  w = (rng.standard_normal((d, c)) * 0.3).astype(np.float32)
  ids = np.full((n, 8), -1, np.int32)
  for i, k in enumerate(rng.integers(1, 9, size=n)):
    ids[i, :k] = rng.choice(c, size=k, replace=False)
  return x, w, ids


def run_one(n, d, c, fused, batch_size, r, runs, chunk_size):
  x, w, ids = _data(n, d, c)
  objective = losses.get_objective("sigmoid", c)
  state = {"params": {"head_logits": {"kernel": jnp.asarray(w),
                                      "bias": jnp.full((c,), -4.0, jnp.float32)}},
           "model_state": {}}
  one, two = (jax.jit(f) for f in scoring.eval_fns(_LinearModel(d), objective, r=r,
                                                   use_fused=fused, chunk_size=chunk_size))
  scorer = scoring.Scorer(one, two, state)

  def batches():
    for s in range(0, n, batch_size):
      sl = slice(s, s + batch_size)
      b = len(ids[sl])
      pad = batch_size - b
      yield {"features": np.pad(x[sl], ((0, pad), (0, 0))),
             "label_ids": np.pad(ids[sl], ((0, pad), (0, 0)), constant_values=-1),
             "mask": np.arange(batch_size) < b}

  times = []
  for _ in range(runs + 1):
    start = time.perf_counter()
    result = evaluate.evaluate(scorer, batches, objective=objective, num_classes=c,
                               top_ks=(1, 3, 5), r=r)
    times.append(time.perf_counter() - start)
  return {"n": n, "d": d, "num_classes": c, "head": "fused" if fused else "dense",
          "seconds": float(np.median(times[1:])), "map": result["ranking"]["map"],
          "map_micro": result["ranking"]["map_micro"],
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  if args.quick:
    settings = [(1000, 64, 20_000, False), (1000, 64, 20_000, True), (500, 64, 100_000, True)]
  else:
    settings = [(2000, 256, 20_000, False), (2000, 256, 20_000, True),
                (4000, 256, 20_000, False), (2000, 256, 100_000, True),
                (1000, 256, 1_048_576, True)]
  rows = []
  print("| N | C | head | seconds | mAP | micro mAP | peak RSS MB |")
  print("|---|---|---|---|---|---|---|")
  for n, d, c, fused in settings:
    row = run_one(n, d, c, fused, batch_size=512, r=64, runs=args.runs, chunk_size=8192)
    rows.append(row)
    print(f"| {n} | {c} | {row['head']} | {row['seconds']:.1f} | {row['map']:.4f} | "
          f"{row['map_micro']:.4f} | {row['peak_rss_mb']:.0f} |", flush=True)
  meta = {"machine": platform.machine(), "cpus": jax.local_device_count(),
          "jax": jax.__version__, "backend": jax.default_backend()}
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
