r"""How the results sweep runs: launch a run, store its report, skip stored runs, the CLI.

The runs (presets, groups, configs, seeds) are defined in ``experiments/sweep.py``, whose
command line is :func:`main`:

  python -m experiments.sweep --out=results                 # everything not yet stored
  python -m experiments.sweep --out=results --only=hw1k     # runs whose name contains hw1k
  python -m experiments.sweep --out=results --dry_run       # list the runs and their state

Each run trains with :func:`multilabel_jax.train.train_and_evaluate` in a scratch workdir
(deleted afterwards: checkpoints are not kept) and stores its report, rounded, as
``<out>/<group>/<name>.json``. Runs whose JSON exists are skipped, so an interrupted sweep
resumes where it stopped; delete a file to redo that run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable, List, Optional, Sequence

import jax
from absl import app, flags, logging

from multilabel_jax import train


@dataclasses.dataclass(frozen=True)
class Run:
  group: str
  name: str
  make_config: Optional[Callable] = None  # None: the OvR baseline (or ``fit``).
  meta: dict = dataclasses.field(default_factory=dict)
  waits_for: str = ""       # Not runnable until these are stored (the tuned protocol).
  estimate_s: float = 0.0   # Expected wall seconds here (0: no estimate).
  fit: Optional[Callable[[], dict]] = None  # A run that is not ours (a peer): its report.

  def path(self, out) -> pathlib.Path:
    return pathlib.Path(out) / self.group / f"{self.name}.json"


def compact(report: dict, digits: int = 5) -> dict:
  """The report with floats rounded (the stored JSON stays small and diffable)."""
  if isinstance(report, dict):
    return {k: compact(v, digits) for k, v in report.items()}
  if isinstance(report, (list, tuple)):
    return [compact(v, digits) for v in report]
  if isinstance(report, float):
    return round(report, digits)
  return report


def hardware() -> str:
  """What sets a run's speed: the CPU's cores and, if JAX runs on one, the accelerator."""
  accelerator = "" if jax.default_backend() == "cpu" else f", {jax.devices()[0].device_kind}"
  return f"{platform.machine()} CPU, {os.cpu_count()} cores{accelerator}"


def machine() -> str:
  """A one-line description of this host (recorded with each run)."""
  return (f"{hardware()}, {platform.system()}, Python {platform.python_version()}, "
          f"jax {jax.__version__}")


def _write_json(path: pathlib.Path, data: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=float))
  tmp.replace(path)  # Atomic: a killed sweep never leaves a half-written result.


def run_one(run: Run, out, *, preset: str, scratch=None, prefetch: Optional[int] = None
            ) -> dict:
  """Trains (or fits the baseline), stores ``<out>/<group>/<name>.json``, returns it.
  ``prefetch``: overrides the run's ``config.data.prefetch`` (0: no tf.data)."""
  start = time.time()
  if run.fit is not None:
    report = run.fit()
  elif run.make_config is None:
    # scikit-learn: imported only for the baseline run.
    from multilabel_jax.studies import ovr_baseline  # pylint: disable=g-import-not-at-top
    report = ovr_baseline.run(tiny=preset == "tiny")
  else:
    if scratch:
      pathlib.Path(scratch).mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{run.name}-", dir=scratch))
    try:
      config = run.make_config()
      if prefetch is not None:
        config.data.prefetch = prefetch
      report = train.train_and_evaluate(config, workdir)
    finally:
      shutil.rmtree(workdir, ignore_errors=True)
  report = dict(report, sweep=dict(run.meta, group=run.group, name=run.name, preset=preset,
                                   wall_seconds=time.time() - start, machine=machine()))
  report = compact(report)
  _write_json(run.path(out), report)
  return report


def format_plan(runs, out) -> str:
  """The dry run's table: each run's state and expected seconds, and the totals."""
  lines, todo, waiting = [], 0.0, 0.0
  for run in runs:
    stored = run.path(out).exists()
    state = "stored" if stored else (f"waits for {run.waits_for}" if run.waits_for
                                      else "to run")
    if not stored and run.waits_for:
      waiting += run.estimate_s
    elif not stored:
      todo += run.estimate_s
    lines.append(f"{run.group}/{run.name}: {state}, ~{run.estimate_s / 60:.1f} min")
  lines.append(f"runnable now: ~{todo / 3600:.1f} h; waiting on those: ~{waiting / 3600:.1f} h "
               f"(CPU hours on this machine's cost model)")
  return "\n".join(lines)


def _claim_path(claims, run: Run) -> pathlib.Path:
  return pathlib.Path(claims) / run.group / run.name


def _claimed_elsewhere(claims, run: Run) -> bool:
  """Whether a live process on this machine holds ``run``'s claim (stale ones are removed)."""
  path = _claim_path(claims, run)
  try:
    pid = int(path.read_text() or 0)
  except (FileNotFoundError, ValueError):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    path.unlink(missing_ok=True)  # Its process died without storing the run.
    return False
  except PermissionError:
    pass
  return pid != os.getpid()


def claim(claims, run: Run, out=None) -> bool:
  """Claims ``run`` for this process (atomic: one process of those sharing ``claims`` wins);
  False also when ``run`` turns out stored in ``out`` by the time its claim is held."""
  path = _claim_path(claims, run)
  path.parent.mkdir(parents=True, exist_ok=True)
  _claimed_elsewhere(claims, run)  # Clears a dead process's claim.
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    return False
  os.write(fd, str(os.getpid()).encode())
  os.close(fd)
  if out is not None and run.path(out).exists():  # Stored by another process meanwhile.
    path.unlink(missing_ok=True)
    return False
  return True


def in_flight(runs: Sequence[Run], out, claims) -> int:
  """How many of ``runs`` other live processes are running now (claimed, not stored)."""
  return sum(not r.path(out).exists() and _claimed_elsewhere(claims, r) for r in runs)


def selected(runs: Sequence[Run], only: str) -> List[Run]:
  """The runs whose name contains one of ``only``'s comma-separated parts, or whose group is
  one of them (all runs if ``only`` is empty)."""
  parts = [p for p in only.split(",") if p] or [""]
  return [r for r in runs if any(p in r.name or p == r.group for p in parts)]


def run_sweep(runs: Sequence[Run], out, *, preset: str, only: str = "", scratch=None,
              dry_run: bool = False, shard: str = "0/1", prefetch: Optional[int] = None,
              claims=None) -> List[str]:
  """Runs every run of ``runs`` (a preset's plan) whose result is missing; returns their names.

  ``shard``: "i/n" runs every n-th planned run from the i-th (parallel sweep processes).
  ``claims``: a folder shared by sweep processes on one machine: each run goes to the first
  process that claims it there (see :func:`claim`).
  """
  done = []
  index, _, count = shard.partition("/")
  index, count = int(index), int(count or 1)
  if not 0 <= index < count:
    raise ValueError(f"`shard` must be 'i/n' with 0 <= i < n, got {shard!r}.")
  runs = selected(runs, only)[index::count]
  if dry_run and any(r.estimate_s for r in runs):
    print(format_plan(runs, out))
    return done
  for i, run in enumerate(runs):
    if run.path(out).exists():
      logging.info("[%d/%d] %s: stored, skipped", i + 1, len(runs), run.name)
      continue
    if run.waits_for:
      logging.info("[%d/%d] %s: waits for %s", i + 1, len(runs), run.name, run.waits_for)
      continue
    if dry_run:
      print(f"to run: {run.group}/{run.name}")
      continue
    if claims and not claim(claims, run, out):
      logging.info("[%d/%d] %s: claimed by another process", i + 1, len(runs), run.name)
      continue
    logging.info("[%d/%d] %s: running", i + 1, len(runs), run.name)
    try:
      report = run_one(run, out, preset=preset, scratch=scratch, prefetch=prefetch)
    finally:
      if claims:
        _claim_path(claims, run).unlink(missing_ok=True)
    # Validation only: a tuning sweep's log must not show test numbers before the choice.
    val = report.get("validation", {}).get("ranking") or report.get("validation_ranking", {})
    p1 = (f", validation P@1 {val['precision_at_1']:.4f}" if "precision_at_1" in val
          else "")  # A study run (e.g. the oracle's mAP) has no validation.
    print(f"[{i + 1}/{len(runs)}] {run.group}/{run.name}: "
          f"{report['sweep']['wall_seconds']:.0f} s{p1}", flush=True)
    done.append(run.name)
  return done


def main(plan: Callable[[str, str], Sequence[Run]], presets: Sequence[str],
         default_preset: str = "cpu") -> None:
  """The sweep's command line: defines its flags, then runs ``plan(--preset, --out)``,
  planning again after each pass while runs that waited have become runnable."""
  key = dict(module_name=sys.argv[0])  # The main program's flags: listed by --help.
  out = flags.DEFINE_string("out", "results", "Folder of the stored run reports.", **key)
  preset = flags.DEFINE_enum("preset", default_preset, list(presets),
                             "Steps, seeds and eval sizes.", **key)
  only = flags.DEFINE_string("only", "", "Run only runs whose name contains this, or whose "
                             "group is this (several: comma-separated).", **key)
  scratch = flags.DEFINE_string("scratch", None, "Where the temporary workdirs go.", **key)
  dry_run = flags.DEFINE_bool("dry_run", False, "List the runs still to do; train nothing.",
                              **key)
  shard = flags.DEFINE_string("shard", "0/1", "i/n: this process runs every n-th run from i.",
                              **key)
  prefetch = flags.DEFINE_integer("prefetch", None, "Each run's data.prefetch: batches read "
                                  "ahead by tf.data (0: none, for machines without "
                                  "TensorFlow); default: the config's.", **key)
  claims = flags.DEFINE_string("claims", "", "A folder shared by sweep processes on this "
                                "machine: each takes the next unclaimed run, and waits while "
                                "runs it could do next are in flight elsewhere.", **key)
  cache = flags.DEFINE_string("compilation_cache", "/tmp/multilabel_jax_jit_cache",
                              "JAX persistent compilation cache ('' to disable): seeds and "
                              "ambiguity levels reuse the compiled steps.", **key)

  def _main(argv):
    del argv
    if cache.value:
      jax.config.update("jax_compilation_cache_dir", cache.value)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    ran = []
    while True:
      runs = plan(preset.value, out.value)
      new = run_sweep(runs, out.value, preset=preset.value, only=only.value,
                      scratch=scratch.value, dry_run=dry_run.value, shard=shard.value,
                      prefetch=prefetch.value, claims=claims.value or None)
      ran += new
      if new:
        continue
      if dry_run.value or not claims.value:
        break
      mine = selected(runs, only.value)
      waiting = [r for r in mine if r.waits_for and not r.path(out.value).exists()]
      if not (waiting and in_flight(mine, out.value, claims.value)):
        break
      time.sleep(10)  # Runs in flight elsewhere may make the waiting ones runnable.
    print(f"sweep: {len(ran)} runs done; results in {out.value}")

  app.run(_main)
