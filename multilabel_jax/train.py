"""The shared train loop: ``train_and_evaluate(config, workdir)``.

As in flax's ``examples/imagenet``: a pure :func:`make_train_step` and :func:`make_eval_step`
at the top level (testable alone, and usable from a notebook), and a
:func:`train_and_evaluate` that reads top to bottom: data, objective and model, mesh and
sharded state, checkpoint restore, the loop (logging, periodic validation, checkpoints),
the final evaluation under every decoder (:mod:`multilabel_jax.report`), and what
prediction needs besides the params: ``calibration.json`` (:mod:`multilabel_jax.calibration`).

Resumption is exact: the batch of step s is a pure function of (seed, s), dropout keys are
``fold_in(seed, s)``, and the checkpoint holds params, optimizer and model state, the step
and the counts of non-finite updates. The newest *readable* checkpoint is restored, SIGTERM
checkpoints and stops at the next step (:mod:`multilabel_jax.checkpointing`).

Multi-process runs (``jax.distributed``, :mod:`multilabel_jax.multihost`): each process reads
only its rows of every global batch, and the global batch, hence the run, does not depend on
the number of processes, so a checkpoint of N processes resumes in M. Every process evaluates
(the scorer all-gathers the scores); only process 0 writes files other than its checkpoint
shards (config, vocabulary, metrics, validation history, calibration, report).

Non-finite losses or gradients are detected on device: the update is not applied (the step
still counts), and the host reads the count only when it syncs anyway (log, checkpoint,
validation and last steps), so the loop never waits for the device at every step. With
``config.nonfinite="raise"`` the run stops there naming the first bad step; with ``"skip"``
it goes on and reports how many updates it skipped.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax
from clu import metric_writers, periodic_actions
from jax.sharding import NamedSharding, PartitionSpec as P

from multilabel_jax import builders, checkpointing, configs, models, multihost, optim, report
from multilabel_jax import scoring
from multilabel_jax import calibration as calibration_lib
import multilabel_jax.data as data_lib


class SimulatedCrash(RuntimeError):
  """Raised by ``train_and_evaluate(..., crash_after_step=s)``."""


class NonFiniteError(FloatingPointError):
  """The loss or the gradients stopped being finite."""


def make_mesh(config) -> jax.sharding.Mesh:
  """A ("data", "classes") mesh over all devices."""
  n = jax.device_count()
  classes = config.mesh.classes
  data_axis = config.mesh.data if config.mesh.data > 0 else n // classes
  if data_axis * classes != n:
    raise ValueError(f"`config.mesh` data={config.mesh.data} x classes={classes} does not "
                     f"use the {n} devices.")
  auto = jax.sharding.AxisType.Auto  # Sharding propagation by XLA (GSPMD), as in big_vision.
  return jax.make_mesh((data_axis, classes), ("data", "classes"), axis_types=(auto, auto))


def make_train_step(model, objective, tx, schedule, *, use_fused: bool, chunk_size: int = 8192,
                    mesh=None, seed: int = 0, freeze_on_nonfinite: bool = False,
                    ema_decay: float = 0.0):
  """A pure ``train_step(state, batch) -> (state, metrics)``: one optimizer update.

  ``state``: ``{"step", "params", "opt_state", "model_state", "skipped_updates",
  "first_nonfinite"}`` and, with ``ema_decay`` > 0, ``"ema_params"`` (see
  :func:`init_state`): after each update ``ema = ema_decay * ema + (1 - ema_decay) * params``
  (Polyak averaging; :func:`evaluation_state` evaluates them). A non-finite loss or gradient
  leaves the state as it was, but for the step and the counts: ``skipped_updates`` + 1 and
  ``first_nonfinite``, the first such step (-1 while there is none). With
  ``freeze_on_nonfinite`` no update is applied after that step either, so that the host,
  reading the count later, still holds the state the bad step started from.
  ``mesh``: a ("data", "classes") mesh for a class-sharded fused loss, else None.
  """
  fused = objective.fused if use_fused else None
  skip = fused.heads if fused else ()

  def loss_fn(params, model_state, batch, rng):
    variables = {"params": params, **model_state}
    kwargs = dict(train=True, rngs={"dropout": rng}, skip_heads=skip)
    if model_state:
      outputs, new_model_state = model.apply(variables, batch, mutable=list(model_state),
                                             **kwargs)
    else:
      outputs, new_model_state = model.apply(variables, batch, **kwargs), model_state
    weights = objective.example_weights(batch["label_ids"])
    weights = weights / jnp.maximum(jnp.sum(weights), 1.0)
    if fused is None:
      return jnp.sum(weights * objective.loss(outputs, batch["label_ids"])), new_model_state
    heads = {name: models.head_params(params, name) for name in fused.heads}
    x = outputs["pre_logits"].astype(jnp.float32)
    return fused.loss(x, heads, outputs, batch["label_ids"], weights, chunk_size=chunk_size,
                      mesh=mesh), new_model_state

  base_rng = jax.random.key(seed + 1)

  def train_step(state, batch):
    rng = jax.random.fold_in(base_rng, state["step"])
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["model_state"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    step, first = state["step"] + 1, state["first_nonfinite"]
    apply = finite & (first < 0) if freeze_on_nonfinite else finite
    updated = dict(state, params=optax.apply_updates(state["params"], updates),
                   opt_state=opt_state, model_state=model_state)
    if ema_decay:
      updated["ema_params"] = optax.incremental_update(updated["params"], state["ema_params"],
                                                       step_size=1.0 - ema_decay)
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(apply, n, o), updated, state)
    new.update(step=step, skipped_updates=state["skipped_updates"] + (~finite).astype(jnp.int32),
               first_nonfinite=jnp.where((first < 0) & ~finite, step, first))
    metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": optax.tree.norm(new["params"]),
               "learning_rate": schedule(state["step"]), "skipped_updates": new["skipped_updates"]}
    return new, metrics

  return train_step


def make_eval_step(model, objective, *, r: int, use_fused: bool, chunk_size: int = 8192,
                   mesh=None):
  """Pure ``(pass_one, pass_two)`` of the evaluation path (:mod:`multilabel_jax.scoring`):
  top-r candidates, counts and label scores; then the negatives' counts of exact mAP."""
  return scoring.eval_fns(model, objective, r=r, use_fused=use_fused, chunk_size=chunk_size,
                          mesh=mesh)


def init_state(model, tx, example_inputs, rng, *, ema: bool = False):
  """The initial train state (see :func:`make_train_step`); with ``ema``, the moving
  average of the params starts at the params."""
  variables = nn.unbox(model.init({"params": rng}, example_inputs))
  params, model_state = models.split_variables(variables)
  zero = jnp.zeros((), jnp.int32)
  state = {"step": zero, "params": params, "opt_state": tx.init(params),
           "model_state": model_state, "skipped_updates": zero,
           "first_nonfinite": jnp.full((), -1, jnp.int32)}
  if ema:
    state["ema_params"] = jax.tree_util.tree_map(jnp.copy, params)
  return state


def evaluation_state(state):
  """The state that evaluation scores: its ``ema_params`` as the params when it has them."""
  return dict(state, params=state["ema_params"]) if "ema_params" in state else state


def state_shardings(model, tx, example_inputs, mesh, class_sharded: bool, *, ema: bool = False):
  """``(abstract state, shardings)``: replicated, or the class axis of the heads sharded."""
  abstract = jax.eval_shape(lambda r: init_state(model, tx, example_inputs, r, ema=ema),
                            jax.random.key(0))
  replicated = NamedSharding(mesh, P())
  shardings = jax.tree_util.tree_map(lambda _: replicated, abstract)
  if class_sharded:
    boxed = jax.eval_shape(lambda r: model.init({"params": r}, example_inputs),
                           jax.random.key(0))
    shardings["params"] = models.param_shardings(boxed, mesh)["params"]
    shardings["opt_state"] = optax.tree_map_params(
        tx, lambda _, s: s, abstract["opt_state"], shardings["params"],
        transform_non_params=lambda _: replicated)
    if ema:
      shardings["ema_params"] = shardings["params"]
  return abstract, shardings


def restore_or_init(config, model, tx, train_data, mesh, manager):
  """The newest readable checkpoint's state (and the data counts of its steps), or a new
  state from ``config.seed``; sharded over ``mesh`` either way."""
  example_inputs = {k: v[:1] for k, v in train_data.train_batch(0, count=False).items()}
  ema = config.optimizer.ema_decay > 0
  abstract, shardings = state_shardings(model, tx, example_inputs, mesh, config.mesh.classes > 1,
                                        ema=ema)
  target = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  state, data_stats, restored_step = checkpointing.restore_latest(manager, target)
  if state is None:
    return jax.jit(lambda r: init_state(model, tx, example_inputs, r, ema=ema),
                   out_shardings=shardings)(jax.random.key(config.seed))
  if jax.process_index() == 0:  # The checkpoint holds all processes' counts of the steps before.
    train_data.stats = data_lib.DataStats(**data_stats)
  logging.info("resumed from step %d (%s)", restored_step, manager.directory)
  return state


def train_and_evaluate(config, workdir, *, crash_after_step=None):
  """Trains, checkpoints, evaluates every decoder and writes the report. Returns it.

  ``crash_after_step`` simulates a crash for tests: the loop raises ``SimulatedCrash``
  after that step, with no final checkpoint (checkpoints already written are kept).
  """
  # --- Set-up and checks (all before any compute).
  configs.validate(config)
  if config.distributed:  # On a cluster that JAX detects; else see experiments.run's flags.
    multihost.initialize()
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    configs.check_workdir(config, workdir)
  source = builders.build_source(config)
  info = source.info
  load_stats = info.stats.as_dict()  # What loading skipped; pipelines add their reads later.
  if is_main and hasattr(source, "save_vocab"):  # Text vocabulary and label map.
    source.save_vocab(workdir / "vocab")
  builders.check_model_matches_data(config, info)
  train_data, eval_data = builders.build_pipelines(config, source)
  label_stats = train_data.label_stats
  objective = builders.build_objective(config, source, label_stats)
  report.check_predict_decoder(config, objective, info.num_classes)
  use_fused = builders.use_fused_head(config, objective)
  model = builders.build_model(config, objective, source)
  mesh = make_mesh(config)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  logging.info("workdir %s: %s on %s (%d classes), objective %s, model %s, fused head %s",
               workdir, config.data.name, info.name, info.num_classes, objective.name,
               config.model, use_fused)

  # --- Sharded state, restored from the newest readable checkpoint if there is one.
  data_sharding = NamedSharding(mesh, P("data"))

  def to_global(batch):
    return {k: jax.make_array_from_process_local_data(data_sharding, np.asarray(v))
            for k, v in batch.items()}

  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps,
                                      wide=bool(model.wide_heads))
  manager = checkpointing.make_manager(config, workdir)
  state = restore_or_init(config, model, tx, train_data, mesh, manager)
  start_step = int(state["step"])

  # --- The steps.
  head_mesh = mesh if config.mesh.classes > 1 else None
  train_step = jax.jit(make_train_step(model, objective, tx, schedule, use_fused=use_fused,
                                       chunk_size=config.head.chunk_size, mesh=head_mesh,
                                       seed=config.seed,
                                       freeze_on_nonfinite=config.nonfinite == "raise",
                                       ema_decay=config.optimizer.ema_decay),
                       donate_argnums=0)
  replicated = NamedSharding(mesh, P())  # Every process reads the outputs of the whole batch.
  pass_one, pass_two = (jax.jit(f, out_shardings=replicated) for f in make_eval_step(
      model, objective, r=report.eval_r(config, info.num_classes), use_fused=use_fused,
      chunk_size=config.head.chunk_size, mesh=head_mesh))

  def scorer():
    return scoring.Scorer(pass_one, pass_two, evaluation_state(state), to_device=to_global)

  def validation_metrics():
    val = report.validation(config, eval_data, objective, scorer(), info, label_stats)
    return {f"val_{k}": v for k, v in val["ranking"].items()}

  # --- The loop.
  progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
  hooks = [progress] if is_main else []
  history = checkpointing.load_validation_history(workdir, start_step)  # Earlier runs'.
  train_start, step, metrics = time.time(), start_step, None
  logging.info("training steps %d..%d", start_step, config.total_steps)
  batches = train_data.train_iter(start_step, config.total_steps - start_step)
  with checkpointing.PreemptionWatcher(jax.process_count() > 1) as preemption:
    for step, batch in zip(range(start_step + 1, config.total_steps + 1), batches):
      state, metrics = train_step(state, to_global(batch))
      for hook in hooks:
        hook(step)
      last = step == config.total_steps
      if step % config.log_every == 0 or last or manager.should_save(step):
        _check_finite(config, state, workdir, train_data, train_step, to_global)
      if step % config.log_every == 0 or last:
        writer.write_scalars(step, {k: float(v) for k, v in metrics.items()})
      if config.eval_every and step % config.eval_every == 0 and not last:
        with _maybe_timed(hooks, "eval"):
          val = validation_metrics()
        writer.write_scalars(step, val)
        history.append({"step": step, **val})
        if is_main:
          checkpointing.save_validation_history(workdir, history)
      if manager.should_save(step):  # Orbax's policies agree across processes.
        checkpointing.save(manager, step, state, _run_stats(train_data), force=True)
      if preemption.requested(step):
        _save_and_flush(manager, writer, step, state, train_data)
        raise checkpointing.Preempted(step, manager.directory)
      if crash_after_step is not None and step >= crash_after_step:
        manager.wait_until_finished()
        raise SimulatedCrash(f"simulated crash after step {step}")
    train_seconds = time.time() - train_start
    _save_and_flush(manager, writer, step, state, train_data)
    if preemption.requested(step):  # SIGTERM after the last step: evaluate on the rerun.
      raise checkpointing.Preempted(step, manager.directory)

  # --- Final evaluation under every decoder, and the report.
  result = report.final_evaluation(config, source, eval_data, objective, scorer(), label_stats)
  calibration = result.pop("_calibration")
  if is_main:  # What prediction needs besides the params (multilabel_jax.inference).
    calibration_lib.save_artifact(
        workdir, step=step, objective=objective, calibration=calibration,
        r=report.eval_r(config, info.num_classes), top_ks=config.eval.top_ks,
        predict=result["predict"], data=report.prediction_data(source))
  val = {f"val_{k}": v for k, v in result["validation"]["ranking"].items()}
  history.append({"step": step, **val})
  writer.write_scalars(step, val)
  result.update(
      config=json.loads(config.to_json_best_effort()), validation_history=history,
      data=report.data_summary(info, label_stats, load_stats, _run_stats(train_data),
                               _run_stats(eval_data)),
      train={"start_step": start_step, "steps": config.total_steps,
             "seconds_this_run": train_seconds, "skipped_updates": int(state["skipped_updates"]),
             "fused_head": use_fused, "wide_heads": list(model.wide_heads),
             "final_loss": float(metrics["loss"]) if metrics is not None else None,
             "head_bias_init": builders.prior_bias_report(objective),
             "objective_summary": dict(objective.summary)})
  if is_main:
    report.write_report(workdir, result)
  writer.close()
  return result


def _check_finite(config, state, workdir, train_data, train_step, to_global) -> None:
  """Raises :class:`NonFiniteError` (``nonfinite="raise"``) naming the first bad step.

  The state is frozen since that step, so the step is replayed for its diagnostics.
  """
  first = int(state["first_nonfinite"])
  if first < 0 or config.nonfinite != "raise":
    return
  batch = to_global(train_data.train_batch(first - 1, count=False))  # Of step `first`.
  replay = dict(state, step=jnp.asarray(first - 1, jnp.int32))
  _, metrics = train_step(replay, batch)
  diag = {"step": first, "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
          "batch_label_ids": scoring.gather(batch["label_ids"]).tolist()}  # All processes'.
  if jax.process_index() == 0:
    pathlib.Path(workdir, "nonfinite.json").write_text(json.dumps(diag))
  what = "loss" if not np.isfinite(diag["loss"]) else "grads"
  raise NonFiniteError(
      f"step {first}: non-finite {what} (loss={diag['loss']}, grad_norm={diag['grad_norm']}); "
      f"diagnostics in {workdir / 'nonfinite.json'}. Set config.nonfinite='skip' to skip such "
      "updates instead.")


def _run_stats(pipeline) -> dict:
  """What the pipeline's batches skipped or truncated, summed over the processes."""
  return multihost.sum_over_processes(pipeline.stats.as_dict())


def _save_and_flush(manager, writer, step, state, train_data):
  if step not in manager.all_steps():
    checkpointing.save(manager, step, state, _run_stats(train_data), force=True)
  manager.wait_until_finished()
  writer.flush()


class _maybe_timed:  # pylint: disable=invalid-name
  """``ReportProgress.timed(name)`` when progress is reported (process 0), else nothing."""

  def __init__(self, hooks, name):
    self._ctx = hooks[0].timed(name) if hooks else None

  def __enter__(self):
    return self._ctx.__enter__() if self._ctx else None

  def __exit__(self, *exc):
    return self._ctx.__exit__(*exc) if self._ctx else False
