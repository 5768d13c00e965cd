"""Extreme multi-label (XMC) repository format: Bibtex, EURLex-4K, Wiki10-31K, AmazonCat-13K.

The format of the Extreme Classification Repository (Bhatia et al.), one file per split (or,
as for Bibtex, one data file plus split files of 1-based point indices, one column per
random split)::

    num_points num_features num_labels          <- header
    l1,l2,... f:v f:v ...                        <- one line per point

with 0-based label ids ``l`` and sparse features ``f:v`` (feature id, value; usually
TF-IDF). A line starting with whitespace (or whose first item is ``f:v``) has no labels.

Inputs are embedding-bag style, never a dense ``[N, num_features]`` array:

* ``token_ids`` int32 ``[T]``: feature id **+ 1** (0 is padding, as in
  :mod:`multilabel_jax.data.text`), so the embedding table has ``num_features + 1`` rows
  (``source.num_embeddings``);
* ``token_weights`` float32 ``[T]``: the feature value (L2-normalised if ``normalize``).

Bad data (counted in ``info.stats``; ``strict=True`` raises ValueError naming
``file:line``): a line that does not parse (non-integer label, ``f:v`` without a colon, a
non-finite value) is a **malformed line** and skipped; a feature or label id out of range is
dropped (``out_of_range_ids``); repeated features are summed; more than T features keep the
T of largest ``|value|`` (``truncated_tokens``); label rules in
:mod:`multilabel_jax.data.label_map`. A header whose point count disagrees with the file is
logged (raised with ``strict``). A file without a header, or without any readable point
(empty after the header, or every line malformed), is a ValueError naming the file (and the
first bad line), strict or not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
from typing import List, Mapping, Optional, Tuple

import numpy as np

from multilabel_jax.data import base
from multilabel_jax.data import jsonl
from multilabel_jax.data import label_map as label_map_lib
from multilabel_jax.data import memory
from multilabel_jax.data import text as text_lib


@dataclasses.dataclass
class XmcConfig:
  """An XMC dataset: one file per split.

  Attributes:
    name: dataset name.
    files: split name -> file (plain or ``.gz``), e.g. ``{"train": ".../train.txt",
      "test": ".../test.txt"}``; or, with ``split_files``, ``{"data": ".../Bibtex_data.txt"}``.
    split_files: split name -> file of 1-based point indices into ``files["data"]``, one
      column per random split (``bibtex_trSplit.txt``, ``bibtex_tstSplit.txt``).
    split_column: which column of the split files to use.
    max_labels: L; None: the most labels of a training point.
    max_features: T; None: the most features of a training point.
    normalize: ``"l2"`` to L2-normalise each point's kept values, or None (as in the file).
    validation_fraction: without a ``"validation"`` file, this share of the train points
      (a fixed seeded draw) is held out as the validation split, so that calibration never
      sees test labels; 0: no validation split.
    strict: raise on the first bad line instead of counting.
  """
  files: Mapping[str, str]
  name: str = "xmc"
  split_files: Optional[Mapping[str, str]] = None
  split_column: int = 0
  max_labels: Optional[int] = None
  max_features: Optional[int] = None
  normalize: Optional[str] = None
  validation_fraction: float = 0.0
  strict: bool = False


@dataclasses.dataclass
class XmcFile:
  """A parsed XMC file: per point, its labels and its (feature id, value) pairs."""
  path: str
  num_points: int
  num_features: int
  num_labels: int
  labels: List[List[int]]
  features: List[Tuple[np.ndarray, np.ndarray]]
  origins: List[str]
  points: List[int]  # 0-based point index (non-blank line after the header) of each row.


def _hold_out(xf: XmcFile, fraction: float) -> Tuple[XmcFile, XmcFile]:
  """``(train, validation)``: ``fraction`` of the points (seeded draw, order kept) held out."""
  if not 0 < fraction < 1:
    raise ValueError(f"`validation_fraction` must be in (0, 1), got {fraction}.")
  n = len(xf.labels)
  held = np.zeros(n, bool)
  held[np.random.default_rng(0).permutation(n)[:max(1, int(round(n * fraction)))]] = True

  def part(keep):
    rows = np.flatnonzero(keep)
    return dataclasses.replace(xf, num_points=len(rows), labels=[xf.labels[i] for i in rows],
                               features=[xf.features[i] for i in rows],
                               origins=[xf.origins[i] for i in rows],
                               points=[xf.points[i] for i in rows])

  return part(~held), part(held)


def parse_line(line: str) -> Tuple[List[int], List[int], List[float]]:
  """``"l1,l2 f:v f:v"`` -> (labels, feature ids, values). ValueError if malformed."""
  items = line.split()
  labels: List[int] = []
  if items and not line[0].isspace() and ":" not in items[0]:
    try:
      labels = [int(l) for l in items[0].split(",")]
    except ValueError:
      raise ValueError(f"bad label list {items[0]!r}") from None
    items = items[1:]
  ids, values = [], []
  for item in items:
    f, sep, v = item.partition(":")
    try:
      if not sep:
        raise ValueError
      fid, val = int(f), float(v)
    except ValueError:
      raise ValueError(f"bad feature {item!r} (expected id:value)") from None
    if not math.isfinite(val):
      raise ValueError(f"non-finite feature value {item!r}")
    ids.append(fid)
    values.append(val)
  return labels, ids, values


def sparse_features(ids, values, num_features: int):
  """A point's ``(feature ids, values)`` as read: ids outside ``[0, num_features)`` dropped,
  repeated ids summed. Returns ``((unique ids, values), the dropped ids)``."""
  ids = np.asarray(ids, np.int64)
  values = np.asarray(values, np.float64)
  ok = (ids >= 0) & (ids < num_features)
  uniq, inverse = np.unique(ids[ok], return_inverse=True)  # Repeated features: summed.
  return (uniq, np.bincount(inverse, weights=values[ok], minlength=len(uniq))), ids[~ok]


def read_xmc(path: str, *, stats: Optional[base.DataStats] = None,
             strict: bool = False) -> XmcFile:
  """Parses one XMC file; malformed lines and out-of-range feature ids are counted."""
  stats = stats if stats is not None else base.DataStats()
  with jsonl.open_text(path) as f:
    header = f.readline()
    try:
      num_points, num_features, num_labels = (int(x) for x in header.split())
    except ValueError:
      raise ValueError(f"{path}:1: expected a header 'num_points num_features num_labels', "
                       f"got {header.strip()[:80]!r}.") from None
    labels, features, origins, points = [], [], [], []
    point = -1
    first_bad = None  # "file:line: problem" of the first malformed line.
    for lineno, line in enumerate(f, 2):
      if not line.strip():
        continue  # Blank line (e.g. at the end): skipped, not a point.
      point += 1
      origin = f"{path}:{lineno}"
      try:
        point_labels, ids, values = parse_line(line.rstrip("\n"))
      except ValueError as e:
        if strict:
          raise ValueError(f"{origin}: malformed line: {e}.") from None
        stats.malformed_lines += 1
        first_bad = first_bad or f"{origin}: malformed line: {e}"
        continue
      kept, bad = sparse_features(ids, values, num_features)
      if len(bad):
        if strict:
          raise ValueError(f"{origin}: feature id(s) {bad[:5].tolist()} outside "
                           f"[0, {num_features}).")
        stats.out_of_range_ids += len(bad)
      features.append(kept)
      labels.append(point_labels)
      origins.append(origin)
      points.append(point)
  if not labels:  # Nothing to train or evaluate on: an error, strict or not.
    if first_bad:
      raise ValueError(f"{first_bad}; every point line of {path} is malformed, so there is "
                       "nothing to load.")
    raise ValueError(f"{path}: no points after the header (it says {num_points}); nothing "
                     "to load.")
  if len(labels) + stats.malformed_lines != num_points:
    msg = (f"{path}: header says {num_points} points, the file has {len(labels)} "
           f"readable lines.")
    if strict:
      raise ValueError(msg)
    logging.warning(msg)
  return XmcFile(str(path), num_points, num_features, num_labels, labels, features, origins,
                 points)


def _split_by_index(config: XmcConfig):
  """Splits one data file by 1-based index files (Bibtex style). A point whose line is
  malformed is missing from every split (it is counted once, under train)."""
  if "data" not in config.files:
    raise ValueError("XmcConfig.split_files needs files={'data': <data file>}.")
  data_stats = base.DataStats()
  data = read_xmc(config.files["data"], stats=data_stats, strict=config.strict)
  row_of = {p: r for r, p in enumerate(data.points)}
  stats, parsed = {}, {}
  for split, path in config.split_files.items():
    rows = []
    with jsonl.open_text(path) as f:
      for lineno, line in enumerate(f, 1):
        cols = line.split()
        if not cols:
          continue
        try:
          point = int(cols[config.split_column]) - 1
        except (ValueError, IndexError):
          raise ValueError(f"{path}:{lineno}: no integer in column {config.split_column}."
                           ) from None
        if not 0 <= point < data.num_points:
          raise ValueError(f"{path}:{lineno}: point {point + 1} outside [1, "
                           f"{data.num_points}].")
        if point in row_of:
          rows.append(row_of[point])
    stats[split] = data_stats if split == "train" else base.DataStats()
    parsed[split] = dataclasses.replace(
        data, labels=[data.labels[r] for r in rows], features=[data.features[r] for r in rows],
        origins=[data.origins[r] for r in rows], points=[data.points[r] for r in rows])
  return stats, parsed


def pack_features(features: List[Tuple[np.ndarray, np.ndarray]], max_features: int, *,
                  normalize: Optional[str] = None):
  """Sparse points -> ``(token_ids [N, T] (feature id + 1, 0 padded), token_weights [N, T],
  num_dropped [N])``, keeping the T features of largest ``|value|`` (ties: lower id)."""
  n = len(features)
  ids = np.full((n, max_features), text_lib.PAD_TOKEN_ID, np.int32)
  weights = np.zeros((n, max_features), np.float32)
  dropped = np.zeros(n, np.int32)
  for row, (fid, val) in enumerate(features):
    if len(fid) > max_features:
      order = np.lexsort((fid, -np.abs(val)))[:max_features]
      order.sort()
      dropped[row] = len(fid) - max_features
      fid, val = fid[order], val[order]
    if normalize == "l2":
      norm = float(np.sqrt(np.dot(val, val)))
      val = val / norm if norm > 0 else val
    ids[row, :len(fid)] = fid + 1
    weights[row, :len(fid)] = val
  return ids, weights, dropped


FEATURES_FILE = "xmc_features.json"


class XmcSource(memory.ArraySource):
  """An :class:`~multilabel_jax.data.memory.ArraySource` that also holds how a point's
  features become inputs (``feature_state``: ``num_features``, ``max_features``,
  ``normalize``), saved with :meth:`save_vocab` so that a trained run reads new points as
  its loader did (:class:`inference.XmcReader`)."""

  feature_state: dict

  def save_vocab(self, directory) -> None:
    """Writes ``xmc_features.json`` into ``directory``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FEATURES_FILE).write_text(json.dumps(self.feature_state))


def load_xmc(config: XmcConfig) -> XmcSource:
  """Reads every split file of an XMC dataset into memory.

  Returns:
    An ``ArraySource`` with ``token_ids``/``token_weights``/``label_ids`` per split,
    ``num_embeddings = num_features + 1`` and ``info.train_label_counts`` from the train
    split.
  """
  if config.normalize not in (None, "l2"):
    raise ValueError(f"XmcConfig.normalize must be 'l2' or None, got {config.normalize!r}.")
  if "train" not in (config.split_files or config.files):
    raise ValueError(f"XmcConfig needs a 'train' split, got files {sorted(config.files)} and "
                     f"split_files {sorted(config.split_files or {})}.")
  if config.split_files:
    read_stats, parsed = _split_by_index(config)
  else:
    read_stats = {s: base.DataStats() for s in config.files}
    parsed = {s: read_xmc(p, stats=read_stats[s], strict=config.strict)
              for s, p in config.files.items()}
  if config.validation_fraction and "validation" not in parsed:
    parsed["train"], parsed["validation"] = _hold_out(parsed["train"], config.validation_fraction)
    read_stats["validation"] = base.DataStats()
  train = parsed["train"]
  for split, xf in parsed.items():
    if (xf.num_features, xf.num_labels) != (train.num_features, train.num_labels):
      raise ValueError(f"{xf.path}: header has {xf.num_features} features and "
                       f"{xf.num_labels} labels, but the train file {train.path} has "
                       f"{train.num_features} and {train.num_labels}.")
  max_labels = config.max_labels or max((len(set(l)) for l in train.labels), default=1) or 1
  max_features = (config.max_features
                  or max((len(f) for f, _ in train.features), default=1) or 1)
  arrays, split_stats = {}, {}
  for split, xf in parsed.items():
    stats = read_stats[split]
    label_ids = label_map_lib.pack_label_ids(xf.labels, max_labels, xf.num_labels,
                                             stats=stats, strict=config.strict,
                                             origins=xf.origins)
    ids, weights, dropped = pack_features(xf.features, max_features,
                                          normalize=config.normalize)
    if config.strict and dropped.any():
      row = int(np.argmax(dropped > 0))
      raise ValueError(f"{xf.origins[row]}: {int(dropped[row]) + max_features} features, "
                       f"more than max_features={max_features}.")
    stats.truncated_tokens += int(dropped.sum())
    arrays[split] = {"token_ids": ids, "token_weights": weights, "label_ids": label_ids}
    split_stats[split] = stats
  total = base.DataStats()
  for s in split_stats.values():
    total.update(s)
  info = base.DatasetInfo(
      name=config.name, num_classes=train.num_labels, max_labels=max_labels,
      inputs={"token_ids": base.InputSpec((max_features,), "int32"),
              "token_weights": base.InputSpec((max_features,), "float32")},
      train_label_counts=label_map_lib.train_label_counts(arrays["train"]["label_ids"],
                                                    train.num_labels),
      num_train_examples=len(arrays["train"]["label_ids"]), stats=total)
  source = XmcSource(info, arrays, split_stats=split_stats,
                     num_embeddings=train.num_features + 1)
  source.feature_state = {"num_features": train.num_features, "max_features": max_features,
                          "normalize": config.normalize}
  return source
