"""The contract between data sources and the input pipeline.

A *source* (hashtag_world, debtags, JSONL, XMC, a TFDS adapter) knows how to read examples by
index; the pipeline (``multilabel_jax.data.pipeline``) turns a source into deterministic,
per-process-sharded numpy batches. Random access by index is what makes resumption exact:
the batch at step ``s`` depends only on ``(seed, s)``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Protocol, Sequence

import numpy as np


@dataclasses.dataclass
class DataStats:
  """Counts of everything a source skipped, truncated or could not map. Nothing is dropped
  silently: these counts go to the run's log and report, and strict mode raises instead."""
  malformed_lines: int = 0
  empty_label_sets: int = 0
  unknown_labels: int = 0
  truncated_labels: int = 0
  out_of_range_ids: int = 0
  truncated_tokens: int = 0  # Bag-of-words inputs: distinct tokens/features past max_tokens.

  def update(self, other: "DataStats") -> "DataStats":
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
    return self

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Shape (without batch) and numpy dtype of one input feature."""
  shape: tuple
  dtype: str


@dataclasses.dataclass
class DatasetInfo:
  """What a model, a loss and the report need to know about a dataset.

  Attributes:
    name: dataset name.
    num_classes: C.
    max_labels: L, the width of ``label_ids``.
    inputs: feature name -> spec, e.g. ``{"features": InputSpec((512,), "float32")}`` or
      ``{"token_ids": InputSpec((T,), "int32"), "token_weights": InputSpec((T,), "float32")}``.
    train_label_counts: int64 ``[C]`` per-class counts on the training split (PSP@k
      propensities, PMI embeddings, frequency resampling).
    num_train_examples: examples in the training split (None for an unbounded stream).
    class_names: optional ``[C]`` names.
    stats: what was skipped or truncated while loading.
  """
  name: str
  num_classes: int
  max_labels: int
  inputs: Mapping[str, InputSpec]
  train_label_counts: np.ndarray
  num_train_examples: Optional[int]
  class_names: Optional[Sequence[str]] = None
  stats: DataStats = dataclasses.field(default_factory=DataStats)


class Source(Protocol):
  """Random-access reader of one dataset's splits ("train", "validation", "test")."""
  info: DatasetInfo

  def num_examples(self, split: str) -> Optional[int]:
    """Examples in the split, or None for an unbounded stream (simulated training data)."""

  def read(self, split: str, indices: np.ndarray) -> dict:
    """A batch of examples: each input name -> ``[len(indices), *shape]`` and
    ``label_ids`` int32 ``[len(indices), max_labels]`` padded with -1."""
