r"""Extreme Classification Repository data: ``train.txt`` and ``test.txt`` (EURLex-4K, Wiki10-31K,
AmazonCat-13K) in the repository's sparse format (:mod:`multilabel_jax.data.xmc`).

  python -m experiments.run --config=xmc.py:dir=tests/fixtures/xmc_tiny
  python -m experiments.run --config=xmc.py:dir=tests/fixtures/xmc_tiny,loss=sigmoid
  python -m experiments.run --config=xmc.py:runlocal       # seconds, on that fixture

The argument is a comma-separated list of:

* ``dir=DIR``: the folder holding ``train.txt`` and ``test.txt`` (as downloaded), or
* ``train=FILE,test=FILE``: the two files by name (plain or ``.gz``);
* ``validation=FILE``: optional, a validation file in the same format. Without it 10% of the
  train points (a fixed seeded draw, ``XmcConfig.validation_fraction``) are held out as the
  validation split: the repository ships none, and the run needs one for its periodic
  metrics and for calibrating the set decoders (thresholds, average-K). Test labels are
  never used to choose anything;
* ``loss=<objective>`` (default softmax), ``runlocal``.

Every other field of :class:`multilabel_jax.data.xmc.XmcConfig` is set with
``--config.data.options.KEY=VALUE``: ``max_features`` (T, default 1024 here: a point keeps
its 1024 largest values, the rest counted in the report's ``truncated_tokens``; ``None``
keeps every feature of the longest train point), ``normalize`` (``"l2"`` here),
``max_labels``. Bad lines are counted in the report; ``--config.data.strict=True`` raises
on the first. The model (bag of words over the feature ids, weighted by the values)
and optimizer are jsonl.py's (:func:`jsonl.generic_bow`); the fused head turns itself on for many
classes (``head.fused="auto"``). ``:runlocal`` trains a small model for a few steps; without
``dir=`` or ``train=`` it uses the fixture ``tests/fixtures/xmc_tiny`` (80 train and 20 test
points, 30 features, 5 labels).
"""

import pathlib

from experiments import debtags
from experiments import jsonl

FIXTURE_DIR = jsonl.REPO / "tests" / "fixtures" / "xmc_tiny"
ARGS = {"dir": "DIR", "train": "FILE", "test": "FILE", "validation": "FILE",
        "loss": "<objective>"}
NAME = "xmc.py"


def files_of(args) -> dict:
  """Split name -> file, from ``dir=`` or ``train=``/``test=`` (and ``validation=``)."""
  if "dir" in args:
    both = [k for k in ("train", "test") if k in args]
    if both:
      raise ValueError(f"{NAME}: give dir=DIR or train=FILE,test=FILE, not both "
                       f"(dir={args['dir']}, {both[0]}={args[both[0]]}).")
    folder = pathlib.Path(str(args["dir"]))
    files = {"train": folder / "train.txt", "test": folder / "test.txt"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
      raise ValueError(f"{NAME}: dir={args['dir']} has no {' and no '.join(missing)}; the "
                       "folder should hold train.txt and test.txt as downloaded from the "
                       "Extreme Classification Repository (other names: train=FILE,"
                       "test=FILE).")
    files = {k: str(v) for k, v in files.items()}
  elif "train" in args or "test" in args:
    need = [k for k in ("train", "test") if k not in args]
    if need:
      raise ValueError(f"{NAME}: {need[0]}=FILE is needed too (train=FILE,test=FILE, or "
                       "dir=DIR).")
    files = {"train": str(args["train"]), "test": str(args["test"])}
  else:
    raise ValueError(f"{NAME}: which data? Give dir=DIR (train.txt and test.txt inside) or "
                     "train=FILE,test=FILE, or runlocal for the fixture "
                     f"{FIXTURE_DIR.relative_to(jsonl.REPO)}.")
  if "validation" in args:
    files["validation"] = str(args["validation"])
  return files


def get_config(arg=None):
  args = jsonl.parse_arg(arg, NAME, ARGS)
  if args["runlocal"] and not {"dir", "train", "test"} & set(args):
    args["dir"] = str(FIXTURE_DIR)
  files = files_of(args)
  c = debtags.get_config(f"loss={args.get('loss', 'softmax')}")
  c.data.name = "xmc"
  c.data.options = dict(name=dataset_name(files["train"]), files=files, max_features=1024,
                        normalize="l2",
                        validation_fraction=0.0 if "validation" in files else 0.1)
  jsonl.generic_bow(c)
  c.head.fused = "auto"
  if args["runlocal"]:
    jsonl.small(c)
  return c


def dataset_name(train: str) -> str:
  """``.../EURLex-4K/train.txt`` -> ``EURLex-4K``; ``eurlex_train.txt`` -> ``eurlex_train``."""
  path = pathlib.Path(train)
  stem = jsonl.dataset_name(path)
  if stem == "train" and path.parent.name:
    return path.parent.name
  return stem
