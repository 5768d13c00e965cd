"""The oracle's test mAP read two ways: ties as one step, and over the orders of its ties.

A run's report scores the simulator's Bayes-optimal marginals on its test rows (``oracle``)
with the project's exact mAP, sklearn's convention: tied scores form one step. The
marginals tie by design (every example of a topic has the same probability of each of
its context labels), and that convention then reads them below what any strict order of
them scores: on ambiguity_low, below a trained softmax. This study recomputes the oracle's
mAP on the same test rows both ways, ties as one step (it must equal the runs' stored
figure) and on average over the orders of the ties
(:func:`multilabel_jax.metrics.tie_orders.expected_average_precision_per_class`): the
mAP of the oracle's ranking made strict at random, which is what a model's continuous,
tie-free scores are compared with.

Usage (the tuned sweep's ``oracle`` group runs it per hashtag_world row)::

  report = oracle_ranking.evaluate(config)  # config: any run config of the row.
"""

from __future__ import annotations

import numpy as np

from multilabel_jax import builders
from multilabel_jax.metrics import average_precision as ap_lib
from multilabel_jax.metrics import tie_orders


def evaluate(config, *, batch_size: int = 500) -> dict:
  """``{"oracle_ranking": {...}, "data": {...}}`` of the test split of ``config``'s source.

  ``oracle_ranking``: ``map_step`` (ties as one step, the runs' convention),
  ``map_over_tie_orders``, ``num_examples``, ``num_classes_with_positives`` and
  ``tied_positives``, the fraction of positives whose score ties with another example's
  in their class.

  Raises:
    ValueError: the source has no oracle marginals.
  """
  source = builders.build_source(config)
  if not hasattr(source, "oracle_marginals_from_inputs"):
    raise ValueError(f"`config.data.name` {config.data.name!r} has no oracle marginals.")
  n = source.num_examples("test")
  ids, scores = [], []
  for lo in range(0, n, batch_size):
    batch = source.read("test", np.arange(lo, min(lo + batch_size, n)))
    ids.append(batch["label_ids"])
    scores.append(np.asarray(source.oracle_marginals_from_inputs(batch), np.float32))
  ids, scores = np.concatenate(ids), np.concatenate(scores)
  step = ap_lib.average_precision_dense(scores, ids)
  over_orders = tie_orders.expected_average_precision_per_class(scores, ids)
  return {"oracle_ranking": {"map_step": step["map_macro"],
                             "map_over_tie_orders": float(np.nanmean(over_orders)),
                             "num_examples": n,
                             "num_classes_with_positives": step["num_classes_with_positives"],
                             "tied_positives": _tied_positives(scores, ids)},
          "data": {"name": config.data.name, "options": config.data.options.to_dict(),
                   "num_classes": scores.shape[1]}}


def _tied_positives(scores: np.ndarray, ids: np.ndarray) -> float:
  """Fraction of the positives (row, class) whose score another test row shares in that
  class."""
  rows, cols = np.nonzero(ids >= 0)
  classes = ids[rows, cols]
  if not classes.size:
    return 0.0
  tied = 0
  for lo in range(0, classes.size, 4096):  # [N, 4096] comparisons at a time.
    c = classes[lo:lo + 4096]
    tied += int(((scores[:, c] == scores[rows[lo:lo + 4096], c]).sum(axis=0) > 1).sum())
  return tied / classes.size
