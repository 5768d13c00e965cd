"""The run configuration: defaults, and checks that fail before any compute.

Experiment files in ``experiments/`` start from :func:`base_config` and override fields.
:func:`validate` rejects unknown keys (with a suggestion), wrong types and inconsistent
combinations. ``data.options``, ``objective_options`` and ``model_options`` are free-form:
their keys are those that the configured data source, objective and model take
(:func:`accepted_options`), and :func:`validate` rejects any other key the same way.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import pathlib
import re
from typing import Any, Dict, Iterable, List, Optional

import ml_collections

from multilabel_jax import signatures

FREE_FORM = ("data.options", "objective_options", "model_options")
# The forms of a decoder name (evaluate.make_decoders); which apply depends on the objective.
DECODER_NAME = re.compile(r"^(|natural|(top|nearest)_\d+|threshold_[-+.\deE]+|average_k(_\d+)?|"
                          r"class_thresholds|by_count|expected_f1)$")
# Encoder fields that model_options cannot set: flax's own, and the dtype (`config.dtype`).
_NOT_MODEL_OPTIONS = ("parent", "name", "dtype")


def base_config() -> ml_collections.ConfigDict:
  """Every key a run understands, with its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 256
  c.log_every = 50
  c.eval_every = 500          # Periodic validation metrics (0: only at the end).
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.allow_config_change = False  # Resume a workdir whose stored config differs.
  c.distributed = False          # jax.distributed.initialize() for multi-host runs.
  c.nonfinite = "raise"          # "raise" or "skip" updates whose loss/grads are not finite.
  c.dtype = "float32"            # Encoder compute dtype; heads and losses stay float32.

  c.data = ml_collections.ConfigDict()
  c.data.name = "hashtag_world"
  c.data.options = ml_collections.ConfigDict()
  c.data.strict = False          # Raise on bad lines/labels (loading and batches), not count.
  c.data.resample = ""           # "", "mean" or "max": inverse-sqrt frequency resampling.
  c.data.stats_examples = 20_000  # Examples counted for label statistics of a stream.
  c.data.prefetch = 2            # Batches read ahead by tf.data; 0: read in the loop's thread.

  c.objective = "softmax"
  c.objective_options = ml_collections.ConfigDict()
  c.model = "mlp"
  c.model_options = ml_collections.ConfigDict()

  c.head = ml_collections.ConfigDict()
  c.head.fused = "auto"          # "auto", "on" or "off".
  c.head.fused_min_classes = 65_536
  c.head.chunk_size = 8192
  c.head.wide = False            # Bag of words: a [V, C] linear path into each class head,
  c.head.wide_max_params = 100_000_000  # when V x C x heads is at most this (else none,
  c.head.wide_top_words = False  # or with this, a table over the most frequent words that fit).

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1               # -1: all devices not used by the class axis.
  c.mesh.classes = 1

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.final_lr_fraction = 0.01
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 1e-4
  c.optimizer.clip_norm = 1.0
  # The wide path's tables (head.wide): SGD with momentum and L2, as a linear model wants.
  c.optimizer.wide_lr = 1.0
  c.optimizer.wide_weight_decay = 4e-5
  c.optimizer.deep_lr_with_wide = 0.0  # The rest's peak lr when a wide path is built (0: lr).
  # > 0: an exponential moving average of the params (Polyak averaging), updated after each
  # step with this decay, is what evaluation, prediction and export use (0: the params).
  c.optimizer.ema_decay = 0.0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 512
  c.eval.top_ks = (1, 3, 5)
  c.eval.validation_examples = 2000  # Used for calibration and periodic eval (0: all).
  c.eval.test_examples = 0           # 0: the whole test split.
  c.eval.max_set_size = 64           # Slots of variable-size decoders (overflow counted).
  c.eval.average_ks = (1, 3, 5)      # Extra average-K decoders at these mean set sizes.
  c.eval.frequency_buckets = 3       # Per-bucket test metrics by train frequency (0: none).
  c.eval.oracle = True               # Compare with the simulator's Bayes-optimal scores.

  c.predict = ml_collections.ConfigDict()
  # The decoder stored for prediction (calibration.json, multilabel_jax.inference): "" picks
  # the best validation micro-F1; "natural" the objective's own; else a decoder name of the
  # report (top_1, threshold_0.5, average_k, average_k_3, class_thresholds, by_count, ...).
  c.predict.decoder = ""
  return c


def flatten(cfg, prefix="") -> Dict[str, Any]:
  """``{"optimizer.lr": 1e-3, ...}``: every field by its dotted path; the free-form dicts
  (:data:`FREE_FORM`) are single entries."""
  out = {}
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
      out.update(flatten(value, path + "."))
    else:
      out[path] = value
  return out


def _initials(name: str) -> str:
  return "".join(word[0] for word in name.split("_") if word)


def closest_key(path: str, known: Iterable[str]) -> Optional[str]:
  """The key of ``known`` that ``path`` most likely meant, or None.

  First a key beside it (same parent) that it abbreviates or that abbreviates it
  (``learning_rate`` -> ``lr``), then the closest name beside it, then the closest path
  under another parent (``data.option.path`` -> ``data.options.path``).
  """
  known = list(known)
  parent, _, leaf = path.rpartition(".")
  siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
  for name, key in siblings.items():
    if len(name) > 1 and len(leaf) > 1 and name != leaf and (
        _initials(leaf) == name or _initials(name) == leaf):
      return key
  close = difflib.get_close_matches(leaf, list(siblings), n=1)
  if close:
    return siblings[close[0]]
  elsewhere = [k for k in known if k.rpartition(".")[0] != parent]  # A typo in the parent.
  close = difflib.get_close_matches(path, elsewhere, n=1)
  return close[0] if close else None


def unknown_key_message(path: str, known: Iterable[str]) -> str:
  """``unknown config key `config.PATH`; did you mean `config.HINT`?`` (the hint:
  :func:`closest_key` of ``known``, when there is one)."""
  hint = closest_key(path, known)
  return (f"unknown config key `config.{path}`"
          + (f"; did you mean `config.{hint}`?" if hint else "."))


def _owner(config, path: str) -> str:
  return {"data.options": f"data source {config.data.name!r}",
          "objective_options": f"objective {config.objective!r}",
          "model_options": f"model {config.model!r}"}[path]


def _model_options(name: str) -> Optional[Dict[str, Any]]:
  # pylint: disable=g-import-not-at-top
  from multilabel_jax import models
  from multilabel_jax.models import bow, mlp, resnet, vit
  if name == "mlp":
    encoder = mlp.MlpEncoder
  elif name == "bow":
    encoder = bow.BowEncoder
  elif name in resnet.VARIANTS:
    encoder = resnet.ResNet  # get_resnet sets block and stage_sizes unless given.
  elif name.partition("/")[0] in vit.VARIANTS:
    encoder = vit.ViT        # get_vit sets width, depth, mlp_dim, num_heads unless given.
  else:
    return None  # builders.build_model names the models.
  out = signatures.defaults_of(encoder, skip=_NOT_MODEL_OPTIONS)
  # get_model's own keywords (head_dtype), but those builders.build_model sets.
  params = inspect.signature(models.get_model).parameters
  out.update({k: p.default for k, p in params.items()
              if p.kind == p.KEYWORD_ONLY and k not in ("dtype", "partition_heads")})
  return out


def accepted_options(config: ml_collections.ConfigDict, path: str) -> Optional[Dict[str, Any]]:
  """The keys the free-form dict ``path`` (one of :data:`FREE_FORM`) takes under ``config``:
  ``{key: default}`` (None where there is no default) from the signature of the data
  source (``config.data.name``), the objective's builder (``config.objective``) or the
  model's encoder (``config.model``). None: any key (a name the builders will reject, or a
  builder that takes ``**kwargs``).
  """
  # pylint: disable=g-import-not-at-top
  if path == "data.options":
    from multilabel_jax import data
    try:
      return data.accepted_options(config.data.name)
    except ValueError:
      return None  # An unknown source: builders.build_source names the sources.
  if path == "objective_options":
    from multilabel_jax import losses
    if config.objective not in losses.OBJECTIVES:
      return None
    defaults = signatures.defaults_of(losses.OBJECTIVES[config.objective])
    if defaults is None:
      return None
    return {k: defaults[k] for k in losses.accepted_options(config.objective)}
  if path == "model_options":
    return _model_options(config.model)
  raise ValueError(f"`{path}` is not a free-form dict; those are {FREE_FORM}.")


def unknown_option_message(config, path: str, unknown, accepted) -> str:
  """The error for keys of the free-form dict ``path`` that its reader does not take."""
  unknown = sorted(unknown)
  head = unknown_key_message(f"{path}.{unknown[0]}", [f"{path}.{k}" for k in accepted])
  takes = (f"`config.{path}` accepts {list(accepted)}" if accepted
           else f"`config.{path}` takes no keys for it")
  return f"{head} {_owner(config, path)} does not take option(s) {unknown}; {takes}."


def _check_free_form(config) -> None:
  for path in FREE_FORM:
    accepted = accepted_options(config, path)
    if accepted is None:
      continue
    given = config
    for part in path.split("."):
      given = given[part]
    unknown = set(given) - set(accepted)
    if unknown:
      raise ValueError(unknown_option_message(config, path, unknown, accepted))


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first unknown key, wrong type or bad value.

  Keys of the free-form dicts are checked against :func:`accepted_options`.
  """
  defaults = flatten(base_config())
  given = flatten(config)
  for path, value in given.items():
    if path not in defaults:
      raise ValueError(unknown_key_message(path, defaults))
    want = defaults[path]
    if isinstance(want, ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"`config.{path}` must be a dict of options, got {value!r}.")
      continue
    ok = isinstance(value, type(want)) or (isinstance(want, float) and isinstance(value, int))
    if isinstance(want, bool) != isinstance(value, bool) or not ok:
      raise ValueError(f"`config.{path}` must be of type {type(want).__name__}, "
                       f"got {value!r} ({type(value).__name__}).")
  choices = {"head.fused": ("auto", "on", "off"), "nonfinite": ("raise", "skip"),
             "data.resample": ("", "mean", "max"), "dtype": ("float32", "bfloat16")}
  for path, allowed in choices.items():
    if given[path] not in allowed:
      raise ValueError(f"`config.{path}` must be one of {allowed}, got {given[path]!r}.")
  for path in ("total_steps", "batch_size", "eval.batch_size", "head.chunk_size",
               "keep_checkpoints", "mesh.classes"):
    if given[path] < 1:
      raise ValueError(f"`config.{path}` must be >= 1, got {given[path]}.")
  if not 0.0 <= given["optimizer.ema_decay"] < 1.0:
    raise ValueError(f"`config.optimizer.ema_decay` must be in [0, 1) (0: no moving average), "
                     f"got {given['optimizer.ema_decay']}.")
  if "predict.decoder" in given and not DECODER_NAME.match(given["predict.decoder"]):
    raise ValueError(f"`config.predict.decoder` {given['predict.decoder']!r} is not a decoder "
                     "name: use '' (best validation micro-F1), 'natural', top_<k>, nearest_<k>, "
                     "threshold_<t>, average_k, average_k_<K>, class_thresholds or by_count.")
  _check_free_form(config)


def stored_config_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / "config.json"


def check_workdir(config: ml_collections.ConfigDict, workdir) -> None:
  """Stores the config in a new workdir; refuses a workdir holding a different config.

  Raises:
    ValueError: the workdir's ``config.json`` differs (the message lists the differing
      keys) and ``config.allow_config_change`` is False.
  """
  path = stored_config_path(workdir)
  current = json.loads(config.to_json_best_effort())
  if path.exists():
    stored = json.loads(path.read_text())
    diff = differing_keys(stored, current)
    if diff and not config.allow_config_change:
      raise ValueError(
          f"workdir {workdir} holds another run's config ({path}); differing keys: "
          f"{', '.join(diff[:10])}. Use a fresh --workdir, or pass "
          "--config.allow_config_change=True to resume it with this config.")
    if not diff:
      return
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(current, indent=2, sort_keys=True))


def differing_keys(stored: dict, current: dict) -> List[str]:
  """Dotted keys where a stored config (as JSON) and ``current`` differ; a key added to
  :func:`base_config` since ``stored`` was written counts as no difference at its default.
  Floats that differ only by round-off (relative 1e-9: ``3.0 * 1e-4`` against a stored
  ``0.0003``) are the same value."""
  return _diff(stored, current, json.loads(base_config().to_json_best_effort()))


def _diff(a, b, defaults, prefix=""):
  """Keys where the stored config ``a`` and ``b`` differ; a key that ``a`` lacks (added to
  the base config since it was written) and ``b`` has at its default is no difference."""
  keys = sorted(set(a) | set(b))
  out = []
  for k in keys:
    if k == "allow_config_change":
      continue
    va, vb = a.get(k), b.get(k)
    default = defaults.get(k) if isinstance(defaults, dict) else None
    if k not in a and vb == default:
      continue
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, default if isinstance(default, dict) else {}, f"{prefix}{k}.")
    elif va != vb and not _same_float(va, vb):
      out.append(f"{prefix}{k}")
  return out


def _same_float(a, b) -> bool:
  numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
  return numbers and math.isclose(a, b, rel_tol=1e-9)
