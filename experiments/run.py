r"""Runs one experiment: ``python -m experiments.run --config=hashtag_pretrain.py``.

``--config`` takes a file name in ``experiments/`` (``hashtag_pretrain.py``), a path, and an
argument after a colon (``hashtag_pretrain.py:runlocal``, ``debtags.py:loss=sigmoid``).
Fields are overridden with ``--config.optimizer.lr=3e-4``. The free-form dicts take the keys
their data source, objective or model takes, set by the config file or not:
``--config.data.options.path=FILE``, ``--config.objective_options.gamma=1``,
``--config.model_options.widths='(1024,)'``. A value is read as its key's type (a tuple as
``'(1, 2)'``; keys without a default as a Python literal, else as text). An unknown key, a
value of the wrong type or an invalid config stops the run before any compute: one line on
stderr (``unknown config key `config.optimizer.learning_rate`; did you mean
`config.optimizer.lr`?``) and exit code 2. ``--workdir`` defaults to a new folder under
``runs/``; a workdir that has checkpoints is resumed.

On SIGTERM (preemption) the run saves a checkpoint at the next step boundary and exits with
code 75 (``checkpointing.PREEMPTED_EXIT_CODE``); the same command resumes it.

Multi-process (``jax.distributed``), as pod jobs are started: the same command on every
process, plus ``--coordinator=HOST:PORT`` (process 0's address), ``--num_processes=N`` and
``--process_id=I`` (all three or none; else exit code 2). On one machine
``experiments.launch`` starts the N processes:

  python -m experiments.launch --num_processes=2 --devices_per_process=4 -- \
      --config=hashtag_pretrain.py:runlocal --config.mesh.classes=2

A SIGTERM to any process checkpoints all of them at the same step, and each exits with code
75. A process that fails exits at once (code 1, after one line ``experiments.run: process I
of N failed: ...``); when one dies, JAX stops the others within ``--heartbeat_timeout``
seconds (:mod:`multilabel_jax.multihost`). Rerunning the same commands resumes from the last
complete checkpoint; so does a run with another number of processes.
"""

import ast
import datetime
import functools
import importlib.util
import os
import pathlib
import re
import sys
from typing import List, NamedTuple, Optional, Tuple

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from multilabel_jax import configs

EXPERIMENTS = pathlib.Path(__file__).resolve().parent
USAGE_EXIT_CODE = 2  # A command line that names no valid config: nothing ran.
_HELP_FLAGS = ("help", "helpfull", "helpshort", "helpxml", "?")
_OVERRIDE = re.compile(r"^--?(no)?config\.([^=]*)(?:=(.*))?$", re.DOTALL)
_NUMBER = re.compile(r"^-\.?\d")


def resolve_config_path(value: str) -> str:
  """``name.py[:arg]`` in experiments/ or a path, returned as ``path[:arg]``."""
  path, sep, arg = value.partition(":")
  if not pathlib.Path(path).exists() and (EXPERIMENTS / path).exists():
    path = str(EXPERIMENTS / path)
  return path + sep + arg


class Override(NamedTuple):
  """One ``--config.<path>[=value]`` (``value`` None: a bare ``--config.<path>`` or a
  ``--noconfig.<path>``, for booleans)."""
  path: str
  value: Optional[str]
  negated: bool = False

  @property
  def flag(self) -> str:
    return f"--{'no' if self.negated else ''}config.{self.path}"


def split_argv(argv: List[str]) -> Tuple[List[str], Optional[str], List[Override]]:
  """``(argv for absl, the resolved --config value or None, the config overrides)``.

  The overrides leave argv: this module applies them (:func:`apply_overrides`), so that the
  free-form dicts take new keys and unknown keys get our message. ``--config.<path> VALUE``
  (a space for ``=``) is read as absl reads it.
  """
  rest, overrides, config_value = argv[:1], [], None
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg == "--":
      rest += argv[i:]
      break
    if arg in ("--config", "-config") and i + 1 < len(argv):
      i += 1
      arg = "--config=" + argv[i]
    match = _OVERRIDE.match(arg)
    if arg.startswith(("--config=", "-config=")):
      config_value = resolve_config_path(arg.split("=", 1)[1])
      rest.append("--config=" + config_value)
    elif match:
      negated, path, value = bool(match[1]), match[2], match[3]
      if negated and value is not None:
        raise ValueError(f"`{arg}`: a --noconfig.<key> flag takes no value; use "
                         f"`--config.{path}={value}`.")
      nxt = argv[i + 1] if i + 1 < len(argv) else None
      if value is None and not negated and nxt is not None and (
          not nxt.startswith("-") or _NUMBER.match(nxt)):
        value, i = nxt, i + 1
      overrides.append(Override(path, value, negated))
    else:
      rest.append(arg)
    i += 1
  return rest, config_value, overrides


def load_config(value: str) -> config_dict.ConfigDict:
  """``get_config(arg)`` of the config file ``path[:arg]``, locked (as ``config_flags``
  with ``lock_config=True``: fields cannot be added)."""
  path, sep, arg = value.partition(":")
  if not pathlib.Path(path).is_file():
    raise ValueError(f"--config: no config file {path!r} (neither a path nor a file in "
                     f"{EXPERIMENTS}).")
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  if spec is None:
    raise ValueError(f"--config: {path!r} is not a Python file with a get_config().")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    config = module.get_config(arg) if sep else module.get_config()
  except ValueError as e:  # The argument: e.g. "hashtag_pretrain.py: unknown argument 'x'".
    raise ValueError(f"--config: {e}") from None
  config.lock()
  return config


# Parsing values.

_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


def _literal(raw: str):
  """A Python literal (``3``, ``0.5``, ``(1, 2)``, ``None``, ``True``/``true``), else the
  text itself."""
  if raw.lower() in ("true", "false"):
    return raw.lower() == "true"
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return raw


def parse_value(raw: str, like, name: str, *, loose: bool = False):
  """The text ``raw`` as a value of ``like``'s type, for the key ``name``.

  A field (``loose=False``) takes its own type, a float field any number. A key of a
  free-form dict (``loose=True``) takes any number where its default is a number. Tuples
  are written ``'(1, 2)'`` (or one value); without a typed default (``like`` None), a
  Python literal, else the text.

  Raises:
    ValueError: ``raw`` is not a value of that type (the message names the key).
  """
  if isinstance(like, bool):
    if raw.lower() in _TRUE + _FALSE:
      return raw.lower() in _TRUE
    raise ValueError(f"`{name}` must be a bool (True or False), got {raw!r}.")
  if isinstance(like, (int, float)):
    value = _literal(raw)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (isinstance(like, int) and not loose and not isinstance(value, int)):
      raise ValueError(f"`{name}` must be of type {type(like).__name__}, got {raw!r}.")
    return float(value) if isinstance(like, float) else value
  if isinstance(like, str):
    return raw
  if isinstance(like, (tuple, list)):
    value = _literal(raw)
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if isinstance(like, (dict, config_dict.ConfigDict)):
    value = _literal(raw)
    if not isinstance(value, dict):
      raise ValueError(f"`{name}` must be a dict, e.g. \"{{'key': 1}}\", got {raw!r}.")
    return value
  return _literal(raw)


def _value(override: Override, like, name: str, loose: bool):
  if override.value is not None:
    return parse_value(override.value, like, name, loose=loose)
  if like is None or isinstance(like, bool):
    return not override.negated
  raise ValueError(f"`{override.flag}` needs a value: `--{name}=VALUE` "
                   f"(`{name}` is of type {type(like).__name__}, not bool).")


# Applying overrides.


def _free_form_of(path: str) -> Optional[str]:
  return next((f for f in configs.FREE_FORM if path.startswith(f + ".")), None)


def _node(config, path: str):
  for part in filter(None, path.split(".")):
    config = config[part]
  return config


def _set_field(config, override: Override, append: bool) -> None:
  fields = configs.flatten(config)
  path = override.path
  if path not in fields:
    inside = [k for k in fields if k.startswith(path + ".")]
    if inside:
      raise ValueError(f"`config.{path}` is a group of keys, not a value; set its keys "
                       f"(e.g. `--config.{inside[0]}=...`).")
    known = list(fields) + [f"{f}.{k}" for f in configs.FREE_FORM
                            for k in configs.accepted_options(config, f) or ()]
    raise ValueError(configs.unknown_key_message(path, known))
  value = _value(override, fields[path], f"config.{path}", loose=False)
  if append and isinstance(value, tuple):
    value = tuple(fields[path]) + value
  parent, _, key = path.rpartition(".")
  _node(config, parent)[key] = value
  if isinstance(value, dict) and config.is_locked:
    _node(config, path).lock()  # A free-form dict given whole comes unlocked.


def _set_option(config, free_form: str, override: Override, append: bool) -> None:
  """A key of a free-form dict: one its reader (source, objective, model) takes."""
  key, *inner = override.path[len(free_form) + 1:].split(".")
  accepted = configs.accepted_options(config, free_form)
  if accepted is not None and key not in accepted:
    raise ValueError(configs.unknown_option_message(config, free_form, [key], accepted))
  target, leaf = _node(config, free_form), key
  like = (accepted or {}).get(key)
  for i, part in enumerate(inner):  # A key inside an option that is a dict.
    if not isinstance(target.get(leaf), config_dict.ConfigDict):
      whole = ".".join([free_form, key, *inner[:i]])
      raise ValueError(f"`config.{whole}` is not a dict in this config: set it whole, "
                       f"e.g. `--config.{whole}=\"{{'{part}': ...}}\"`.")
    target, leaf, like = target[leaf], part, None
  if target.get(leaf) is not None:
    like = target[leaf]
  value = _value(override, like, f"config.{override.path}", loose=True)
  if append and isinstance(value, tuple) and isinstance(target.get(leaf), tuple):
    value = target[leaf] + value
  with target.unlocked(), target.ignore_type():
    target[leaf] = value


def apply_overrides(config: config_dict.ConfigDict, overrides: List[Override]) -> None:
  """Sets each override on ``config``, in order, fields first, then the keys of free-form
  dicts (checked against the data source, objective and model that the fields now name).
  A tuple given twice is concatenated (``--config.eval.top_ks=1 --config.eval.top_ks=10``).

  Raises:
    ValueError: an unknown key (``unknown config key `config.X`; did you mean
      `config.Y`?``), or a value that is not of its key's type.
  """
  ordered = ([o for o in overrides if not _free_form_of(o.path)]
             + [o for o in overrides if _free_form_of(o.path)])
  seen = set()
  for override in ordered:
    free_form = _free_form_of(override.path)
    if free_form:
      _set_option(config, free_form, override, override.path in seen)
    else:
      _set_field(config, override, override.path in seen)
    seen.add(override.path)


# The command line.

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the report go "
                               "(default: runs/<config>-<time>).")


_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "Multi-process run: HOST:PORT of process 0, where JAX's coordination "
    "service listens (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Multi-process run: the number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "Multi-process run: this process's index, 0..N-1.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 30, "Multi-process run: seconds after which a process that stopped "
    "sending heartbeats counts as dead, and the job stops.")


def default_workdir(config_value: str) -> str:
  name = pathlib.Path(config_value.partition(":")[0]).stem
  arg = config_value.partition(":")[2].replace("=", "-").replace(",", "_")
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return str(pathlib.Path("runs") / f"{name}{'-' + arg if arg else ''}-{stamp}")


def _quiet_orbax(record) -> bool:
  """Drops orbax's per-save INFO lines; its warnings and errors still show."""
  return record.levelno >= 30 or "orbax" not in record.pathname


def main(argv, config=None):
  """Trains ``config`` (from :func:`run`; else the ``--config`` flag's, without overrides)."""
  del argv
  from multilabel_jax import multihost  # pylint: disable=g-import-not-at-top
  try:
    distributed = multihost.check_flags(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
    if _HEARTBEAT_TIMEOUT.value < 1:
      raise ValueError(f"--heartbeat_timeout must be >= 1 (seconds), got "
                       f"{_HEARTBEAT_TIMEOUT.value}.")
  except ValueError as e:
    print(f"experiments.run: error: {e}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
  # Imported here: TensorFlow and orbax take seconds, and a bad command line fails before.
  from multilabel_jax import checkpointing, train  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(_quiet_orbax)
  config = _CONFIG.value if config is None else config
  if distributed:  # Before anything touches the devices.
    multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         heartbeat_timeout_s=_HEARTBEAT_TIMEOUT.value)
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
  logging.info("workdir: %s", workdir)
  print(f"workdir: {workdir}", flush=True)
  try:
    train.train_and_evaluate(config, workdir)
  except checkpointing.Preempted as e:
    logging.warning("%s", e)
    print(e, flush=True)
    sys.exit(checkpointing.PREEMPTED_EXIT_CODE)
  except Exception as e:  # pylint: disable=broad-except
    import jax  # pylint: disable=g-import-not-at-top
    if not jax.distributed.is_initialized():
      raise
    # Exit now: a clean exit would wait for the others at JAX's shutdown barrier while they
    # wait for this process in a collective. Its death stops them (multihost's docstring).
    index, count = ((_PROCESS_ID.value, _NUM_PROCESSES.value) if distributed
                    else (jax.process_index(), jax.process_count()))
    logging.exception("process %d of %d failed", index, count)
    first_line = (str(e).splitlines() or [""])[0]
    print(f"experiments.run: process {index} of {count} failed: {type(e).__name__}: "
          f"{first_line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access


def _is_help(arg: str) -> bool:
  return arg.lstrip("-").split("=", 1)[0] in _HELP_FLAGS and arg.startswith("-")


def build_config(argv: List[str]) -> Tuple[List[str], Optional[config_dict.ConfigDict]]:
  """``(argv for absl, the run's config)``: loaded, overridden and validated; the config is
  None when argv asks for help.

  Raises:
    ValueError: an unknown key, a value of the wrong type, no ``--config``, a config file
      that does not load, or a config that :func:`configs.validate` rejects.
  """
  rest, config_value, overrides = split_argv(argv)
  if any(_is_help(a) for a in rest[1:]):
    return rest, None
  if config_value is None:
    # Without a config, the fields still check: a key no config has is named first.
    base = configs.base_config()
    base.lock()
    apply_overrides(base, [o for o in overrides if not _free_form_of(o.path)])
    raise ValueError("--config=FILE[:ARG] is required (e.g. "
                     "--config=hashtag_pretrain.py:runlocal).")
  config = load_config(config_value)
  apply_overrides(config, overrides)
  configs.validate(config)
  return rest, config


def run(argv=None):
  argv = list(sys.argv if argv is None else argv)
  try:
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    rest, config = build_config(argv)
  except (ValueError, flags.Error) as e:
    print(f"experiments.run: error: {e}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
  sys.argv = rest  # config_flags reads its overrides from sys.argv: there are none left.
  app.run(functools.partial(main, config=config), argv=rest)


if __name__ == "__main__":
  run()
