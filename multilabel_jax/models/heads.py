"""Objective-driven heads and the top-level model: encoder features -> named head outputs.

The loss registry (``multilabel_jax.losses.objectives``) says which outputs an objective
needs as ``head_outputs: dict[str, HeadOutput(width, bias_init)]``, e.g.
``{"logits": HeadOutput(C, -log C)}`` or ``{"logits": ..., "log_count": HeadOutput(1, b)}``.
:class:`MultiLabelModel` builds one ``nn.Dense`` per output, with a **zero kernel** and a
**constant bias** (as big_vision does: the initial outputs equal the bias prior).

Parameter layout (stable; other code may rely on it)::

  params["encoder"][...]                 the encoder (MLP, BoW, ResNet, ViT)
  params["head_<name>"]["kernel"]        [D, width]
  params["head_<name>"]["bias"]          [width]

Outputs: ``{"pre_logits": [B, D], <name>: [B, width] for each head not skipped}``.

Huge heads (100k-1M classes): call with ``skip_heads=("logits",)`` to get ``pre_logits``
without computing ``[B, C]``, and read ``(kernel, bias) = head_params(params, "logits")``
for a fused loss such as ``linear_softmax_xent(pre_logits, kernel, bias, ids)``.

Sharding the class axis: ``partition_heads=("logits",)`` annotates that head's kernel with
logical axes ``("embed", "classes")`` and its bias with ``("classes",)``. ``init`` then
returns ``nn.LogicallyPartitioned`` boxes for those leaves; map them to a mesh with
:func:`param_shardings` (rules :data:`LOGICAL_RULES` send "classes" to a mesh axis named
"classes") and ``nn.unbox`` the initialized variables. ``apply`` accepts plain arrays.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from multilabel_jax.models import bow
from multilabel_jax.models.mlp import get_input

HEAD_PREFIX = "head_"
WIDE_PREFIX = "wide_"  # Top-level params of a head's wide path (``wide_heads``).
PRE_LOGITS = "pre_logits"
# Logical axis -> mesh axis. "classes" shards along a mesh axis of the same name; the
# feature ("embed") axis of a head kernel is replicated.
LOGICAL_RULES = (("classes", "classes"), ("embed", None))


def _spec(name: str, spec) -> tuple[int, float]:
  """(width, bias_init) from a HeadOutput, a (width, bias) tuple or a bare width."""
  if isinstance(spec, int):
    return spec, 0.0
  if hasattr(spec, "width"):
    return int(spec.width), float(getattr(spec, "bias_init", 0.0))
  if isinstance(spec, (tuple, list)) and len(spec) == 2:
    return int(spec[0]), float(spec[1])
  raise ValueError(f"head_outputs[{name!r}] must be a HeadOutput(width, bias_init), "
                   f"got {spec!r}.")


def check_head_outputs(head_outputs: Mapping[str, Any]) -> dict[str, tuple[int, float]]:
  """Validates ``head_outputs`` and returns ``{name: (width, bias_init)}``."""
  out = {}
  for name, spec in dict(head_outputs).items():
    if not isinstance(name, str) or not name or name == PRE_LOGITS:
      raise ValueError(f"Invalid head name {name!r} (reserved: {PRE_LOGITS!r}).")
    width, bias = _spec(name, spec)
    if width < 1:
      raise ValueError(f"head_outputs[{name!r}].width must be >= 1, got {width}.")
    out[name] = (width, bias)
  return out


def head_params(params: Mapping[str, Any], name: str = "logits"):
  """``(kernel [D, width], bias [width])`` of head ``name``.

  Args:
    params: the ``"params"`` collection (``variables["params"]``) or the whole variables
      dict; boxed (logically partitioned) leaves are unboxed.
    name: the head's name in ``head_outputs``.
  """
  if HEAD_PREFIX + name not in params and "params" in params:
    params = params["params"]
  key = HEAD_PREFIX + name
  if key not in params:
    heads = sorted(k[len(HEAD_PREFIX):] for k in params if k.startswith(HEAD_PREFIX))
    raise KeyError(f"No head {name!r} in params; heads are {heads}.")
  p = nn.unbox(params[key])
  return p["kernel"], p["bias"]


def param_shardings(abstract_variables, mesh, rules=LOGICAL_RULES):
  """``NamedSharding`` for every leaf of (boxed) variables, e.g. from
  ``jax.eval_shape(model.init, rng, batch)``. Unannotated leaves are replicated."""
  specs = nn.get_partition_spec(abstract_variables)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def split_variables(variables) -> tuple[Any, dict]:
  """``(params, state)``; ``state`` holds the mutable collections (``batch_stats``), empty
  for models without batch norm."""
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


class MultiLabelModel(nn.Module):
  """An encoder followed by one zero-initialized linear layer per head output.

  Attributes:
    encoder: a module ``encoder(inputs, *, train) -> [B, D]`` (see ``get_model``).
    head_outputs: ``{name: HeadOutput(width, bias_init)}`` from the objective.
    head_dtype: compute dtype of the heads (default float32, so that ``[B, C]`` logits over
      many classes keep full precision when the encoder runs in bfloat16).
    partition_heads: names of heads whose kernel/bias get logical axes
      ``("embed", "classes")`` / ``("classes",)`` for sharding along classes.
    wide_heads: heads that also get a wide path (Wide & Deep, Cheng et al. 2016): a
      zero-initialised table ``params["wide_<head>"]["table"]`` ``[wide_vocab_size, width]``
      whose rows, weighted by the bag of words (``batch[wide_ids_key]``,
      ``batch[wide_weights_key]``, id 0 and negative ids are padding), add to the head's
      output. With it the model contains the full-rank linear model on its own input, and
      is never worse than it for want of capacity (a fused head cannot use it: the head's
      output is no longer ``pre_logits @ kernel``).
    wide_vocab_size: V of the wide tables.

  Calling convention (the same for every encoder; models without batch norm simply return
  an empty ``batch_stats``)::

    variables = model.init({"params": rng}, batch)                    # train=False
    params, state = split_variables(variables)
    # train step
    out, new_state = model.apply({"params": params, **state}, batch, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": rng})
    # eval
    out = model.apply({"params": params, **state}, batch)
  """
  encoder: nn.Module
  head_outputs: Mapping[str, Any]
  head_dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  partition_heads: Sequence[str] = ()
  wide_heads: Sequence[str] = ()
  wide_vocab_size: int = 0
  wide_ids_key: str = "token_ids"
  wide_weights_key: str = "token_weights"

  @nn.compact
  def __call__(self, inputs, *, train: bool = False,
               skip_heads: Union[bool, Sequence[str]] = ()) -> dict[str, jax.Array]:
    """Runs the encoder and the heads.

    Args:
      inputs: the batch dict (each encoder reads its own keys; extra keys such as
        ``label_ids`` are ignored) or the encoder's input array.
      train: training mode (dropout on, batch norm uses and updates batch statistics).
      skip_heads: head names not to compute, or True for all. Their outputs are absent.
        Ignored during ``init`` so that every head's params exist.

    Returns:
      ``{"pre_logits": [B, D], name: [B, width] for each computed head}``.
    """
    specs = check_head_outputs(self.head_outputs)
    for arg in ("partition_heads", "wide_heads"):
      for name in getattr(self, arg):
        if name not in specs:
          raise ValueError(f"{arg} names unknown head {name!r}; heads are {sorted(specs)}.")
    if self.wide_heads and self.wide_vocab_size < 1:
      raise ValueError(f"wide_heads {list(self.wide_heads)} need wide_vocab_size >= 1.")
    if skip_heads is True:
      skip = set(specs)
    elif skip_heads is False or skip_heads is None:
      skip = set()
    else:
      if isinstance(skip_heads, str):
        skip_heads = (skip_heads,)
      skip = set(skip_heads)
      unknown = skip - set(specs)
      if unknown:
        raise ValueError(f"skip_heads names unknown heads {sorted(unknown)}; "
                         f"heads are {sorted(specs)}.")
    if self.is_initializing():
      skip = set()

    x = self.encoder(inputs, train=train)
    if x.ndim != 2:
      raise ValueError(f"The encoder must return [B, D] features, got shape {x.shape}.")
    out = {PRE_LOGITS: x}
    for name, (width, bias) in specs.items():
      kernel_init = nn.initializers.zeros
      bias_init = nn.initializers.constant(bias)
      if name in self.partition_heads:
        kernel_init = nn.with_logical_partitioning(kernel_init, ("embed", "classes"))
        bias_init = nn.with_logical_partitioning(bias_init, ("classes",))
      dense = nn.Dense(width, kernel_init=kernel_init, bias_init=bias_init,
                       dtype=self.head_dtype, param_dtype=self.param_dtype,
                       name=HEAD_PREFIX + name)
      if name not in skip:
        out[name] = dense(x)
      # A skipped head is never called: no [B, width] array is traced.
      if name in self.wide_heads:
        table = self.param(f"{WIDE_PREFIX}{name}", lambda *_: {"table": jnp.zeros(
            (self.wide_vocab_size, width), self.param_dtype)})["table"]
        if name not in skip:
          ids = get_input(inputs, self.wide_ids_key, "the wide path")
          weights = inputs.get(self.wide_weights_key) if hasattr(inputs, "get") else None
          out[name] = out[name] + bow.embedding_bag(table, ids, weights, pooling="sum",
                                                    pad_id=0, dtype=self.head_dtype)
    return out
