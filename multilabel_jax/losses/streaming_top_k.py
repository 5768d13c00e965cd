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

import jax.numpy as jnp
from jax import lax

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import chunked_head, fused

_F32 = jnp.float32


def merge_top_k(values_a, ids_a, values_b, ids_b, k: int):
  """Top-k of the union of two candidate sets ``[B, ka]``, ``[B, kb]`` -> ``[B, k]``.

  ``ids_a`` and ``ids_b`` may also be tuples of ``[B, ka]`` / ``[B, kb]`` arrays that travel
  with the values (ids and the scores at them, say); a tuple is returned then. On ties,
  candidates of ``a`` come first (put the lower ids in ``a``).
  """
  values = jnp.concatenate([values_a, values_b], axis=-1)
  top, pos = lax.top_k(values, k)
  if isinstance(ids_a, tuple):
    return top, tuple(jnp.take_along_axis(jnp.concatenate([a, b], axis=-1), pos, axis=-1)
                      for a, b in zip(ids_a, ids_b))
  return top, jnp.take_along_axis(jnp.concatenate([ids_a, ids_b], axis=-1), pos, axis=-1)


def check_k(k, num_classes):
  if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= num_classes:
    raise ValueError(f"`k` must be a Python int in [1, {num_classes}] (num_classes), got {k!r}.")


def chunked_top_k(x, kernel, bias, k: int, chunk_size: int, id_offset=0):
  """Unchecked core of :func:`linear_top_k`; ids are shifted by ``id_offset``."""
  b = x.shape[0]

  def body(carry, start, kc, bc):
    vals, ids = carry
    z = chunked_head.logits_chunk(x, kc, bc)
    kk = min(k, z.shape[1])
    cv, ci = lax.top_k(z, kk)
    return merge_top_k(vals, ids, cv, (ci + start + id_offset).astype(jnp.int32), k)

  init = (jnp.full((b, k), -jnp.inf, _F32), jnp.full((b, k), -1, jnp.int32))
  return chunked_head.for_each_chunk(kernel, bias, chunk_size, body, init, refs=(x,))


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
  _, _, c = chunked_head.check_head(x, kernel, bias, None, chunk_size)
  check_k(k, c)
  return chunked_top_k(x, kernel, bias, k, chunk_size)


def average_k_candidates(z, lse, label_ids, keep, active, start):
  """``[B, w]`` pseudo-label candidates of one chunk of softmax logits ``z [B, w]``.

  The probability ``exp(z - lse)`` of each (active row, non-observed class) pair, and -1
  for observed ids (``keep`` of ``label_ids``, inside ``[start, start + w)``) and for rows
  with ``active`` False. A pair is a pseudo-label iff its candidate is ``>= threshold`` and
  ``>= 0``. The threshold and the loss use this one function, so they agree bit for bit.
  """
  b, w = z.shape
  local = label_ids - start
  inside = keep & (local >= 0) & (local < w)
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], label_ids.shape)
  observed = jnp.zeros((b, w), bool).at[rows, jnp.where(inside, local, w)].set(True, mode="drop")
  return jnp.where(observed | ~active[:, None], -1.0, jnp.exp(z - lse[:, None]))


def linear_average_k_threshold(x, kernel, bias, label_ids, k: float, *, chunk_size: int,
                               where=None):
  """The two-head loss's batch-global pseudo-label threshold, streamed over class chunks.

  Same rule as ``two_head.average_k_pseudo_labels`` on ``softmax(x @ kernel + bias)``,
  without the ``[B, C]`` probabilities: with ``n`` active rows and ``m = round(k n) -
  #observed``, the threshold is the m-th largest softmax probability among the
  (active row, non-observed class) pairs. Two passes: the row logsumexps (fused, 1 GEMM),
  then each chunk's probabilities ``exp(z - lse)`` are flattened and merged into a running
  top-``ceil(k B)`` (1 GEMM). A pair is a pseudo-label iff it is not observed, its row is
  active and its probability is ``>= threshold`` (ties included), which the multi-label
  head's chunked loss can evaluate per chunk from the same logits. No gradient.

  Args:
    x: float ``[B, D]``; kernel: float ``[D, C]``; bias: float ``[C]`` (the softmax head).
    label_ids: int ``[B, L]``, -1 padded.
    k: target average set size (> 0, may be fractional).
    chunk_size: classes per chunk (static).
    where: optional bool ``[B]`` active rows.

  Returns:
    ``(threshold, lse)``: float32 scalar (``inf`` when no pseudo-label is needed) and the
    float32 ``[B]`` row logsumexps (``probs = exp(z - lse[:, None])``).

  Example:
    >>> t, lse = linear_average_k_threshold(x, kernel, bias, ids, 3.0, chunk_size=8192)
  """
  b, _, c = chunked_head.check_head(x, kernel, bias, label_ids, chunk_size)
  if not k > 0:
    raise ValueError(f"`k` must be > 0, got {k}.")
  where = jnp.ones((b,), bool) if where is None else labels_lib.check_where(where, b)
  x, kernel, bias = (lax.stop_gradient(a) for a in (x, kernel, bias))
  keep = chunked_head.valid_ids_mask(label_ids, c) & where[:, None]
  max_pseudo = min(int(-(-k * b // 1)), b * c)
  lse, _ = fused.fused_stats("softmax", chunk_size, x, kernel, bias, label_ids, keep)

  def body(top, start, kc, bc):
    z = chunked_head.logits_chunk(x, kc, bc)
    cand = average_k_candidates(z, lse, label_ids, keep, where, start)
    cand_top = lax.top_k(cand.reshape(-1), min(max_pseudo, b * z.shape[1]))[0]
    return lax.top_k(jnp.concatenate([top, cand_top]), max_pseudo)[0]

  if max_pseudo == 0:
    return jnp.asarray(jnp.inf, _F32), lse
  top = chunked_head.for_each_chunk(kernel, bias, chunk_size, body,
                                    jnp.full((max_pseudo,), -1.0, _F32), refs=(x,))
  target = jnp.round(k * jnp.sum(where)).astype(jnp.int32)
  m = jnp.clip(target - jnp.sum(keep), 0, max_pseudo)
  return jnp.where(m > 0, top[jnp.maximum(m - 1, 0)], jnp.inf), lse
