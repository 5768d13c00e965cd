"""Hypothesis strategies for the fuzz tests: labels of every row kind, extreme logits.

Shapes come from small fixed sets, because JAX compiles once per shape (and dtype): a
fuzz test that drew arbitrary shapes would spend its time in XLA.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from hypothesis import Phase, strategies as st

BATCHES = (1, 12)  # Each row draws its own label kind and logit style.
NUM_CLASSES = (1, 3, 8)  # C = 1 included.
DTYPES = (jnp.float32, jnp.bfloat16)
EXTREME = 1e4
# For tests that compile per example: every shrinking step would compile again (minutes),
# so a failure is reported as drawn.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
# How each row's labels are drawn: no labels, every class, or a random subset.
ROW_KINDS = ("empty", "full", "random")
# How logits are drawn: plain normal; normal with +-1e4 sprinkled in; +1e4 on positives and
# -1e4 on negatives ("confident", loss near 0); the opposite ("wrong", loss ~1e4 per class).
LOGIT_STYLES = ("normal", "mixed", "confident", "wrong")


@dataclasses.dataclass
class Problem:
  """One fuzz case.

  Attributes:
    ids: int32 ``[B, L]`` with -1 padding anywhere and duplicate ids.
    dense: float32 ``[B, C]`` multi-hot, the same labels.
    kinds: the label kind of each row (``ROW_KINDS``).
    styles: the logit style of each row (``LOGIT_STYLES``).
    logits: ``[B, C]`` in ``dtype``.
    dtype: float32 or bfloat16.
    rng: a generator seeded by hypothesis, for auxiliary inputs.
  """
  ids: np.ndarray
  dense: np.ndarray
  kinds: tuple
  styles: tuple
  logits: jnp.ndarray
  dtype: object
  rng: np.random.Generator

  @property
  def num_classes(self) -> int:
    return self.dense.shape[1]

  def rows(self, kind):
    """Bool ``[B]``: rows whose labels are empty or full (by content, not by draw)."""
    n = self.dense.sum(1)
    return {"empty": n == 0, "full": n == self.num_classes}[kind]


def label_rows(rng, kinds, num_classes, width):
  """Ids ``[B, width]`` (-1 padded, with repeats) and multi-hot ``[B, C]`` for row kinds."""
  dense = np.zeros((len(kinds), num_classes), np.float32)
  for b, kind in enumerate(kinds):
    n = {"empty": 0, "full": num_classes,
         "random": int(rng.integers(1, num_classes + 1))}[kind]
    dense[b, rng.permutation(num_classes)[:min(n, width)]] = 1.0
  return ids_with_repeats(rng, dense, width), dense


def ids_with_repeats(rng, dense, width):
  """The positives of ``dense [B, C]`` as ids ``[B, width]`` in random order, some spare
  slots holding repeats of the row's ids and the rest -1 (padding anywhere)."""
  ids = np.full((dense.shape[0], width), -1, np.int32)
  for b, d in enumerate(dense):
    row = list(np.flatnonzero(d))
    assert len(row) <= width, (row, width)
    spare = width - len(row)
    repeats = int(rng.integers(0, spare + 1)) if row else 0
    row += list(rng.choice(row, repeats)) if repeats else []
    ids[b] = rng.permutation(row + [-1] * (width - len(row)))
  return ids


def make_logits(rng, dense, styles):
  """Float32 ``[B, C]`` logits, row b of style ``styles[b]`` (``LOGIT_STYLES``)."""
  z = rng.normal(size=dense.shape) * 4
  extreme = rng.choice([-EXTREME, EXTREME], dense.shape)
  sign = np.where(dense > 0, EXTREME, -EXTREME)
  for b, style in enumerate(styles):
    if style == "mixed":
      z[b] = np.where(rng.random(dense.shape[1]) < 0.5, extreme[b], z[b])
    elif style in ("confident", "wrong"):
      z[b] = sign[b] if style == "confident" else -sign[b]
  return z.astype(np.float32)


# How score rows are drawn (decoders, metrics): normal; few distinct values (ties); sigmoid
# of +-1e4 logits, i.e. exactly 0 or 1; +-1e4 mixed with normal values.
SCORE_STYLES = ("normal", "ties", "saturated", "extreme")


def make_scores(rng, shape, styles):
  """Float32 scores ``[B, C]``; row b of style ``styles[b]`` (``SCORE_STYLES``)."""
  s = rng.normal(size=shape)
  for b, style in enumerate(styles):
    if style == "ties":
      s[b] = np.round(s[b] * 2) / 2
    elif style == "saturated":
      s[b] = rng.random(shape[1]) < 0.5
    elif style == "extreme":
      s[b] = np.where(rng.random(shape[1]) < 0.5, rng.choice([-EXTREME, EXTREME], shape[1]),
                      s[b])
  return s.astype(np.float32)


@st.composite
def score_matrices(draw, batches=BATCHES, num_classes=NUM_CLASSES):
  """``(scores [B, C] in float32 or bfloat16, rng)``."""
  b = draw(st.sampled_from(batches))
  c = draw(st.sampled_from(num_classes))
  styles = draw(st.lists(st.sampled_from(SCORE_STYLES), min_size=b, max_size=b))
  dtype = draw(st.sampled_from(DTYPES))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  return jnp.asarray(make_scores(rng, (b, c), styles), dtype), rng


@st.composite
def problems(draw, batches=BATCHES, num_classes=NUM_CLASSES, dtypes=DTYPES,
             styles=LOGIT_STYLES):
  """A :class:`Problem` over the small shape sets above."""
  batch = draw(st.sampled_from(batches))
  c = draw(st.sampled_from(num_classes))
  width = draw(st.sampled_from([2, c + 2]))  # Short lists, or room for every class + repeats.
  kinds = tuple(draw(st.lists(st.sampled_from(ROW_KINDS), min_size=batch, max_size=batch)))
  row_styles = tuple(draw(st.lists(st.sampled_from(styles), min_size=batch, max_size=batch)))
  dtype = draw(st.sampled_from(dtypes))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  ids, dense = label_rows(rng, kinds, c, width)
  logits = jnp.asarray(make_logits(rng, dense, row_styles), dtype)
  return Problem(ids, dense, kinds, row_styles, logits, dtype, rng)


def as_f64(x) -> np.ndarray:
  """Any array (bfloat16 included) as float64 numpy: references see the exact inputs."""
  return np.asarray(jnp.asarray(x, jnp.float32), np.float64)
