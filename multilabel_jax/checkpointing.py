"""Checkpoints that survive kills, preemption and damaged files.

* :func:`make_manager`: an orbax ``CheckpointManager`` on ``workdir/checkpoints``. Orbax
  writes each step into a ``<step>.orbax-checkpoint-tmp-*`` folder and renames it when the
  write is complete, so a half-written checkpoint is never listed as a step (and its
  leftovers are removed at the next start).
* :func:`save`: one checkpoint holds the train state (``state``, orbax standard format) and
  the input pipeline's counts of skipped/truncated labels (``data_stats``, JSON), so the
  report's counts cover the whole run across resumes. :func:`load_state` reads the state
  of a workdir back (notebooks, tests); :func:`load_variables` only its params and model
  state, checked against the model a config builds (prediction).
* :func:`restore_latest`: restores the newest *readable* step. A truncated or corrupted
  newer step is moved aside to ``workdir/checkpoints_unreadable/`` with a warning naming
  both steps; if checkpoints exist but none can be read, it raises
  :class:`CheckpointError` instead of starting from scratch.
* :func:`load_validation_history` / :func:`save_validation_history`: the periodic
  validation metrics (``validation_history.json``, written atomically), trimmed to the
  restored step on resume.
* :class:`PreemptionWatcher`: turns SIGTERM (the preemption notice of clusters and pods)
  into a request that the train loop honours at the next step boundary: save, flush,
  raise :class:`Preempted`. ``experiments.run`` exits with :data:`PREEMPTED_EXIT_CODE`.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import signal
import threading
import time

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

# EX_TEMPFAIL from sysexits.h: "temporary failure, try again". Schedulers can requeue on it.
PREEMPTED_EXIT_CODE = 75


class CheckpointError(RuntimeError):
  """Checkpoints exist but none of them can be restored."""


class Preempted(Exception):
  """SIGTERM was received; a checkpoint of ``step`` was written. Rerun to resume."""

  def __init__(self, step: int, directory):
    super().__init__(f"preempted (SIGTERM): saved a checkpoint at step {step} in {directory}; "
                     "run the same command again to resume.")
    self.step = step


def make_manager(config, workdir) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      (pathlib.Path(workdir) / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints, save_interval_steps=config.checkpoint_every,
          enable_async_checkpointing=config.async_checkpoints,
          cleanup_tmp_directories=True))


def save(manager: ocp.CheckpointManager, step: int, state, data_stats: dict, *,
         force: bool = False) -> bool:
  """Saves ``state`` and ``data_stats`` at ``step`` if the manager's interval (or ``force``)
  says so; returns whether a save started."""
  return manager.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data_stats=ocp.args.JsonSave(data_stats)))


def load_state(workdir, step=None):
  """``(step, state)`` of a run's checkpoint (the newest by default), as arrays on this
  process's first device, whatever the devices and processes that saved it.

  Example:
    >>> step, state = load_state("runs/hashtag_pretrain-...")
    >>> variables = {"params": state["params"], **state["model_state"]}
  """
  manager = ocp.CheckpointManager((pathlib.Path(workdir) / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}.")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      _stored_tree(manager.directory, step))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))
  return step, restored["state"]


def _stored_tree(directory, step):
  """The state's tree of orbax ``ArrayMetadata`` (shape, dtype) at ``step``."""
  stored = ocp.PyTreeCheckpointer().metadata(
      pathlib.Path(directory) / str(step) / "state").item_metadata
  return stored.tree if hasattr(stored, "tree") else stored


def load_variables(workdir, abstract, step=None):
  """``(step, {"params", "model_state"})`` of a run's checkpoint: only what a model applies
  with (not the optimizer state), checked against ``abstract`` before anything is read.
  A run trained with ``optimizer.ema_decay`` > 0 gives its moving average as the params,
  as its evaluation scored them (``train.evaluation_state``).

  Args:
    workdir: the run's folder (``workdir/checkpoints``).
    abstract: ``{"params": ..., "model_state": ...}`` of ``jax.ShapeDtypeStruct`` (e.g.
      ``jax.eval_shape`` of the model's init): what the run's config builds.
    step: the step to restore; None: the newest.

  Raises:
    FileNotFoundError: no checkpoint (or not that step) in ``workdir/checkpoints``.
    ValueError: a parameter that the checkpoint and ``abstract`` do not both have, or have
      with other shapes (the message names the first ones): the config or the vocabulary
      is not the one the checkpoint was trained with.

  Example:
    >>> abstract = jax.eval_shape(lambda: split(model.init(rng, example_batch)))
    >>> step, variables = load_variables("runs/debtags-...", abstract)
  """
  directory = (pathlib.Path(workdir) / "checkpoints").absolute()
  steps = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True)).all_steps() if directory.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {directory}: {workdir} is not a trained run "
                            "(or its training has not saved a step yet).")
  step = max(steps) if step is None else int(step)
  if step not in steps:
    raise FileNotFoundError(f"no checkpoint of step {step} in {directory}; it has steps "
                            f"{sorted(steps)}.")
  stored = _stored_tree(directory, step)
  names = {k: "ema_params" if k == "params" and "ema_params" in stored else k for k in abstract}
  stored = {k: stored[names[k]] for k in abstract}
  _check_shapes(stored, abstract, f"checkpoint step {step} of {workdir}")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {names[k]: jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), v)
            for k, v in abstract.items()}
  restore_args = jax.tree_util.tree_map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True)))
  return step, {k: restored["state"][names[k]] for k in abstract}


def _check_shapes(stored, abstract, what: str) -> None:
  def paths(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
            for path, leaf in flat}

  have, want = paths(stored), paths(abstract)
  problems = [f"{p} is {have[p]} in the checkpoint, {want[p]} from the config"
              for p in sorted(set(have) & set(want)) if have[p] != want[p]]
  problems += [f"{p} is in the checkpoint, not in the model of the config"
               for p in sorted(set(have) - set(want))]
  problems += [f"{p} is not in the checkpoint" for p in sorted(set(want) - set(have))]
  if problems:
    raise ValueError(f"{what} does not match the model that its config and vocabulary "
                     f"build: {'; '.join(problems[:3])}"
                     + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
                     + ". Was config.json or vocab/ changed after training?")


def restore_latest(manager: ocp.CheckpointManager, target):
  """``(state, data_stats, step)`` of the newest readable checkpoint; all None if none exist.

  Args:
    manager: the run's checkpoint manager.
    target: the abstract state (``ShapeDtypeStruct`` leaves with shardings).

  Raises:
    CheckpointError: checkpoints exist and every one fails to restore (the message lists
      each step and its error). Unreadable steps are then left where they are.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  failures = []
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data_stats=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many kinds)
      failures.append((step, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"))
      continue
    if failures:
      moved = _move_aside(manager, [s for s, _ in failures])
      logging.warning(
          "checkpoint step %d in %s is unreadable (%s); resumed from the previous good "
          "checkpoint, step %d. Unreadable steps moved to %s.", failures[0][0],
          manager.directory, failures[0][1], step, moved)
    return restored["state"], restored["data_stats"], step
  if failures:
    listing = "; ".join(f"step {s}: {err}" for s, err in failures)
    raise CheckpointError(
        f"no usable checkpoint in {manager.directory}: all {len(failures)} failed to restore "
        f"({listing}). Not starting from scratch: move the folder away to start over, or "
        "fix the files.")
  return None, None, None


def _move_aside(manager: ocp.CheckpointManager, steps) -> pathlib.Path:
  """Moves unreadable step folders out of the manager's directory (kept for inspection)."""
  root = pathlib.Path(manager.directory)
  dest = root.parent / "checkpoints_unreadable"
  if jax.process_index() == 0:
    dest.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for step in steps:
      shutil.move(str(root / str(step)), str(dest / f"{step}-{stamp}"))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("checkpoints_moved_aside")
  manager.reload()
  return dest


def _history_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / "validation_history.json"


def load_validation_history(workdir, up_to_step: int) -> list:
  """Validation metrics written by earlier runs of this workdir, up to ``up_to_step``.

  Entries after it (from a run that died before its next checkpoint) are dropped, so a
  resumed run's history matches an uninterrupted one.
  """
  path = _history_path(workdir)
  if not up_to_step or not path.exists():
    return []
  return [h for h in json.loads(path.read_text()) if h["step"] <= up_to_step]


def save_validation_history(workdir, history) -> None:
  """Writes ``validation_history.json`` atomically: a kill never leaves half a file."""
  tmp = _history_path(workdir).with_suffix(".tmp")
  tmp.write_text(json.dumps(history, default=float))
  tmp.replace(_history_path(workdir))


class PreemptionWatcher:
  """Context manager: has SIGTERM been received (on any process) by this step?

  Single process: a SIGTERM handler sets a flag (and restores the previous handler, so a
  second SIGTERM terminates at once). Multi-process (``jax.distributed``): JAX's preemption
  sync point, so that every process stops at the same step.
  """

  def __init__(self, distributed: bool = False):
    self._distributed = distributed
    self._event = threading.Event()
    self._previous = None

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: will checkpoint and stop at the next step", signum)
    self._event.set()
    signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)

  def __enter__(self):
    if not self._distributed and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    return False

  def requested(self, step: int) -> bool:
    if self._distributed:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()
