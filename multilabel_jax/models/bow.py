"""Bag-of-words text encoder: an embedding bag over padded tokens, then an MLP.

Input: ``token_ids`` int ``[B, T]`` and ``token_weights`` float ``[B, T]`` (e.g. counts or
tf-idf). A token counts only if ``0 <= id < vocab_size`` and ``id != pad_id``; padding
(``-1`` always, or ``pad_id`` such as 0) and out-of-range ids get weight 0 and never index
the table, so they cannot change the output. The bag is a gather ``[B, T, E]`` and a
weighted reduction over ``T``: no dense ``[B, V]`` array is created, forward or backward
(the gradient is a scatter-add into the ``[V, E]`` table).

Reference: Joulin et al., "Bag of Tricks for Efficient Text Classification" (fastText),
2016; combiners as in TF's ``embedding_lookup_sparse``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multilabel_jax.models import mlp

POOLINGS = ("sum", "mean", "sqrtn")


def embedding_bag(table: jax.Array, ids: jax.Array, weights: Optional[jax.Array] = None, *,
                  pooling: str = "mean", pad_id: Optional[int] = None,
                  dtype: Any = None) -> jax.Array:
  """Weighted pooling of embedding rows.

  Args:
    table: ``[V, E]`` embeddings.
    ids: int ``[B, T]`` token ids; negative, ``>= V`` and ``pad_id`` entries are padding.
    weights: float ``[B, T]``; None means 1 for every real token.
    pooling: "sum" (``sum_t w_t e_t``), "mean" (divided by ``sum_t w_t``) or "sqrtn"
      (divided by ``sqrt(sum_t w_t^2)``). A row without tokens (or zero total weight)
      gives zeros.
    pad_id: an extra padding id (e.g. 0), or None.
    dtype: compute/output dtype (the gathered rows are cast; the table is not copied).

  Returns:
    ``[B, E]`` in ``dtype`` (default ``table.dtype``); accumulation is in float32.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"Unknown pooling {pooling!r}; one of {POOLINGS}.")
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"`token_ids` must be integer, got {ids.dtype}.")
  if ids.ndim != 2:
    raise ValueError(f"`token_ids` must be [B, T], got shape {ids.shape}.")
  if weights is None:
    weights = jnp.ones(ids.shape, table.dtype)
  weights = jnp.asarray(weights)
  if weights.shape != ids.shape:
    raise ValueError(f"`token_weights` shape {weights.shape} != `token_ids` shape {ids.shape}.")
  valid = (ids >= 0) & (ids < table.shape[0])
  if pad_id is not None:
    valid &= ids != pad_id
  safe_ids = jnp.where(valid, ids, 0)
  w = jnp.where(valid, weights, 0).astype(jnp.float32)
  # Gather [B, T, E]; the masked weight zeroes padding rows (row 0 is finite, never NaN).
  dtype = dtype or table.dtype
  emb = jnp.take(table, safe_ids, axis=0, mode="clip").astype(dtype)
  pooled = jnp.einsum("bt,bte->be", w.astype(dtype), emb,
                      preferred_element_type=jnp.float32)
  if pooling == "mean":
    norm = jnp.sum(w, axis=1, keepdims=True)
  elif pooling == "sqrtn":
    norm = jnp.sqrt(jnp.sum(w * w, axis=1, keepdims=True))
  else:
    norm = None
  if norm is not None:
    pooled = pooled / jnp.where(norm > 0, norm, 1.0)
  return pooled.astype(dtype)


class BowEncoder(nn.Module):
  """Embedding bag + MLP: ``{"token_ids" [B, T], "token_weights" [B, T]}`` -> ``[B, D]``.

  ``D`` is ``widths[-1]``, or ``embed_dim`` when ``widths=()``.

  Attributes:
    vocab_size: V (a 100k vocabulary is fine: nothing of size ``[B, V]`` is built).
    embed_dim: E.
    pooling: "mean", "sum" or "sqrtn" (see :func:`embedding_bag`).
    pad_id: extra padding id (e.g. 0) besides negative ids; None if id 0 is a real word.
    widths, activation, dropout, layer_norm: the MLP after the bag (``mlp.MlpBlock``).
    ids_key, weights_key: batch keys. A missing weights key means weight 1 per token.
    dtype: compute dtype; the table is stored in ``param_dtype``.
  """
  vocab_size: int
  embed_dim: int = 128
  pooling: str = "mean"
  pad_id: Optional[int] = None
  widths: Sequence[int] = (512,)
  activation: str = "relu"
  dropout: float = 0.0
  layer_norm: bool = False
  ids_key: str = "token_ids"
  weights_key: str = "token_weights"
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool = False):
    if isinstance(inputs, (tuple, list)):
      ids, weights = inputs
    elif isinstance(inputs, dict) or hasattr(inputs, "keys"):
      ids = mlp.get_input(inputs, self.ids_key, "BowEncoder")
      weights = inputs.get(self.weights_key)
    else:
      ids, weights = inputs, None
    table = self.param("embedding", nn.linear.default_embed_init,
                       (self.vocab_size, self.embed_dim), self.param_dtype)
    x = embedding_bag(table, ids, weights, pooling=self.pooling, pad_id=self.pad_id,
                      dtype=self.dtype)
    return mlp.MlpBlock(self.widths, self.activation, self.dropout, self.layer_norm,
                        self.dtype, self.param_dtype, name="mlp")(x, train=train)
