"""Streaming top-k of a linear head's logits over class chunks (no ``[B, C]`` array).

Decoding a 1M-class head with ``lax.top_k(x @ kernel + bias, k)`` materialises the full
logits. :func:`linear_top_k` scans class chunks instead, keeping a running ``[B, k]``
top-k: each chunk's own top-k is merged with the running one by a top-k of the
concatenated ``[B, 2k]`` candidates. Ties resolve to the lower class id, as in
``lax.top_k`` on the full logits (running candidates precede the chunk's, and the chunk's
ids are larger). Peak memory ``O(B * chunk_size)``.

The sharded version (per-shard top-k, then a merge of the all-gathered ``[n, B, k]``
candidates) is in :mod:`multilabel_jax.losses.sharded_head`.

Reference: the usual "merge partial top-k" reduction, e.g. FAISS / ScaNN brute-force
search over shards of a database.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from multilabel_jax.losses import fused

_F32 = jnp.float32


def merge_top_k(values_a, ids_a, values_b, ids_b, k: int):
  """Top-k of the union of two candidate sets ``[B, ka]``, ``[B, kb]`` -> ``[B, k]``.

  On ties, candidates of ``a`` come first (put the lower ids in ``a``).
  """
  values = jnp.concatenate([values_a, values_b], axis=-1)
  ids = jnp.concatenate([ids_a, ids_b], axis=-1)
  top, pos = lax.top_k(values, k)
  return top, jnp.take_along_axis(ids, pos, axis=-1)


def check_k(k, num_classes):
  if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= num_classes:
    raise ValueError(f"`k` must be a Python int in [1, {num_classes}] (num_classes), got {k!r}.")


def chunked_top_k(x, kernel, bias, k: int, chunk_size: int, id_offset=0):
  """Unchecked core of :func:`linear_top_k`; ids are shifted by ``id_offset``."""
  b = x.shape[0]

  def body(carry, start, kc, bc):
    vals, ids = carry
    z = fused.logits_chunk(x, kc, bc)
    kk = min(k, z.shape[1])
    cv, ci = lax.top_k(z, kk)
    return merge_top_k(vals, ids, cv, (ci + start + id_offset).astype(jnp.int32), k)

  init = (jnp.full((b, k), -jnp.inf, _F32), jnp.full((b, k), -1, jnp.int32))
  return fused.for_each_chunk(kernel, bias, chunk_size, body, init, refs=(x,))


def linear_top_k(x, kernel, bias, k: int, *, chunk_size: int):
  """Top-k classes of ``x @ kernel + bias`` per row, computed over class chunks.

  Args:
    x: float ``[B, D]``; kernel: float ``[D, C]``; bias: float ``[C]``.
    k: static number of classes to return, ``1 <= k <= C``.
    chunk_size: classes per chunk (static); ``C`` need not be a multiple of it.

  Returns:
    ``(values, ids)``: float32 ``[B, k]`` logits in decreasing order and int32 ``[B, k]``
    class ids, equal to ``lax.top_k(x @ kernel + bias, k)`` (ties: lower id first).

  Example:
    >>> scores, ids = linear_top_k(x, kernel, bias, 5, chunk_size=8192)
  """
  _, _, c = fused.check_head(x, kernel, bias, None, chunk_size)
  check_k(k, c)
  return chunked_top_k(x, kernel, bias, k, chunk_size)
