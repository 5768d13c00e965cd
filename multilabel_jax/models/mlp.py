"""MLP encoder over feature vectors ``[B, D_in]`` (the hashtag_world default).

Each hidden layer is Dense -> (LayerNorm) -> activation -> (Dropout). With ``widths=()``
the encoder is the identity and the model is linear in the features.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
}


def get_input(inputs, key: str, encoder: str) -> jax.Array:
  """``inputs[key]`` if ``inputs`` is a batch dict, else ``inputs`` itself."""
  if isinstance(inputs, Mapping):
    if key not in inputs:
      raise KeyError(f"{encoder} reads batch[{key!r}], the batch has {sorted(inputs)}.")
    return jnp.asarray(inputs[key])
  return jnp.asarray(inputs)


class MlpBlock(nn.Module):
  """Hidden layers ``[B, D_in] -> [B, widths[-1]]`` (``[B, D_in]`` if ``widths`` is empty).

  Attributes:
    widths: hidden widths.
    activation: name in :data:`ACTIVATIONS`.
    dropout: dropout rate after each activation (active only with ``train=True``; needs
      ``rngs={"dropout": ...}``).
    layer_norm: LayerNorm before each activation.
    dtype: compute dtype (e.g. ``jnp.bfloat16``); params stay ``param_dtype``.
  """
  widths: Sequence[int] = (512, 512)
  activation: str = "relu"
  dropout: float = 0.0
  layer_norm: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {self.activation!r}; one of {sorted(ACTIVATIONS)}.")
    act = ACTIVATIONS[self.activation]
    if self.dtype is not None:
      x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                   name=f"dense_{i}")(x)
      if self.layer_norm:
        x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"ln_{i}")(x)
      x = act(x)
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class MlpEncoder(nn.Module):
  """MLP over ``batch[input_key]`` float ``[B, D_in]`` -> features ``[B, widths[-1]]``.

  Attributes: as :class:`MlpBlock`, plus ``input_key`` (default ``"features"``).
  """
  widths: Sequence[int] = (512, 512)
  activation: str = "relu"
  dropout: float = 0.0
  layer_norm: bool = False
  input_key: str = "features"
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool = False):
    x = get_input(inputs, self.input_key, "MlpEncoder")
    if x.ndim != 2:
      raise ValueError(f"MlpEncoder expects features [B, D], got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32)
    return MlpBlock(self.widths, self.activation, self.dropout, self.layer_norm,
                    self.dtype, self.param_dtype, name="mlp")(x, train=train)
