"""The fused form of an objective: its loss and its scores over class chunks, no ``[B, C]``.

At 100k-1M classes the logits ``[B, C]`` do not fit. An objective that has a fused form
carries a :class:`FusedHead`: the heads it reads from the params instead of computing, a
loss on ``pre_logits`` (:mod:`fused`, :mod:`fused_two_head`, :mod:`sharded_head`), and its
scores as a per-row transform of one head's logits (``from_logits``), so that evaluation can
stream them chunk by chunk: the top-r candidates (:func:`top_scores`), the scores at given
classes (:func:`scores_at`), and every chunk of scores (:func:`fold_scores`, for exact mAP).

Every function takes ``x = pre_logits`` float32 ``[B, D]``, ``heads = {name: (kernel [D, C],
bias [C])}`` for the names in ``FusedHead.heads``, the model's other ``outputs`` (e.g. the
count head) and ``mesh``: None for one device, or a ``("data", "classes")`` mesh whose
``classes`` axis shards the kernels (:mod:`sharded_head`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from multilabel_jax.losses import (chunked_head, count, fused, fused_two_head, sharded_head,
                                   streaming_top_k)

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class FusedHead:
  """How an objective trains and scores without ``[B, C]`` arrays.

  Attributes:
    heads: the ``[B, C]`` head outputs read from the params (skipped by the model).
    loss: ``(x, heads, outputs, label_ids, weights, *, chunk_size, mesh) -> scalar``, the
      weighted sum ``sum_b weights_b * loss_b``.
    rank_head: the head whose logits rank each row's classes like the scores do.
    row_stats: ``(x, heads, outputs, *, chunk_size, mesh) -> pytree of [B]`` per-row
      constants of the scores (e.g. the softmax logsumexp).
    from_logits: ``(z [B, K], stats) -> scores [B, K]`` from ``rank_head`` logits.
    class_sharded: whether ``mesh`` may shard the classes.
  """
  heads: tuple
  loss: Callable[..., jax.Array]
  rank_head: str = "logits"
  row_stats: Callable[..., Any] = lambda x, heads, outputs, **_: None
  from_logits: Callable[[jax.Array, Any], jax.Array] = lambda z, stats: jax.nn.sigmoid(z)
  class_sharded: bool = True


def _sharded(mesh) -> bool:
  return mesh is not None and mesh.shape.get("classes", 1) > 1


def row_stats(head: FusedHead, x, heads, outputs, *, chunk_size: int, mesh=None):
  """The per-row constants of the scores (e.g. the softmax logsumexp: one pass over the
  classes); pass them as ``stats=`` to the functions below to compute them once."""
  return head.row_stats(x, heads, outputs, chunk_size=chunk_size, mesh=mesh)


def top_scores(head: FusedHead, x, heads, outputs, r: int, *, chunk_size: int, mesh=None,
               stats=None):
  """``(scores [B, r], ids [B, r])``: each row's r best classes by score, best first."""
  kernel, bias = heads[head.rank_head]
  if _sharded(mesh):
    z, ids = sharded_head.sharded_linear_top_k(x, kernel, bias, r, mesh=mesh,
                                               chunk_size=chunk_size, batch_axis="data")
  else:
    z, ids = streaming_top_k.linear_top_k(x, kernel, bias, r, chunk_size=chunk_size)
  if stats is None:
    stats = row_stats(head, x, heads, outputs, chunk_size=chunk_size, mesh=mesh)
  return head.from_logits(z, stats), ids


def scores_at(head: FusedHead, x, heads, outputs, class_ids, *, chunk_size: int, mesh=None,
              stats=None):
  """Scores at ``class_ids``: int ``[K]`` (the same classes for every row) -> ``[B, K]``,
  or ``[B, L]`` (per row, -1 padded; 0 at padding) -> ``[B, L]``."""
  kernel, bias = heads[head.rank_head]
  if stats is None:
    stats = row_stats(head, x, heads, outputs, chunk_size=chunk_size, mesh=mesh)
  class_ids = jnp.asarray(class_ids)
  safe = jnp.maximum(class_ids, 0)
  if class_ids.ndim == 1:
    z = chunked_head.logits_chunk(x, kernel[:, safe], bias[safe])
  else:
    z = jnp.einsum("bd,dbl->bl", x.astype(_F32), kernel[:, safe].astype(_F32)) + bias[safe]
  return jnp.where(class_ids >= 0, head.from_logits(z, stats), 0.0)


def fold_scores(head: FusedHead, x, heads, outputs, fn, carry, *, chunk_size: int, mesh=None,
                stats=None):
  """``carry = fn(carry, scores [B, w], start)`` over every class chunk of the scores."""
  kernel, bias = heads[head.rank_head]
  if stats is None:
    stats = row_stats(head, x, heads, outputs, chunk_size=chunk_size, mesh=mesh)

  def body(carry, start, kc, bc):
    return fn(carry, head.from_logits(chunked_head.logits_chunk(x, kc, bc), stats), start)

  return chunked_head.for_each_chunk(kernel, bias, chunk_size, body, carry, refs=(x,))


# ------------------------------------------------------------------- the fused objectives


def _row_logsumexp(x, kernel, bias, *, chunk_size, mesh):
  """``[B]`` logsumexp of ``x @ kernel + bias`` over all classes, chunk by chunk."""
  first = jnp.zeros((x.shape[0], 1), jnp.int32)  # xent at class 0 = lse - z_0.
  z0 = chunked_head.logits_chunk(x, kernel[:, :1], bias[:1])[:, 0]
  if _sharded(mesh):
    xent = sharded_head.sharded_linear_softmax_xent(x, kernel, bias, first, mesh=mesh,
                                                    chunk_size=chunk_size, batch_axis="data")
  else:
    xent = fused.linear_softmax_xent(x, kernel, bias, first, chunk_size=chunk_size)
  return xent + z0


def sigmoid_head(label_smoothing: float = 0.0) -> FusedHead:
  """Sigmoid BCE (:func:`fused.linear_sigmoid_bce_reduced`); scores ``sigmoid(z)``."""

  def loss(x, heads, outputs, label_ids, weights, *, chunk_size, mesh):
    del outputs
    kernel, bias = heads["logits"]
    if _sharded(mesh):
      return sharded_head.sharded_linear_sigmoid_bce_reduced(
          x, kernel, bias, label_ids, mesh=mesh, chunk_size=chunk_size, batch_axis="data",
          weights=weights, label_smoothing=label_smoothing)
    return fused.linear_sigmoid_bce_reduced(x, kernel, bias, label_ids, chunk_size=chunk_size,
                                            weights=weights, label_smoothing=label_smoothing)

  return FusedHead(heads=("logits",), loss=loss)


def _softmax_loss(x, heads, label_ids, weights, *, chunk_size, mesh):
  kernel, bias = heads["logits"]
  if _sharded(mesh):
    return sharded_head.sharded_linear_softmax_xent_reduced(
        x, kernel, bias, label_ids, mesh=mesh, chunk_size=chunk_size, batch_axis="data",
        weights=weights)
  return fused.linear_softmax_xent_reduced(x, kernel, bias, label_ids, chunk_size=chunk_size,
                                           weights=weights)


def _softmax_stats(x, heads, outputs, *, chunk_size, mesh):
  del outputs
  return _row_logsumexp(x, *heads["logits"], chunk_size=chunk_size, mesh=mesh)


def softmax_head() -> FusedHead:
  """Softmax with 1/k targets (:func:`fused.linear_softmax_xent_reduced`); scores
  ``exp(z - logsumexp z)``."""

  def loss(x, heads, outputs, label_ids, weights, *, chunk_size, mesh):
    del outputs
    return _softmax_loss(x, heads, label_ids, weights, chunk_size=chunk_size, mesh=mesh)

  return FusedHead(heads=("logits",), loss=loss, row_stats=_softmax_stats,
                   from_logits=lambda z, lse: jnp.exp(z - lse[:, None]))


def count_distribution_head(count_weight: float) -> FusedHead:
  """Softmax P plus the Poisson count term; scores ``Z * P`` with ``Z = exp(log_count)``."""

  def loss(x, heads, outputs, label_ids, weights, *, chunk_size, mesh):
    value = _softmax_loss(x, heads, label_ids, weights, chunk_size=chunk_size, mesh=mesh)
    nll = count.poisson_nll(outputs["log_count"][:, 0], count.label_count(label_ids))
    return value + count_weight * jnp.sum(weights * nll)

  def stats(x, heads, outputs, *, chunk_size, mesh):
    return (_softmax_stats(x, heads, outputs, chunk_size=chunk_size, mesh=mesh),
            count.expected_count(outputs["log_count"]))

  return FusedHead(heads=("logits",), loss=loss, row_stats=stats,
                   from_logits=lambda z, s: s[1][:, None] * jnp.exp(z - s[0][:, None]))


def two_head_head(k: float, weight: float) -> FusedHead:
  """Two-head Average-K (:func:`fused_two_head.linear_two_head_average_k_reduced`); scores
  ``sigmoid`` of the multi-label head. No class-sharded form yet."""

  def loss(x, heads, outputs, label_ids, weights, *, chunk_size, mesh):
    del outputs, mesh
    return fused_two_head.linear_two_head_average_k_reduced(
        x, *heads["logits"], *heads["multilabel_logits"], label_ids, k=k, weight=weight,
        chunk_size=chunk_size, weights=weights)

  return FusedHead(heads=("logits", "multilabel_logits"), loss=loss,
                   rank_head="multilabel_logits", class_sharded=False)


def head_arrays(head: FusedHead, get: Callable[[str], tuple]) -> Mapping[str, tuple]:
  """``{name: (kernel, bias)}`` of the fused heads, read with ``get(name)``."""
  return {name: get(name) for name in head.heads}

