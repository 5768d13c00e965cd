"""Optimizers from the config: adamw, sgd with momentum, adafactor; warmup + cosine;
gradient clipping; weight decay on kernels only."""

from __future__ import annotations

import jax
import optax


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


def make_optimizer(config, total_steps: int):
  """Returns ``(optax.GradientTransformation, schedule)`` from ``config.optimizer``."""
  schedule = learning_rate_schedule(config, total_steps)
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
  return opt, schedule
