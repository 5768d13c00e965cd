r"""Your own data as JSON lines: one JSON object per line, with some text and a list of labels.

  python -m experiments.run --config=jsonl.py:path=tests/fixtures/tiny_posts.jsonl,text=title+body
  python -m experiments.run --config=jsonl.py:text=title+body,labels=tags,loss=sigmoid \
    --config.data.options.path=tests/fixtures/tiny_posts.jsonl
  python -m experiments.run --config=jsonl.py:runlocal     # seconds, on that fixture

The argument is a comma-separated list of (all optional):

* ``path=FILE``: the ``.jsonl`` or ``.jsonl.gz`` file (or ``--config.data.options.path=FILE``);
* ``text=FIELD+FIELD+...``: the keys whose values (strings or lists of strings) make the text,
  joined with ``+`` (default: any of ``title``, ``synopsis``, ``description``, ``text``);
* ``labels=FIELD``: the key of the list of labels (strings or integers; default ``tags``);
* ``tokens=FIELD+FIELD+...``: keys whose values become whole tokens ``FIELD=value`` (none);
* ``id=FIELD``: the key whose MD5 hash splits the records, 10% test, 10% validation, the rest
  train (default ``id``);
* ``split=FIELD``: split by this key's value instead (``train``; ``validation``, ``valid`` or
  ``dev``; ``test``);
* ``loss=<objective>`` (default softmax), ``runlocal``.

Any other field of :class:`multilabel_jax.data.jsonl.JsonlConfig` is set with
``--config.data.options.KEY=VALUE`` (e.g. ``min_label_count``, ``max_labels``); a few bad
lines are counted in the report, and ``--config.data.strict=True`` raises on the first.
The model and optimizer are the generic bag-of-words settings of :func:`generic_bow` (an
MLP over the bag, no wide path: debtags.py's own choices were tuned on debtags alone); the
fused head turns itself on for many classes (``head.fused="auto"``). ``:runlocal`` trains a small
model for a few steps; without ``path=`` it uses the fixture
``tests/fixtures/tiny_posts.jsonl`` (80 posts, 7 tags, 2 malformed lines that the report
counts) with ``text=title+body``. Before any compute, the label field absent on every line,
none of the text fields on any line, labels that are not strings (or integers) on every
line, and an empty file stop with an error naming the file, the line and the field; one
named text field of several that no line has is a warning.
"""

import pathlib
from typing import Dict, Mapping, Sequence

from experiments import debtags

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_posts.jsonl"
FIXTURE_ARGS = {"path": str(FIXTURE), "text": "title+body", "labels": "tags"}
# Argument -> what its value is (for the messages).
ARGS = {"path": "FILE", "text": "FIELD+FIELD", "labels": "FIELD", "tokens": "FIELD+FIELD",
        "id": "FIELD", "split": "FIELD", "loss": "<objective>"}
FLAGS = ("runlocal",)
TEXT_OPTIONS = dict(min_count=2, sublinear_tf=True, max_tokens=256)  # As debtags.


def parse_arg(arg, name: str = "jsonl.py", values: Mapping[str, str] = ARGS,
              flags: Sequence[str] = FLAGS) -> Dict[str, object]:
  """``"key=value,flag,..."`` -> ``{key: value, flag: True}`` (flags absent: False).

  Raises:
    ValueError: ``"<name>: ..."`` naming the part that is not one of ``values``
      (``key=VALUE``) or ``flags``, has no value, or repeats a key.
  """
  out: Dict[str, object] = {f: False for f in flags}
  usage = ", ".join([f"{k}={v}" for k, v in values.items()] + list(flags))
  for part in filter(None, (arg or "").split(",")):
    key, sep, value = part.partition("=")
    if key in flags:
      if sep:
        raise ValueError(f"{name}: argument {part!r}: {key} takes no value.")
      out[key] = True
      continue
    if key not in values:
      raise ValueError(f"{name}: unknown argument {part!r}; use {usage}.")
    if not value:
      raise ValueError(f"{name}: argument {part!r} needs a value: {key}={values[key]}.")
    if key in out:
      raise ValueError(f"{name}: argument {key!r} given twice ({key}={out[key]}, {part}).")
    out[key] = value
  return out


def fields(args: Mapping[str, object], key: str, name: str = "jsonl.py") -> tuple:
  """The ``+``-separated field names of argument ``key``."""
  names = tuple(str(args[key]).split("+"))
  if not all(names):
    raise ValueError(f"{name}: argument '{key}={args[key]}' has an empty field name; "
                     f"separate the fields with '+' ({key}=title+body).")
  return names


def dataset_name(path) -> str:
  """``data/posts.jsonl.gz`` -> ``posts``."""
  name = pathlib.Path(str(path)).name
  for suffix in (".gz", ".jsonl", ".json", ".txt"):
    name = name[:-len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name
  return name


def small(c) -> None:
  """The ``runlocal`` sizes: a few steps of a small model, a small evaluation."""
  c.total_steps = 20
  c.batch_size = 16
  c.log_every = 10
  c.eval_every = 0
  c.checkpoint_every = 20
  c.optimizer.warmup_steps = 5
  c.model_options = dict(embed_dim=16, widths=(32,), pooling="sum", dropout=0.0)
  c.eval.batch_size = 64
  c.eval.validation_examples = 256
  c.eval.test_examples = 256


def generic_bow(c) -> None:
  """The bag-of-words model and schedule for data of one's own (and xmc.py): a 256-wide
  bag, a 512-wide MLP with dropout 0.2, no wide path, Adam at 1e-3 for 4,000 steps of 128
  (debtags.py's settings before its validation search)."""
  c.model_options = dict(embed_dim=256, widths=(512,), pooling="sum", dropout=0.2)
  c.head.wide = False
  c.batch_size, c.total_steps = 128, 4000
  c.optimizer.lr, c.optimizer.warmup_steps = 1e-3, 200
  c.log_every, c.eval_every, c.checkpoint_every = 200, 1000, 1000


def get_config(arg=None):
  args = parse_arg(arg)
  if args["runlocal"] and "path" not in args:
    args = {**FIXTURE_ARGS, **args}
  c = debtags.get_config(f"loss={args.get('loss', 'softmax')}")
  options = dict(text=dict(TEXT_OPTIONS))
  if "path" in args:
    options.update(name=dataset_name(args["path"]), path=str(args["path"]))
  if "text" in args:
    options["text_fields"] = fields(args, "text")
  if "tokens" in args:
    options["token_fields"] = fields(args, "tokens")
  if "labels" in args:
    options["label_field"] = str(args["labels"])
  if "id" in args:
    options["hash_field"] = str(args["id"])
  if "split" in args:
    options.update(split="field", split_field=str(args["split"]))
  c.data.name = "jsonl"
  c.data.options = options
  generic_bow(c)
  c.head.fused = "auto"
  if args["runlocal"]:
    small(c)
  return c
