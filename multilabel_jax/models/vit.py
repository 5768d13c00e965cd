"""Vision Transformer encoders (ViT-Ti/16, ViT-S/16, ...), after big_vision's ``vit.py``.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Ti/S sizes from Touvron et
al. (DeiT), 2021; GAP head and sincos2d position embedding as in Beyer et al., "Better
plain ViT baselines for ImageNet-1k", 2022.

Input ``batch["image"]`` float ``[B, H, W, 3]``; ``H`` and ``W`` must be multiples of
``patch_size`` (32x32 images work with patch 4 or 8). Output ``[B, width]`` (mean of the
tokens for ``pool="gap"``, the class token for ``pool="tok"``), after a final LayerNorm.
No batch norm: ``mutable=["batch_stats"]`` returns an empty collection.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multilabel_jax.models import mlp

# name: (width, depth, mlp_dim, num_heads)
VARIANTS = {
    "vit_ti": (192, 12, 768, 3),
    "vit_s": (384, 12, 1536, 6),
    "vit_b": (768, 12, 3072, 12),
}


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.,
                     dtype=jnp.float32) -> jax.Array:
  """Fixed 2D sin-cos position embedding ``[1, h * w, width]`` (big_vision)."""
  if width % 4 != 0:
    raise ValueError(f"sincos2d needs width divisible by 4, got {width}.")
  y, x = np.mgrid[:h, :w]
  omega = np.arange(width // 4) / (width // 4 - 1 if width > 4 else 1)
  omega = 1. / (temperature**omega)
  y = np.einsum("m,d->md", y.flatten(), omega)
  x = np.einsum("m,d->md", x.flatten(), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return jnp.asarray(pe, dtype)[None, :, :]


class MlpBlock(nn.Module):
  """Transformer MLP: ``[B, N, D] -> [B, N, D]`` via ``mlp_dim`` hidden GELU units."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    dense = lambda n, name: nn.Dense(  # noqa: E731
        n, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6))
    d = x.shape[-1]
    x = nn.gelu(dense(self.mlp_dim, "fc1")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(d, "fc2")(x)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``."""
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.LayerNorm(name="ln1", **kw)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        deterministic=True, name="attn", **kw)(y, y)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    x = x + y
    y = nn.LayerNorm(name="ln2", **kw)(x)
    y = MlpBlock(self.mlp_dim, self.dropout, name="mlp", **kw)(y, train=train)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return x + y


class ViT(nn.Module):
  """ViT encoder: ``batch[input_key]`` ``[B, H, W, C]`` -> ``[B, width]``.

  Attributes:
    patch_size: square patch side (16 for ViT-x/16; 4 or 8 for 32x32 images).
    width, depth, mlp_dim, num_heads: transformer size (see :data:`VARIANTS`).
    posemb: "learn" (learned, normal(1/sqrt(width)); fixed to the init image size) or
      "sincos2d" (fixed; any image size).
    pool: "gap" (mean over patch tokens) or "tok" (a learned class token).
    dropout: dropout rate in the blocks (``train=True`` needs ``rngs={"dropout": ...}``).
    input_key: batch key of the images.
    dtype: compute dtype (e.g. bfloat16); params stay ``param_dtype``.
  """
  patch_size: int = 16
  width: int = 192
  depth: int = 12
  mlp_dim: int = 768
  num_heads: int = 3
  posemb: str = "learn"
  pool: str = "gap"
  dropout: float = 0.0
  input_key: str = "image"
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool = False):
    x = mlp.get_input(inputs, self.input_key, "ViT")
    if x.ndim != 4:
      raise ValueError(f"ViT expects images [B, H, W, C], got shape {x.shape}.")
    b, h, w, _ = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"Image size {h}x{w} is not a multiple of patch_size {p}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype or jnp.float32)
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="embedding",
                **kw)(x)  # [B, H/p, W/p, width]
    gh, gw = h // p, w // p
    x = jnp.reshape(x, (b, gh * gw, self.width))  # [B, N, width]

    if self.posemb == "learn":
      pe = self.param("pos_embedding",
                      nn.initializers.normal(stddev=1 / np.sqrt(self.width)),
                      (1, gh * gw, self.width), self.param_dtype)
      if pe.shape[1] != gh * gw:
        raise ValueError(f"Learned pos_embedding has {pe.shape[1]} positions, the image "
                         f"gives {gh * gw}; use posemb='sincos2d' or resize the images.")
    elif self.posemb == "sincos2d":
      pe = posemb_sincos_2d(gh, gw, self.width)
    else:
      raise ValueError(f"Unknown posemb {self.posemb!r}; 'learn' or 'sincos2d'.")
    x = x + pe.astype(x.dtype)

    if self.pool == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (b, 1, 1)), x], axis=1)
    elif self.pool != "gap":
      raise ValueError(f"Unknown pool {self.pool!r}; 'gap' or 'tok'.")
    x = nn.Dropout(self.dropout, deterministic=not train)(x)

    for i in range(self.depth):
      x = EncoderBlock(self.mlp_dim, self.num_heads, self.dropout, name=f"block{i}",
                       **kw)(x, train=train)
    x = nn.LayerNorm(name="encoder_norm", **kw)(x)
    return x[:, 0] if self.pool == "tok" else jnp.mean(x, axis=1)  # [B, width]


def get_vit(variant: str = "vit_s", **kwargs) -> ViT:
  """ViT by name ("vit_ti", "vit_s", "vit_b"); kwargs override (e.g. ``patch_size=4``)."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown ViT {variant!r}; one of {sorted(VARIANTS)}.")
  width, depth, mlp_dim, num_heads = VARIANTS[variant]
  cfg = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
  cfg.update(kwargs)
  return ViT(**cfg)
