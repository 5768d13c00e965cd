"""Label names <-> class ids, and packing label lists into padded ``label_ids``.

Rules shared by every real-data source (JSONL, debtags, XMC, TFDS), each counted in
:class:`~multilabel_jax.data.base.DataStats` or, with ``strict=True``, raised as a
ValueError naming the record (``file:line``) and the problem:

* **unknown labels** (a name not in the training label map, e.g. a tag that only occurs in
  the test split): dropped from the ids; ``unknown_labels`` counts each dropped label.
* **out-of-range ids** (an integer label outside ``[0, num_classes)``): dropped;
  ``out_of_range_ids`` counts each.
* **duplicates** within a record count once (as in :mod:`multilabel_jax.labels`); not an
  error.
* **more than max_labels** distinct labels: the first ``max_labels`` in record order are
  kept; ``truncated_labels`` counts each label dropped.
* **empty label sets** (a record that has no label as read): kept as an all ``-1`` row;
  ``empty_label_sets`` counts each such record. A record emptied by dropping unknown labels
  is counted under ``unknown_labels`` only.
"""

from __future__ import annotations

import collections
import json
import pathlib
from typing import Iterable, List, Optional, Sequence

import numpy as np

from multilabel_jax import metrics

from multilabel_jax.data import base
from multilabel_jax.labels import PAD_ID

_FORMAT = "multilabel_jax.LabelMap/1"


def _origin(origins: Optional[Sequence[str]], row: int) -> str:
  return origins[row] if origins is not None else f"record {row}"


def pack_label_ids(id_lists: Sequence[Sequence[int]], max_labels: int, num_classes: int, *,
                   stats: Optional[base.DataStats] = None, strict: bool = False,
                   origins: Optional[Sequence[str]] = None,
                   unknown: Optional[Sequence[int]] = None) -> np.ndarray:
  """Packs per-record class ids into int32 ``[N, max_labels]`` padded with -1.

  Args:
    id_lists: per record, its class ids (any order, duplicates allowed).
    max_labels: L.
    num_classes: C; ids outside ``[0, C)`` are dropped and counted.
    stats: counters to update (see the module docstring).
    strict: raise ValueError on the first problem instead of counting it.
    origins: per record, where it came from (``"file:line"``), for error messages.
    unknown: per record, the number of labels already dropped as unknown (counted
      here, raised with ``strict``).
  """
  stats = stats if stats is not None else base.DataStats()
  out = np.full((len(id_lists), max_labels), PAD_ID, np.int32)
  for row, ids in enumerate(id_lists):
    num_unknown = unknown[row] if unknown is not None else 0
    if strict and num_unknown:
      raise ValueError(f"{_origin(origins, row)}: {num_unknown} label(s) not in the "
                       "training label map.")
    stats.unknown_labels += num_unknown
    if len(ids) == 0 and not num_unknown:
      if strict:
        raise ValueError(f"{_origin(origins, row)}: empty label set.")
      stats.empty_label_sets += 1
    kept = list(dict.fromkeys(int(i) for i in ids))  # Dedupe, keep order.
    valid = [i for i in kept if 0 <= i < num_classes]
    if len(valid) < len(kept):
      if strict:
        bad = [i for i in kept if not 0 <= i < num_classes]
        raise ValueError(f"{_origin(origins, row)}: label id(s) {bad[:5]} outside "
                         f"[0, {num_classes}).")
      stats.out_of_range_ids += len(kept) - len(valid)
    if len(valid) > max_labels:
      if strict:
        raise ValueError(f"{_origin(origins, row)}: {len(valid)} labels, more than "
                         f"max_labels={max_labels}.")
      stats.truncated_labels += len(valid) - max_labels
      valid = valid[:max_labels]
    out[row, :len(valid)] = valid
  return out


def train_label_counts(label_ids, num_classes: int) -> np.ndarray:
  """int64 ``[C]``: records holding each class, as numpy (:func:`metrics.label_counts`)."""
  return np.asarray(metrics.label_counts(np.asarray(label_ids), num_classes), np.int64)


class LabelMap:
  """An ordered list of class names; class ``i`` is ``names[i]``.

  Fit on the training split only (:meth:`fit`): names are sorted alphabetically, which is
  stable when counts change. Save it with the run (:meth:`save`) so evaluation maps names to
  the same ids.
  """

  def __init__(self, names: Sequence[str]):
    self.names: List[str] = list(names)
    self.index = {n: i for i, n in enumerate(self.names)}
    if len(self.index) != len(self.names):
      dup = [n for n, c in collections.Counter(self.names).items() if c > 1]
      raise ValueError(f"LabelMap names must be unique; repeated: {dup[:5]}.")

  @classmethod
  def fit(cls, label_lists: Iterable[Sequence[str]], min_count: int = 1) -> "LabelMap":
    """Names occurring in at least ``min_count`` records, sorted."""
    counts = collections.Counter()
    for labels in label_lists:
      counts.update(set(labels))
    return cls(sorted(n for n, c in counts.items() if c >= min_count))

  def __len__(self) -> int:
    return len(self.names)

  def encode(self, label_lists: Sequence[Sequence[str]], max_labels: int, *,
             stats: Optional[base.DataStats] = None, strict: bool = False,
             origins: Optional[Sequence[str]] = None) -> np.ndarray:
    """Label names per record -> int32 ``[N, max_labels]`` (rules in the module docstring)."""
    id_lists, unknown = [], []
    for labels in label_lists:
      ids = [self.index[n] for n in labels if n in self.index]
      id_lists.append(ids)
      unknown.append(len(set(labels)) - len(set(ids)))
    return pack_label_ids(id_lists, max_labels, len(self), stats=stats, strict=strict,
                          origins=origins, unknown=unknown)

  def decode(self, label_ids: Sequence[int]) -> List[str]:
    """Names of the non-padding ids of one row."""
    return [self.names[i] for i in label_ids if i >= 0]

  def to_json(self) -> dict:
    return {"format": _FORMAT, "names": self.names}

  @classmethod
  def from_json(cls, state: dict) -> "LabelMap":
    if state.get("format") != _FORMAT:
      raise ValueError(f"Not a saved LabelMap (format {state.get('format')!r}).")
    return cls(state["names"])

  def save(self, path) -> None:
    pathlib.Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

  @classmethod
  def load(cls, path) -> "LabelMap":
    return cls.from_json(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
