"""Class-sharded fused heads: the kernel is split along C over a mesh axis, never gathered.

Each device holds ``kernel[:, shard]`` ``[D, C/n]`` and ``bias[shard]``; ``x`` and the ids
are replicated along the class axis (and may be sharded along an optional batch axis).
Inside ``jax.shard_map`` every device runs the chunked loss of :mod:`fused` on its
classes and the per-row partials are combined with collectives on ``[B]`` vectors:

* sigmoid BCE: ``psum`` of the softplus sums, logit sums and positive logits;
* softmax: ``pmax`` of the shard logsumexps, ``psum`` of the rescaled sum-exps (giving the
  global logsumexp) and of the positive logits;
* top-k: per-shard top-k, ``all_gather`` of the ``[B, k]`` candidates, one merge.

Gradients: ``dkernel``/``dbias`` stay sharded along classes like the kernel; ``dx`` is
the ``psum`` of the per-shard partials (the transpose of replicating ``x``). Traffic per
step is ``O(B)`` floats for the losses (plus ``B x D`` for dx), independent of C.

``C`` must be divisible by the size of the class axis (pad the head otherwise).

Reference: Megatron-LM's vocabulary-parallel cross entropy (Shoeybi et al. 2019); big_vision
/ "Scaling Vision Transformers" (Zhai et al. 2022) class-sharded heads.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import chunked_head, fused
from multilabel_jax.losses import streaming_top_k

_F32 = jnp.float32


def _setup(x, kernel, bias, label_ids, chunk_size, mesh, axis_name, batch_axis):
  b, _, c = chunked_head.check_head(x, kernel, bias, label_ids, chunk_size)
  if axis_name not in mesh.shape:
    raise ValueError(f"`axis_name` {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}.")
  if batch_axis is not None and batch_axis not in mesh.shape:
    raise ValueError(f"`batch_axis` {batch_axis!r} is not an axis of the mesh "
                     f"{dict(mesh.shape)}.")
  n = mesh.shape[axis_name]
  if c % n:
    raise ValueError(f"`kernel` has {c} classes, not divisible by the {n} shards of mesh axis "
                     f"{axis_name!r}; pad the head to a multiple of {n}.")
  return b, c


def _varying(tree, *axes):
  """Marks inputs as varying over ``axes`` (mesh axes; None skipped).

  Replicated inputs used by per-shard work: the transpose of the cast is the psum of the
  per-shard partial gradients (dx over classes; dkernel, dbias over the batch axis).
  """
  axes = frozenset(a for a in axes if a is not None)

  def cast(a):
    missing = tuple(sorted(axes - chunked_head.vma_axes(a)))
    return lax.pcast(a, missing, to="varying") if missing else a

  return jax.tree.map(cast, tree)


def _offset(kernel, axis_name):
  return lax.axis_index(axis_name) * kernel.shape[1]


def _to_specs(args, specs, mesh):
  # Lays the inputs out as shard_map expects (a no-op when they already are, e.g. a kernel
  # kept sharded P(None, axis_name) by the train state).
  # Explicit mesh axes need jax.reshard; Auto axes (GSPMD, the train loop's mesh) take a
  # sharding constraint.
  explicit = all(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
  move = jax.reshard if explicit else jax.lax.with_sharding_constraint
  return tuple(move(a, NamedSharding(mesh, s)) for a, s in zip(args, specs))


def _shard_map(fn, mesh, axis_name, batch_axis, num_row_args, num_out, check_vma=True):
  row = P(batch_axis)
  in_specs = (P(batch_axis, None), P(None, axis_name), P(axis_name)) + (row,) * num_row_args
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=(row,) * num_out,
                         check_vma=check_vma)
  return lambda *args: mapped(*_to_specs(args, in_specs, mesh))


def sharded_linear_sigmoid_bce(x, kernel, bias, label_ids, *, mesh, chunk_size: int,
                               axis_name: str = "classes", batch_axis=None,
                               label_smoothing: float = 0.0, where=None) -> jax.Array:
  """:func:`fused.linear_sigmoid_bce` with the kernel sharded along ``axis_name``.

  Args:
    x: float ``[B, D]``; kernel: float ``[D, C]`` (ideally already sharded
      ``P(None, axis_name)``); bias: float ``[C]``; label_ids: int ``[B, L]``.
    mesh: a ``jax.sharding.Mesh`` with an axis ``axis_name``.
    chunk_size: classes per chunk within a shard.
    batch_axis: optional mesh axis along which ``x``, the ids and the output are sharded.
    label_smoothing, where: as in :func:`fused.linear_sigmoid_bce`.

  Returns:
    float32 ``[B]``, equal to the single-device result.

  Example:
    >>> mesh = jax.make_mesh((8,), ("classes",))
    >>> loss = sharded_linear_sigmoid_bce(x, kernel, bias, ids, mesh=mesh, chunk_size=8192)
  """
  b, c = _setup(x, kernel, bias, label_ids, chunk_size, mesh, axis_name, batch_axis)
  chunked_head.check_label_smoothing(label_smoothing)
  where = labels_lib.check_where(where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)

  def local(x, kernel, bias, ids, keep):
    x, kernel, bias = _varying((x, kernel, bias), axis_name, batch_axis)
    stats = fused.fused_stats("bce", chunk_size, x, kernel, bias, ids - _offset(kernel, axis_name),
                              keep)
    return lax.psum(stats, axis_name)

  sp, zs, pos = _shard_map(local, mesh, axis_name, batch_axis, 2, 3)(x, kernel, bias,
                                                                     label_ids, keep)
  loss = sp - (0.5 * label_smoothing) * zs - (1.0 - label_smoothing) * pos
  return loss if where is None else jnp.where(where, loss, 0.0)


def _global_lse(lse_local, axis_name):
  m = lax.pmax(lax.stop_gradient(lse_local), axis_name)
  return m + jnp.log(lax.psum(jnp.exp(lse_local - m), axis_name))


def sharded_linear_softmax_xent(x, kernel, bias, label_ids, *, mesh, chunk_size: int,
                                axis_name: str = "classes", batch_axis=None,
                                where=None) -> jax.Array:
  """:func:`fused.linear_softmax_xent` with the kernel sharded along ``axis_name``.

  The global logsumexp is ``M + log(psum(exp(lse_shard - M)))`` with ``M = pmax(lse_shard)``.
  Arguments as :func:`sharded_linear_sigmoid_bce`. Returns float32 ``[B]``.
  """
  b, c = _setup(x, kernel, bias, label_ids, chunk_size, mesh, axis_name, batch_axis)
  where = labels_lib.check_where(where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)

  def local(x, kernel, bias, ids, keep):
    x, kernel, bias = _varying((x, kernel, bias), axis_name, batch_axis)
    lse, pos = fused.fused_stats("softmax", chunk_size, x, kernel, bias,
                                 ids - _offset(kernel, axis_name), keep)
    return _global_lse(lse, axis_name), lax.psum(pos, axis_name)

  lse, pos = _shard_map(local, mesh, axis_name, batch_axis, 2, 2)(x, kernel, bias, label_ids,
                                                                  keep)
  k = jnp.sum(keep, axis=1)
  valid = k > 0 if where is None else (k > 0) & where
  return jnp.where(valid, lse - pos / jnp.maximum(k, 1).astype(_F32), 0.0)


# ----------------------------------------------------------------------------- reduced


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _softmax_reduced_local(axis_name, chunk_size, x, kernel, bias, weights, ids, keep):
  return _softmax_reduced_local_fwd(axis_name, chunk_size, x, kernel, bias, weights, ids,
                                    keep)[0]


def _softmax_reduced_local_fwd(axis_name, chunk_size, x, kernel, bias, weights, ids, keep):
  # Pass 1: shard logsumexp -> global logsumexp. Pass 2: local logits, dX partial, dW shard.
  b = x.shape[0]
  stats = chunked_head.softmax_stats_fn(ids, keep)
  m, s, pos = chunked_head.stats_pass(x, kernel, bias, chunk_size, stats,
                                      chunked_head.softmax_stats_init(b))
  lse = _global_lse(m + jnp.log(s), axis_name)
  pos = lax.psum(pos, axis_name)
  k = jnp.sum(keep, axis=1)
  w = jnp.where(k > 0, weights, 0.0)
  coef = w / jnp.maximum(k, 1).astype(_F32)

  def dz_fn(carry, z, start):
    dz = w[:, None] * jnp.exp(z - lse[:, None])
    return carry, chunked_head.scatter_positives(dz, ids, keep, start, coef)

  _, dx, dk, db = chunked_head.grad_pass(x, kernel, bias, chunk_size, dz_fn, ())
  loss = jnp.where(k > 0, lse - pos / jnp.maximum(k, 1).astype(_F32), 0.0)
  # Every shard knows the full total; it returns a 1/n share so that the caller's psum
  # gives the total once. The gradients are each shard's own (dkernel, dbias shards; dx and
  # dweights partials that the transpose of the replication sums).
  n = lax.psum(1, axis_name)
  return jnp.sum(weights * loss) / n, (dx, dk, db, loss / n)


def _softmax_reduced_local_bwd(axis_name, chunk_size, res, g):
  del axis_name, chunk_size
  dx, dk, db, loss = res
  scale = lambda a: (g * a.astype(_F32)).astype(a.dtype)
  return scale(dx), scale(dk), scale(db), g * loss, None, None


_softmax_reduced_local.defvjp(_softmax_reduced_local_fwd, _softmax_reduced_local_bwd)


def _reduced(kind, x, kernel, bias, label_ids, weights, where, label_smoothing, *, mesh,
             chunk_size, axis_name, batch_axis):
  b, c = _setup(x, kernel, bias, label_ids, chunk_size, mesh, axis_name, batch_axis)
  weights = chunked_head.check_weights(weights, where, b)
  keep = chunked_head.valid_ids_mask(label_ids, c)
  ls = jnp.asarray(label_smoothing, _F32)

  def local(x, kernel, bias, ids, keep, weights):
    x, kernel, bias = _varying((x, kernel, bias), axis_name, batch_axis)
    ids = ids - _offset(kernel, axis_name)
    if kind == "bce":
      # The BCE separates over classes: per-shard partial sums, one psum.
      part = fused.reduced_loss("bce", chunk_size, x, kernel, bias,
                            _varying(weights, axis_name, batch_axis), ids, keep, ls)
      total = lax.psum(part, axis_name)
    else:
      part = _softmax_reduced_local(axis_name, chunk_size, x, kernel, bias,
                                    _varying(weights, axis_name, batch_axis), ids, keep)
      total = lax.psum(part, axis_name)
    if batch_axis is not None:
      total = lax.psum(total, batch_axis)
    return total

  in_specs = (P(batch_axis, None), P(None, axis_name), P(axis_name)) + (P(batch_axis),) * 3
  fn = jax.shard_map(local, mesh=mesh, out_specs=P(), in_specs=in_specs)
  return fn(*_to_specs((x, kernel, bias, label_ids, keep, weights), in_specs, mesh))


def sharded_linear_sigmoid_bce_reduced(x, kernel, bias, label_ids, *, mesh, chunk_size: int,
                                       axis_name: str = "classes", batch_axis=None,
                                       weights=None, label_smoothing: float = 0.0,
                                       where=None) -> jax.Array:
  """:func:`fused.linear_sigmoid_bce_reduced` (3 GEMMs) with a class-sharded kernel."""
  chunked_head.check_label_smoothing(label_smoothing)
  return _reduced("bce", x, kernel, bias, label_ids, weights, where, label_smoothing,
                  mesh=mesh, chunk_size=chunk_size, axis_name=axis_name, batch_axis=batch_axis)


def sharded_linear_softmax_xent_reduced(x, kernel, bias, label_ids, *, mesh, chunk_size: int,
                                        axis_name: str = "classes", batch_axis=None,
                                        weights=None, where=None) -> jax.Array:
  """:func:`fused.linear_softmax_xent_reduced` with a class-sharded kernel."""
  return _reduced("softmax", x, kernel, bias, label_ids, weights, where, 0.0,
                  mesh=mesh, chunk_size=chunk_size, axis_name=axis_name, batch_axis=batch_axis)


# ----------------------------------------------------------------------------- top-k


def sharded_linear_top_k(x, kernel, bias, k: int, *, mesh, chunk_size: int,
                         axis_name: str = "classes", batch_axis=None):
  """:func:`streaming_top_k.linear_top_k` with a class-sharded kernel.

  Each shard computes the top-``min(k, C/n)`` of its classes (streaming over chunks); the
  ``[B, k]`` candidates are all-gathered along ``axis_name`` and merged. Returns
  ``(values [B, k] f32, ids [B, k] int32)`` with global class ids.
  """
  _, c = _setup(x, kernel, bias, None, chunk_size, mesh, axis_name, batch_axis)
  streaming_top_k.check_k(k, c)

  def local(x, kernel, bias):
    x, kernel, bias = _varying((x, kernel, bias), axis_name, batch_axis)
    kk = min(k, kernel.shape[1])
    vals, ids = streaming_top_k.chunked_top_k(x, kernel, bias, kk, chunk_size,
                                              id_offset=_offset(kernel, axis_name))
    vals = lax.all_gather(vals, axis_name, axis=1, tiled=True)  # [B, n * kk], shard order.
    ids = lax.all_gather(ids, axis_name, axis=1, tiled=True)
    top, pos = lax.top_k(vals, k)
    return top, jnp.take_along_axis(ids, pos, axis=-1)

  # all_gather + identical merge: replicated, which the vma check cannot infer (no grads).
  return _shard_map(local, mesh, axis_name, batch_axis, 0, 2, check_vma=False)(x, kernel, bias)
