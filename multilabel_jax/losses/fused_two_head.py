"""The two-head Average-K loss of two linear heads, fused over class chunks (no ``[B, C]``).

Garcin, Servajean, Joly, Salmon, "A two-head loss function for deep Average-K
classification" (2023). The dense loss (:func:`multilabel_jax.losses.two_head_average_k`)
is, per row b, with ``zs = x @ Ws + bs`` (softmax head) and ``zm = x @ Wm + bm``
(multi-label head)::

  loss_b = softmax_xent(zs_b, y_b) + weight * sum_c softplus(zm_bc) - t_bc zm_bc

where ``t`` holds the observed labels plus the pseudo-labels: every (active row,
non-observed class) pair whose softmax probability ``exp(zs - lse)`` reaches one
batch-global threshold, the m-th largest such probability with ``m = round(k n) -
#observed`` (n active rows; ties at the threshold are all included). The probabilities
carry no gradient (``stop_gradient``), as in the dense loss.

Passes over the classes, in chunks of ``chunk_size``:

1. softmax head: online row logsumexp (1 GEMM);
2. softmax head: each chunk's probabilities merged into a running top-``ceil(k B)``, whose
   m-th value is the threshold (1 GEMM). Passes 1-2 are
   :func:`streaming_top_k.linear_average_k_threshold`;
3. both heads: a chunk's softmax logits give its probabilities, hence its pseudo-label
   mask, and the softmax term; its multi-label logits give the BCE against that mask.

None of them merges into another: a chunk's probabilities need the row's global
logsumexp (pass 1), and a chunk's BCE targets need the global threshold, known only once
pass 2 has seen every class of every row.

GEMM count, against the dense bound of 6 (per head: logits, dX, dW):

* :func:`linear_two_head_average_k` (per example ``[B]``): forward 1 + 1 + 2 (pass 3
  without gradients); backward 6 (pass 3 again, with dX and dW of both heads). 10 in all.
* :func:`linear_two_head_average_k_reduced` (scalar ``sum_b w_b loss_b``): passes 1, 2 and
  pass 3 with gradients in the forward, 1 + 1 + 6 = 8; the backward only scales.

Temporary memory is ``O(B * chunk_size + k B)`` plus the kernel gradients. Ids follow
:mod:`multilabel_jax.losses.fused`: ``[B, L]``, -1 padded, duplicates count once, ids
``>= C`` raise when concrete and are dropped under ``jit``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import chunked_head
from multilabel_jax.losses import streaming_top_k

_F32 = jnp.float32


class _RowConstants(NamedTuple):
  """What pass 3 needs besides the logits; none of it is differentiated."""
  label_ids: jax.Array    # int [B, L]
  keep: jax.Array         # bool [B, L]: valid, first occurrence in the row
  keep_active: jax.Array  # bool [B, L]: keep, in an active row (observed labels)
  active: jax.Array       # bool [B]: the rows taking part (``where``)
  lse: jax.Array          # f32 [B]: softmax row logsumexp (pass 1)
  threshold: jax.Array    # f32 scalar: pseudo-label threshold (pass 2)
  inv_n: jax.Array        # f32 [B]: 1 / #labels, 0 for rows without labels


def _check(x, softmax_kernel, softmax_bias, multilabel_kernel, multilabel_bias, label_ids,
           k, chunk_size, where):
  """Checks the arguments; returns ``(B, C, where)``. Raises ValueError naming one."""
  b, _, c = chunked_head.check_head(x, softmax_kernel, softmax_bias, label_ids, chunk_size,
                                    kernel_name="softmax_kernel", bias_name="softmax_bias")
  _, _, c_m = chunked_head.check_head(x, multilabel_kernel, multilabel_bias, None, chunk_size,
                                      kernel_name="multilabel_kernel", bias_name="multilabel_bias")
  if c_m != c:
    raise ValueError(f"`multilabel_kernel` has {c_m} classes (shape {multilabel_kernel.shape}) "
                     f"but `softmax_kernel` has {c} (shape {softmax_kernel.shape}).")
  if not k > 0:
    raise ValueError(f"`k` must be > 0, got {k}.")
  return b, c, labels_lib.check_where(where, b)


def _prepare(x, softmax_kernel, softmax_bias, label_ids, k, chunk_size, where, b, c):
  """Passes 1-2 and the per-row constants of pass 3 (none of them differentiable)."""
  threshold, lse = streaming_top_k.linear_average_k_threshold(
      x, softmax_kernel, softmax_bias, label_ids, k, chunk_size=chunk_size, where=where)
  active = jnp.ones((b,), bool) if where is None else where
  keep = chunked_head.valid_ids_mask(label_ids, c)
  n = jnp.sum(keep, axis=1)
  inv_n = jnp.where(n > 0, 1.0 / jnp.maximum(n, 1).astype(_F32), 0.0)  # 0: no softmax term.
  return _RowConstants(label_ids, keep, keep & active[:, None], active, lse, threshold, inv_n)


def _chunk_terms(zs, zm, start, consts, weights=None, weight=None):
  """Pass 3 on one chunk of logits ``zs``, ``zm`` (``[B, w]`` f32).

  Returns ``(stats, dz)``: ``stats = (softmax positive logit sum, sum softplus(zm),
  sum of zm over the targets)``, each ``[B]``; with ``weights [B]``, ``dz = (dzs, dzm)``, the
  gradient of ``sum_b weights_b loss_b`` w.r.t. the chunk logits (else None).
  """
  ids, keep, keep_active, active, lse, threshold, inv_n = consts
  cand = streaming_top_k.average_k_candidates(zs, lse, ids, keep_active, active, start)
  mined = (cand >= threshold) & (cand >= 0.0)  # Observed pairs and inactive rows are -1.
  softplus, sig = chunked_head.softplus_and_sigmoid(zm, weights is not None)
  stats = (chunked_head.gather_positives(zs, ids, keep, start), jnp.sum(softplus, 1),
           chunked_head.gather_positives(zm, ids, keep_active, start)
           + jnp.sum(jnp.where(mined, zm, 0.0), 1))
  if weights is None:
    return stats, None
  w_soft = weights * (inv_n > 0)  # Rows without labels have no softmax term.
  dzs = w_soft[:, None] * jnp.exp(zs - lse[:, None])
  dzs = chunked_head.scatter_positives(dzs, ids, keep, start, weights * inv_n)
  w_bce = weights * weight
  dzm = w_bce[:, None] * (sig - mined.astype(_F32))
  return stats, (dzs, chunked_head.scatter_positives(dzm, ids, keep_active, start, w_bce))


def _two_head_pass(chunk_size, x, heads, consts, weights=None, weight=None):
  """Pass 3 over both heads' class chunks (2 GEMMs; 6 with ``weights``: + dX, dW of each).

  Returns ``(stats, grads)``, ``stats`` as in :func:`_chunk_terms` and ``grads = (dx,
  dWs, dbs, dWm, dbm)`` of ``sum_b weights_b loss_b`` (None without ``weights``).
  """
  ws, bs, wm, bm = heads
  b = x.shape[0]
  with_grads = weights is not None
  xs = x.astype(jnp.result_type(x.dtype, ws.dtype))
  xm = x.astype(jnp.result_type(x.dtype, wm.dtype))

  def body(state, start, ksc, bsc):
    stats, grads = state
    width = ksc.shape[1]
    kmc = lax.dynamic_slice_in_dim(wm, start, width, axis=1)
    bmc = lax.dynamic_slice_in_dim(bm, start, width, axis=0)
    zs, zm = chunked_head.logits_chunk(xs, ksc, bsc), chunked_head.logits_chunk(xm, kmc, bmc)
    new, dz = _chunk_terms(zs, zm, start, consts, weights, weight)
    stats = tuple(s + n for s, n in zip(stats, new))
    if with_grads:
      dx, dws, dbs, dwm, dbm = grads
      dx, dws, dbs = chunked_head.accumulate_chunk_grads(xs, ksc, dz[0], start, dx, dws, dbs)
      dx, dwm, dbm = chunked_head.accumulate_chunk_grads(xm, kmc, dz[1], start, dx, dwm, dbm)
      grads = (dx, dws, dbs, dwm, dbm)
    return stats, grads

  grads = ((jnp.zeros(x.shape, _F32),) + tuple(jnp.zeros_like(a) for a in heads)
           if with_grads else ())
  stats, grads = chunked_head.for_each_chunk(ws, bs, chunk_size, body,
                                             ((jnp.zeros((b,), _F32),) * 3, grads),
                                             refs=(x, wm, bm))
  if with_grads:
    grads = (grads[0].astype(x.dtype),) + grads[1:]
  return stats, grads or None


def _row_losses(stats, consts, weight):
  """``(loss [B], bce [B])`` from the pass-3 stats."""
  pos_s, softplus, pos_m = stats
  softmax_term = jnp.where(consts.inv_n > 0, consts.lse - pos_s * consts.inv_n, 0.0)
  bce = softplus - pos_m
  return softmax_term + weight * bce, bce


# ----------------------------------------------------------------------------- per-example

_NO_GRAD = _RowConstants(*(None,) * len(_RowConstants._fields))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rows(chunk_size, x, heads, weight, consts):
  return _rows_fwd(chunk_size, x, heads, weight, consts)[0]


def _rows_fwd(chunk_size, x, heads, weight, consts):
  stats, _ = _two_head_pass(chunk_size, x, heads, consts)
  loss, bce = _row_losses(stats, consts, weight)
  return loss, (x, heads, weight, consts, bce)


def _rows_bwd(chunk_size, res, g):
  x, heads, weight, consts, bce = res
  # The gradient of sum_b g_b loss_b is pass 3 with weights g (recomputes both heads' chunks).
  _, (dx, *dheads) = _two_head_pass(chunk_size, x, heads, consts, g, weight)
  return dx, tuple(dheads), jnp.sum(g * bce), _NO_GRAD


_rows.defvjp(_rows_fwd, _rows_bwd)


def linear_two_head_average_k(x, softmax_kernel, softmax_bias, multilabel_kernel,
                              multilabel_bias, label_ids, *, k: float, weight: float = 1.0,
                              chunk_size: int, where=None) -> jax.Array:
  """Per-example two-head Average-K loss of two linear heads, fused over class chunks.

  Equals ``two_head_average_k(x @ softmax_kernel + softmax_bias, x @ multilabel_kernel +
  multilabel_bias, label_ids, k=k, weight=weight, where=where)`` without a ``[B, C]`` array
  in forward or backward (3 passes, 10 GEMMs; see the module doc). Rows with no labels
  have no softmax term but train the multi-label head on their pseudo-labels.

  Args:
    x: float ``[B, D]`` features (float32 or bfloat16; accumulation is float32).
    softmax_kernel: float ``[D, C]``; softmax_bias: float ``[C]`` (the softmax head).
    multilabel_kernel: float ``[D, C]``; multilabel_bias: float ``[C]``.
    label_ids: int ``[B, L]``, -1 padded; duplicates count once.
    k: target average set size (> 0, may be fractional).
    weight: weight of the multi-label head's BCE.
    chunk_size: classes per chunk (static); ``C`` need not be a multiple of it.
    where: optional bool ``[B]``; False rows give 0 and take no part in pseudo-labelling.

  Returns:
    float32 ``[B]``.

  Example:
    >>> loss = linear_two_head_average_k(x, ws, bs, wm, bm, ids, k=3.0, chunk_size=8192)
  """
  b, c, where = _check(x, softmax_kernel, softmax_bias, multilabel_kernel, multilabel_bias,
                       label_ids, k, chunk_size, where)
  consts = _prepare(x, softmax_kernel, softmax_bias, label_ids, k, chunk_size, where, b, c)
  heads = (softmax_kernel, softmax_bias, multilabel_kernel, multilabel_bias)
  loss = _rows(chunk_size, x, heads, jnp.asarray(weight, _F32), consts)
  return loss if where is None else jnp.where(where, loss, 0.0)


# ----------------------------------------------------------------------------- reduced


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _total(chunk_size, x, heads, weights, weight, consts):
  return _total_fwd(chunk_size, x, heads, weights, weight, consts)[0]


def _total_fwd(chunk_size, x, heads, weights, weight, consts):
  stats, grads = _two_head_pass(chunk_size, x, heads, consts, weights, weight)
  loss, bce = _row_losses(stats, consts, weight)
  return jnp.sum(weights * loss), (grads, loss.astype(weights.dtype), jnp.sum(weights * bce))


def _total_bwd(chunk_size, res, g):
  (dx, *dheads), loss, d_weight = res
  scale = lambda a: (g * a.astype(_F32)).astype(a.dtype)
  return scale(dx), tuple(scale(a) for a in dheads), g * loss, g * d_weight, _NO_GRAD


_total.defvjp(_total_fwd, _total_bwd)


def linear_two_head_average_k_reduced(x, softmax_kernel, softmax_bias, multilabel_kernel,
                                      multilabel_bias, label_ids, *, k: float,
                                      weight: float = 1.0, chunk_size: int, weights=None,
                                      where=None) -> jax.Array:
  """Scalar ``sum_b w_b * linear_two_head_average_k(...)_b``, gradients from the forward.

  The training-loop variant: passes 1-2, then pass 3 computes both heads' gradients chunk
  by chunk (8 GEMMs in all); the backward only scales them by the scalar cotangent. Under
  ``jax.grad`` only (custom_vjp).

  Args:
    x, softmax_kernel, softmax_bias, multilabel_kernel, multilabel_bias, label_ids, k,
      weight, chunk_size: as in :func:`linear_two_head_average_k`.
    weights: optional float ``[B]`` per-example weights (differentiable). Default: the mean
      over the rows selected by ``where``.
    where: optional bool ``[B]``; False rows get weight 0 and take no part in
      pseudo-labelling. (Rows with weight 0 but ``where`` True still do.)

  Returns:
    float32 scalar.

  Example:
    >>> loss, grads = jax.value_and_grad(lambda p: linear_two_head_average_k_reduced(
    ...     x, p["ws"], p["bs"], p["wm"], p["bm"], ids, k=3.0, chunk_size=8192))(p)
  """
  b, c, where = _check(x, softmax_kernel, softmax_bias, multilabel_kernel, multilabel_bias,
                       label_ids, k, chunk_size, where)
  weights = chunked_head.check_weights(weights, where, b)
  consts = _prepare(x, softmax_kernel, softmax_bias, label_ids, k, chunk_size, where, b, c)
  heads = (softmax_kernel, softmax_bias, multilabel_kernel, multilabel_bias)
  return _total(chunk_size, x, heads, weights, jnp.asarray(weight, _F32), consts)
