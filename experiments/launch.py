r"""Starts an N-process ``jax.distributed`` job on this machine, as a pod starts one per host.

  python -m experiments.launch --num_processes=2 --devices_per_process=4 -- \
      --config=hashtag_pretrain.py:runlocal --config.mesh.classes=2

Every process runs the same command, the module ``experiments.run`` with the arguments after
``--``, plus ``--coordinator=127.0.0.1:PORT`` (a free port), ``--num_processes=N`` and its
``--process_id``. ``--devices_per_process=K`` gives each process K CPU devices (XLA's
``--xla_force_host_platform_device_count``). Their output is printed line by line, each
line prefixed with ``[i]``, the process index.

Exit code: 0 when every process succeeded; 75 (``checkpointing.PREEMPTED_EXIT_CODE``) when
they were preempted (SIGTERM, which the launcher passes on to every process); else the code
of the first process that failed by itself (128 + the signal number for a signal). When a
process fails, the others normally stop within ``--heartbeat_timeout`` of ``experiments.run``:
JAX's distributed runtime aborts them (SIGABRT) after printing ``JAX_STOPPED_MARK``. Those are
not the cause, even when the launcher sees one of them stop first (on a loaded machine it
can see that before the failed process's own exit), so their code is the job's only when
every failed process was stopped so. Processes still running
``--grace_period`` seconds after the first failure are killed.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Collection, List, Sequence, Set

from absl import app, flags

PREEMPTED_EXIT_CODE = 75  # checkpointing.PREEMPTED_EXIT_CODE, without importing jax here.
_PROCESS_FLAGS = ("--coordinator", "--num_processes", "--process_id")
# What JAX's distributed runtime prints before it aborts a process because another failed.
JAX_STOPPED_MARK = "Terminating process because the JAX distributed service detected fatal errors"


def define_flags() -> None:
  """The launcher's flags, defined only when it runs as a program (``python -m``), so that
  importing its functions beside ``experiments.run`` (whose flags share names) is safe."""
  flags.DEFINE_integer("num_processes", 2, "Processes to start.")
  flags.DEFINE_integer("devices_per_process", 0,
                       "CPU devices of each process (0: leave XLA_FLAGS as it is).")
  flags.DEFINE_integer("port", 0, "The coordinator's port (0: a free one).")
  flags.DEFINE_float("grace_period", 60.0, "Seconds the other processes get to stop by "
                     "themselves after one failed, before they are killed.")
  flags.DEFINE_string("module", "experiments.run", "The module every process runs.")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def describe(code: int) -> str:
  """``exit code 3`` or ``signal SIGKILL``, of a ``Popen.returncode``."""
  if code < 0:
    try:
      return f"signal {signal.Signals(-code).name}"
    except ValueError:
      return f"signal {-code}"
  return f"exit code {code}"


def job_exit_code(codes: Sequence[int], stop_order: Sequence[int] = (),
                  stopped_by_jax: Collection[int] = ()) -> int:
  """The launcher's exit code from the processes' (see the module docstring).

  Args:
    codes: each process's ``Popen.returncode`` (negative: the signal that stopped it).
    stop_order: process indices in the order they were seen to stop.
    stopped_by_jax: the processes whose output has ``JAX_STOPPED_MARK``.
  """
  if all(c == 0 for c in codes):
    return 0
  if all(c in (0, PREEMPTED_EXIT_CODE) for c in codes):
    return PREEMPTED_EXIT_CODE
  order = list(stop_order) + [i for i in range(len(codes)) if i not in stop_order]
  failed = [i for i in order if codes[i] not in (0, PREEMPTED_EXIT_CODE)]
  code = codes[next((i for i in failed if i not in stopped_by_jax), failed[0])]
  return 128 - code if code < 0 else code


def commands(args: Sequence[str], num_processes: int, port: int, module: str) -> List[list]:
  """The command of each process: the same but for ``--process_id``."""
  given = [a for a in args if a.split("=", 1)[0] in _PROCESS_FLAGS]
  if given:
    raise ValueError(f"{given[0]}: the launcher sets {', '.join(_PROCESS_FLAGS)} itself.")
  return [[sys.executable, "-m", module, *args, f"--coordinator=127.0.0.1:{port}",
           f"--num_processes={num_processes}", f"--process_id={i}"]
          for i in range(num_processes)]


def _pipe(index: int, stream, lock, stopped_by_jax: Set[int]) -> None:
  for line in iter(stream.readline, b""):
    text = line.decode(errors="replace")
    if JAX_STOPPED_MARK in text:
      stopped_by_jax.add(index)
    with lock:
      sys.stdout.write(f"[{index}] {text}")
      sys.stdout.flush()


def launch(args: Sequence[str], *, num_processes: int, devices_per_process: int = 0,
           port: int = 0, grace_period: float = 60.0, module: str = "experiments.run") -> int:
  """Runs the job; returns its exit code."""
  port = port or free_port()
  env = dict(os.environ)
  if devices_per_process:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                        f"{devices_per_process}").strip()
  lock = threading.Lock()
  procs, pipes, stopped_by_jax = [], [], set()

  def forward(signum, frame):  # A preemption notice for the job: every process gets it.
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  stopped, deadline, failed = [], None, None
  try:
    for i, cmd in enumerate(commands(args, num_processes, port, module)):
      procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT))
      pipes.append(threading.Thread(target=_pipe,
                                    args=(i, procs[-1].stdout, lock, stopped_by_jax),
                                    daemon=True))
      pipes[-1].start()
    while len(stopped) < len(procs):
      for i, p in enumerate(procs):
        if i not in stopped and p.poll() is not None:
          stopped.append(i)
          if p.returncode and deadline is None:
            deadline, failed = time.monotonic() + grace_period, i
            _say(lock, f"process {i} stopped ({describe(p.returncode)}); the others get "
                 f"{grace_period:g} s to stop")
      if deadline is not None and time.monotonic() > deadline:
        for i, p in enumerate(procs):
          if p.poll() is None:
            p.kill()
            _say(lock, f"process {i} still running {grace_period:g} s after process "
                 f"{failed} stopped: killed")
        deadline = float("inf")
      time.sleep(0.1)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for t in pipes:
    t.join(timeout=5)
  codes = [p.returncode for p in procs]
  by_jax = " (stopped by JAX: another process failed)"
  _say(lock, "; ".join(f"process {i}: {describe(c)}{by_jax if i in stopped_by_jax else ''}"
                       for i, c in enumerate(codes)))
  return job_exit_code(codes, stopped, stopped_by_jax)


def _say(lock, message: str) -> None:
  with lock:
    print(f"experiments.launch: {message}", flush=True)


def main(argv):
  args = argv[1:]
  if args[:1] == ["--"]:
    args = args[1:]
  f = flags.FLAGS
  try:
    if f.num_processes < 1:
      raise ValueError(f"--num_processes must be >= 1, got {f.num_processes}.")
    if f.devices_per_process < 0:
      raise ValueError(f"--devices_per_process must be >= 0, got {f.devices_per_process}.")
    commands(args, 1, 1, f.module)  # Checks the arguments.
  except ValueError as e:
    print(f"experiments.launch: error: {e}", file=sys.stderr)
    sys.exit(2)
  sys.exit(launch(args, num_processes=f.num_processes, devices_per_process=f.devices_per_process,
                  port=f.port, grace_period=f.grace_period, module=f.module))


if __name__ == "__main__":
  define_flags()
  app.run(main)
