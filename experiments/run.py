r"""Runs one experiment: ``python -m experiments.run --config=hashtag_pretrain.py``.

``--config`` takes a file name in ``experiments/`` (``hashtag_pretrain.py``), a path, and an
argument after a colon (``hashtag_pretrain.py:runlocal``, ``debtags.py:loss=sigmoid``).
Fields are overridden with ``--config.optimizer.lr=3e-4``. ``--workdir`` defaults to a new
folder under ``runs/``; a workdir that has checkpoints is resumed.

On SIGTERM (preemption) the run saves a checkpoint at the next step boundary and exits with
code 75 (``checkpointing.PREEMPTED_EXIT_CODE``); the same command resumes it.
"""

import datetime
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from multilabel_jax import checkpointing, train

EXPERIMENTS = pathlib.Path(__file__).resolve().parent


def resolve_config_path(value: str) -> str:
  """``name.py[:arg]`` in experiments/ or a path, returned as ``path[:arg]``."""
  path, sep, arg = value.partition(":")
  if not pathlib.Path(path).exists() and (EXPERIMENTS / path).exists():
    path = str(EXPERIMENTS / path)
  return path + sep + arg


def _patched_argv(argv):
  out = []
  for a in argv:
    if a.startswith("--config="):
      a = "--config=" + resolve_config_path(a.split("=", 1)[1])
    out.append(a)
  return out


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the report go "
                               "(default: runs/<config>-<time>).")


def default_workdir(config_value: str) -> str:
  name = pathlib.Path(config_value.partition(":")[0]).stem
  arg = config_value.partition(":")[2].replace("=", "-").replace(",", "_")
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return str(pathlib.Path("runs") / f"{name}{'-' + arg if arg else ''}-{stamp}")


def _quiet_orbax(record) -> bool:
  """Drops orbax's per-save INFO lines; its warnings and errors still show."""
  return record.levelno >= 30 or "orbax" not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_quiet_orbax)
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
  logging.info("workdir: %s", workdir)
  print(f"workdir: {workdir}", flush=True)
  try:
    train.train_and_evaluate(_CONFIG.value, workdir)
  except checkpointing.Preempted as e:
    logging.warning("%s", e)
    print(e, flush=True)
    sys.exit(checkpointing.PREEMPTED_EXIT_CODE)


def run():
  app.run(main, argv=_patched_argv(sys.argv))


if __name__ == "__main__":
  run()
