"""A :class:`~multilabel_jax.data.base.Source` over in-memory numpy arrays.

Real datasets small enough to featurise at load time (debtags, JSONL files, XMC benchmarks up
to a few hundred thousand rows) end as one ``ArraySource``: per split, a dict of arrays with
a common leading dimension, read by index.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from multilabel_jax.data import base


class ArraySource:
  """Random access to per-split arrays.

  Args:
    info: the dataset's info; ``info.inputs`` names the input arrays.
    splits: split name -> {``label_ids``: int32 ``[N, L]``, each input: ``[N, *shape]``}.
    keys: optional split name -> ``[N]`` record identifiers (e.g. package names), for
      inspection; not returned by :meth:`read`.
    split_stats: optional split name -> that split's ``DataStats``; ``info.stats`` holds
      their sum.
    num_embeddings: for bag-of-words inputs (``token_ids``), the rows an embedding table
      needs (largest id + 1; id 0 is padding).
  """

  def __init__(self, info: base.DatasetInfo, splits: Mapping[str, Mapping[str, np.ndarray]],
               keys: Optional[Mapping[str, Sequence[str]]] = None,
               split_stats: Optional[Mapping[str, base.DataStats]] = None,
               num_embeddings: Optional[int] = None):
    self.info = info
    self.num_embeddings = num_embeddings
    self.splits = {s: dict(a) for s, a in splits.items()}
    self.keys = dict(keys or {})
    self.split_stats = dict(split_stats or {})
    for split, arrays in self.splits.items():
      want = set(info.inputs) | {"label_ids"}
      if set(arrays) != want:
        raise ValueError(f"Split {split!r} has arrays {sorted(arrays)}, expected "
                         f"{sorted(want)}.")
      sizes = {k: len(v) for k, v in arrays.items()}
      if len(set(sizes.values())) != 1:
        raise ValueError(f"Split {split!r} arrays differ in length: {sizes}.")
      if arrays["label_ids"].shape[1:] != (info.max_labels,):
        raise ValueError(f"Split {split!r} label_ids have shape {arrays['label_ids'].shape}, "
                         f"expected [N, {info.max_labels}].")

  def _split(self, split: str) -> dict:
    if split not in self.splits:
      raise KeyError(f"{self.info.name} has no split {split!r}; splits: {sorted(self.splits)}.")
    return self.splits[split]

  def num_examples(self, split: str) -> int:
    return len(self._split(split)["label_ids"])

  def _indices(self, split: str, indices) -> np.ndarray:
    indices = np.asarray(indices, np.int64)
    n = self.num_examples(split)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
      raise IndexError(f"{self.info.name}/{split}: indices outside [0, {n}).")
    return indices

  def read(self, split: str, indices: np.ndarray) -> dict:
    indices = self._indices(split, indices)
    return {k: v[indices] for k, v in self._split(split).items()}

  def read_labels(self, split: str, indices: np.ndarray) -> np.ndarray:
    """``label_ids`` only (the optional fast path of ``base.read_labels``)."""
    return self._split(split)["label_ids"][self._indices(split, indices)]
