"""Flax models chosen by name: an encoder plus objective-driven heads.

  model = get_model("mlp", head_outputs, widths=(512, 512))
  model = get_model("bow", head_outputs, vocab_size=100_000, embed_dim=128)
  model = get_model("resnet50", head_outputs, dtype=jnp.bfloat16)
  model = get_model("vit_s/16", head_outputs)          # or "vit_ti", patch_size=4

``head_outputs`` is the objective's ``{name: HeadOutput(width, bias_init)}``. The model
returns ``{"pre_logits": [B, D], name: [B, width], ...}``.

Calling convention (identical for all models; only ResNets have ``batch_stats``)::

  variables = model.init({"params": rng}, batch)          # batch: dict of arrays
  params, state = split_variables(variables)              # state: {} or {"batch_stats"}
  out, new_state = model.apply({"params": params, **state}, batch, train=True,
                               mutable=["batch_stats"], rngs={"dropout": rng})
  out = model.apply({"params": params, **state}, batch)   # eval, train=False
  pre = model.apply(..., skip_heads=("logits",))["pre_logits"]  # no [B, C] computed
  kernel, bias = head_params(params, "logits")            # params["head_logits"]["kernel"]

Batch keys read: "features" (mlp), "token_ids"/"token_weights" (bow), "image" (ResNet,
ViT); change them with ``input_key`` (``ids_key``/``weights_key`` for bow).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp

from multilabel_jax.models import bow
from multilabel_jax.models import mlp
from multilabel_jax.models import resnet
from multilabel_jax.models import vit
from multilabel_jax.models.heads import (HEAD_PREFIX, LOGICAL_RULES, PRE_LOGITS, WIDE_PREFIX,
                                         MultiLabelModel, check_head_outputs, head_params,
                                         param_shardings, split_variables)

__all__ = [
    "HEAD_PREFIX", "LOGICAL_RULES", "PRE_LOGITS", "WIDE_PREFIX", "MultiLabelModel", "check_head_outputs",
    "get_encoder", "get_model", "head_params", "list_models", "param_shardings",
    "split_variables",
]


def list_models() -> list[str]:
  """Names accepted by :func:`get_model`."""
  return ["mlp", "bow", *resnet.VARIANTS, *vit.VARIANTS]


def get_encoder(name: str, **kwargs):
  """Encoder module by name; ``kwargs`` go to its constructor.

  "vit_<size>/<patch>" (e.g. "vit_s/16") sets ``patch_size``.
  """
  if name == "mlp":
    return mlp.MlpEncoder(**kwargs)
  if name == "bow":
    if "vocab_size" not in kwargs:
      raise ValueError("get_model('bow', ...) needs vocab_size=.")
    return bow.BowEncoder(**kwargs)
  if name in resnet.VARIANTS:
    return resnet.get_resnet(name, **kwargs)
  base, _, patch = name.partition("/")
  if base in vit.VARIANTS:
    if patch:
      if "patch_size" in kwargs and kwargs["patch_size"] != int(patch):
        raise ValueError(f"{name!r} conflicts with patch_size={kwargs['patch_size']}.")
      kwargs["patch_size"] = int(patch)
    return vit.get_vit(base, **kwargs)
  raise ValueError(f"Unknown model {name!r}; one of {list_models()}.")


def get_model(name: str, head_outputs: Mapping[str, Any], *, dtype: Any = None,
              head_dtype: Any = jnp.float32, partition_heads: Sequence[str] = (),
              wide_heads: Sequence[str] = (), wide_vocab_size: int = 0,
              **encoder_kwargs) -> MultiLabelModel:
  """``MultiLabelModel`` with encoder ``name`` and one zero-init head per output.

  Args:
    name: one of :func:`list_models` (ViT also as "vit_s/16").
    head_outputs: ``{name: HeadOutput(width, bias_init)}`` from the objective.
    dtype: encoder compute dtype (None = float32; ``jnp.bfloat16`` for mixed precision).
      Params are float32.
    head_dtype: compute dtype of the heads (float32 by default).
    partition_heads: heads whose kernel is annotated ``("embed", "classes")`` for sharding
      along classes (see :func:`param_shardings`).
    wide_heads, wide_vocab_size: heads with a wide path, a ``[V, width]`` table over the
      batch's bag of words (``MultiLabelModel``).
    **encoder_kwargs: encoder options (widths, dropout, vocab_size, patch_size, width...).
  """
  check_head_outputs(head_outputs)
  encoder = get_encoder(name, dtype=dtype, **encoder_kwargs)
  return MultiLabelModel(encoder=encoder, head_outputs=dict(head_outputs),
                         head_dtype=head_dtype, partition_heads=tuple(partition_heads),
                         wide_heads=tuple(wide_heads), wide_vocab_size=wide_vocab_size)
