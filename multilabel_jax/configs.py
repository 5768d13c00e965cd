"""The run configuration: defaults, and checks that fail before any compute.

Experiment files in ``experiments/`` start from :func:`base_config` and override fields.
:func:`validate` rejects unknown keys (with a suggestion), wrong types and inconsistent
combinations; ``data.options``, ``objective_options`` and ``model_options`` are free-form
and are checked by the data source, objective and model builders.
"""

from __future__ import annotations

import difflib
import json
import pathlib

import ml_collections

FREE_FORM = ("data.options", "objective_options", "model_options")


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

  c.objective = "softmax"
  c.objective_options = ml_collections.ConfigDict()
  c.model = "mlp"
  c.model_options = ml_collections.ConfigDict()

  c.head = ml_collections.ConfigDict()
  c.head.fused = "auto"          # "auto", "on" or "off".
  c.head.fused_min_classes = 65_536
  c.head.chunk_size = 8192

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

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 512
  c.eval.top_ks = (1, 3, 5)
  c.eval.validation_examples = 2000  # Used for calibration and periodic eval (0: all).
  c.eval.test_examples = 0           # 0: the whole test split.
  c.eval.max_set_size = 64           # Slots of variable-size decoders (overflow counted).
  c.eval.average_ks = (1, 3, 5)      # Extra average-K decoders at these mean set sizes.
  c.eval.frequency_buckets = 3       # Per-bucket test metrics by train frequency (0: none).
  c.eval.oracle = True               # Compare with the simulator's Bayes-optimal scores.
  return c


def _flatten(cfg, prefix=""):
  out = {}
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value
  return out


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first unknown key, wrong type or bad value."""
  defaults = _flatten(base_config())
  given = _flatten(config)
  for path, value in given.items():
    if path not in defaults:
      hint = difflib.get_close_matches(path, defaults, n=1)
      raise ValueError(f"unknown config key `config.{path}`"
                       + (f"; did you mean `config.{hint[0]}`?" if hint else "."))
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
    diff = _diff(stored, current)
    if diff and not config.allow_config_change:
      raise ValueError(
          f"workdir {workdir} holds another run's config ({path}); differing keys: "
          f"{', '.join(diff[:10])}. Use a fresh --workdir, or pass "
          "--config.allow_config_change=True to resume it with this config.")
    if not diff:
      return
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(current, indent=2, sort_keys=True))


def _diff(a, b, prefix=""):
  keys = sorted(set(a) | set(b))
  out = []
  for k in keys:
    if k == "allow_config_change":
      continue
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}{k}.")
    elif va != vb:
      out.append(f"{prefix}{k}")
  return out
