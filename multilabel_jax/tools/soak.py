r"""Soak test: train with random kills and preemptions, check the result equals a clean run.

  python -m multilabel_jax.tools.soak --minutes=20 --out=runs/soak     # not part of CI

Runs ``experiments.run`` once undisturbed, then, in rounds until ``--minutes`` are spent,
the same config under repeated interruptions (``SIGKILL`` at a random moment, or
``SIGTERM``, the preemption notice), each followed by the same command until the run
finishes. Each round must end with final parameters bit-identical to the clean run and an
equal test report. It prints a JSON line per round and writes the summary to
``<out>/soak.json``; the exit code is 0 only if every round matched. The tests use
:func:`run_with_interruptions` on a tiny config.

It runs ``python -m experiments.run`` in the repository root, so it needs a checkout
(``experiments/`` is not installed).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]  # The checkout (multilabel_jax/tools/soak.py).
PREEMPTED_EXIT_CODE = 75  # multilabel_jax.checkpointing.PREEMPTED_EXIT_CODE, without importing JAX.


def command(config: str, workdir, overrides=()) -> list:
  return [sys.executable, "-m", "experiments.run", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def start(config, workdir, overrides=(), log=None) -> subprocess.Popen:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  out = open(log, "ab") if log else subprocess.DEVNULL  # pylint: disable=consider-using-with
  return subprocess.Popen(command(config, workdir, overrides), cwd=REPO, env=env,
                          stdout=out, stderr=subprocess.STDOUT)


def finished_steps(workdir) -> list:
  """Committed checkpoint steps (orbax renames a step's folder to its number when done)."""
  root = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.exists() \
      else []


def run_clean(config, workdir, overrides=(), timeout=1800) -> None:
  proc = start(config, workdir, overrides, log=pathlib.Path(workdir).with_suffix(".log"))
  if proc.wait(timeout) != 0:
    raise RuntimeError(f"clean run failed with exit code {proc.returncode}; see its log.")


def run_with_interruptions(config, workdir, *, total_steps: int, overrides=(), seed=0,
                           max_interruptions=1_000, sigterm_fraction=0.3,
                           timeout=1800) -> dict:
  """Runs until the job exits 0, interrupting it after a random number of new checkpoints.

  Each attempt waits until ``1..total_steps//3`` more checkpoint steps are committed (so
  every attempt makes progress), then sends SIGTERM (expecting exit code 75 and a saved
  step) or SIGKILL. Returns the list of interruptions.
  """
  rng = random.Random(seed)
  workdir = pathlib.Path(workdir)
  log = workdir.with_suffix(".log")
  events, deadline = [], time.time() + timeout
  while True:
    proc = start(config, workdir, overrides, log=log)
    if len(events) >= max_interruptions:
      break
    target = (finished_steps(workdir) or [0])[-1] + rng.randint(1, max(1, total_steps // 3))
    if target >= total_steps:
      break
    while proc.poll() is None and (finished_steps(workdir) or [0])[-1] < target:
      if time.time() > deadline:
        proc.kill()
        raise TimeoutError(f"soak: no progress to step {target} in {workdir}")
      time.sleep(0.02)
    if proc.poll() is not None:  # Finished (or failed) before the interruption.
      break
    time.sleep(rng.uniform(0.0, 0.5))  # Anywhere in the steps after that checkpoint.
    latest = finished_steps(workdir)[-1]
    if latest >= total_steps:  # Training is over; let the final evaluation finish.
      break
    sig = signal.SIGTERM if rng.random() < sigterm_fraction else signal.SIGKILL
    proc.send_signal(sig)
    code = proc.wait(timeout=600)
    events.append({"signal": sig.name, "after_checkpoint": latest, "exit_code": code,
                   "latest_after": (finished_steps(workdir) or [None])[-1]})
    if sig == signal.SIGTERM and code != PREEMPTED_EXIT_CODE:
      raise RuntimeError(f"SIGTERM ended the run with exit code {code}, not "
                         f"{PREEMPTED_EXIT_CODE}; see {log}.")
  if proc.wait(timeout=max(1.0, deadline - time.time())) != 0:
    raise RuntimeError(f"interrupted run failed with exit code {proc.returncode}; see {log}.")
  return {"interruptions": events}


def final_params(workdir):
  """``(step, params)`` of the newest checkpoint."""
  from multilabel_jax import checkpointing  # pylint: disable=g-import-not-at-top
  step, state = checkpointing.load_state(workdir)
  return step, state["params"]


def compare_runs(clean, soaked) -> dict:
  """Bit-level comparison of final params and test reports of two workdirs."""
  import jax  # pylint: disable=g-import-not-at-top
  step_a, a = final_params(clean)
  step_b, b = final_params(soaked)
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  same_params = (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
                 and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)))
  max_diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                 for x, y in zip(leaves_a, leaves_b))
  report_a = json.loads(pathlib.Path(clean, "report.json").read_text())
  report_b = json.loads(pathlib.Path(soaked, "report.json").read_text())
  return {"final_step": [step_a, step_b], "params_bit_identical": same_params,
          "max_abs_param_diff": max_diff,
          "test_reports_equal": report_a["test"] == report_b["test"],
          "train_data_counts_equal": (report_a["data"]["stats"]["train_batches"]
                                      == report_b["data"]["stats"]["train_batches"])}


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="hashtag_pretrain.py:runlocal")
  parser.add_argument("--total_steps", type=int, default=600)
  parser.add_argument("--minutes", type=float, default=30.0, help="Time limit for the soak.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="runs/soak")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  overrides = [f"--config.total_steps={args.total_steps}", "--config.checkpoint_every=10",
               "--config.eval_every=0"]
  t0 = time.time()
  run_clean(args.config, out / "clean", overrides)
  summary = {"config": args.config, "overrides": overrides,
             "clean_seconds": round(time.time() - t0, 1), "rounds": []}
  # Rounds of interrupted runs (fresh workdir, new seed) while time is left for one more.
  while time.time() - t0 + 1.5 * summary["clean_seconds"] < args.minutes * 60:
    r = len(summary["rounds"])
    workdir = out / f"soaked_{r}"
    result = run_with_interruptions(
        args.config, workdir, total_steps=args.total_steps, overrides=overrides,
        seed=args.seed + r, timeout=max(60.0, args.minutes * 60 - (time.time() - t0)))
    result.update(compare_runs(out / "clean", workdir))
    summary["rounds"].append(result)
    print(json.dumps({"round": r, **result}), flush=True)
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)  # Keep disk use flat.
  rounds = summary["rounds"]
  summary.update(
      total_seconds=round(time.time() - t0, 1),
      interruptions={sig: sum(e["signal"] == sig for r in rounds for e in r["interruptions"])
                     for sig in ("SIGKILL", "SIGTERM")},
      all_bit_identical=bool(rounds) and all(
          r["params_bit_identical"] and r["test_reports_equal"] and r["train_data_counts_equal"]
          for r in rounds))
  (out / "soak.json").write_text(json.dumps(summary, indent=2))
  print(json.dumps(summary, indent=2))
  return 0 if summary["all_bit_identical"] else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
