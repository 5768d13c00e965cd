"""The chunk loop of a linear head ``x @ kernel + bias`` over class chunks.

Shared by the fused losses (:mod:`fused`, :mod:`fused_two_head`), the streaming top-k and
average-K threshold (:mod:`streaming_top_k`) and the class-sharded head
(:mod:`sharded_head`): argument checks, the per-chunk logits, the loop over full chunks
plus a last partial one, gathering/scattering at label ids inside a chunk, and the
chunk-by-chunk head gradients. None of these builds a ``[B, C]`` array.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from multilabel_jax import labels as labels_lib

_F32 = jnp.float32


# ----------------------------------------------------------------------------- checks


def check_head(x, kernel, bias, label_ids, chunk_size, *, kernel_name="kernel",
               bias_name="bias"):
  """Checks a fused head's arguments; returns ``(B, D, C)``. Raises ValueError.

  ``kernel_name`` / ``bias_name``: the argument names used in the messages.
  """
  for a, name in ((x, "x"), (kernel, kernel_name), (bias, bias_name)):
    labels_lib.check_float(a, name)
  labels_lib.check_rank(x, 2, "x")
  labels_lib.check_rank(kernel, 2, kernel_name)
  labels_lib.check_rank(bias, 1, bias_name)
  b, d = x.shape
  d_k, c = kernel.shape
  if d != d_k:
    raise ValueError(f"`{kernel_name}` has {d_k} input features (shape {kernel.shape}) but "
                     f"`x` has {d} (shape {x.shape}).")
  if bias.shape != (c,):
    raise ValueError(f"`{bias_name}` must have shape ({c},) to match `{kernel_name}` "
                     f"{kernel.shape}, got {bias.shape}.")
  if label_ids is not None:
    label_ids = jnp.asarray(label_ids)
    labels_lib.check_rank(label_ids, 2, "label_ids")
    if not labels_lib.is_ids(label_ids):
      raise ValueError(f"`label_ids` must be integer class ids [B, L] (-1 padded), got dtype "
                       f"{label_ids.dtype}. Use labels.dense_to_ids for dense labels.")
    if label_ids.shape[0] != b:
      raise ValueError(f"`label_ids` has batch size {label_ids.shape[0]} (shape "
                       f"{label_ids.shape}) but `x` has batch size {b} (shape {x.shape}).")
    _check_id_values(label_ids, c)
  if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
    raise ValueError(f"`chunk_size` must be a positive Python int, got {chunk_size!r}.")
  return b, d, c


def _check_id_values(label_ids, num_classes):
  # Concrete ids only (numpy, so closed-over constants under jit are checked too).
  if isinstance(label_ids, jax.core.Tracer) or not label_ids.size:
    return
  ids = np.asarray(label_ids)
  lo, hi = int(ids.min()), int(ids.max())
  if lo < labels_lib.PAD_ID:
    raise ValueError(f"`label_ids` contains {lo}; ids must be >= 0, or -1 for padding.")
  if hi >= num_classes:
    raise ValueError(f"`label_ids` contains id {hi} but the kernel has {num_classes} classes "
                     "(under jit such ids are dropped like padding).")


def valid_ids_mask(label_ids, num_classes):
  """``[B, L]`` bool: id is in ``[0, num_classes)`` and not a repeat within its row."""
  return labels_lib.unique_mask(label_ids) & (label_ids < num_classes)


def check_label_smoothing(ls):
  if not isinstance(ls, jax.core.Tracer) and not 0.0 <= float(ls) < 1.0:
    raise ValueError(f"`label_smoothing` must be in [0, 1), got {ls}.")


def check_weights(weights, where, batch_size):
  """Per-example weights ``[B]`` (f32); default: mean over the rows selected by ``where``."""
  where = labels_lib.check_where(where, batch_size)
  if weights is None:
    w = jnp.ones((batch_size,), _F32) if where is None else where.astype(_F32)
    return w / jnp.maximum(jnp.sum(w), 1.0)
  weights = jnp.asarray(weights)
  labels_lib.check_float(weights, "weights")
  if weights.shape != (batch_size,):
    raise ValueError(f"`weights` must have shape ({batch_size},), got {weights.shape}.")
  weights = weights.astype(_F32)
  return weights if where is None else jnp.where(where, weights, 0.0)


# ----------------------------------------------------------------------------- chunk engine


def logits_chunk(x, kc, bc):
  """``x @ kc + bc`` in float32 (bf16 inputs accumulate in f32)."""
  dt = jnp.result_type(x.dtype, kc.dtype)
  z = lax.dot_general(x.astype(dt), kc.astype(dt), (((1,), (0,)), ((), ())),
                      preferred_element_type=_F32)
  return z + bc.astype(_F32)


def vma_axes(a):
  aval = jax.typeof(a)
  mat = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
  axes = mat.varying if mat is not None else getattr(aval, "vma", ())
  return frozenset(axes or ())


def matchvma_axes(tree, *refs):
  """Inside ``shard_map``: marks ``tree``'s leaves as varying over the refs' mesh axes."""
  axes = frozenset().union(*(vma_axes(r) for r in refs))

  def cast(a):
    missing = tuple(sorted(axes - vma_axes(a)))
    return lax.pcast(a, missing, to="varying") if missing else a

  return jax.tree.map(cast, tree) if axes else tree


def for_each_chunk(kernel, bias, chunk_size, body, carry, refs=()):
  """Runs ``carry = body(carry, start, kernel_chunk, bias_chunk)`` over class chunks.

  Full chunks run in a ``fori_loop`` on dynamic slices (no copy of the kernel); a last
  partial chunk (``C % chunk_size`` classes) runs once more with its own static width,
  so no class is padded or computed twice.
  """
  c = kernel.shape[1]
  cs = min(chunk_size, c)
  n_full, rem = divmod(c, cs)
  carry = matchvma_axes(carry, kernel, bias, *refs)

  def step(i, carry):
    start = i * cs
    kc = lax.dynamic_slice_in_dim(kernel, start, cs, axis=1)
    bc = lax.dynamic_slice_in_dim(bias, start, cs, axis=0)
    return body(carry, start, kc, bc)

  carry = lax.fori_loop(0, n_full, step, carry)
  if rem:
    start = n_full * cs
    carry = body(carry, start, kernel[:, start:], bias[start:])
  return carry


def _in_chunk(label_ids, keep, start, width):
  local = label_ids - start
  return local, keep & (local >= 0) & (local < width)


def gather_positives(z, label_ids, keep, start):
  """``[B]`` sum of the chunk logits ``z [B, w]`` at the kept ids in ``[start, start+w)``."""
  width = z.shape[1]
  local, inside = _in_chunk(label_ids, keep, start, width)
  vals = jnp.take_along_axis(z, jnp.clip(local, 0, width - 1), axis=1)
  return jnp.sum(jnp.where(inside, vals, 0.0), axis=1)


def scatter_positives(dz, label_ids, keep, start, coef):
  """``dz[b, id - start] -= coef[b]`` for the kept ids of row b inside the chunk."""
  width = dz.shape[1]
  local, inside = _in_chunk(label_ids, keep, start, width)
  rows = jnp.broadcast_to(jnp.arange(dz.shape[0])[:, None], label_ids.shape)
  cols = jnp.where(inside, local, width)  # Out of bounds: dropped.
  vals = jnp.broadcast_to(-coef[:, None], label_ids.shape).astype(dz.dtype)
  return dz.at[rows, cols].add(vals, mode="drop")


def grad_pass(x, kernel, bias, chunk_size, dz_fn, carry):
  """One pass computing logits, ``dz`` and the head gradients chunk by chunk (3 GEMMs).

  Args:
    dz_fn: ``(carry, z [B, w] f32, start) -> (carry, dz [B, w] f32)``.

  Returns:
    ``(carry, dx, dkernel, dbias)`` with the dtypes of ``x``, ``kernel``, ``bias``.
  """
  xc = x.astype(jnp.result_type(x.dtype, kernel.dtype))

  def body(state, start, kc, bc):
    carry, dx, dk, db = state
    carry, dz = dz_fn(carry, logits_chunk(xc, kc, bc), start)
    return (carry,) + accumulate_chunk_grads(xc, kc, dz, start, dx, dk, db)

  init = (carry, jnp.zeros(x.shape, _F32), jnp.zeros_like(kernel), jnp.zeros_like(bias))
  carry, dx, dk, db = for_each_chunk(kernel, bias, chunk_size, body, init, refs=(x,))
  return carry, dx.astype(x.dtype), dk, db


def accumulate_chunk_grads(xc, kc, dz, start, dx, dk, db):
  """Adds one chunk's ``dz [B, w]`` to the head gradients (2 GEMMs).

  ``dx [B, D]`` f32 += ``dz @ kc.T``; ``dk[:, start:start+w] = xc.T @ dz``;
  ``db[start:start+w] = sum_b dz``. ``xc`` is ``x`` in the GEMM dtype. Returns
  ``(dx, dk, db)``.
  """
  dt = xc.dtype
  dzc = dz.astype(dt)
  dx = dx + lax.dot_general(dzc, kc.astype(dt), (((1,), (1,)), ((), ())),
                            preferred_element_type=_F32)
  dkc = lax.dot_general(xc, dzc, (((0,), (0,)), ((), ())), preferred_element_type=_F32)
  dk = lax.dynamic_update_slice_in_dim(dk, dkc.astype(dk.dtype), start, axis=1)
  db = lax.dynamic_update_slice_in_dim(db, jnp.sum(dz, 0).astype(db.dtype), start, axis=0)
  return dx, dk, db


def stats_pass(x, kernel, bias, chunk_size, fn, carry):
  """One forward pass (1 GEMM): ``carry = fn(carry, z [B, w] f32, start)`` per chunk."""
  return for_each_chunk(
      kernel, bias, chunk_size, lambda c, start, kc, bc: fn(c, logits_chunk(x, kc, bc), start),
      carry, refs=(x,))


def softplus_and_sigmoid(z, need_sigmoid=True):
  """``softplus(z)`` and ``sigmoid(z)`` from one ``exp(-|z|)`` (stable for any z)."""
  e = jnp.exp(-jnp.abs(z))
  sp = jnp.maximum(z, 0.0) + jnp.log1p(e)
  if not need_sigmoid:
    return sp, None
  r = 1.0 / (1.0 + e)
  return sp, jnp.where(z >= 0, r, e * r)


# ------------------------------------------------------- per-chunk statistics of the losses


def bce_stats_fn(label_ids, keep):
  """Running (sum softplus(z), sum z, sum of positive z), each ``[B]``."""
  def fn(carry, z, start, sp_z=None):
    sp, zs, pos = carry
    sp_z = softplus_and_sigmoid(z, False)[0] if sp_z is None else sp_z
    return (sp + jnp.sum(sp_z, 1), zs + jnp.sum(z, 1),
            pos + gather_positives(z, label_ids, keep, start))
  return fn


def softmax_stats_fn(label_ids, keep):
  """Online (max, sum exp(z - max), sum of positive z), each ``[B]``."""
  def fn(carry, z, start):
    m, s, pos = carry
    m_new = jnp.maximum(m, jnp.max(z, 1))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(z - m_new[:, None]), 1)
    return m_new, s, pos + gather_positives(z, label_ids, keep, start)
  return fn


def bce_stats_init(b):
  """Initial carry of :func:`bce_stats_fn`."""
  return (jnp.zeros((b,), _F32),) * 3


def softmax_stats_init(b):
  """Initial carry of :func:`softmax_stats_fn`."""
  return jnp.full((b,), -jnp.inf, _F32), jnp.zeros((b,), _F32), jnp.zeros((b,), _F32)
