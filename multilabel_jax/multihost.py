"""Multi-process runs (``jax.distributed``): start-up, and the little the processes share.

A multi-process job is started as pod jobs are: one identical command per host (or per
process, on one machine) plus its process index; ``jax.distributed`` connects them, and
every process then sees all devices of the job (``jax.devices()``) but holds the data of its
own (``jax.local_devices()``). See ``experiments/launch.py`` for N processes on one machine.

:func:`initialize` calls ``jax.distributed.initialize`` with bounded timeouts. When a
process dies, JAX's distributed runtime stops the others (SIGABRT, exit code 134) with
``Terminating process because the JAX distributed service detected fatal errors``:

* when process ``i`` > 0 died: within ``heartbeat_timeout_s``, from process 0 (which hosts
  the coordination service), followed by ``The following tasks are unhealthy (stopped
  sending heartbeats):`` and ``i``; the other processes then lose process 0 (below);
* when process 0 (the coordinator) died: at once, with ``Failed to send RPC to
  coordination service. Either the leader task was preempted/died/restarted
  unexpectedly``.

:func:`sum_over_processes` adds up per-process counts (e.g. what each process's input
pipeline skipped) with JAX's own all-gather.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

import numpy as np

DEFAULT_HEARTBEAT_TIMEOUT_S = 30   # JAX's default is 100 s.
DEFAULT_INITIALIZATION_TIMEOUT_S = 300  # How long a process waits for the others to start.


def check_flags(coordinator: Optional[str], num_processes: Optional[int],
                process_id: Optional[int]) -> bool:
  """Whether the three flags ask for a multi-process run (all given) or not (none given).

  Raises:
    ValueError: some but not all are given, or they are inconsistent (the message names the
      flags).
  """
  given = {"--coordinator": coordinator, "--num_processes": num_processes,
           "--process_id": process_id}
  missing = [k for k, v in given.items() if v is None]
  if len(missing) == 3:
    return False
  if missing:
    have = [k for k in given if k not in missing]
    raise ValueError(f"{', '.join(have)} given without {', '.join(missing)}: a multi-process "
                     "run needs all three of --coordinator=HOST:PORT, --num_processes=N and "
                     "--process_id=I (the same command on every process, but its index).")
  host, sep, port = coordinator.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise ValueError(f"--coordinator must be HOST:PORT (process 0's address), got "
                     f"{coordinator!r}.")
  if num_processes < 1:
    raise ValueError(f"--num_processes must be >= 1, got {num_processes}.")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id must be in [0, {num_processes}) for --num_processes="
                     f"{num_processes}, got {process_id}.")
  return True


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
               initialization_timeout_s: int = DEFAULT_INITIALIZATION_TIMEOUT_S) -> None:
  """``jax.distributed.initialize``, before anything touches the devices.

  Without arguments JAX finds the job's processes itself (TPU pods, Slurm, Open MPI);
  otherwise all three are given (see :func:`check_flags`). CPU collectives across processes
  go over gloo (TCP). ``heartbeat_timeout_s`` bounds how long a process keeps waiting for
  one that died.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return
  # Only the CPU backend reads it; on a host with accelerators it is a no-op for them.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator is not None:
    check_flags(coordinator, num_processes, process_id)
  jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
      initialization_timeout=initialization_timeout_s,
      heartbeat_timeout_seconds=heartbeat_timeout_s)
  logging.info("jax.distributed: process %d of %d, %d local and %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def sum_over_processes(counts: Mapping[str, int]) -> dict:
  """``{name: count}`` summed over all processes (every process calls it, with the same
  names); the counts themselves in a single-process run."""
  names = sorted(counts)
  (total,) = sum_arrays_over_processes(np.asarray([int(counts[k]) for k in names]))
  return {k: int(v) for k, v in zip(names, total)}


def sum_arrays_over_processes(*arrays: np.ndarray):
  """Each int array summed over all processes (every process calls it with the same
  shapes), as int64; the arrays themselves in a single-process run."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return tuple(np.asarray(a, np.int64) for a in arrays)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  # int32 on the wire (JAX's default without x64); each count is at most the examples read.
  every = multihost_utils.process_allgather(tuple(np.asarray(a, np.int32) for a in arrays))
  return tuple(np.asarray(e).astype(np.int64).sum(0) for e in every)
