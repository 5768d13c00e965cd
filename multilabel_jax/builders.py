"""From a config to the run's parts: data, objective (with its head) and model.

Every check of a config against the data happens here, before any compute: an objective
option it does not take, a model whose input the data does not provide, a fused head for
an objective that has none. Nothing here asks which objective it has: the
:class:`losses.Objective` says what it needs.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from absl import logging

from multilabel_jax import data, losses, models
from multilabel_jax.data import base as data_base
from multilabel_jax.data import pipeline as pipeline_lib

# The batch key each encoder reads.
_MODEL_INPUTS = {"mlp": "features", "bow": "token_ids"}


def model_input(model_name: str) -> str:
  return _MODEL_INPUTS.get(model_name, "image")


# Sources that read files, and can raise on a bad line instead of counting it.
_SOURCES_WITH_STRICT = ("debtags", "jsonl", "xmc")


def build_source(config):
  """The data source; ``config.data.strict`` also makes file loading strict."""
  options = config.data.options.to_dict()
  if config.data.strict and config.data.name in _SOURCES_WITH_STRICT:
    options.setdefault("strict", True)
  return data.get_source(config.data.name, **options)


def build_pipelines(config, source):
  """``(train, eval)`` input pipelines: deterministic, resumable, per process."""
  train = pipeline_lib.InputPipeline(
      source, global_batch_size=config.batch_size, seed=config.seed, strict=config.data.strict,
      allow_empty_labels=True, resample=config.data.resample or None,
      stats_examples=config.data.stats_examples, prefetch=config.data.prefetch)
  evaluation = pipeline_lib.InputPipeline(source, global_batch_size=config.eval.batch_size,
                                          seed=config.seed, strict=config.data.strict,
                                          allow_empty_labels=True,
                                          prefetch=config.data.prefetch)
  return train, evaluation


def check_model_matches_data(config, info) -> None:
  key = model_input(config.model)
  if key not in info.inputs:
    raise ValueError(f"model {config.model!r} reads the input {key!r}, but data "
                     f"{config.data.name!r} provides {sorted(info.inputs)}; choose a model that "
                     f"matches ({ {v: k for k, v in _MODEL_INPUTS.items()} } or resnet/vit "
                     "for 'image').")


def train_label_ids(source, num_examples: int) -> np.ndarray:
  """The first training labels (for PMI embeddings)."""
  n = source.num_examples("train")
  n = num_examples if n is None else min(n, num_examples)
  return data_base.read_labels(source, "train", np.arange(n))


def build_objective(config, source, label_stats) -> losses.Objective:
  """The objective, with what it may build from the training data (count priors, the
  two-head's k, PMI embeddings: see each builder)."""
  if config.objective not in losses.OBJECTIVES:
    raise ValueError(f"unknown `config.objective` {config.objective!r}; choose one of "
                     f"{sorted(losses.OBJECTIVES)}.")
  training = losses.TrainingData(
      mean_labels=label_stats.mean_labels_per_example,
      label_ids=lambda: train_label_ids(source, config.data.stats_examples))
  return losses.get_objective(config.objective, source.info.num_classes, data=training,
                              **config.objective_options.to_dict())


def rebuild_objective(config, num_classes: int, rebuild_options) -> losses.Objective:
  """The run's objective without its training data: the config's options plus what the
  objective built from the data (``Objective.rebuild_options``, stored in the run's
  calibration file)."""
  if config.objective not in losses.OBJECTIVES:
    raise ValueError(f"the run's objective {config.objective!r} is not registered in this "
                     f"process; register it (losses.register_objective) before loading, or "
                     f"choose one of {sorted(losses.OBJECTIVES)}.")
  options = {**config.objective_options.to_dict(), **dict(rebuild_options)}
  return losses.get_objective(config.objective, num_classes, **options)


def use_fused_head(config, objective) -> bool:
  """Whether the run trains and scores through ``objective.fused`` (no ``[B, C]`` arrays).

  ``head.fused="on"`` for an objective without a fused form (or without a class-sharded
  one on a class-sharded mesh) raises; ``"auto"`` uses it from ``head.fused_min_classes``.
  """
  fused, sharded = objective.fused, config.mesh.classes > 1
  if config.head.wide and config.head.fused == "on":
    raise ValueError("`config.head.fused='on'` cannot train `config.head.wide=True`: the wide "
                     "path adds to the head's output, which a fused head never forms; use "
                     "`config.head.fused='auto'` or 'off'.")
  if config.head.fused == "on":
    if fused is None:
      raise ValueError(f"`config.head.fused='on'`: objective {objective.name!r} has no fused "
                       "head; use `config.head.fused='auto'` or 'off'.")
    if sharded and not fused.class_sharded:
      raise ValueError(f"objective {objective.name!r} has no class-sharded fused head: use "
                       "`config.mesh.classes=1` or `config.head.fused='off'`.")
    return True
  if (config.head.fused == "off" or fused is None or config.head.wide
      or (sharded and not fused.class_sharded)):
    return False
  width = objective.head_outputs[fused.rank_head].width
  return width >= config.head.fused_min_classes


MIN_WIDE_WORDS = 1024  # The fewest words a wide path cut to head.wide_max_params may read.


def build_model(config, objective, source, num_classes=None):
  """The Flax model: the configured encoder plus the objective's heads.

  ``num_classes`` (default ``source.info.num_classes``) names the class heads, those of
  that width, which ``config.head.wide`` gives a wide path: a ``[V, C]`` table per class
  head if ``V x C x heads`` is at most ``config.head.wide_max_params``; else, with
  ``config.head.wide_top_words`` and a source whose ids go by decreasing document frequency
  (``source.ids_by_frequency``: a learned vocabulary), a table over the most frequent words
  that fit (at least :data:`MIN_WIDE_WORDS`); otherwise none. On debsuggests (11,401
  labels) that cut, 8,770 words, raised validation P@1 from 0.269 to 0.278 but tripled the
  run's time here (docs/DATA.md), so it is not the default."""
  options = config.model_options.to_dict()
  if config.model == "bow":
    options.setdefault("vocab_size", getattr(source, "num_embeddings", None)
                       or _vocab_size_error(config))
    options.setdefault("pad_id", 0)
  partition = ("logits",) if config.mesh.classes > 1 and "logits" in objective.head_outputs \
      else ()
  wide = {}
  if config.head.wide:  # Every class head (width C) gets a [V, C] table, if it fits.
    if config.model != "bow":
      raise ValueError(f"`config.head.wide=True` needs a bag-of-words model "
                       f"(`config.model='bow'`), got {config.model!r}.")
    num_classes = num_classes or source.info.num_classes
    heads = tuple(n for n, h in objective.head_outputs.items() if h.width == num_classes)
    size = options["vocab_size"] * num_classes * len(heads)
    top = config.head.wide_max_params // max(num_classes * len(heads), 1)
    if size <= config.head.wide_max_params:
      wide = dict(wide_vocab_size=options["vocab_size"], wide_heads=heads)
    elif (config.head.get("wide_top_words", False) and top >= MIN_WIDE_WORDS
          and getattr(source, "ids_by_frequency", False)):
      wide = dict(wide_vocab_size=top, wide_heads=heads)  # Ids >= top are padding there.
      logging.info("config.head.wide: the wide path reads the %d most frequent of %d words "
                   "(all of them, x %d classes x %d heads, would exceed "
                   "config.head.wide_max_params=%d).", top - 1, options["vocab_size"] - 1,
                   num_classes, len(heads), config.head.wide_max_params)
    else:
      logging.warning("config.head.wide: no wide path, its %d parameters (%d words x %d "
                      "classes x %d heads) exceed config.head.wide_max_params=%d (see "
                      "config.head.wide_top_words).", size,
                      options["vocab_size"], num_classes, len(heads),
                      config.head.wide_max_params)
  if config.model not in models.list_models() and config.model.partition("/")[0] not in (
      "vit_ti", "vit_s", "vit_b"):
    raise ValueError(f"unknown `config.model` {config.model!r}; choose one of "
                     f"{models.list_models()}.")
  try:
    return models.get_model(config.model, objective.head_outputs,
                            dtype=jnp.dtype(config.dtype), partition_heads=partition, **wide,
                            **options)
  except TypeError as e:
    raise ValueError(f"`config.model_options` {sorted(options)} do not fit model "
                     f"{config.model!r}: {e}") from e


def _vocab_size_error(config):
  raise ValueError(f"model 'bow' needs `config.model_options.vocab_size` (data "
                   f"{config.data.name!r} does not say its vocabulary size).")


def prior_bias_report(objective) -> dict:
  return {name: spec.bias_init for name, spec in objective.head_outputs.items()
          if math.isfinite(spec.bias_init)}
