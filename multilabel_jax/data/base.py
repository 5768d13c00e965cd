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


def read_labels(source: Source, split: str, indices: np.ndarray) -> np.ndarray:
  """``label_ids`` of ``indices`` only: uses ``source.read_labels`` when the source has this
  optional fast path (no inputs are built), else ``source.read(...)["label_ids"]``."""
  indices = np.asarray(indices, np.int64)
  fast = getattr(source, "read_labels", None)
  if fast is not None:
    return np.asarray(fast(split, indices))
  return np.asarray(source.read(split, indices)["label_ids"])


# Counter-based randomness: every random number is a pure function of integer keys (seed,
# split, example index, stream, ...), so example i can be generated alone, in any order, on
# any process. The hash is a chain of splitmix64 finalisers (Steele, Lea & Flood 2014).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _splitmix(z: np.ndarray) -> np.ndarray:
  z = z ^ (z >> np.uint64(30))
  z = z * _MUL1
  z = z ^ (z >> np.uint64(27))
  z = z * _MUL2
  return z ^ (z >> np.uint64(31))


def hash_keys(*keys) -> np.ndarray:
  """uint64 hash of integer keys, broadcast against each other (negative keys wrap)."""
  with np.errstate(over="ignore"):
    h = np.zeros((), np.uint64)
    for k in keys:
      k = np.asarray(k).astype(np.int64).astype(np.uint64)
      h = _splitmix(h ^ _splitmix(k + _GOLDEN))
  return np.asarray(h)


def uniform(*keys) -> np.ndarray:
  """float64 uniform in (0, 1), one per broadcast key tuple (53 random bits)."""
  h = hash_keys(*keys)
  return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def normal(*keys) -> np.ndarray:
  """float64 standard normal, one per broadcast key tuple (Box-Muller on two 32-bit halves)."""
  h = hash_keys(*keys)
  u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * 2.0**-32
  u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * 2.0**-32
  return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
