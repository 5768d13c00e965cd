"""ResNet v1.5 encoders (ResNet-18, ResNet-50) with batch norm.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. v1.5: the stride of
a downsampling bottleneck is on its 3x3 conv (as in the flax ImageNet example and
torchvision). The last batch norm of each residual branch starts with scale 0 (Goyal et
al., 2017), so every block starts as the identity.

Input ``batch["image"]`` float ``[B, H, W, 3]``, already normalized by the input pipeline.
Output: global-average-pooled features ``[B, 512 * width / 64]`` (ResNet-18) or
``[B, 2048 * width / 64]`` (ResNet-50).

Batch norm state lives in the ``"batch_stats"`` collection: train with
``model.apply(variables, batch, train=True, mutable=["batch_stats"])`` and keep the
returned state; eval (``train=False``) uses the running averages. Under ``jit`` with a
data-sharded batch the batch statistics are over the global batch.

``stem="cifar"`` (3x3 conv, stride 1, no max pool) suits 32x32 images; ``stem="imagenet"``
(7x7/2 conv + 3x3/2 max pool) also runs on 32x32, at 1x1 resolution in the last stage.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from multilabel_jax.models import mlp

VARIANTS = {
    # name: (block, stage sizes)
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


class BasicBlock(nn.Module):
  """Two 3x3 convs; ``[B, H, W, C_in] -> [B, H/s, W/s, filters]``."""
  filters: int
  conv: Any
  norm: Any
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), name="conv2")(y)
    y = self.norm(scale_init=nn.initializers.zeros, name="bn2")(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                           name="conv_proj")(residual)
      residual = self.norm(name="bn_proj")(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 (4x); ``[B, H, W, C_in] -> [B, H/s, W/s, 4 filters]``."""
  filters: int
  conv: Any
  norm: Any
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (1, 1), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.filters * 4, (1, 1), name="conv3")(y)
    y = self.norm(scale_init=nn.initializers.zeros, name="bn3")(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides),
                           name="conv_proj")(residual)
      residual = self.norm(name="bn_proj")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet v1.5 encoder: ``batch[input_key]`` ``[B, H, W, 3]`` -> ``[B, D]``.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: "basic" or "bottleneck".
    width: filters of the first stage (64 in the paper; small for tests).
    stem: "imagenet" (7x7/2 conv + max pool) or "cifar" (3x3/1 conv, no pool).
    bn_momentum, bn_epsilon: batch norm (0.9 and 1e-5 as in the flax ImageNet example).
    input_key: batch key of the images.
    dtype: compute dtype (e.g. bfloat16); params and batch stats are float32.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "imagenet"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  input_key: str = "image"
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool = False):
    x = mlp.get_input(inputs, self.input_key, "ResNet")
    if x.ndim != 4:
      raise ValueError(f"ResNet expects images [B, H, W, C], got shape {x.shape}.")
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"Unknown block {self.block!r}.")
    x = x.astype(self.dtype or jnp.float32)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    elif self.stem == "cifar":
      x = conv(self.width, (3, 3), name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
    else:
      raise ValueError(f"Unknown stem {self.stem!r}; 'imagenet' or 'cifar'.")
    block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block_cls(self.width * 2**i, conv=conv, norm=norm, strides=strides,
                      name=f"stage{i + 1}_block{j + 1}")(x)
    return jnp.mean(x, axis=(1, 2))  # [B, D] global average pool


def get_resnet(variant: str = "resnet50", **kwargs) -> ResNet:
  """ResNet by name ("resnet18", "resnet34", "resnet50", "resnet101")."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown ResNet {variant!r}; one of {sorted(VARIANTS)}.")
  block, stages = VARIANTS[variant]
  kwargs.setdefault("block", block)
  kwargs.setdefault("stage_sizes", stages)
  return ResNet(**kwargs)
