"""Objectives: a loss, the head outputs it needs, and how those become per-class scores.

(Work in progress: the registry is filled in by the core-library change.)
"""

from __future__ import annotations

from typing import NamedTuple


class HeadOutput(NamedTuple):
  """One output of a model's head.

  Attributes:
    width: number of units (C for class logits, 1 for a count, d for an embedding).
    bias_init: constant initial bias (e.g. -log(C) for softmax, -10 for sigmoid at 21k
      classes as in big_vision). The kernel starts at zero.
  """
  width: int
  bias_init: float = 0.0
