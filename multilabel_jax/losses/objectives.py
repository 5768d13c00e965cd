"""Objectives: a loss, the head outputs it needs, and how those become per-class scores.

The train loop and the configs select objectives by name::

  objective = get_objective("two_head", num_classes=20_000, k=3)
  objective.head_outputs        # {"logits": HeadOutput(C, -log C), "multilabel_logits": ...}
  loss = objective.loss(outputs, label_ids)              # [B]
  weights = objective.example_weights(label_ids, where)  # [B], for the mean
  scores = objective.scores(outputs)                     # [B, C], for decoders and metrics

``outputs`` is the dict a model returns, one array per head output.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import (count, decoders, embedding, sigmoid, softmax, two_head,
                                   zlpr)


class HeadOutput(NamedTuple):
  """One output of a model's head.

  Attributes:
    width: number of units (C for class logits, 1 for a count, d for an embedding).
    bias_init: constant initial bias (e.g. -log(C) as a prior, or -10 for sigmoid at 21k
      classes as in big_vision). The kernel starts at zero.
  """
  width: int
  bias_init: float = 0.0


@dataclasses.dataclass(frozen=True)
class Objective:
  """A named training objective.

  Attributes:
    name: registry name.
    head_outputs: output name -> :class:`HeadOutput` the model must produce.
    loss_fn: ``(outputs, labels, where) -> [B]`` per-example loss.
    scores_fn: ``outputs -> [B, C]`` per-class scores for decoding and ranking metrics.
    decoder: the natural decoder: "threshold", "top_k", "average_k", "by_count" or
      "nearest" (top-k of embedding cosine scores); see ``losses.decoders``.
    decoder_params: its parameters, e.g. ``{"t": 0.5}`` or ``{"k": 1}``.
    counts_fn: ``outputs -> [B]`` predicted label counts, for count-based decoding.
    empty_rows_masked: whether rows with no labels contribute 0 and count as masked.
    options: the options the objective was built with (for reports).
  """
  name: str
  head_outputs: Mapping[str, HeadOutput]
  loss_fn: Callable[..., jax.Array]
  scores_fn: Callable[[Mapping[str, jax.Array]], jax.Array]
  decoder: str
  decoder_params: Mapping[str, Any]
  counts_fn: Optional[Callable[[Mapping[str, jax.Array]], jax.Array]] = None
  empty_rows_masked: bool = False
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def loss(self, outputs, labels, where=None) -> jax.Array:
    """Per-example loss ``[B]``."""
    missing = set(self.head_outputs) - set(outputs)
    if missing:
      raise ValueError(f"objective {self.name!r} needs head outputs {sorted(self.head_outputs)}"
                       f", the model returned {sorted(outputs)} (missing {sorted(missing)}).")
    return self.loss_fn(outputs, labels, where)

  def example_weights(self, labels, where=None) -> jax.Array:
    """``[B]`` float weights for averaging the loss: ``where``, and for softmax-type
    objectives only rows with labels."""
    labels = jnp.asarray(labels)
    w = jnp.ones(labels.shape[:1], bool) if where is None else jnp.asarray(where, bool)
    if self.empty_rows_masked:
      w = w & labels_lib.has_labels(labels)
    return w.astype(jnp.float32)

  def scores(self, outputs) -> jax.Array:
    """Per-class scores ``[B, C]``."""
    return self.scores_fn(outputs)

  def decode(self, outputs, *, t=None, max_labels: Optional[int] = None):
    """Label sets under the objective's natural decoder, as ``DecodedSets``.

    Args:
      outputs: the model's head outputs.
      t: the threshold for "average_k" (required: calibrate it on validation with
        ``decoders.calibrate_average_k``) or an override for "threshold".
      max_labels: slot count for variable-size decoders (default C).
    """
    scores = self.scores(outputs)
    if self.decoder in ("top_k", "nearest"):
      return decoders.top_k(scores, self.decoder_params["k"])
    if self.decoder == "by_count":
      return decoders.by_count(scores, self.counts_fn(outputs), max_labels=max_labels)
    if self.decoder == "average_k" and t is None:
      raise ValueError(f"objective {self.name!r} decodes with a calibrated average-K "
                       "threshold: pass t=decoders.calibrate_average_k(val_scores, k).")
    t = self.decoder_params.get("t") if t is None else t
    return decoders.threshold(scores, t, max_labels=max_labels)


def _sigmoid_family(name, loss, num_classes, bias_init, options):
  return Objective(
      name=name,
      head_outputs={"logits": HeadOutput(num_classes, bias_init)},
      loss_fn=lambda o, y, w: loss(o["logits"], y, where=w, **options),
      scores_fn=lambda o: jax.nn.sigmoid(o["logits"].astype(jnp.float32)),
      decoder="threshold", decoder_params={"t": 0.5}, options=options)


def _prior_bias(num_classes, mean_labels):
  """Logit of the prior probability of a class, ``log(p / (1 - p))``, p = mean_labels / C."""
  p = min(mean_labels / num_classes, 0.5)
  return math.log(p / (1 - p))


def sigmoid_objective(num_classes, *, label_smoothing=0.0, bias_init=None, mean_labels=1.0):
  """Sigmoid BCE; head bias starts at the class prior (about -log C)."""
  bias = _prior_bias(num_classes, mean_labels) if bias_init is None else bias_init
  return _sigmoid_family("sigmoid", sigmoid.sigmoid_bce, num_classes, bias,
                         {"label_smoothing": label_smoothing})


def focal_objective(num_classes, *, gamma=2.0, alpha=0.25, bias_init=None, mean_labels=1.0):
  """Sigmoid focal loss (Lin et al. 2017)."""
  bias = _prior_bias(num_classes, mean_labels) if bias_init is None else bias_init
  return _sigmoid_family("focal", sigmoid.focal, num_classes, bias,
                         {"gamma": gamma, "alpha": alpha})


def asl_objective(num_classes, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, bias_init=None,
                  mean_labels=1.0):
  """Asymmetric loss (Ridnik et al. 2021)."""
  bias = _prior_bias(num_classes, mean_labels) if bias_init is None else bias_init
  return _sigmoid_family("asl", sigmoid.asymmetric, num_classes, bias,
                         {"gamma_pos": gamma_pos, "gamma_neg": gamma_neg, "clip": clip})


def zlpr_objective(num_classes, *, bias_init=None, mean_labels=1.0):
  """ZLPR (Su et al. 2022); decode with logit > 0."""
  bias = _prior_bias(num_classes, mean_labels) if bias_init is None else bias_init
  return _sigmoid_family("zlpr", zlpr.zlpr, num_classes, bias, {})


def softmax_objective(num_classes, *, k=1, bias_init=None):
  """Softmax cross-entropy with 1/k targets (Mahajan et al. 2018); decode with top-k."""
  bias = -math.log(num_classes) if bias_init is None else bias_init
  return Objective(
      name="softmax", head_outputs={"logits": HeadOutput(num_classes, bias)},
      loss_fn=lambda o, y, w: softmax.softmax_xent(o["logits"], y, where=w),
      scores_fn=lambda o: softmax.softmax_scores(o["logits"]),
      decoder="top_k", decoder_params={"k": k}, empty_rows_masked=True, options={"k": k})


def two_head_objective(num_classes, *, k=3.0, weight=1.0, bias_init=None):
  """Two-head Average-K (Garcin et al. 2023); decode with calibrated average-K."""
  bias = -math.log(num_classes) if bias_init is None else bias_init
  return Objective(
      name="two_head",
      head_outputs={"logits": HeadOutput(num_classes, bias),
                    "multilabel_logits": HeadOutput(num_classes, _prior_bias(num_classes, k))},
      loss_fn=lambda o, y, w: two_head.two_head_average_k(
          o["logits"], o["multilabel_logits"], y, k=k, weight=weight, where=w),
      scores_fn=lambda o: jax.nn.sigmoid(o["multilabel_logits"].astype(jnp.float32)),
      decoder="average_k", decoder_params={"k": k}, options={"k": k, "weight": weight})


def _count_head(num_classes, mean_labels, bias_init):
  bias = -math.log(num_classes) if bias_init is None else bias_init
  return {"logits": HeadOutput(num_classes, bias),
          "log_count": HeadOutput(1, math.log(max(mean_labels, 1e-3)))}


def _count_scores(o):
  return count.count_scores(o["logits"], o["log_count"])


def _expected_count(o):
  return count.expected_count(o["log_count"])


def count_distribution_objective(num_classes, *, count_weight=1.0, mean_labels=1.0,
                                 bias_init=None):
  """Softmax P times a Poisson count Z; decode the top round(Z) of Z * P."""
  return Objective(
      name="count_distribution", head_outputs=_count_head(num_classes, mean_labels, bias_init),
      loss_fn=lambda o, y, w: count.count_distribution(
          o["logits"], o["log_count"], y, count_weight=count_weight, where=w),
      scores_fn=_count_scores, decoder="by_count", decoder_params={}, counts_fn=_expected_count,
      options={"count_weight": count_weight})


def abs_kl_objective(num_classes, *, eps=1e-6, mean_labels=1.0, bias_init=None):
  """abs-KL between Z * P and the multi-hot target; decode the top round(Z)."""
  return Objective(
      name="abs_kl", head_outputs=_count_head(num_classes, mean_labels, bias_init),
      loss_fn=lambda o, y, w: count.abs_kl(_count_scores(o), y, eps=eps, where=w),
      scores_fn=_count_scores, decoder="by_count", decoder_params={}, counts_fn=_expected_count,
      options={"eps": eps})


def embedding_objective(num_classes, *, embeddings, k=1):
  """Cosine regression onto PMI label embeddings (Chollet 2016); decode nearest labels.

  ``embeddings`` is ``[C, d]``, e.g. from ``pmi_label_embeddings`` on the training labels.
  """
  table = jnp.asarray(embeddings, jnp.float32)
  if table.ndim != 2 or table.shape[0] != num_classes:
    raise ValueError(f"`embeddings` must have shape ({num_classes}, d), got {table.shape}.")
  return Objective(
      name="embedding", head_outputs={"embedding": HeadOutput(table.shape[1], 0.0)},
      loss_fn=lambda o, y, w: embedding.label_embedding_cosine(o["embedding"], y, table, where=w),
      scores_fn=lambda o: embedding.embedding_scores(o["embedding"], table),
      decoder="nearest", decoder_params={"k": k}, empty_rows_masked=True,
      options={"k": k, "dim": table.shape[1]})


OBJECTIVES: Mapping[str, Callable[..., Objective]] = {
    "sigmoid": sigmoid_objective,
    "softmax": softmax_objective,
    "embedding": embedding_objective,
    "two_head": two_head_objective,
    "count_distribution": count_distribution_objective,
    "abs_kl": abs_kl_objective,
    "focal": focal_objective,
    "asl": asl_objective,
    "zlpr": zlpr_objective,
}


def get_objective(name: str, num_classes: int, **options) -> Objective:
  """Builds the objective registered under ``name``.

  Raises:
    ValueError: unknown name, or an option the objective does not take (the message lists
      the options it accepts).
  """
  if name not in OBJECTIVES:
    raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}.")
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
  builder = OBJECTIVES[name]
  accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"objective {name!r} does not take option(s) {unknown}; "
                     f"it accepts {accepted}.")
  return builder(int(num_classes), **options)


def accepted_options(name: str) -> list:
  """The option names :func:`get_objective` accepts for ``name``."""
  return [p for p in inspect.signature(OBJECTIVES[name]).parameters if p != "num_classes"]


