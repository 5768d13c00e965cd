"""Optimizers from the config: adamw, sgd with momentum, adafactor; warmup + cosine;
gradient clipping; weight decay on kernels only."""

from __future__ import annotations

import jax
import optax

from multilabel_jax.models.heads import WIDE_PREFIX


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
  """Linear warmup to ``config.lr``, then cosine decay to ``lr * final_lr_fraction``
  (``config.schedule == "cosine"``), or constant after warmup (``"constant"``)."""
  warmup = min(config.warmup_steps, total_steps)
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=config.lr * config.final_lr_fraction)
  if config.schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, config.lr, max(warmup, 1)), optax.constant_schedule(config.lr)],
        [warmup])
  raise ValueError(f"config.optimizer.schedule must be 'cosine' or 'constant', "
                   f"got {config.schedule!r}.")


def decay_mask(params):
  """True for kernels and embeddings (rank >= 2); biases, norm scales and counts are not
  decayed."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(config, total_steps: int, *, wide: bool = False):
  """Returns ``(optax.GradientTransformation, schedule)`` from ``config.optimizer``.

  With ``wide=True`` the wide path's tables (top-level params named ``wide_*``) get their
  own optimizer: SGD with ``config.momentum`` at ``config.wide_lr`` on the same warmup and
  cosine, with L2 weight decay ``config.wide_weight_decay`` (not clipped). Adam moves every
  coordinate of a sparse linear model by about the same step, rare words as far as
  frequent ones, and overfits them; SGD moves each in proportion to its gradient, as the
  linear solvers do (LIBLINEAR's Newton steps). Everything else gets the optimizer above,
  at peak ``config.deep_lr_with_wide`` instead of ``config.lr`` when that is set: beside a
  wide path that carries the linear model the deep part is a correction and wants a smaller
  step than when it is the whole model (Wide & Deep, Cheng et al. 2016, also trains the two
  parts with different optimizers). The returned schedule is the deep part's.
  """
  base = learning_rate_schedule(config, total_steps)
  deep_lr = config.get("deep_lr_with_wide", 0.0) if wide else 0.0
  schedule = (lambda step: base(step) * (deep_lr / config.lr)) if deep_lr else base
  name = config.name
  if name == "adamw":
    opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay,
                      mask=decay_mask)
  elif name == "sgd":
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                      optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov))
  elif name == "adafactor":
    opt = optax.adafactor(schedule, weight_decay_rate=config.weight_decay or None,
                          weight_decay_mask=decay_mask)
  else:
    raise ValueError(f"config.optimizer.name must be 'adamw', 'sgd' or 'adafactor', got {name!r}.")
  if config.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(config.clip_norm), opt)
  if wide:
    wide_schedule = lambda step: base(step) * (config.wide_lr / config.lr)
    wide_opt = optax.chain(optax.add_decayed_weights(config.wide_weight_decay),
                           optax.sgd(wide_schedule, momentum=config.momentum or None))
    opt = optax.multi_transform({"main": opt, "wide": wide_opt}, param_groups)
  return opt, schedule


def param_groups(params):
  """``"wide"`` for the wide path's params (top-level ``wide_*``), ``"main"`` otherwise."""
  return {k: jax.tree_util.tree_map(
      lambda _, k=k: "wide" if k.startswith(WIDE_PREFIX) else "main", v)
          for k, v in params.items()}
