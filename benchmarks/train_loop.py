"""The train loop's overhead: ``train_and_evaluate`` against a bare jitted step.

Three variants of one config (default: the main job, ``experiments/hashtag_pretrain.py``),
each in its own subprocess, run in turn (A B C A B C ...) so that a drift of the shared
machine's speed hits all of them alike:

* ``bare``: the same pipeline, objective, model, optimizer and jitted ``train_step`` as the
  loop (:func:`multilabel_jax.train.make_train_step`; without the loop's freeze after a
  non-finite step, one scalar condition), fed the same batches from the same prefetching
  iterator, with nothing else: no logging, no checkpoints, no validation, no host reads of
  the finiteness counts. One ``block_until_ready`` at the end. Configs without a class
  axis (``mesh.classes = 1``), as the main job.
* ``loop_quiet``: ``train.train_and_evaluate`` with logging, checkpoints and periodic
  validation switched off (``log_every = checkpoint_every = total_steps``, ``eval_every = 0``):
  the cost of the loop's own structure (the progress hook, the global-array conversion).
* ``loop``: ``train.train_and_evaluate`` at the config's own intervals (the main job: a log
  line every 100 steps, a checkpoint and a 2,000-row validation with exact mAP every 500).
* ``bare_synced`` (not run by default): ``bare`` that waits for each step before it
  dispatches the next, i.e. with JAX's asynchronous dispatch bounded to one step.

Time counted: from before the first step (its compilation included, in every variant) to
the last step's end: the loop's own ``train.seconds_this_run``; the final evaluation and
report after the loop are not part of it. Overhead = loop seconds / bare seconds - 1, from
the per-round ratios (medians).

``--memory`` compiles (does not run) the config's train step with the fused and with the
dense head and prints XLA's memory analysis of each: what a dense head would need.

  python benchmarks/train_loop.py                      # main job, 3 rounds, ~45 min on 2 cores
  python benchmarks/train_loop.py --steps 300 --rounds 1 --out /tmp/quick.json
  python benchmarks/train_loop.py --config hashtag_pretrain.py:million --memory --batch_sizes 256,1024
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = ("bare", "loop_quiet", "loop", "bare_synced")


def load_config(spec: str, steps: int | None, batch_size: int | None = None):
  sys.path.insert(0, str(ROOT))
  from experiments import run  # pylint: disable=import-outside-toplevel
  config = run.load_config(run.resolve_config_path(spec))
  if steps:
    config.total_steps = steps
  if batch_size:
    config.batch_size = batch_size
  return config


def _parts(config, use_fused=None):
  """The loop's own pieces: pipeline, mesh, jitted train step, its state's init and abstract
  state, and whether the head is fused."""
  import jax  # pylint: disable=import-outside-toplevel
  from multilabel_jax import builders, optim, train  # pylint: disable=import-outside-toplevel
  source = builders.build_source(config)
  train_data, _ = builders.build_pipelines(config, source)
  objective = builders.build_objective(config, source, train_data.label_stats)
  model = builders.build_model(config, objective, source)
  mesh = train.make_mesh(config)
  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps,
                                      wide=bool(model.wide_heads))
  example = {k: v[:1] for k, v in train_data.train_batch(0, count=False).items()}
  abstract, shardings = train.state_shardings(model, tx, example, mesh, config.mesh.classes > 1)
  if use_fused is None:
    use_fused = builders.use_fused_head(config, objective)
  step_fn = jax.jit(train.make_train_step(
      model, objective, tx, schedule, use_fused=use_fused,
      chunk_size=config.head.chunk_size, seed=config.seed), donate_argnums=0)
  init = jax.jit(lambda r: train.init_state(model, tx, example, r), out_shardings=shardings)
  return train_data, mesh, step_fn, init, abstract, use_fused


def memory(config) -> dict:
  """XLA's memory analysis of the train step, fused and dense heads (compiled, not run)."""
  import jax  # pylint: disable=import-outside-toplevel
  out = {}
  for head, fused in (("fused", True), ("dense", False)):
    train_data, _, step_fn, _, abstract, _ = _parts(config, use_fused=fused)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
             for k, v in train_data.train_batch(0, count=False).items()}
    mem = step_fn.lower(abstract, batch).compile().memory_analysis()
    out[head] = {k: int(getattr(mem, k)) for k in (
        "temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")}
    print(f"{head:6s} train step: XLA temporaries {out[head]['temp_size_in_bytes'] / 2**30:.2f} "
          f"GiB, arguments (state + batch) {out[head]['argument_size_in_bytes'] / 2**30:.2f} GiB",
          flush=True)
  return out


def bare(config, synced: bool = False) -> float:
  """Seconds for ``total_steps`` jitted steps on the loop's own batches, nothing else
  (``synced``: each step waits for the one before)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel

  train_data, mesh, step_fn, init, _, _ = _parts(config)
  state = init(jax.random.key(config.seed))
  data_sharding = NamedSharding(mesh, P("data"))
  start = time.time()
  for batch in train_data.train_iter(0, config.total_steps):
    batch = {k: jax.make_array_from_process_local_data(data_sharding, np.asarray(v))
             for k, v in batch.items()}
    state, _ = step_fn(state, batch)
    if synced:
      jax.block_until_ready(state)
  jax.block_until_ready(state)
  return time.time() - start


def loop(config, quiet: bool) -> float:
  from multilabel_jax import train  # pylint: disable=import-outside-toplevel
  if quiet:
    config.log_every = config.checkpoint_every = config.total_steps
    config.eval_every = 0
  with tempfile.TemporaryDirectory() as workdir:
    result = train.train_and_evaluate(config, workdir)
  return result["train"]["seconds_this_run"]


def child(args) -> None:
  import resource  # pylint: disable=import-outside-toplevel
  config = load_config(args.config, args.steps)
  if args.variant.startswith("bare"):
    seconds = bare(config, synced=args.variant == "bare_synced")
  else:
    seconds = loop(config, quiet=args.variant == "loop_quiet")
  print(json.dumps({"variant": args.variant, "seconds": seconds, "steps": config.total_steps,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(args, variant: str) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--variant", variant,
         "--config", args.config] + (["--steps", str(args.steps)] if args.steps else [])
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="hashtag_pretrain.py", help="experiments/ file[:arg].")
  p.add_argument("--steps", type=int, default=None, help="Override total_steps.")
  p.add_argument("--rounds", type=int, default=3, help="Rounds of the variants.")
  p.add_argument("--variants", default=",".join(VARIANTS[:3]), help=f"Some of {VARIANTS}.")
  p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/"
                 "train_loop.json, or train_step_memory.json with --memory).")
  p.add_argument("--child", action="store_true")
  p.add_argument("--variant", choices=VARIANTS, default="bare")
  p.add_argument("--memory", action="store_true",
                 help="Print the train step's XLA memory, fused and dense heads, and stop.")
  p.add_argument("--batch_sizes", default="",
                 help="With --memory: comma-separated batch sizes (default the config's).")
  args = p.parse_args()
  if args.child:
    return child(args)
  if args.memory:
    mem = {"config": args.config, "train_step_memory": {}}
    for b in [int(b) for b in args.batch_sizes.split(",") if b] or [None]:
      config = load_config(args.config, None, b)
      print(f"batch {config.batch_size}:", flush=True)
      mem["train_step_memory"][config.batch_size] = memory(config)
    out = pathlib.Path(args.out or ROOT / "benchmarks/results/train_step_memory.json")
    out.write_text(json.dumps(mem, indent=1))
    print(f"wrote {out}")
    return None
  variants = [v for v in args.variants.split(",") if v]
  if not variants or set(variants) - set(VARIANTS) or "bare" not in variants:
    p.error(f"--variants {args.variants!r}: bare and any of {VARIANTS[1:]}")
  runs = []
  for r in range(args.rounds):
    for variant in variants:
      res = dict(run_child(args, variant), round=r)
      runs.append(res)
      print(f"round {r} {variant:10s} {res['seconds']:8.1f} s  "
            f"{res['steps'] / res['seconds']:6.2f} steps/s  peak RSS {res['peak_rss_mb']:.0f} MB",
            flush=True)
  by = {v: [x for x in runs if x["variant"] == v] for v in variants}
  summary = {}
  for v in variants:
    secs = [x["seconds"] for x in by[v]]
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(by[v], by["bare"])]
    summary[v] = {"median_seconds": statistics.median(secs),
                  "steps_per_second": by[v][0]["steps"] / statistics.median(secs),
                  "overhead_vs_bare": statistics.median(ratios) - 1,
                  "overhead_range": [min(ratios) - 1, max(ratios) - 1]}
  print("\n| variant | median s | steps/s | overhead vs bare (median, min..max) |\n|---|---|---|---|")
  for v, s in summary.items():
    lo, hi = s["overhead_range"]
    print(f"| {v} | {s['median_seconds']:.1f} | {s['steps_per_second']:.2f} | "
          f"{100 * s['overhead_vs_bare']:+.1f}% ({100 * lo:+.1f}..{100 * hi:+.1f}%) |")
  out = {"config": args.config, "steps": runs[0]["steps"], "rounds": args.rounds,
         "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
         "date": time.strftime("%Y-%m-%d"), "runs": runs, "summary": summary}
  path = pathlib.Path(args.out or ROOT / "benchmarks/results/train_loop.json")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=1))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
