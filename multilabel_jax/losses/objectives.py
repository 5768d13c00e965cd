"""Objectives: everything the train loop and the evaluation ask of a loss.

An :class:`Objective` owns its heads, its dense loss, its fused loss for 100k-1M classes
(or None), its scores, its natural decoder and the decoders that apply to it, what it
calibrates on validation, and what it builds from the training data. The loop never asks
which objective it has::

  objective = get_objective("two_head", num_classes=20_000, k=3)
  objective.head_outputs        # {"logits": HeadOutput(C, -log C), "multilabel_logits": ...}
  loss = objective.loss(outputs, label_ids)              # [B]
  weights = objective.example_weights(label_ids, where)  # [B], for the mean
  scores = objective.scores(outputs)                     # [B, C], for decoders and metrics
  objective.fused                                        # FusedHead or None (fused_heads.py)

``outputs`` is the dict a model returns, one array per head output. A new objective is a
builder ``(num_classes, *, <options>, data=None) -> Objective`` registered with
:func:`register_objective`, from any package; ``data`` (:class:`TrainingData`) carries what
it may build from the training split.
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
from multilabel_jax import metrics as metrics_lib
from multilabel_jax.losses import (count, decoders, embedding, fused_heads, hinge, sigmoid,
                                   softmax, two_head, zlpr)


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
    fused: its loss and scores over class chunks (:class:`fused_heads.FusedHead`), or None
      when it has no fused form (the builder's docstring says why).
    fixed_threshold: the score of the ``threshold_<t>`` decoder (0.5 for probabilities), or
      None where scores have no natural threshold (cosines).
    average_k: the mean set size K of its ``average_k`` decoder, when the objective fixes it
      (two-head's k); None: K is the mean label count on validation.
    top_k_prefix: report name of its top-k decoders (``nearest`` for embeddings).
    marginals: whether its scores are meant as per-class probabilities ``P(y_c = 1 | x)``
      (a per-class probabilistic loss on sigmoids), so that the ``expected_f1`` decoder
      (:mod:`losses.expected_f1`) applies; False for margins, distributions and cosines.
    reads_as: what a score estimates, for the reliability against the oracle marginals
      (:func:`multilabel_jax.report.reliability`): ``"marginal"`` ``P(y_c = 1 | x)``,
      ``"expected_count"`` ``E[y_c | x]`` from a count times a distribution (a marginal
      again, but not capped at 1), ``"distribution"`` a share of the row's labels
      (``P(y_c | x) / sum_c' P(y_c' | x)``, softmax with 1/k targets), or ``""`` (margins,
      cosines: no probability reading).
    summary: what it built from the training data, for the run report.
    rebuild_options: what it built from the training data that its scores or decoders need
      (the embedding table, the two-head's k), as options: ``get_objective(name, C,
      **options_of_the_config, **rebuild_options)`` without ``data`` rebuilds the same
      objective (prediction, :mod:`multilabel_jax.inference`; arrays are stored in the
      run's calibration file).
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
  fused: Optional[fused_heads.FusedHead] = None
  fixed_threshold: Optional[float] = 0.5
  average_k: Optional[float] = None
  top_k_prefix: str = "top"
  marginals: bool = False
  reads_as: str = ""
  summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  rebuild_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def natural_decoder(self) -> str:
    """The report name of the natural decoder (``top_1``, ``threshold_0.5``, ``by_count``...)."""
    if self.decoder in ("top_k", "nearest"):
      return f"{self.top_k_prefix}_{self.decoder_params['k']}"
    if self.decoder == "threshold":
      return f"threshold_{self.decoder_params['t']}"
    return self.decoder

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


class TrainingData(NamedTuple):
  """What a builder may use from the training split (``get_objective(..., data=...)``).

  Attributes:
    mean_labels: mean number of labels per training example.
    label_ids: ``() -> int [N, L]`` the first training examples' padded label ids, read
      only when called (the PMI embeddings need them).
  """
  mean_labels: float
  label_ids: Callable[[], np.ndarray]


def _mean_labels(mean_labels, data):
  if mean_labels is not None:
    return mean_labels
  return max(data.mean_labels, 1e-3) if data is not None else 1.0


def _sigmoid_family(name, loss, num_classes, bias_init, mean_labels, data, options,
                    fused=None, marginals=True):
  if bias_init is None:
    bias_init = _prior_bias(num_classes, _mean_labels(mean_labels, data))
  return Objective(
      name=name,
      head_outputs={"logits": HeadOutput(num_classes, bias_init)},
      loss_fn=lambda o, y, w: loss(o["logits"], y, where=w, **options),
      scores_fn=lambda o: jax.nn.sigmoid(o["logits"].astype(jnp.float32)),
      decoder="threshold", decoder_params={"t": 0.5}, options=options, fused=fused,
      marginals=marginals, reads_as="marginal" if marginals else "")


def _prior_bias(num_classes, mean_labels):
  """Logit of the prior probability of a class, ``log(p / (1 - p))``, p = mean_labels / C."""
  p = min(mean_labels / num_classes, 0.5)
  return math.log(p / (1 - p))


def sigmoid_objective(num_classes, *, label_smoothing=0.0, bias_init=None, mean_labels=None,
                      data=None):
  """Sigmoid BCE; head bias starts at the class prior (about -log C). Fused form: yes."""
  return _sigmoid_family("sigmoid", sigmoid.sigmoid_bce, num_classes, bias_init, mean_labels,
                         data, {"label_smoothing": label_smoothing},
                         fused=fused_heads.sigmoid_head(label_smoothing))


def focal_objective(num_classes, *, gamma=2.0, alpha=0.25, bias_init=None, mean_labels=None,
                    data=None):
  """Sigmoid focal loss (Lin et al. 2017). No fused form: its per-class modulating factor
  is not a chunk statistic the fused BCE kernels compute (dense heads only)."""
  return _sigmoid_family("focal", sigmoid.focal, num_classes, bias_init, mean_labels, data,
                         {"gamma": gamma, "alpha": alpha})


def asl_objective(num_classes, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, bias_init=None,
                  mean_labels=None, data=None):
  """Asymmetric loss (Ridnik et al. 2021). No fused form (as focal: dense heads only)."""
  return _sigmoid_family("asl", sigmoid.asymmetric, num_classes, bias_init, mean_labels, data,
                         {"gamma_pos": gamma_pos, "gamma_neg": gamma_neg, "clip": clip})


def zlpr_objective(num_classes, *, bias_init=None, mean_labels=None, data=None):
  """ZLPR (Su et al. 2022); decode with logit > 0. No fused form: its two logsumexps over
  positives and negatives are not written as a chunked kernel yet."""
  return _sigmoid_family("zlpr", zlpr.zlpr, num_classes, bias_init, mean_labels, data, {},
                         marginals=False)


def squared_hinge_objective(num_classes, *, margin=1.0, bias_init=-1.0, data=None):
  """Squared hinge, one L2-loss SVM per class (LIBLINEAR, Fan et al. 2008); decode with
  logit > 0. The bias starts at -1, where every negative's margin is met. No fused form:
  its per-class term is not one of the fused kernels' chunk statistics (dense heads only)."""
  del data
  return _sigmoid_family("squared_hinge", hinge.squared_hinge, num_classes, bias_init, None,
                         None, {"margin": margin}, marginals=False)


def softmax_objective(num_classes, *, k=1, bias_init=None):
  """Softmax cross-entropy with 1/k targets (Mahajan et al. 2018); decode with top-k.
  Fused form: yes (also class-sharded)."""
  bias = -math.log(num_classes) if bias_init is None else bias_init
  return Objective(
      name="softmax", head_outputs={"logits": HeadOutput(num_classes, bias)},
      loss_fn=lambda o, y, w: softmax.softmax_xent(o["logits"], y, where=w),
      scores_fn=lambda o: softmax.softmax_scores(o["logits"]),
      decoder="top_k", decoder_params={"k": k}, empty_rows_masked=True, options={"k": k},
      fused=fused_heads.softmax_head(), reads_as="distribution")


def two_head_objective(num_classes, *, k=None, weight=1.0, bias_init=None, data=None):
  """Two-head Average-K (Garcin et al. 2023); decode with calibrated average-K.

  ``k`` defaults to the training mean label count (at least 1). Fused form: yes, on one
  device or a data-parallel mesh (no class-sharded form yet).
  """
  if k is None:
    k = max(data.mean_labels, 1.0) if data is not None else 3.0
  bias = -math.log(num_classes) if bias_init is None else bias_init
  return Objective(
      name="two_head",
      head_outputs={"logits": HeadOutput(num_classes, bias),
                    "multilabel_logits": HeadOutput(num_classes, _prior_bias(num_classes, k))},
      loss_fn=lambda o, y, w: two_head.two_head_average_k(
          o["logits"], o["multilabel_logits"], y, k=k, weight=weight, where=w),
      scores_fn=lambda o: jax.nn.sigmoid(o["multilabel_logits"].astype(jnp.float32)),
      decoder="average_k", decoder_params={"k": k}, options={"k": k, "weight": weight},
      fused=fused_heads.two_head_head(k, weight), average_k=k, rebuild_options={"k": k},
      marginals=True, reads_as="marginal")


def _count_head(num_classes, mean_labels, bias_init):
  bias = -math.log(num_classes) if bias_init is None else bias_init
  return {"logits": HeadOutput(num_classes, bias),
          "log_count": HeadOutput(1, math.log(max(mean_labels, 1e-3)))}



def _count_scores(o):
  return count.count_scores(o["logits"], o["log_count"])


def _expected_count(o):
  return count.expected_count(o["log_count"])


def count_distribution_objective(num_classes, *, count_weight=1.0, mean_labels=None,
                                 bias_init=None, data=None):
  """Softmax P times a Poisson count Z; decode the top round(Z) of Z * P. Fused form: yes
  (also class-sharded)."""
  mean_labels = _mean_labels(mean_labels, data)
  return Objective(
      name="count_distribution", head_outputs=_count_head(num_classes, mean_labels, bias_init),
      loss_fn=lambda o, y, w: count.count_distribution(
          o["logits"], o["log_count"], y, count_weight=count_weight, where=w),
      scores_fn=_count_scores, decoder="by_count", decoder_params={}, counts_fn=_expected_count,
      options={"count_weight": count_weight}, reads_as="expected_count",
      fused=fused_heads.count_distribution_head(count_weight))


def abs_kl_objective(num_classes, *, eps=1e-6, mean_labels=None, bias_init=None, data=None):
  """abs-KL between Z * P and the multi-hot target; decode the top round(Z), which is empty
  where Z is biased low (see :func:`count.abs_kl`). No fused form: the loss sums
  ``|(P - Q) log(P / Q)|`` over every class, whose gradient needs a chunked kernel of its
  own (not written)."""
  mean_labels = _mean_labels(mean_labels, data)
  return Objective(
      name="abs_kl", head_outputs=_count_head(num_classes, mean_labels, bias_init),
      loss_fn=lambda o, y, w: count.abs_kl(_count_scores(o), y, eps=eps, where=w),
      scores_fn=_count_scores, decoder="by_count", decoder_params={}, counts_fn=_expected_count,
      options={"eps": eps}, reads_as="expected_count")


def embedding_objective(num_classes, *, embeddings=None, dim=64, smoothing=1.0, k=1,
                        data=None):
  """Cosine regression onto PMI label embeddings (Chollet 2016); decode nearest labels.

  ``embeddings`` is ``[C, d]``; by default it is built from the training labels
  (``data.label_ids()``) with ``pmi_label_embeddings(..., dim, smoothing=smoothing)``, and
  ``summary["embeddings"]`` (in the run report) says how many labels got a degenerate
  embedding and their share of label occurrences (:func:`embedding.embedding_diagnostics`).
  No fused form: the head is ``d`` wide, the ``[B, C]`` cosines only appear in evaluation.
  """
  summary = {}
  if data is not None:
    train_ids = data.label_ids()
    if embeddings is None:
      embeddings = embedding.pmi_label_embeddings(train_ids, num_classes, min(dim, num_classes),
                                                  smoothing=smoothing)
    counts = np.asarray(metrics_lib.label_counts(train_ids, num_classes))
    summary["embeddings"] = embedding.embedding_diagnostics(np.asarray(embeddings), counts)
  if embeddings is None:
    raise ValueError("objective 'embedding' needs `embeddings` [C, d] or the training "
                     "labels (`data`) to build them from.")
  table = jnp.asarray(embeddings, jnp.float32)
  if table.ndim != 2 or table.shape[0] != num_classes:
    raise ValueError(f"`embeddings` must have shape ({num_classes}, d), got {table.shape}.")
  return Objective(
      name="embedding", head_outputs={"embedding": HeadOutput(table.shape[1], 0.0)},
      loss_fn=lambda o, y, w: embedding.label_embedding_cosine(o["embedding"], y, table, where=w),
      scores_fn=lambda o: embedding.embedding_scores(o["embedding"], table),
      decoder="nearest", decoder_params={"k": k}, empty_rows_masked=True,
      options={"k": k, "dim": table.shape[1], "smoothing": smoothing},
      fixed_threshold=None, top_k_prefix="nearest", summary=summary,
      rebuild_options={"embeddings": np.asarray(table)})


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "sigmoid": sigmoid_objective,
    "softmax": softmax_objective,
    "embedding": embedding_objective,
    "two_head": two_head_objective,
    "count_distribution": count_distribution_objective,
    "abs_kl": abs_kl_objective,
    "focal": focal_objective,
    "asl": asl_objective,
    "zlpr": zlpr_objective,
    "squared_hinge": squared_hinge_objective,
}


def register_objective(name: str, builder: Callable[..., Objective], *,
                       replace: bool = False) -> None:
  """Registers ``builder(num_classes, *, <options>, data=None) -> Objective`` as ``name``,
  for configs (``config.objective = name``) and :func:`get_objective`.

  Raises:
    ValueError: ``name`` is taken (pass ``replace=True``), or ``builder`` is not callable.
  """
  if not callable(builder):
    raise ValueError(f"`builder` for objective {name!r} must be callable, got {builder!r}.")
  if name in OBJECTIVES and not replace:
    raise ValueError(f"objective {name!r} is already registered; pass replace=True.")
  OBJECTIVES[name] = builder


def get_objective(name: str, num_classes: int, *, data: Optional[TrainingData] = None,
                  **options) -> Objective:
  """Builds the objective registered under ``name``.

  Args:
    name: a key of :data:`OBJECTIVES`.
    num_classes: C.
    data: optional :class:`TrainingData`, passed to builders that take ``data``.
    **options: the builder's options (:func:`accepted_options`).

  Raises:
    ValueError: unknown name, or an option the objective does not take (the message lists
      the options it accepts).
  """
  if name not in OBJECTIVES:
    raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}.")
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
  builder = OBJECTIVES[name]
  accepted = accepted_options(name)
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"objective {name!r} does not take option(s) {unknown}; "
                     f"it accepts {accepted}.")
  if "data" in inspect.signature(builder).parameters:
    options["data"] = data
  return builder(int(num_classes), **options)


def accepted_options(name: str) -> list:
  """The option names :func:`get_objective` accepts for ``name``."""
  return [p for p in inspect.signature(OBJECTIVES[name]).parameters
          if p not in ("num_classes", "data")]
