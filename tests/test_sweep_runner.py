"""How the sweep runs: run selection, runs shared by processes (claims), per-hardware cost."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from experiments import sweep
from multilabel_jax import builders, configs
from multilabel_jax.studies import sweep_runner, tuning
from multilabel_jax.studies.sweep_runner import Run


def _report(p1=0.5):
  return {"test": {"ranking": {"precision_at_1": p1}}}


def _runs(names, fitted=None):
  def fit(name):
    def go():
      if fitted is not None:
        fitted.append(name)
      return _report()
    return go
  return [Run("g", name, fit=fit(name)) for name in names]


def test_only_takes_comma_separated_names_or_groups():
  runs = _runs(["hw20k_a", "hw1k_b", "ambiguity_low_c", "debtags_d"])
  names = lambda only: [r.name for r in sweep_runner.selected(runs, only)]  # noqa: E731
  assert names("") == ["hw20k_a", "hw1k_b", "ambiguity_low_c", "debtags_d"]
  assert names("hw") == ["hw20k_a", "hw1k_b"]
  assert names("hw20k,ambiguity") == ["hw20k_a", "ambiguity_low_c"]
  assert names("g") == names("")  # A group name.


def test_a_run_is_claimed_once_and_a_dead_processs_claim_is_cleared(tmp_path):
  run = _runs(["r"])[0]
  assert sweep_runner.claim(tmp_path, run)
  assert not sweep_runner.claim(tmp_path, run)  # Taken (by this process).
  assert sweep_runner.in_flight([run], tmp_path / "out", tmp_path) == 0  # Not elsewhere.
  path = tmp_path / "g" / "r"
  path.write_text(str(os.getppid()))  # A live process holds it.
  assert not sweep_runner.claim(tmp_path, run)
  assert sweep_runner.in_flight([run], tmp_path / "out", tmp_path) == 1
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.strip()
  path.write_text(gone)  # Its process has exited: the claim is stale.
  assert sweep_runner.in_flight([run], tmp_path / "out", tmp_path) == 0
  assert sweep_runner.claim(tmp_path, run)


def test_processes_sharing_claims_skip_each_others_runs_and_release_their_own(tmp_path):
  fitted = []
  runs = _runs(["a", "b", "c"], fitted)
  claims, out = tmp_path / "claims", tmp_path / "out"
  (claims / "g").mkdir(parents=True)
  (claims / "g" / "b").write_text(str(os.getppid()))  # Another process runs b.
  done = sweep_runner.run_sweep(runs, out, preset="p", claims=claims)
  assert done == fitted == ["a", "c"]
  assert sorted(p.name for p in (out / "g").iterdir()) == ["a.json", "c.json"]
  assert sorted(p.name for p in (claims / "g").iterdir()) == ["b"]  # Its own are released.
  assert sweep_runner.run_sweep(runs, out, preset="p") == ["b"]  # Without claims: all.


def test_estimates_read_only_runs_made_on_this_hardware(tmp_path):
  here = sweep_runner.machine()
  assert here.startswith(sweep_runner.hardware() + ",")

  def store(name, wall, machine):
    path = tmp_path / tuning.TUNE / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": {"steps": 10},
                                "sweep": {"wall_seconds": wall, "machine": machine}}))

  store("hw1k_softmax_lr0.001_s0", 50.0, here)
  store("hw1k_softmax_lr0.003_s0", 1.0, "x86_64 CPU, 16 cores, NVIDIA H200, Linux, Python 3.12")
  model = {"hw1k": (30.0, 0.5)}
  assert tuning.estimate_seconds(tmp_path, tuning.TUNE, "hw1k", 100, model, "softmax") == 500.0


def test_data_prefetch_reaches_both_pipelines():
  c = configs.base_config()
  c.data.options.update(num_classes=64, num_validation=16, num_test=16)
  c.data.prefetch = 0
  train, evaluation = builders.build_pipelines(c, builders.build_source(c))
  assert train.prefetch == evaluation.prefetch == 0


_NO_TENSORFLOW = '''import runpy, sys
for name in ("tensorflow", "tensorboard", "tensorflow_datasets"):
  sys.modules[name] = None  # As on a GPU image without them: importing fails.
flag, target, *rest = sys.argv[1:]
sys.argv = [target] + rest
if flag == "-c":
  exec(compile(target, "<string>", "exec"))
else:
  runpy.run_module(target, run_name="__main__", alter_sys=True)
'''


@pytest.mark.slow  # Two sweep processes on the tiny tuned preset: about a minute.
def test_sweep_on_gpu_script_shares_the_runs_without_tensorflow(tmp_path):
  """experiments/sweep_on_gpu.sh on a machine without TensorFlow (a python that cannot import
  it): every run of the preset stored once, each read without tf.data."""
  python = tmp_path / "python"
  (tmp_path / "no_tf.py").write_text(_NO_TENSORFLOW)
  python.write_text(f'#!/bin/bash\nexec {sys.executable} {tmp_path / "no_tf.py"} "$@"\n')
  python.chmod(0o755)
  out = tmp_path / "out"
  env = dict(os.environ, PYTHON=str(python), PRESET="tuned_tiny", OUT=str(out),
             RESULTS=str(tmp_path / "none stored"), ARCHIVE=str(tmp_path / "runs.tgz"))
  done = subprocess.run(["bash", "experiments/sweep_on_gpu.sh", "hw1k,ambiguity", "2"],
                        env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-2000:]
  planned = sweep_runner.selected(sweep.plan("tuned_tiny", out / "results"), "hw1k,ambiguity")
  stored = [r for r in planned if r.path(out / "results").exists()]
  assert len(stored) == len(planned) > 10
  ran = [line for log in (out / "logs").glob("worker*.log")
         for line in log.read_text().splitlines() if ": running" in line]
  assert len(ran) == len(planned)  # None twice.
  assert {r.name for r in stored if r.group == "oracle"} == {"hw1k_oracle",
                                                              "ambiguity_low_oracle"}
  for run in stored:  # The oracle's study reads the source directly, not through tf.data.
    if run.group != "oracle":
      assert json.loads(run.path(out / "results").read_text())["config"]["data"]["prefetch"] == 0
  with tarfile.open(tmp_path / "runs.tgz") as archive:  # The same runs, in one file.
    archived = {m.name for m in archive.getmembers() if m.name.endswith(".json")}
  assert archived == {str(r.path(out / "results").relative_to(out)) for r in stored}
