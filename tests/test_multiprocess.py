"""Multi-process training (``jax.distributed`` over gloo, CPU devices): launching, equality
with one process, checkpoints across process counts, and faults.

Every process is a subprocess (``experiments.launch``, or ``tests/multiprocess_worker.py``
started directly), never the pytest process; every subprocess has a timeout, so a hang
fails the test. The worker records each process's file writes and the example indices its
pipeline read (see its docstring).
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import launch
from multilabel_jax import checkpointing, multihost

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
    str(REPO), os.environ.get("PYTHONPATH")])), TF_CPP_MIN_LOG_LEVEL="3")
WORKER = "tests.multiprocess_worker"
# runlocal (1000 classes, 30 steps of 64) on a (data 4, classes 2) mesh; 640 training
# examples, so the 30 steps are 3 epochs.
HASHTAG = ("--config=hashtag_pretrain.py:runlocal", "--config.mesh.classes=2",
           "--config.data.options.num_train=640")
JSONL = ("--config=jsonl.py:runlocal", "--config.checkpoint_every=5")  # 20 steps of 16.
TIMEOUT = 600


def _env(**extra):
  return dict(ENV, **{k: str(v) for k, v in extra.items()})


def _launch(*args, processes=2, devices=4, timeout=TIMEOUT, module=WORKER, **env):
  """``experiments.launch`` of ``module`` with ``args``: the CompletedProcess."""
  return subprocess.run(
      [sys.executable, "-m", "experiments.launch", f"--num_processes={processes}",
       f"--devices_per_process={devices}", f"--module={module}", "--", *args],
      cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def _single(*args, devices=8, timeout=TIMEOUT, **env):
  """The worker as one process with ``devices`` CPU devices."""
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return subprocess.run([sys.executable, "-m", WORKER, *args], cwd=REPO, env=_env(**env),
                        capture_output=True, text=True, timeout=timeout)


def _ok(out):
  assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
  return out


def _params(workdir):
  return jax.tree_util.tree_leaves(checkpointing.load_state(workdir)[1]["params"])


def _max_diff(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))


def _close(a, b, path="", rtol=1e-4, atol=1e-6):
  """Nested report values equal: integers and strings exactly, floats to tolerance."""
  if isinstance(a, dict):
    assert set(a) == set(b), path
    for k in a:
      _close(a[k], b[k], f"{path}.{k}", rtol, atol)
  elif isinstance(a, list):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      _close(x, y, f"{path}[{i}]", rtol, atol)
  elif isinstance(a, float) or isinstance(b, float):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=path)
  else:
    assert a == b, path


def _report(workdir):
  return json.loads((pathlib.Path(workdir) / "report.json").read_text())


def _records(folder):
  return [json.loads(p.read_text()) for p in sorted(pathlib.Path(folder).glob("process-*.json"))]


# ------------------------------------------------------------------ fast checks


def test_process_flags_come_all_or_none():
  assert not multihost.check_flags(None, None, None)
  assert multihost.check_flags("127.0.0.1:1234", 2, 1)
  with pytest.raises(ValueError, match="--num_processes given without --coordinator, "
                     "--process_id: a multi-process run needs all three"):
    multihost.check_flags(None, 2, None)
  with pytest.raises(ValueError, match=r"--process_id must be in \[0, 2\)"):
    multihost.check_flags("127.0.0.1:1234", 2, 2)
  with pytest.raises(ValueError, match="--coordinator must be HOST:PORT"):
    multihost.check_flags("localhost", 2, 0)
  out = subprocess.run([sys.executable, "-m", "experiments.run", *HASHTAG, "--num_processes=2",
                        "--process_id=0"], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2 and out.stderr.strip() == (
      "experiments.run: error: --num_processes, --process_id given without --coordinator: a "
      "multi-process run needs all three of --coordinator=HOST:PORT, --num_processes=N and "
      "--process_id=I (the same command on every process, but its index)."), out.stderr


def test_launcher_prefixes_output_and_returns_the_job_exit_code():
  fake = "tests.launch_fake"
  out = _launch("--plan=0:0,1:0", devices=3, module=fake, timeout=60)
  assert out.returncode == 0, out.stdout
  lines = out.stdout.splitlines()
  port = re.search(r"at 127\.0\.0\.1:(\d+) ", out.stdout)[1]
  for i in range(2):  # Same command, same coordinator; its own index; 3 devices each.
    assert (f"[{i}] process {i} of 2 at 127.0.0.1:{port} "
            "XLA_FLAGS=--xla_force_host_platform_device_count=3") in lines
  assert lines[-1] == "experiments.launch: process 0: exit code 0; process 1: exit code 0"
  start = time.monotonic()
  out = subprocess.run([sys.executable, "-m", "experiments.launch", "--num_processes=3",
                        "--grace_period=1", f"--module={fake}", "--", "--plan=0:hang,1:3,2:0"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
  assert out.returncode == 3 and time.monotonic() - start < 30, out.stdout
  assert ("experiments.launch: process 1 stopped (exit code 3); the others get 1 s to stop"
          in out.stdout)
  assert "process 0 still running 1 s after process 1 stopped: killed" in out.stdout
  assert out.stdout.splitlines()[-1] == ("experiments.launch: process 0: signal SIGKILL; "
                                         "process 1: exit code 3; process 2: exit code 0")
  assert _launch("--plan=0:75,1:75", module=fake, timeout=60).returncode == 75
  assert launch.job_exit_code([-9, -6], [1, 0]) == 134  # The first to fail: SIGABRT.
  # Process 0 is seen to stop first, but JAX stopped it because process 1 failed: the job's
  # code is process 1's (CI once saw process 0's abort before process 1's own exit).
  out = _launch("--plan=0:jaxabort,1:late3", module=fake, timeout=60)
  assert out.returncode == 3, out.stdout
  assert "experiments.launch: process 0 stopped (signal SIGABRT)" in out.stdout
  assert out.stdout.splitlines()[-1] == (
      "experiments.launch: process 0: signal SIGABRT (stopped by JAX: another process "
      "failed); process 1: exit code 3"), out.stdout
  assert launch.job_exit_code([-6, 1], [0, 1], {0}) == 1
  assert launch.job_exit_code([-6, -6], [1, 0], {0, 1}) == 134  # All stopped by JAX.
  bad = _launch("--plan=0:0", "--process_id=1", module=fake, timeout=60)
  assert bad.returncode == 2 and "the launcher sets --coordinator" in bad.stderr


def test_launcher_passes_sigterm_to_every_process():
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.launch", "--num_processes=2",
       "--module=tests.launch_fake", "--", "--plan=0:term75,1:term75"],
      cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
  for _ in range(2):  # Both started.
    assert "process" in proc.stdout.readline()
  proc.send_signal(signal.SIGTERM)
  rest = proc.communicate(timeout=60)[0]
  assert proc.returncode == 75, rest
  assert "process 0: exit code 75; process 1: exit code 75" in rest


def test_multihost_helpers_in_two_processes():
  """sum_over_processes, scoring.gather, Scorer.rows and evaluate.iterate across 2 real
  processes of 2 devices (tests/multiprocess_check.py)."""
  out = _ok(_launch(processes=2, devices=2, module="tests.multiprocess_check", timeout=300))
  assert "[0] OK 9" in out.stdout and "[1] OK 9" in out.stdout, out.stdout[-3000:]


# ------------------------------------------------------------------ training


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """runlocal as 2 processes x 4 devices and as 1 process x 8, on the same (data 4,
  classes 2) mesh.

  The global batches are the same (process p reads rows [32p, 32p + 32) of each), and so
  is the program XLA partitions over the 8 devices; but the cross-device sums (gradients
  over the data axis, the encoder's over the class axis) run over gloo between processes
  and in-process within one, in different orders, so the parameters are not bit-identical:
  measured, the largest difference is 4.8e-7 (one float32 ulp of a head bias near -6.9).
  Asserted to rtol 1e-5 / atol 1e-6; the reports (validation, test, oracle, calibration,
  the decoder chosen, data counts) to rtol 1e-4, integers exactly.
  """
  one, two = tmp_path / "one", tmp_path / "two"
  _ok(_single(*HASHTAG, f"--workdir={one}", MLJ_TEST_RECORD=_mkdir(tmp_path / "rec1")))
  out = _ok(_launch(*HASHTAG, f"--workdir={two}", MLJ_TEST_RECORD=_mkdir(tmp_path / "rec2")))
  assert "process 0: exit code 0; process 1: exit code 0" in out.stdout

  for a, b in zip(_params(one), _params(two)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  ra, rb = _report(one), _report(two)
  for key in ("validation", "test", "oracle", "calibration", "predict", "data",
              "validation_history", "natural_decoder", "evaluation_path"):
    _close(ra[key], rb[key], key)
  np.testing.assert_allclose(rb["train"]["final_loss"], ra["train"]["final_loss"], rtol=1e-5)

  # The data: the same global batches; each process its own rows, each example once per
  # epoch (640 examples, 10 steps of 64 per epoch); evaluation rows split the same way.
  (single,), (p0, p1) = _records(tmp_path / "rec1"), _records(tmp_path / "rec2")
  assert sorted(single["train"], key=int) == [str(s) for s in range(30)]
  for step, rows in single["train"].items():
    assert p0["train"][step] + p1["train"][step] == rows
  for epoch in range(3):
    steps = [str(s) for s in range(10 * epoch, 10 * epoch + 10)]
    mine = [set(i for s in steps for i in p["train"][s]) for p in (p0, p1)]
    assert not mine[0] & mine[1]
    assert sorted(i for p in (p0, p1) for s in steps for i in p["train"][s]) == list(range(640))
  for split, n in (("validation", 256), ("test", 512)):
    assert not set(p0["eval"][split]) & set(p1["eval"][split])
    assert sorted(p0["eval"][split] + p1["eval"][split]) == single["eval"][split] == list(
        range(n))

  # Only process 0 writes the run's files; process 1 only its checkpoint shards.
  assert all(w.startswith("checkpoints/") for w in p1["writes"]), p1["writes"]
  assert any("process_1" in w for w in p1["writes"])
  assert {"config.json", "report.json", "report.md", "calibration.npz",
          "validation_history.tmp"} <= set(p0["writes"])
  assert len(list(two.glob("events.out.tfevents*"))) == 1  # The metrics: process 0's writer.
  assert "| decoder |" in out.stdout  # The report's tables, printed by process 0 only:
  assert not any(l.startswith("[1] | decoder |") for l in out.stdout.splitlines())


@pytest.mark.slow
def test_checkpoints_resume_across_process_counts(tmp_path):
  """jsonl.py:runlocal (text, vocabulary; 20 steps, checkpoints every 5): saved by 2
  processes and resumed by 1, and the other way round, each ends where an uninterrupted
  1-process run ends, to float32 tolerance (see test_two_processes_match_one_process).

  The 2-process run stops by an error in process 1 alone, after step 12: process 1 exits at
  once naming its error, and process 0, left waiting for it in a collective, is stopped by
  JAX within the heartbeat timeout (10 s here) instead of hanging.
  """
  ref, a, b = tmp_path / "ref", tmp_path / "two_then_one", tmp_path / "one_then_two"
  _ok(_single(*JSONL, f"--workdir={ref}"))
  start = time.monotonic()
  crashed = _launch(*JSONL, f"--workdir={a}", "--heartbeat_timeout=10",
                    MLJ_TEST_CRASH_AFTER=12, MLJ_TEST_CRASH_PROCESS=1)
  assert crashed.returncode == 1, crashed.stdout[-3000:]
  lines = crashed.stdout.splitlines()
  assert ("[1] experiments.run: process 1 of 2 failed: SimulatedCrash: simulated crash after "
          "step 12") in lines, crashed.stdout[-3000:]
  assert re.search(r"\[0\] .*unhealthy \(stopped sending heartbeats\):\s+\[0\] 1\s",
                   crashed.stdout), crashed.stdout[-3000:]
  assert lines[-1] == ("experiments.launch: process 0: signal SIGABRT (stopped by JAX: another "
                      "process failed); process 1: exit code 1"), lines[-1]
  assert time.monotonic() - start < 240
  resumed = _ok(_single(*JSONL, f"--workdir={a}"))
  assert "resumed from step 10" in resumed.stderr
  assert _single(*JSONL, f"--workdir={b}", MLJ_TEST_CRASH_AFTER=10).returncode == 1
  out = _ok(_launch(*JSONL, f"--workdir={b}", MLJ_TEST_RECORD=_mkdir(tmp_path / "rec")))
  assert "[0]" in out.stdout and "[1]" in out.stdout and "resumed from step 10" in out.stdout
  p0, p1 = _records(tmp_path / "rec")
  assert any(w.startswith("vocab/") for w in p0["writes"])  # Vocabulary: process 0 only.
  assert all(w.startswith("checkpoints/") for w in p1["writes"]), p1["writes"]

  want = _params(ref)
  for workdir in (a, b):
    for x, y in zip(want, _params(workdir)):
      np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    assert _report(workdir)["train"]["start_step"] == 10
    for key in ("validation", "test", "data"):
      _close(_report(ref)[key], _report(workdir)[key], key)


@pytest.fixture
def started():
  """The processes a test starts directly; those still running at its end are killed."""
  procs = []
  yield procs
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()


@pytest.mark.slow
def test_preemption_and_a_killed_process(tmp_path, started):
  """2 processes x 4 devices (runlocal, no oracle, checkpoints every 5, 0.3 s per step):

  1. SIGTERM to both (a pod's preemption notice): JAX's preemption sync point makes both
     stop at the same step S, which is checkpointed once; both exit 75.
  2. The same commands: resume from S. SIGKILL process 1 after the next checkpoint: process
     0 stops by itself within the heartbeat timeout (10 s here) with JAX's message naming
     process 1 (docs/RELIABILITY.md), it never hangs.
  3. The same commands again: resume from the last complete checkpoint and finish, with the
     parameters of an uninterrupted run of the same 2 processes (its 30 steps, without the
     final evaluation), bit for bit.
  """
  args = ("--config=hashtag_pretrain.py:runlocal", "--config.mesh.classes=2",
          "--config.eval.oracle=False", "--config.eval_every=0", "--config.checkpoint_every=5",
          "--heartbeat_timeout=10")
  workdir, ref = tmp_path / "run", tmp_path / "ref"

  def steps():  # The complete checkpoints.
    return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())

  # 1. Preemption.
  procs = _start(args, workdir, tmp_path / "1", started)
  _wait_for(lambda: 10 in steps(), procs)
  before = steps()
  for p, _ in procs:
    p.send_signal(signal.SIGTERM)
  logs = _finish(procs)
  assert [p.returncode for p, _ in procs] == [75, 75], logs
  stopped = [int(re.search(r"preempted \(SIGTERM\): saved a checkpoint at step (\d+)", l)[1])
             for l in logs]
  assert stopped[0] == stopped[1] and stopped[0] > 10
  assert set(steps()) - set(before) == {stopped[0]}  # One checkpoint, at that step.

  # 2. Resume; SIGKILL process 1 in the middle.
  procs = _start(args, workdir, tmp_path / "2", started)
  _wait_for(lambda: max(steps()) > stopped[0], procs)
  procs[1][0].kill()
  killed = time.monotonic()
  procs[0][0].wait(timeout=120)
  survivor_s = time.monotonic() - killed
  logs = _finish(procs)
  assert f"resumed from step {stopped[0]}" in logs[0]
  assert procs[0][0].returncode != 0 and survivor_s < 45, (survivor_s, logs[0][-3000:])
  assert re.search(r"Terminating process because the JAX distributed service detected fatal "
                   r"errors", logs[0]), logs[0][-3000:]
  assert re.search(r"unhealthy \(stopped sending heartbeats\):\s+1\s", logs[0]), logs[0][-3000:]
  print(f"survivor stopped {survivor_s:.1f} s after the SIGKILL")

  # 3. The same commands: resume from the last complete checkpoint, finish.
  last = max(steps())
  assert last > stopped[0]
  procs = _start(args, workdir, tmp_path / "3", started, sleep=0)
  logs = _finish(procs)
  assert [p.returncode for p, _ in procs] == [0, 0], logs[0][-3000:]
  assert f"resumed from step {last}" in logs[0]
  assert _launch(*args, f"--workdir={ref}", MLJ_TEST_CRASH_AFTER=30).returncode == 1
  assert checkpointing.load_state(ref)[0] == 30
  for x, y in zip(_params(ref), _params(workdir)):
    np.testing.assert_array_equal(y, x)


def _mkdir(path):
  path.mkdir(parents=True, exist_ok=True)
  return path


def _start(args, workdir, logs, started, *, sleep=0.3):
  """The 2 processes of ``args``, started directly (as a pod starts them): ``[(Popen, log
  path)]``; each also goes to ``started``."""
  logs.mkdir(parents=True, exist_ok=True)
  env = _env(MLJ_TEST_STEP_SLEEP=sleep,
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  out = []
  for i, cmd in enumerate(launch.commands([*args, f"--workdir={workdir}"], 2,
                                          launch.free_port(), WORKER)):
    log = logs / f"{i}.log"
    with open(log, "w") as f:
      out.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT),
                  log))
      started.append(out[-1][0])
  return out


def _wait_for(condition, procs, timeout=TIMEOUT):
  start = time.monotonic()
  while not condition():
    if any(p.poll() is not None for p, _ in procs) or time.monotonic() - start > timeout:
      logs = _finish(procs)
      raise AssertionError(f"the run ended or hung before the condition: {logs[0][-3000:]}")
    time.sleep(0.1)


def _finish(procs, timeout=TIMEOUT):
  """Waits for every process (killing those left after ``timeout``); their logs."""
  deadline = time.monotonic() + timeout
  for p, _ in procs:
    try:
      p.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
  return [log.read_text(errors="replace") for _, log in procs]
