"""The shared train loop: ``train_and_evaluate(config, workdir)``.

Reads top to bottom: set-up and checks, data, objective and model, mesh and sharded
state, optimizer, checkpoint restore, the jitted train step, the loop (logging, periodic
evaluation, checkpoints), and the final evaluation under every decoder, written to
``report.json`` / ``report.md`` in the workdir.

Resumption is exact: the batch of step s is a pure function of (seed, s), dropout keys are
``fold_in(seed, s)``, and the checkpoint holds params, optimizer and model state, the step
and the count of skipped non-finite updates. The newest *readable* checkpoint is restored,
SIGTERM checkpoints and stops at the next step (:mod:`multilabel_jax.checkpointing`;
``docs/RELIABILITY.md``).
"""

from __future__ import annotations

import functools
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
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from multilabel_jax import builders, checkpointing, configs, evaluate, models, optim
import multilabel_jax.data as data_lib
from multilabel_jax.data import pipeline as pipeline_lib
from multilabel_jax.losses import count as count_lib
from multilabel_jax.losses import decoders as decoders_lib
from multilabel_jax.losses import fused, fused_two_head, sharded_head, streaming_top_k


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


def fused_loss_fn(config, objective, mesh, use_sharded: bool):
  """``(outputs, params, label_ids, weights) -> scalar`` weighted mean, fused head."""
  kind = "softmax" if objective.name in ("softmax", "count_distribution") else "bce"
  chunk = config.head.chunk_size
  if objective.name == "two_head":  # Unsharded only (configs.UNSHARDED_FUSED_OBJECTIVES).
    def two_head_loss(outputs, params, label_ids, weights):
      x = outputs["pre_logits"].astype(jnp.float32)
      return fused_two_head.linear_two_head_average_k_reduced(
          x, *models.head_params(params, "logits"),
          *models.head_params(params, "multilabel_logits"), label_ids,
          k=objective.options["k"], weight=objective.options["weight"], chunk_size=chunk,
          weights=weights)
    return two_head_loss
  if use_sharded:
    fn = (sharded_head.sharded_linear_softmax_xent_reduced if kind == "softmax"
          else sharded_head.sharded_linear_sigmoid_bce_reduced)
    fn = functools.partial(fn, mesh=mesh, batch_axis="data")
  else:
    fn = (fused.linear_softmax_xent_reduced if kind == "softmax"
          else fused.linear_sigmoid_bce_reduced)
  extra = {}
  if objective.name == "sigmoid":
    extra["label_smoothing"] = objective.options["label_smoothing"]

  def loss(outputs, params, label_ids, weights):
    kernel, bias = models.head_params(params, "logits")
    x = outputs["pre_logits"].astype(jnp.float32)
    value = fn(x, kernel, bias, label_ids, chunk_size=chunk, weights=weights, **extra)
    if objective.name == "count_distribution":
      nll = count_lib.poisson_nll(outputs["log_count"][:, 0], count_lib.label_count(label_ids))
      value = value + objective.options["count_weight"] * jnp.sum(weights * nll)
    return value
  return loss


def train_and_evaluate(config, workdir, *, crash_after_step=None):
  """Trains, checkpoints, evaluates every decoder and writes the report. Returns it.

  ``crash_after_step`` simulates a crash for tests: the loop raises ``SimulatedCrash``
  after that step, with no final checkpoint (checkpoints already written are kept).
  """
  # --- Set-up and checks (all before any compute).
  configs.validate(config)
  if config.distributed:
    jax.distributed.initialize()
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
  mesh = make_mesh(config)
  train_data = pipeline_lib.InputPipeline(
      source, global_batch_size=config.batch_size, seed=config.seed,
      strict=config.data.strict, allow_empty_labels=True,
      resample=config.data.resample or None, stats_examples=config.data.stats_examples)
  eval_data = pipeline_lib.InputPipeline(source, global_batch_size=config.eval.batch_size,
                                         seed=config.seed, strict=config.data.strict,
                                         allow_empty_labels=True)
  label_stats = train_data.label_stats
  objective = builders.build_objective(config, source, label_stats)
  model = builders.build_model(config, objective, source)
  use_fused = builders.use_fused_head(config, objective)
  skip_heads = builders.fused_heads(objective) if use_fused else ()
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  logging.info("workdir %s: %s on %s (%d classes), objective %s, model %s, fused head %s",
               workdir, config.data.name, info.name, info.num_classes, objective.name,
               config.model, use_fused)

  # --- Sharded initial state: params, optimizer state, model state (batch norm).
  data_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())

  def to_global(batch):
    return {k: jax.make_array_from_process_local_data(data_sharding, np.asarray(v))
            for k, v in batch.items()}

  example = train_data.train_batch(0, count=False)
  example_inputs = {k: v[:1] for k, v in example.items()}
  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps)

  def init_state(rng):
    variables = nn.unbox(model.init({"params": rng}, example_inputs))
    params, model_state = models.split_variables(variables)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params), "model_state": model_state,
            "skipped_updates": jnp.zeros((), jnp.int32)}

  abstract = jax.eval_shape(init_state, jax.random.key(0))
  state_sharding = jax.tree_util.tree_map(lambda _: replicated, abstract)
  if config.mesh.classes > 1:
    boxed = jax.eval_shape(lambda r: model.init({"params": r}, example_inputs),
                           jax.random.key(0))
    param_sharding = models.param_shardings(boxed, mesh)["params"]
    state_sharding["params"] = param_sharding
    state_sharding["opt_state"] = optax.tree_map_params(
        tx, lambda _, s: s, abstract["opt_state"], param_sharding,
        transform_non_params=lambda _: replicated)
  init = jax.jit(init_state, out_shardings=state_sharding)

  # --- Checkpoints: restore the newest readable one if the workdir has any.
  manager = checkpointing.make_manager(config, workdir)
  target = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
  state, data_stats, restored_step = checkpointing.restore_latest(manager, target)
  if state is None:
    state = init(jax.random.key(config.seed))
  else:
    train_data.stats = data_lib.DataStats(**data_stats)  # Counts of the steps before.
    logging.info("resumed from step %d (%s)", restored_step, manager.directory)
  start_step = int(state["step"])

  # --- The train step.
  base_rng = jax.random.key(config.seed + 1)
  fused_loss = fused_loss_fn(config, objective, mesh, config.mesh.classes > 1) if use_fused \
      else None
  mutable = list(state["model_state"])

  def loss_fn(params, model_state, batch, rng):
    variables = {"params": params, **model_state}
    kwargs = dict(train=True, rngs={"dropout": rng}, skip_heads=skip_heads)
    if mutable:
      outputs, new_model_state = model.apply(variables, batch, mutable=mutable, **kwargs)
    else:
      outputs, new_model_state = model.apply(variables, batch, **kwargs), model_state
    weights = objective.example_weights(batch["label_ids"])
    weights = weights / jnp.maximum(jnp.sum(weights), 1.0)
    if use_fused:
      loss = fused_loss(outputs, params, batch["label_ids"], weights)
    else:
      loss = jnp.sum(weights * objective.loss(outputs, batch["label_ids"]))
    return loss, new_model_state

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, batch):
    rng = jax.random.fold_in(base_rng, state["step"])
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["model_state"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state,
               model_state=model_state)
    if config.nonfinite == "skip":  # Keep the old state, but count the step and the skip.
      new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new,
                                   dict(state, step=state["step"] + 1))
      new["skipped_updates"] = state["skipped_updates"] + (~finite).astype(jnp.int32)
    metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": optax.tree.norm(params),
               "learning_rate": schedule(state["step"]), "finite": finite,
               "skipped_updates": new["skipped_updates"]}
    return new, metrics

  # --- Eval: scores (and counts) of a batch.
  @jax.jit
  def predict_step(state, batch):
    variables = {"params": state["params"], **state["model_state"]}
    outputs = model.apply(variables, batch)
    counts = objective.counts_fn(outputs) if objective.counts_fn else None
    return objective.scores(outputs), counts

  def predict(batch):
    # Metrics run on host-gathered arrays: simple, and identical on any mesh.
    scores, counts = _gather(predict_step(state, to_global(batch)))
    return scores, counts

  top_r = min(config.eval.max_set_size, info.num_classes)

  @jax.jit
  def predict_top_step(state, batch):
    """Per-row top-r (scores, ids, counts) from the fused head: no [B, C] array."""
    variables = {"params": state["params"], **state["model_state"]}
    outputs = model.apply(variables, batch, skip_heads=builders.fused_heads(objective))
    x = outputs["pre_logits"].astype(jnp.float32)
    chunk = config.head.chunk_size
    if objective.name == "two_head":  # Scores: sigmoid of the multi-label head (monotone).
      kernel, bias = models.head_params(state["params"], "multilabel_logits")
      logits, ids = streaming_top_k.linear_top_k(x, kernel, bias, top_r, chunk_size=chunk)
      return jax.nn.sigmoid(logits), ids, None
    kernel, bias = models.head_params(state["params"], "logits")
    if config.mesh.classes > 1:
      logits, ids = sharded_head.sharded_linear_top_k(x, kernel, bias, top_r, mesh=mesh,
                                                      chunk_size=chunk, batch_axis="data")
      xent = functools.partial(sharded_head.sharded_linear_softmax_xent, mesh=mesh,
                               batch_axis="data")
    else:
      logits, ids = streaming_top_k.linear_top_k(x, kernel, bias, top_r, chunk_size=chunk)
      xent = fused.linear_softmax_xent
    if objective.name == "sigmoid":
      return jax.nn.sigmoid(logits), ids, None
    # The row logsumexp, from the loss against the top-1 class: lse = xent + z_top1.
    lse = xent(x, kernel, bias, ids[:, :1], chunk_size=chunk) + logits[:, 0]
    probs = jnp.exp(logits - lse[:, None])
    if objective.counts_fn is None:
      return probs, ids, None
    z = objective.counts_fn(outputs)
    return probs * z[:, None], ids, z

  def predict_top(batch):
    return _gather(predict_top_step(state, to_global(batch)))

  def validation_metrics():
    if use_fused:
      result = evaluate.evaluate_top(
          predict_top, eval_data.eval_iter("validation"), decoders={},
          num_classes=info.num_classes, top_ks=config.eval.top_ks,
          propensity=label_stats.propensities(), max_examples=config.eval.validation_examples)
    else:
      result = evaluate.evaluate(
          predict, eval_data.eval_iter("validation"), decoders={},
          num_classes=info.num_classes, top_ks=config.eval.top_ks,
          max_examples=config.eval.validation_examples, bin_edges=_bin_edges(objective))
    return {f"val_{k}": v for k, v in result["ranking"].items()}

  # --- The loop.
  hooks = []
  if is_main:
    hooks.append(periodic_actions.ReportProgress(num_train_steps=config.total_steps,
                                                 writer=writer))
  history = checkpointing.load_validation_history(workdir, start_step)  # Earlier runs'.
  train_start = time.time()
  logging.info("training steps %d..%d", start_step, config.total_steps)
  batches = train_data.train_iter(start_step, config.total_steps - start_step)
  step = start_step

  def save_and_flush(step, state):
    if step not in manager.all_steps():
      checkpointing.save(manager, step, state, train_data.stats.as_dict(), force=True)
    manager.wait_until_finished()
    writer.flush()

  with checkpointing.PreemptionWatcher(config.distributed) as preemption:
    for step, batch in zip(range(start_step + 1, config.total_steps + 1), batches):
      state, metrics = train_step(state, to_global(batch))
      if not bool(metrics["finite"]) and config.nonfinite == "raise":
        _save_diagnostics(workdir, step, metrics, batch)
        raise NonFiniteError(
            f"step {step}: non-finite {'loss' if not np.isfinite(metrics['loss']) else 'grads'}"
            f" (loss={float(metrics['loss'])}, grad_norm={float(metrics['grad_norm'])}); "
            f"diagnostics in {workdir / 'nonfinite.json'}. Set config.nonfinite='skip' to "
            "skip such updates instead.")
      for hook in hooks:
        hook(step)
      if step % config.log_every == 0 or step == config.total_steps:
        writer.write_scalars(step, {k: float(v) for k, v in metrics.items() if k != "finite"})
      if config.eval_every and step % config.eval_every == 0 and step < config.total_steps:
        with _maybe_timed(hooks, "eval"):
          val = validation_metrics()
        writer.write_scalars(step, val)
        history.append({"step": step, **val})
        if is_main:
          checkpointing.save_validation_history(workdir, history)
      checkpointing.save(manager, step, state, train_data.stats.as_dict())
      if preemption.requested(step):
        save_and_flush(step, state)
        raise checkpointing.Preempted(step, manager.directory)
      if crash_after_step is not None and step >= crash_after_step:
        manager.wait_until_finished()
        raise SimulatedCrash(f"simulated crash after step {step}")
    train_seconds = time.time() - train_start
    save_and_flush(step, state)
    if preemption.requested(step):  # SIGTERM after the last step: evaluate on the rerun.
      raise checkpointing.Preempted(step, manager.directory)
  skipped = int(state["skipped_updates"])

  # --- Final evaluation under every decoder, and the report.
  report = final_evaluation(config, source, eval_data, objective,
                            predict_top if use_fused else predict, label_stats, top=use_fused)
  val = validation_metrics()
  history.append({"step": step, **val})
  writer.write_scalars(step, val)
  report.update(
      config=json.loads(config.to_json_best_effort()),
      data={"name": info.name, "num_classes": info.num_classes, "max_labels": info.max_labels,
            "num_train_examples": info.num_train_examples,
            "mean_train_labels": label_stats.mean_labels_per_example,
            "stats": {"load": load_stats, "train_batches": train_data.stats.as_dict(),
                      "eval_batches": eval_data.stats.as_dict()}},
      train={"start_step": start_step, "steps": config.total_steps,
             "seconds_this_run": train_seconds, "skipped_updates": skipped,
             "fused_head": use_fused, "final_loss": float(metrics["loss"]) if
             config.total_steps > start_step else None,
             "head_bias_init": builders.prior_bias_report(objective)},
      validation_history=history)
  if is_main:
    write_report(workdir, report)
  writer.close()
  return report


def _gather(tree):
  """Global arrays as numpy on every process (all-gathered across hosts)."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree_util.tree_map(np.asarray, tree)


def _bin_edges(objective):
  return evaluate.cosine_bin_edges() if objective.name == "embedding" else None


def natural_decoder_name(objective) -> str:
  if objective.decoder == "top_k":
    return f"top_{objective.decoder_params['k']}"
  if objective.decoder == "nearest":
    return f"nearest_{objective.decoder_params['k']}"
  if objective.decoder == "threshold":
    return "threshold_0.5"
  return objective.decoder


def final_evaluation(config, source, eval_data, objective, predict, label_stats, *,
                     top: bool = False) -> dict:
  """Calibrate on validation, evaluate the test split (model, and oracle if available).

  ``top``: ``predict`` returns per-row top-r ``(values, ids, counts)`` (fused heads, 100k-1M
  classes) instead of ``(scores [B, C], counts)``.
  """
  info = source.info
  common = dict(num_classes=info.num_classes, top_ks=config.eval.top_ks,
                max_examples=config.eval.test_examples,
                propensity=label_stats.propensities())
  if config.eval.frequency_buckets:
    common["class_buckets"] = evaluate.frequency_buckets(label_stats.counts,
                                                         config.eval.frequency_buckets)

  def k_average(val_labels):
    return objective.options["k"] if objective.name == "two_head" else evaluate.mean_labels(
        val_labels)

  def run(predictor, name, has_counts, bin_edges, top):
    val_iter = eval_data.eval_iter("validation")
    if top:
      # collect() keeps the first two outputs of each batch: here values and ids.
      values, val_labels, _ = evaluate.collect(lambda b: predictor(b)[:2], val_iter,
                                               config.eval.validation_examples)
      k_avg = k_average(val_labels)
      def average_k_threshold(k):
        try:
          return decoders_lib.calibrate_average_k(values, k, num_classes=info.num_classes)
        except ValueError as e:  # Sets longer than r: say so rather than report a wrong number.
          logging.warning("average-K (K=%s) not evaluated: %s", k, e)
          return None

      t_avg = average_k_threshold(k_avg)
      t_at = {int(k): average_k_threshold(k) for k in config.eval.average_ks}
      decoders = evaluate.top_decoders(
          threshold_t=None if name == "embedding" else 0.5, average_k_t=t_avg,
          top_ks=[k for k in config.eval.top_ks if k <= values.shape[1]], has_counts=has_counts,
          average_k_at={k: t for k, t in t_at.items() if t is not None})
      result = evaluate.evaluate_top(predictor, eval_data.eval_iter("test"), decoders=decoders,
                                     **common)
      return {"k": k_avg, "threshold": t_avg}, result
    val_scores, val_labels, _ = evaluate.collect(predictor, val_iter,
                                                 config.eval.validation_examples)
    k_avg = k_average(val_labels)
    calibration = evaluate.calibrate(val_scores, val_labels, k=k_avg,
                                     average_ks=config.eval.average_ks)
    del val_scores
    decoders = evaluate.make_decoders(
        objective_name=name, has_counts=has_counts, calibration=calibration,
        top_ks=config.eval.top_ks, max_set_size=config.eval.max_set_size,
        num_classes=info.num_classes)
    result = evaluate.evaluate(predictor, eval_data.eval_iter("test"), decoders=decoders,
                               bin_edges=bin_edges, pr_curve=True, **common)
    return calibration["average_k"], result

  average_k, test = run(predict, objective.name, objective.counts_fn is not None,
                        _bin_edges(objective), top)
  report = {"objective": objective.name, "natural_decoder": natural_decoder_name(objective),
            "evaluation_path": "top_r" if top else "dense",
            "calibration": {"average_k": average_k}, "test": test}
  if config.eval.oracle and hasattr(source, "oracle_marginals_from_inputs"):
    r = min(config.eval.max_set_size, info.num_classes)

    def oracle(batch):
      if not top:
        return source.oracle_marginals_from_inputs(batch), None
      ids, probs = source.oracle_marginals_from_inputs(batch, top_k=r)
      return probs, ids, None

    report["oracle"] = run(oracle, "oracle", False, None, top)[1]
  return report


def write_report(workdir, report) -> None:
  """``report.json`` and a readable ``report.md``; the tables are also logged."""
  workdir = pathlib.Path(workdir)
  (workdir / "report.json").write_text(json.dumps(report, indent=2, default=float))
  md = [f"# Report: {report['objective']} on {report['data']['name']}", ""]
  md.append(evaluate.format_tables(report["test"], natural=report["natural_decoder"],
                                   title=f"Test ({report['test']['num_examples']} examples)"))
  if "oracle" in report:
    md.append(evaluate.format_tables(report["oracle"], title="Oracle (Bayes-optimal scores)"))
  cal = report["calibration"]["average_k"]
  md += [f"Average-K threshold {cal['threshold']} for K = {cal['k']:.3f} (validation); "
         f"evaluation path: {report['evaluation_path']}.", "",
         f"Training: {json.dumps(report['train'])}", "",
         f"Data: {json.dumps(report['data'])}", "", "## Config", "", "```json",
         json.dumps(report["config"], indent=2), "```", ""]
  text = "\n".join(md)
  (workdir / "report.md").write_text(text)
  print(text.split("Average-K threshold")[0])


def _save_diagnostics(workdir, step, metrics, batch):
  diag = {"step": step, **{k: float(v) for k, v in metrics.items()},
          "batch_label_ids": np.asarray(batch["label_ids"]).tolist()}
  pathlib.Path(workdir, "nonfinite.json").write_text(json.dumps(diag))


class _maybe_timed:  # pylint: disable=invalid-name
  """``ReportProgress.timed(name)`` when progress is reported (process 0), else nothing."""

  def __init__(self, hooks, name):
    self._ctx = hooks[0].timed(name) if hooks else None

  def __enter__(self):
    return self._ctx.__enter__() if self._ctx else None

  def __exit__(self, *exc):
    return self._ctx.__exit__(*exc) if self._ctx else False
