"""Fused linear head + multi-label losses over class chunks (no ``[B, C]`` array).

For 100k-1M classes the logits ``x @ kernel + bias`` of a batch do not fit in memory
(B=1024, C=1M: 4 GiB in float32, several times that with the gradient). The functions
here compute the same per-example losses as the dense ``sigmoid_bce`` / ``softmax_xent``
on those logits, but over chunks of ``chunk_size`` classes:

* sigmoid BCE: a running ``sum_c softplus(z_c)`` (and ``sum_c z_c`` for label smoothing);
* softmax: an online max / sum-exp (logsumexp), as in flash attention;
* positives: for each chunk, the logits at the label ids falling into it are gathered from
  the chunk (``x . kernel[:, id] + bias[id]``), so ids cost ``O(B L)`` per chunk.

A ``jax.custom_vjp`` recomputes each chunk's logits in the backward pass, so no ``[B, C]``
array exists in either pass; peak temporary memory is ``O(B * chunk_size + D * C)``, the
latter being the kernel gradient itself. The chunk loop, the checks and the per-chunk
gradient GEMMs live in :mod:`chunked_head`.

GEMM count. The per-example losses return ``[B]``; their cotangent ``g_b`` is only known in
the backward pass, which therefore recomputes the logits: 4 GEMMs (forward logits;
recomputed logits, dX, dW) against the 3-GEMM bound of a dense head. The *reduced*
variants (``linear_sigmoid_bce_reduced``, ``linear_softmax_xent_reduced``) return the
scalar ``sum_b w_b loss_b`` and compute dx, dkernel, dbias in the forward pass, chunk by
chunk, as Liger-Kernel's fused linear cross entropy does; their backward only scales by
the scalar cotangent. For sigmoid BCE this is 3 GEMMs (the bound). For softmax the
gradient of a chunk needs the row's *global* logsumexp, which is known only after all
classes are seen, so with class chunks the reduced softmax makes two passes (logsumexp,
then logits+dX+dW): 4 GEMMs. (Liger avoids this by chunking over rows and materialising
full-vocabulary rows, ``[B_chunk, C]``, which at 1M classes is what we avoid.)

Ids follow :mod:`multilabel_jax.labels`: int ``[B, L]``, -1 padded, duplicates in a row
count once. Ids ``>= C`` raise ValueError when ``label_ids`` is concrete; under ``jit`` they
are dropped like padding (validate with ``labels.validate_ids`` in the input pipeline).

Objectives built on these:

* ``count_distribution`` (softmax over classes + a count head): the count head is a
  separate tiny ``[D, K]`` head whose logits are cheap to materialise, so the objective
  fuses as ``linear_softmax_xent(x, kernel, bias, ids)`` plus the dense count term.
* two-head (pseudo-labels from a batch-global threshold: the top-(k*B) softmax
  probabilities over the whole ``[B, C]`` batch). This does not fuse into a *single*
  chunked pass: a class's probability ``exp(z - lse_b)`` needs the row's global
  logsumexp, and its target needs the global threshold. It fuses with three passes:
  pass 1 computes ``lse`` (as here); pass 2 recomputes each chunk's probabilities and
  merges a running top-(k*B) of the flattened ``[B, chunk]`` probabilities, whose m-th
  value is the threshold (``streaming_top_k.linear_average_k_threshold``); pass 3 runs
  both heads over each chunk, the threshold giving the multi-label head's targets.
  Memory is ``O(k B)`` for the running top values. See :mod:`fused_two_head`
  (``linear_two_head_average_k`` and its reduced variant; 10 and 8 GEMMs).

Reference: Liger-Kernel, "Efficient Triton Kernels for LLM Training" (Hsu et al., 2024),
fused linear cross entropy; Milakov & Gimelshein, "Online normalizer calculation for
softmax" (2018); Wortsman et al. / Mahajan et al. 2018 (hashtag pretraining, 1/k softmax).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import chunked_head

_F32 = jnp.float32


# ----------------------------------------------------------------------------- stats primitive


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def fused_stats(kind, chunk_size, x, kernel, bias, label_ids, keep):
  """Per-row statistics of the logits ``x @ kernel + bias`` without materialising them.

  ``kind="bce"``: ``(sum_c softplus(z), sum_c z, sum_{kept ids} z)``;
  ``kind="softmax"``: ``(logsumexp_c z, sum_{kept ids} z)``. Each output is float32 ``[B]``.
  Differentiable w.r.t. ``x``, ``kernel``, ``bias``; the backward recomputes each chunk.
  Building block of the losses here and of :mod:`sharded_head` (per-shard partials).
  """
  return _fused_stats_fwd(kind, chunk_size, x, kernel, bias, label_ids, keep)[0]


def _fused_stats_fwd(kind, chunk_size, x, kernel, bias, label_ids, keep):
  b = x.shape[0]
  if kind == "bce":
    out = chunked_head.stats_pass(x, kernel, bias, chunk_size, chunked_head.bce_stats_fn(label_ids, keep),
                                  chunked_head.bce_stats_init(b))
  elif kind == "softmax":
    m, s, pos = chunked_head.stats_pass(x, kernel, bias, chunk_size,
                                        chunked_head.softmax_stats_fn(label_ids, keep), chunked_head.softmax_stats_init(b))
    out = (m + jnp.log(s), pos)
  else:
    raise ValueError(f"Unknown kind {kind!r}.")
  return out, (x, kernel, bias, label_ids, keep, out)


def _fused_stats_bwd(kind, chunk_size, res, g):
  x, kernel, bias, label_ids, keep, out = res
  if kind == "bce":
    g_sp, g_zs, g_pos = g

    def dz_fn(carry, z, start):
      dz = g_sp[:, None] * jax.nn.sigmoid(z) + g_zs[:, None]
      return carry, chunked_head.scatter_positives(dz, label_ids, keep, start, -g_pos)
  else:
    lse, _ = out
    g_lse, g_pos = g

    def dz_fn(carry, z, start):
      dz = g_lse[:, None] * jnp.exp(z - lse[:, None])
      return carry, chunked_head.scatter_positives(dz, label_ids, keep, start, -g_pos)

  _, dx, dk, db = chunked_head.grad_pass(x, kernel, bias, chunk_size, dz_fn, ())
  return dx, dk, db, None, None


fused_stats.defvjp(_fused_stats_fwd, _fused_stats_bwd)


# ----------------------------------------------------------------------------- per-example losses


def linear_sigmoid_bce(x, kernel, bias, label_ids, *, chunk_size: int,
                       label_smoothing: float = 0.0, where=None) -> jax.Array:
  """Per-example sigmoid BCE of a linear head, fused over class chunks.

  Equals ``sigmoid_bce(x @ kernel + bias, label_ids, label_smoothing=ls)``, i.e. per row
  ``sum_c softplus(z_c) - t_c z_c`` with ``t = y (1 - ls) + ls / 2``, without a ``[B, C]``
  array in forward or backward (the backward recomputes each chunk: 4 GEMMs in all; see
  :func:`linear_sigmoid_bce_reduced` for the 3-GEMM training variant).

  Args:
    x: float ``[B, D]`` features (float32 or bfloat16; accumulation is float32).
    kernel: float ``[D, C]``.
    bias: float ``[C]``.
    label_ids: int ``[B, L]``, -1 padded; duplicates count once; ids ``>= C`` raise when
      concrete and are dropped under ``jit``.
    chunk_size: classes per chunk (static). ``C`` need not be a multiple of it.
    label_smoothing: ``ls`` above.
    where: optional bool ``[B]``; rows where it is False give 0 (and no gradient).

  Returns:
    float32 ``[B]``.

  Example:
    >>> loss = linear_sigmoid_bce(x, kernel, bias, jnp.array([[3, 7, -1]]), chunk_size=8192)
  """
  b, _, c = chunked_head.check_head(x, kernel, bias, label_ids, chunk_size)
  chunked_head.check_label_smoothing(label_smoothing)
  where = labels_lib.check_where(where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)
  sp, zs, pos = fused_stats("bce", chunk_size, x, kernel, bias, label_ids, keep)
  loss = sp - (0.5 * label_smoothing) * zs - (1.0 - label_smoothing) * pos
  return loss if where is None else jnp.where(where, loss, 0.0)


def linear_softmax_xent(x, kernel, bias, label_ids, *, chunk_size: int,
                        where=None) -> jax.Array:
  """Per-example softmax cross-entropy with 1/k targets of a linear head, fused over chunks.

  Equals ``softmax_xent(x @ kernel + bias, label_ids)``: per row
  ``logsumexp_c z_c - (1/k) sum_{c in ids} z_c`` with k the number of distinct ids; rows
  with no (valid) ids give 0. The logsumexp is computed online over chunks (running max
  and rescaled sum-exp); the backward recomputes each chunk (4 GEMMs in all).

  ``count_distribution`` fuses as this loss plus the dense term of its tiny count head.

  Args:
    x: float ``[B, D]``; kernel: float ``[D, C]``; bias: float ``[C]``.
    label_ids: int ``[B, L]``, -1 padded (see :func:`linear_sigmoid_bce`).
    chunk_size: classes per chunk (static).
    where: optional bool ``[B]``; False rows give 0.

  Returns:
    float32 ``[B]``.

  Example:
    >>> loss = linear_softmax_xent(x, kernel, bias, ids, chunk_size=8192).mean()
  """
  b, _, c = chunked_head.check_head(x, kernel, bias, label_ids, chunk_size)
  where = labels_lib.check_where(where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)
  lse, pos = fused_stats("softmax", chunk_size, x, kernel, bias, label_ids, keep)
  k = jnp.sum(keep, axis=1)
  valid = k > 0 if where is None else (k > 0) & where
  return jnp.where(valid, lse - pos / jnp.maximum(k, 1).astype(_F32), 0.0)


# ----------------------------------------------------------------------------- reduced losses


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def reduced_loss(kind, chunk_size, x, kernel, bias, weights, label_ids, keep, ls):
  """Unchecked core of the ``*_reduced`` losses (``kind`` "bce" or "softmax"): the scalar
  ``sum_b weights_b * loss_b`` with its gradients from the forward pass; shared with
  :mod:`sharded_head` (per-shard partial sums)."""
  return _reduced_fwd(kind, chunk_size, x, kernel, bias, weights, label_ids, keep, ls)[0]


def _reduced_fwd(kind, chunk_size, x, kernel, bias, weights, label_ids, keep, ls):
  b = x.shape[0]
  if kind == "bce":
    # One pass: loss stats and gradients together (3 GEMMs).
    stats = chunked_head.bce_stats_fn(label_ids, keep)
    pos_coef = weights * (1.0 - ls)

    def dz_fn(carry, z, start):
      sp_z, sig = chunked_head.softplus_and_sigmoid(z)
      dz = weights[:, None] * (sig - 0.5 * ls)
      return stats(carry, z, start, sp_z), chunked_head.scatter_positives(
          dz, label_ids, keep, start, pos_coef)

    (sp, zs, pos), dx, dk, db = chunked_head.grad_pass(x, kernel, bias, chunk_size, dz_fn,
                                                       chunked_head.bce_stats_init(b))
    loss = sp - 0.5 * ls * zs - (1.0 - ls) * pos
  else:
    # Pass 1: logsumexp (1 GEMM). Pass 2: logits, dX, dW (3 GEMMs).
    m, s, pos = chunked_head.stats_pass(x, kernel, bias, chunk_size,
                                        chunked_head.softmax_stats_fn(label_ids, keep), chunked_head.softmax_stats_init(b))
    lse = m + jnp.log(s)
    k = jnp.sum(keep, axis=1)
    w = jnp.where(k > 0, weights, 0.0)
    pos_coef = w / jnp.maximum(k, 1).astype(_F32)

    def dz_fn(carry, z, start):
      dz = w[:, None] * jnp.exp(z - lse[:, None])
      return carry, chunked_head.scatter_positives(dz, label_ids, keep, start, pos_coef)

    _, dx, dk, db = chunked_head.grad_pass(x, kernel, bias, chunk_size, dz_fn, ())
    loss = jnp.where(k > 0, lse - pos / jnp.maximum(k, 1).astype(_F32), 0.0)
  total = jnp.sum(weights * loss)
  return total, (dx, dk, db, loss.astype(weights.dtype))


def _reduced_bwd(kind, chunk_size, res, g):
  dx, dk, db, loss = res
  scale = lambda a: (g * a.astype(_F32)).astype(a.dtype)
  return scale(dx), scale(dk), scale(db), g * loss, None, None, None


reduced_loss.defvjp(_reduced_fwd, _reduced_bwd)


def linear_sigmoid_bce_reduced(x, kernel, bias, label_ids, *, chunk_size: int, weights=None,
                               label_smoothing: float = 0.0, where=None) -> jax.Array:
  """Scalar ``sum_b w_b * linear_sigmoid_bce(...)_b`` with gradients from the forward pass.

  The training-loop variant: dx, dkernel and dbias are computed chunk by chunk in the
  forward pass (3 GEMMs, the dense bound) and the backward only multiplies them by the
  incoming scalar cotangent. Prefer it whenever the loss is reduced to a scalar anyway.
  Under ``jax.grad`` only; forward-mode (``jvp``) is not supported (custom_vjp).

  Args:
    x, kernel, bias, label_ids, chunk_size, label_smoothing: as in
      :func:`linear_sigmoid_bce`.
    weights: optional float ``[B]`` per-example weights (differentiable). Default: the
      mean over the rows selected by ``where`` (``w_b = where_b / sum(where)``).
    where: optional bool ``[B]``; False rows get weight 0.

  Returns:
    float32 scalar.

  Example:
    >>> loss, grads = jax.value_and_grad(
    ...     lambda p: linear_sigmoid_bce_reduced(x, p["w"], p["b"], ids, chunk_size=8192))(p)
  """
  b, _, c = chunked_head.check_head(x, kernel, bias, label_ids, chunk_size)
  chunked_head.check_label_smoothing(label_smoothing)
  weights = chunked_head.check_weights(weights, where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)
  return reduced_loss("bce", chunk_size, x, kernel, bias, weights, label_ids, keep,
                  jnp.asarray(label_smoothing, _F32))


def linear_softmax_xent_reduced(x, kernel, bias, label_ids, *, chunk_size: int, weights=None,
                                where=None) -> jax.Array:
  """Scalar ``sum_b w_b * linear_softmax_xent(...)_b`` with gradients from the forward pass.

  Two passes over the classes in the forward (logsumexp, then logits + dX + dW): 4 GEMMs,
  because a chunk's softmax gradient needs the row's global logsumexp (see module doc).
  The backward only scales by the scalar cotangent. Rows without valid ids contribute 0.

  Args:
    as :func:`linear_softmax_xent`; ``weights`` as :func:`linear_sigmoid_bce_reduced`.

  Returns:
    float32 scalar.

  Example:
    >>> loss = linear_softmax_xent_reduced(x, kernel, bias, ids, chunk_size=8192)
  """
  b, _, c = chunked_head.check_head(x, kernel, bias, label_ids, chunk_size)
  weights = chunked_head.check_weights(weights, where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)
  return reduced_loss("softmax", chunk_size, x, kernel, bias, weights, label_ids, keep,
                  jnp.zeros((), _F32))
