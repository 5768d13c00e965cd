"""Generic multi-label text dataset from JSON lines: one record (a JSON object) per line.

Any schema with some text and a list of labels loads by configuration alone
(:class:`JsonlConfig`); debtags (:mod:`multilabel_jax.data.debtags`) is one such
configuration. Example::

    source = load_jsonl(JsonlConfig(path="my.jsonl.gz", text_fields=("title", "body"),
                                    label_field="hashtags", split="hash", hash_field="id"))

Inputs are bag-of-words features from :mod:`multilabel_jax.data.text`: ``token_ids`` int32
``[T]`` (padded with 0) and ``token_weights`` float32 ``[T]``. The text of a record is its
``text_fields`` joined by newlines (a list value is joined by spaces); each value of a
``token_fields`` field becomes one whole token ``"field=value"`` (e.g. ``"depends=python3"``),
not split into words; each value of an ``ngram_fields`` field adds its character n-grams
(``ngram_range``, inclusive, of the value between ``^`` and ``$``) as tokens
``"field#gram"`` (``"package#^py"``, ``"package#ython"``): a package or user name tells
more in its pieces (``lib``, ``-dev``, ``python3-``) than as a whole word.

Splits (``split``):

* ``"hash"``: ``int(md5(str(record[hash_field])).hexdigest(), 16) % hash_modulus`` in
  ``hash_test`` is test, in ``hash_validation`` validation, anything else train.
* ``"field"``: ``record[split_field]`` mapped through ``split_values`` (e.g. ``"dev"`` ->
  ``"validation"``).
* ``"files"``: ``files`` maps each split name to its own file.

The vocabulary, IDF and label map are fit on the train split only. Bad data is counted in
``info.stats`` (``strict=True`` raises ValueError naming ``file:line``): a line that is not
a JSON object, lacks the label field or the hash/split field, or has a value of the wrong
type (labels must be a list of strings or integers) is a **malformed line** and skipped;
blank lines are skipped silently. Label rules (unknown, empty, truncated) are in
:mod:`multilabel_jax.data.label_map`; tokens past ``text.max_tokens`` count in
``truncated_tokens``.

Input that would leave nothing to train on is a ValueError naming the file, the line and
the field before anything is fitted, strict or not: an empty file; a file whose every line
is malformed (e.g. the label field absent on every line, labels that are not strings on
every line); a file where none of ``text_fields`` and ``token_fields`` is on any line; and a
train split without any label. One field of several absent on every line is a warning (it
may be a typo); the default ``text_fields`` are usual names, of which one is enough.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import pathlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from multilabel_jax.data import base
from multilabel_jax.data import label_map as label_map_lib
from multilabel_jax.data import memory
from multilabel_jax.data import text as text_lib

SPLITS = ("train", "validation", "test")
VOCAB_FILE = "text_features.json"
LABELS_FILE = "label_map.json"
FIELDS_FILE = "record_fields.json"


@dataclasses.dataclass
class JsonlConfig:
  """Where a JSONL dataset is and how to read it (module docstring has the rules).

  Attributes:
    name: dataset name (``info.name``).
    path: the file (``.jsonl`` or ``.jsonl.gz``) for the ``"hash"`` and ``"field"`` splits.
    files: split name -> file, for ``split="files"``.
    split: ``"hash"``, ``"field"`` or ``"files"``.
    hash_field, hash_modulus, hash_test, hash_validation: the hash split rule.
    split_field, split_values: the field split rule (record value -> split name).
    text_fields: keys whose values (string or list of strings) make the text.
    token_fields: keys whose values become whole ``"key=value"`` tokens.
    ngram_fields: keys whose values add their character n-grams as ``"key#gram"`` tokens.
    ngram_range: ``(min_n, max_n)`` of those n-grams, inclusive.
    label_field: key of the label list (strings or integers, used as names).
    max_labels: L; None: the most distinct labels of a training record.
    min_label_count: keep labels seen in at least this many training records.
    text: the text featurisation.
    strict: raise on the first bad line or label instead of counting.
  """
  name: str = "jsonl"
  path: Optional[str] = None
  files: Optional[Mapping[str, str]] = None
  split: str = "hash"
  hash_field: str = "id"
  hash_modulus: int = 10
  hash_test: Sequence[int] = (0,)
  hash_validation: Sequence[int] = (1,)
  split_field: str = "split"
  split_values: Mapping[str, str] = dataclasses.field(default_factory=lambda: {
      "train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
      "test": "test"})
  text_fields: Sequence[str] = ("title", "synopsis", "description", "text")
  token_fields: Sequence[str] = ()
  ngram_fields: Sequence[str] = ()
  ngram_range: Tuple[int, int] = (3, 5)
  label_field: str = "tags"
  max_labels: Optional[int] = None
  min_label_count: int = 1
  text: text_lib.TextConfig = text_lib.TextConfig()
  strict: bool = False

  def __post_init__(self):
    if not isinstance(self.text, text_lib.TextConfig):  # A dict or ml_collections config.
      self.text = text_lib.TextConfig(**dict(self.text.items()))
    if self.split not in ("hash", "field", "files"):
      raise ValueError(f"JsonlConfig.split must be 'hash', 'field' or 'files', "
                       f"got {self.split!r}.")
    if self.split == "files" and not self.files:
      raise ValueError("JsonlConfig.split='files' needs `files` (split name -> path).")
    if self.split != "files" and not self.path:
      raise ValueError(f"JsonlConfig.split={self.split!r} needs `path`.")
    lo, hi = self.ngram_range
    if not 1 <= lo <= hi:
      raise ValueError(f"JsonlConfig.ngram_range must be (min_n, max_n) with 1 <= min_n <= "
                       f"max_n, got {tuple(self.ngram_range)}.")


def md5_bucket(key: str, modulus: int) -> int:
  """``int(md5(key).hexdigest(), 16) % modulus`` (UTF-8 bytes of ``key``)."""
  return int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % modulus


def open_text(path) -> io.TextIOBase:
  """Opens a text file for reading, gunzipping ``*.gz``."""
  path = pathlib.Path(path)
  if path.suffix == ".gz":
    return gzip.open(path, "rt", encoding="utf-8")
  return open(path, "r", encoding="utf-8")


@dataclasses.dataclass
class Record:
  """One parsed line."""
  origin: str  # "file:line"
  key: str
  doc: List[str]  # Tokens.
  labels: List[str]


def _text(value, field: str) -> str:
  if value is None:
    return ""
  if isinstance(value, str):
    return value
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return str(value)
  if isinstance(value, list) and all(isinstance(v, str) for v in value):
    return " ".join(value)
  raise ValueError(f"field {field!r} must be a string or a list of strings, "
                   f"got {type(value).__name__}")


def _values(value, field: str) -> List[str]:
  if value is None:
    return []
  if isinstance(value, (str, int)) and not isinstance(value, bool):
    return [str(value)]
  if isinstance(value, list) and all(
      isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
    return [str(v) for v in value]
  raise ValueError(f"field {field!r} must be a string or a list of strings/ints, "
                   f"got {type(value).__name__}")


def _keys(record: Dict) -> str:
  """``"keys 'body', 'id'"``: the keys a record has (for messages)."""
  keys = sorted(map(str, record))
  shown = ", ".join(repr(k) for k in keys[:12]) + (", ..." if len(keys) > 12 else "")
  return f"keys {shown}" if keys else "no keys"


class _NoLabelField(ValueError):
  """The label field is not in the record."""


def _labels(value, field: str) -> List[str]:
  """A label list -> label names; ValueError naming the first item that is not a string or an
  integer (e.g. a number, a nested list)."""
  if not isinstance(value, list):
    raise ValueError(f"label field {field!r} must be a list, got {type(value).__name__}")
  for i, v in enumerate(value):
    if not isinstance(v, (str, int)) or isinstance(v, bool):
      shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
      raise ValueError(f"label field {field!r} must be a list of strings (or integers), but "
                       f"item {i} is {shown} ({type(v).__name__})")
  return [str(v) for v in value]


def decode_line(line: str) -> Dict:
  """A line -> its JSON object; ValueError (``invalid JSON (...)``, ``expected a JSON
  object, got list``) if it is not one. The loader and ``experiments.predict`` read lines
  with it."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(record, dict):
    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
  return record


def char_ngrams(value: str, ngram_range: Tuple[int, int] = (3, 5)) -> List[str]:
  """Character n-grams of ``"^" + value + "$"``, shortest first, in order of position.

  >>> char_ngrams("vim", (3, 4))
  ['^vi', 'vim', 'im$', '^vim', 'vim$']
  """
  s = f"^{value}$"
  lo, hi = ngram_range
  return [s[i:i + n] for n in range(lo, hi + 1) for i in range(len(s) - n + 1)]


def document(record: Mapping, featurizer: text_lib.TextFeaturizer, *,
             text_fields: Sequence[str], token_fields: Sequence[str] = (),
             ngram_fields: Sequence[str] = (), ngram_range: Tuple[int, int] = (3, 5),
             seen: Optional[set] = None) -> List[str]:
  """The tokens of one record, as the loader reads it (training and prediction alike).

  The values of ``text_fields`` the record has are joined by newlines (a list value by
  spaces) and tokenised by ``featurizer``; then each value of a ``token_fields`` field
  becomes one whole token ``"field=value"``, and each value of an ``ngram_fields`` field
  adds its :func:`char_ngrams` as tokens ``"field#gram"``.

  Args:
    record: one JSON object (a dict).
    featurizer: the run's :class:`text.TextFeaturizer` (its tokenisation settings).
    text_fields, token_fields, ngram_fields: the keys to read (``JsonlConfig``'s fields of
      those names).
    ngram_range: ``(min_n, max_n)`` of the character n-grams.
    seen: optional set; the text and token fields the record has are added to it.

  Returns:
    The tokens, a list of strings (empty when the record has none of the fields).

  Raises:
    ValueError: a field's value is not a string, a number or a list of strings (the message
      names the field).

  Example:
    >>> document({"title": "Fast JSON", "depends": ["libc6"]}, featurizer,
    ...          text_fields=("title",), token_fields=("depends",))
    ['fast', 'json', 'depends=libc6']
  """
  seen = set() if seen is None else seen
  parts = []
  for field in text_fields:
    if field in record:
      seen.add(field)
      parts.append(_text(record[field], field))
  tokens = featurizer.tokens("\n".join(p for p in parts if p))
  for field in token_fields:
    if field in record:
      seen.add(field)
      tokens.extend(f"{field}={v}" for v in _values(record[field], field))
  for field in ngram_fields:
    if field in record:
      seen.add(field)
      for v in _values(record[field], field):
        tokens.extend(f"{field}#{g}" for g in char_ngrams(v, ngram_range))
  return tokens


def _parse(record: Dict, config: JsonlConfig, featurizer: text_lib.TextFeaturizer,
           seen: set) -> Tuple[List[str], List[str]]:
  """A record -> (tokens, labels); ValueError with the problem if malformed. The text and
  token fields the record has are added to ``seen``."""
  if config.label_field not in record:
    raise _NoLabelField(f"no label field {config.label_field!r} (the line has "
                        f"{_keys(record)})")
  labels = _labels(record[config.label_field], config.label_field)
  tokens = document(record, featurizer, **_document_fields(config), seen=seen)
  return tokens, labels


def _split_of(record: Dict, config: JsonlConfig) -> Tuple[str, str]:
  """(split, key) of a record under the "hash" or "field" rule."""
  if config.split == "hash":
    if config.hash_field not in record or record[config.hash_field] is None:
      raise ValueError(f"no hash field {config.hash_field!r} (the line has {_keys(record)})")
    key = str(record[config.hash_field])
    bucket = md5_bucket(key, config.hash_modulus)
    if bucket in config.hash_test:
      return "test", key
    return ("validation" if bucket in config.hash_validation else "train"), key
  value = record.get(config.split_field)
  if not isinstance(value, str) or value not in config.split_values:
    raise ValueError(f"split field {config.split_field!r} is {value!r}, not one of "
                     f"{sorted(config.split_values)}")
  return config.split_values[value], str(record.get(config.hash_field, ""))


def _default_text_fields() -> Tuple[str, ...]:
  return tuple(JsonlConfig.__dataclass_fields__["text_fields"].default)


def read_records(config: JsonlConfig, featurizer: text_lib.TextFeaturizer,
                 stats: base.DataStats) -> Dict[str, List[Record]]:
  """Reads and tokenises every record, grouped by split. Malformed lines are counted in
  ``stats`` and skipped (``config.strict``: raised).

  Raises:
    ValueError: naming the file (and the line, the field) before anything is fitted, for:
      an empty file; a file whose every line is malformed (e.g. the label field absent on
      every line, labels that are not strings on every line); a file where no line has any
      of ``text_fields``/``token_fields``; and, with ``strict``, the first bad line. A
      field of ``token_fields``, or of ``text_fields`` when set (the default is a list of
      usual names, any of which may be missing), that no line of any file has while others
      are there is logged as a warning.
  """
  if config.split == "files":
    sources = [(path, split) for split, path in config.files.items()]
  else:
    sources = [(config.path, None)]
  out: Dict[str, List[Record]] = {}
  seen_anywhere: set = set()
  first_record = None  # (origin, keys) of the first line that is a JSON object.
  for path, file_split in sources:
    seen: set = set()
    num_lines = num_records = no_label_field = 0
    first_bad = None  # (origin, problem) of the file's first malformed line.
    file_first = None  # (origin, keys) of the file's first JSON object.
    with open_text(path) as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        num_lines += 1
        origin = f"{path}:{lineno}"
        try:
          record = decode_line(line)
          file_first = file_first or (origin, _keys(record))
          tokens, labels = _parse(record, config, featurizer, seen)
          if file_split is None:
            split, key = _split_of(record, config)
          else:
            split, key = file_split, str(record.get(config.hash_field, lineno))
        except ValueError as e:
          if config.strict:
            raise ValueError(f"{origin}: malformed line: {e}.") from None
          stats.malformed_lines += 1
          no_label_field += isinstance(e, _NoLabelField)
          first_bad = first_bad or (origin, str(e))
          continue
        num_records += 1
        out.setdefault(split, []).append(Record(origin, key, tokens, labels))
    if not num_lines:
      raise ValueError(f"{path}: the file is empty (no JSON lines); nothing to load.")
    if not num_records:
      if no_label_field == num_lines:  # Then file_first is the first line.
        raise ValueError(
            f"{file_first[0]}: label field {config.label_field!r} is absent on every line of "
            f"{path} ({num_lines} lines; this one has {file_first[1]}); set `label_field` to "
            "the key of your labels.")
      every = f"all {num_lines} lines" if num_lines > 1 else "the only line"
      raise ValueError(f"{first_bad[0]}: malformed line: {first_bad[1]}; {every} of {path} "
                       f"{'are' if num_lines > 1 else 'is'} malformed, so there is nothing to "
                       "load.")
    first_record = first_record or file_first
    if not seen:
      raise ValueError(f"{file_first[0]}: no line of {path} has any of text_fields "
                       f"{list(config.text_fields)} or token_fields "
                       f"{list(config.token_fields)} (this line has {file_first[1]}); set "
                       "them to the keys of your schema.")
    seen_anywhere |= seen
  named = [] if tuple(config.text_fields) == _default_text_fields() else [
      ("text", f) for f in config.text_fields]
  for kind, field in named + [("token", f) for f in config.token_fields]:
    if field not in seen_anywhere:  # Others are there: a warning (it may be a typo).
      logging.warning("%s: %s field %r is absent on every line of %s (this line has %s); it "
                      "adds nothing to the text.", first_record[0], kind, field,
                      ", ".join(p for p, _ in sources), first_record[1])
  return out


def _document_fields(config: JsonlConfig) -> Dict[str, object]:
  """The keyword arguments of :func:`document` that ``config`` sets."""
  return {"text_fields": tuple(config.text_fields), "token_fields": tuple(config.token_fields),
          "ngram_fields": tuple(config.ngram_fields), "ngram_range": tuple(config.ngram_range)}


def record_fields(config: JsonlConfig) -> Dict[str, object]:
  """What a record is read by, without the file: :func:`document`'s keyword arguments
  (``text_fields``, ``token_fields``, ``ngram_fields``, ``ngram_range``) plus ``id_field``
  (the hash field, which names a record) and ``label_field``."""
  fields = {k: list(v) for k, v in _document_fields(config).items()}
  return {**fields, "id_field": config.hash_field, "label_field": config.label_field}


class JsonlSource(memory.ArraySource):
  """An :class:`~multilabel_jax.data.memory.ArraySource` that also holds the fitted
  ``featurizer``, the ``label_map`` and the ``record_fields`` (:func:`record_fields`); save
  them with :meth:`save_vocab`."""

  featurizer: text_lib.TextFeaturizer
  label_map: label_map_lib.LabelMap
  record_fields: Dict[str, object]

  def save_vocab(self, directory) -> None:
    """Writes ``text_features.json``, ``label_map.json`` and ``record_fields.json`` into
    ``directory``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self.featurizer.save(directory / VOCAB_FILE)
    self.label_map.save(directory / LABELS_FILE)
    (directory / FIELDS_FILE).write_text(json.dumps(self.record_fields, indent=2))


def load_vocab(directory) -> Tuple[text_lib.TextFeaturizer, label_map_lib.LabelMap]:
  """The ``(featurizer, label_map)`` saved by :meth:`JsonlSource.save_vocab`."""
  directory = pathlib.Path(directory)
  return (text_lib.TextFeaturizer.load(directory / VOCAB_FILE),
          label_map_lib.LabelMap.load(directory / LABELS_FILE))


def load_record_fields(directory) -> Dict[str, object]:
  """The :func:`record_fields` saved by :meth:`JsonlSource.save_vocab`."""
  return json.loads((pathlib.Path(directory) / FIELDS_FILE).read_text())


def load_jsonl(config: JsonlConfig, *, featurizer: Optional[text_lib.TextFeaturizer] = None,
               label_map: Optional[label_map_lib.LabelMap] = None,
               max_labels: Optional[int] = None) -> JsonlSource:
  """Reads, splits and featurises a JSONL dataset into memory.

  Args:
    config: the dataset.
    featurizer, label_map: already fitted ones (e.g. loaded with a checkpoint by
      :func:`load_vocab`); None (or an unfitted featurizer) fits them on the train split.
    max_labels: overrides ``config.max_labels``.

  Returns:
    A ``JsonlSource`` with splits ``train``, ``validation`` and ``test`` (those that have
    records); ``info.train_label_counts`` counts the train split.
  """
  featurizer = featurizer or text_lib.TextFeaturizer(config.text)
  new_featurizer = not featurizer.fitted
  read_stats = base.DataStats()
  records = read_records(config, featurizer, read_stats)
  train = records.get("train", [])
  if not train and (new_featurizer or label_map is None):
    files = config.path or ", ".join(config.files.values())
    counts = ", ".join(f"{len(v)} {k}" for k, v in records.items()) or "no records"
    raise ValueError(f"{config.name} ({files}): the train split is empty ({counts}); cannot "
                     "fit the vocabulary and label map.")
  if new_featurizer:
    featurizer.fit([r.doc for r in train])
  if label_map is None:
    label_map = label_map_lib.LabelMap.fit((r.labels for r in train), config.min_label_count)
    if not len(label_map):
      why = ("every train record's list is empty" if not any(r.labels for r in train) else
             f"no label is in min_label_count={config.min_label_count} train records")
      raise ValueError(f"{train[0].origin}: no label to learn in label field "
                       f"{config.label_field!r}: {why} ({len(train)} train records).")
  max_labels = max_labels or config.max_labels
  if max_labels is None:
    max_labels = max((len({l for l in r.labels if l in label_map.index}) for r in train),
                     default=1) or 1

  arrays, keys, split_stats = {}, {}, {}
  for split in [s for s in SPLITS if s in records] + sorted(set(records) - set(SPLITS)):
    recs = records[split]
    stats = base.DataStats()
    label_ids = label_map.encode([r.labels for r in recs], max_labels, stats=stats,
                                 strict=config.strict, origins=[r.origin for r in recs])
    ids, weights, dropped = featurizer.transform([r.doc for r in recs])
    stats.truncated_tokens += int(dropped.sum())
    arrays[split] = {"token_ids": ids, "token_weights": weights, "label_ids": label_ids}
    keys[split] = [r.key for r in recs]
    split_stats[split] = stats
  total = base.DataStats().update(read_stats)
  for s in split_stats.values():
    total.update(s)
  train_ids = arrays.get("train", {}).get("label_ids", np.zeros((0, max_labels), np.int32))
  info = base.DatasetInfo(
      name=config.name, num_classes=len(label_map), max_labels=max_labels,
      inputs=featurizer.input_specs(),
      train_label_counts=label_map_lib.train_label_counts(train_ids, len(label_map)),
      num_train_examples=len(train_ids), class_names=list(label_map.names), stats=total)
  split_stats["read"] = read_stats
  source = JsonlSource(info, arrays, keys=keys, split_stats=split_stats,
                       num_embeddings=featurizer.num_embeddings)
  source.featurizer = featurizer
  source.ids_by_frequency = featurizer.config.vocab == "learned"  # Id 1: the most frequent.
  source.label_map = label_map
  source.record_fields = record_fields(config)
  return source
