"""From a config to the run's parts: data, objective (with its head) and model.

Every check of a config against the data happens here, before any compute: an objective
option it does not take, a model whose input the data does not provide, a fused head for
an objective that has none.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from multilabel_jax import configs, data, losses, models
from multilabel_jax.data import base as data_base

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
  """The objective, with data-driven defaults (count prior, two-head k, PMI embeddings)."""
  name, info = config.objective, source.info
  if name not in losses.OBJECTIVES:
    raise ValueError(f"unknown `config.objective` {name!r}; choose one of "
                     f"{sorted(losses.OBJECTIVES)}.")
  options = config.objective_options.to_dict()
  accepted = losses.accepted_options(name)
  if name == "embedding":
    allowed = set(accepted) - {"embeddings"} | set(configs.EMBEDDING_BUILD_OPTIONS)
    unknown = sorted(set(options) - allowed)
    if unknown:
      raise ValueError(f"objective 'embedding' does not take option(s) {unknown}; it accepts "
                       f"{sorted(allowed)}.")
    dim = options.pop("dim", 64)
    smoothing = options.pop("smoothing", 1.0)
    ids = train_label_ids(source, config.data.stats_examples)
    options["embeddings"] = losses.pmi_label_embeddings(
        ids, info.num_classes, min(dim, info.num_classes), smoothing=smoothing)
  mean = label_stats.mean_labels_per_example
  if "mean_labels" in accepted:
    options.setdefault("mean_labels", max(mean, 1e-3))
  if name == "two_head":
    options.setdefault("k", max(mean, 1.0))
  return losses.get_objective(name, info.num_classes, **options)


def use_fused_head(config, objective) -> bool:
  if config.head.fused == "off" or objective.name not in configs.FUSABLE_OBJECTIVES:
    return False
  if objective.name in configs.UNSHARDED_FUSED_OBJECTIVES and config.mesh.classes > 1:
    return False  # "auto" only: validate() refuses "on".
  return config.head.fused == "on" or objective.head_outputs["logits"].width >= (
      config.head.fused_min_classes)


def fused_heads(objective) -> tuple[str, ...]:
  """The ``[B, C]`` heads a fused loss reads from the params instead of computing."""
  return ("logits", "multilabel_logits") if objective.name == "two_head" else ("logits",)


def build_model(config, objective, source):
  """The Flax model: the configured encoder plus the objective's heads."""
  options = config.model_options.to_dict()
  if config.model == "bow":
    options.setdefault("vocab_size", getattr(source, "num_embeddings", None)
                       or _vocab_size_error(config))
    options.setdefault("pad_id", 0)
  partition = ("logits",) if config.mesh.classes > 1 and "logits" in objective.head_outputs \
      else ()
  if config.model not in models.list_models() and config.model.partition("/")[0] not in (
      "vit_ti", "vit_s", "vit_b"):
    raise ValueError(f"unknown `config.model` {config.model!r}; choose one of "
                     f"{models.list_models()}.")
  try:
    return models.get_model(config.model, objective.head_outputs,
                            dtype=jnp.dtype(config.dtype), partition_heads=partition, **options)
  except TypeError as e:
    raise ValueError(f"`config.model_options` {sorted(options)} do not fit model "
                     f"{config.model!r}: {e}") from e


def _vocab_size_error(config):
  raise ValueError(f"model 'bow' needs `config.model_options.vocab_size` (data "
                   f"{config.data.name!r} does not say its vocabulary size).")


def prior_bias_report(objective) -> dict:
  return {name: spec.bias_init for name, spec in objective.head_outputs.items()
          if math.isfinite(spec.bias_init)}
