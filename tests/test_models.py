"""Tests for multilabel_jax.models: encoders, objective-driven heads, calling convention."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multilabel_jax import models
from multilabel_jax.losses.objectives import HeadOutput
from multilabel_jax.models import bow

B = 3
C = 37  # distinct from every other size, so a [B, C] array is recognizable in a jaxpr

OBJECTIVE_HEADS = {
    "single": {"logits": HeadOutput(C, -math.log(C))},
    "two_head": {"logits": HeadOutput(C, -math.log(C)),
                 "multilabel_logits": HeadOutput(C, -10.0)},
    "count": {"logits": HeadOutput(C, -math.log(C)), "log_count": HeadOutput(1, math.log(2.5))},
    "embedding": {"embedding": HeadOutput(6, 0.0)},
}
ALL_HEADS = {**OBJECTIVE_HEADS["two_head"], **OBJECTIVE_HEADS["count"],
             **OBJECTIVE_HEADS["embedding"]}

# Tiny configurations: name -> (encoder kwargs, feature width D). The shape tests run every
# real architecture (trace only); numeric tests compile, so the fast ones use "resnet_tiny"
# (ResNet-18 blocks, one per stage) and the full ResNets/vit_s run under -m slow.
CONFIGS = {
    "mlp": (dict(widths=(16, 8), dropout=0.1, layer_norm=True), 8),
    "bow": (dict(vocab_size=50, embed_dim=12, widths=(8,), pad_id=0), 8),
    "resnet18": (dict(width=4, stem="cifar"), 32),
    "resnet50": (dict(width=2), 64),
    "vit_ti": (dict(patch_size=8, width=16, depth=1, mlp_dim=32, num_heads=2), 16),
    "vit_s": (dict(patch_size=4, width=8, depth=1, mlp_dim=16, num_heads=2, pool="tok"), 8),
}
TINY = {"resnet_tiny": ("resnet18", dict(width=4, stem="cifar", stage_sizes=(1, 1)), 8)}


SLOW = ("resnet18", "resnet50", "vit_s")  # vit_s options are also run in test_vit_small_patch
RUN = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
       for n in [*CONFIGS, *TINY]]


def make_batch(name, rng=0, batch_size=B):
  r = np.random.RandomState(rng)
  if name == "mlp":
    return {"features": r.randn(batch_size, 5).astype(np.float32)}
  if name == "bow":
    ids = r.randint(0, 50, size=(batch_size, 7)).astype(np.int32)
    ids[:, -2:] = -1
    return {"token_ids": ids, "token_weights": r.rand(batch_size, 7).astype(np.float32),
            "label_ids": np.zeros((batch_size, 2), np.int32)}  # extra keys are ignored
  return {"image": r.randn(batch_size, 32, 32, 3).astype(np.float32)}


def build(name, heads=ALL_HEADS, **kw):
  model_name, enc_kw, _ = TINY[name] if name in TINY else (name, *CONFIGS[name])
  return models.get_model(model_name, heads, **{**enc_kw, **kw})


_INIT_CACHE = {}


def init(name):
  """(model, variables, initial outputs on make_batch(name)) with ALL_HEADS, cached and
  from one jitted init_with_output: compiles are the slow part on CPU."""
  if name not in _INIT_CACHE:
    model = build(name)
    out, variables = jax.jit(model.init_with_output)({"params": jax.random.key(0)},
                                                     make_batch(name))
    _INIT_CACHE[name] = (model, variables, out)
  return _INIT_CACHE[name]


def avals(jaxpr):
  """Shapes of every intermediate value in a (closed) jaxpr, sub-jaxprs included."""
  out = []
  for eqn in jaxpr.eqns:
    out += [tuple(v.aval.shape) for v in eqn.outvars]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      out += avals(sub)
  return out


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("objective", list(OBJECTIVE_HEADS))
def test_output_shapes_and_dtypes(name, objective):
  heads = OBJECTIVE_HEADS[objective]
  model = build(name, heads)
  batch = make_batch(name)
  variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, batch)
  out, state = jax.eval_shape(
      lambda v: model.apply(v, batch, train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(1)}), variables)
  d = CONFIGS[name][1]
  assert set(out) == {"pre_logits", *heads}
  assert out["pre_logits"].shape == (B, d)
  for head, spec in heads.items():
    assert out[head].shape == (B, spec.width)
    assert out[head].dtype == jnp.float32
    assert variables["params"]["head_" + head]["kernel"].shape == (d, spec.width)
    assert variables["params"]["head_" + head]["bias"].shape == (spec.width,)
  has_bn = name.startswith("resnet")
  assert set(state) == ({"batch_stats"} if has_bn else set())
  assert set(variables) == ({"params", "batch_stats"} if has_bn else {"params"})


@pytest.mark.parametrize("name", RUN)
def test_init_zero_kernel_and_constant_bias(name):
  model, variables, out = init(name)
  for head, spec in ALL_HEADS.items():
    kernel, bias = models.head_params(variables["params"], head)
    assert kernel is variables["params"]["head_" + head]["kernel"]
    np.testing.assert_array_equal(kernel, 0.0)
    np.testing.assert_allclose(bias, np.full(spec.width, spec.bias_init, np.float32))
  for head, spec in ALL_HEADS.items():
    np.testing.assert_allclose(out[head], np.full((B, spec.width), spec.bias_init), rtol=1e-6)
  assert np.all(np.isfinite(out["pre_logits"]))
  assert np.std(np.asarray(out["pre_logits"])) > 0  # the encoder is not trivially zero


@pytest.mark.parametrize("name", RUN)
def test_gradients_finite_and_reach_encoder(name):
  model, variables, _ = init(name)
  params, state = models.split_variables(variables)
  # A random head kernel, else the zero kernel blocks every gradient to the encoder.
  params = jax.tree_util.tree_map(lambda x: x, params)
  k = params["head_logits"]["kernel"]
  params["head_logits"]["kernel"] = jax.random.normal(jax.random.key(2), k.shape)
  batch = make_batch(name, rng=3)

  def loss(p):
    out, new_state = model.apply({"params": p, **state}, batch, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(4)})
    lse = jax.nn.logsumexp(out["logits"], axis=-1)
    return jnp.mean(lse - out["logits"][:, 0]) + jnp.mean(out["log_count"] ** 2), new_state

  grads, _ = jax.jit(jax.grad(loss, has_aux=True))(params)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  enc = jax.tree_util.tree_leaves(grads["encoder"])
  assert sum(float(jnp.sum(jnp.abs(g))) for g in enc) > 0
  assert float(jnp.sum(jnp.abs(grads["head_log_count"]["kernel"]))) > 0


def test_skip_heads_outputs():
  model, variables, _ = init("mlp")
  batch = make_batch("mlp")
  out = model.apply(variables, batch, skip_heads=("logits", "multilabel_logits"))
  assert set(out) == {"pre_logits", "log_count", "embedding"}
  full = model.apply(variables, batch)
  np.testing.assert_allclose(out["pre_logits"], full["pre_logits"], rtol=1e-6)
  np.testing.assert_allclose(out["log_count"], full["log_count"], rtol=1e-6)
  assert set(model.apply(variables, batch, skip_heads=True)) == {"pre_logits"}
  assert set(model.apply(variables, batch, skip_heads="logits")) == set(full) - {"logits"}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_skip_heads_computes_no_class_logits(name):
  """Trace only: with the class heads skipped, no [B, C] value exists in the program."""
  model = build(name)
  batch = make_batch(name)
  variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, batch)
  skip = lambda v: model.apply(v, batch, skip_heads=("logits", "multilabel_logits"))  # noqa: E731
  out = jax.eval_shape(skip, variables)
  assert set(out) == {"pre_logits", "log_count", "embedding"}
  assert (B, C) not in avals(jax.make_jaxpr(skip)(variables).jaxpr)
  # The check can see a [B, C] value when the head is computed.
  assert (B, C) in avals(jax.make_jaxpr(lambda v: model.apply(v, batch))(variables).jaxpr)


def test_fused_head_path_matches_logits():
  model, variables, _ = init("mlp")
  batch = make_batch("mlp")
  params = dict(variables["params"])
  params["head_logits"] = {"kernel": jax.random.normal(jax.random.key(5), (8, C)),
                           "bias": jnp.arange(C, dtype=jnp.float32)}
  pre = model.apply({"params": params}, batch, skip_heads=True)["pre_logits"]
  kernel, bias = models.head_params({"params": params}, "logits")  # whole variables works
  full = model.apply({"params": params}, batch)["logits"]
  np.testing.assert_allclose(pre @ kernel + bias, full, rtol=1e-5, atol=1e-5)


def test_skip_heads_errors():
  model, variables, _ = init("mlp")
  with pytest.raises(ValueError, match="unknown heads"):
    model.apply(variables, make_batch("mlp"), skip_heads=("nope",))
  with pytest.raises(KeyError, match="No head 'nope'"):
    models.head_params(variables["params"], "nope")
  with pytest.raises(ValueError, match="pre_logits"):
    models.get_model("mlp", {"pre_logits": HeadOutput(3)})
  with pytest.raises(ValueError, match="width"):
    models.get_model("mlp", {"logits": HeadOutput(0)})
  with pytest.raises(ValueError, match="Unknown model"):
    models.get_model("resnet7", {"logits": HeadOutput(3)})


# ----------------------------------------------------------------------------- bag of words


def dense_reference(table, ids, weights, pooling, pad_id=None):
  """One-hot weights [B, V] @ table: the dense definition the bag must match."""
  v = table.shape[0]
  dense = np.zeros((ids.shape[0], v), np.float64)
  for b in range(ids.shape[0]):
    for t in range(ids.shape[1]):
      i = ids[b, t]
      if 0 <= i < v and i != pad_id:
        dense[b, i] += weights[b, t]
  out = dense @ np.asarray(table, np.float64)
  if pooling == "mean":
    norm = dense.sum(1, keepdims=True)
  elif pooling == "sqrtn":
    norm = np.sqrt((dense**2).sum(1, keepdims=True))
  else:
    norm = np.ones((ids.shape[0], 1))
  return out / np.where(norm > 0, norm, 1.0)


@pytest.mark.parametrize("pooling", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("pad_id", [None, 0])
def test_embedding_bag_matches_dense_reference(pooling, pad_id):
  r = np.random.RandomState(0)
  v, e = 11, 4
  table = r.randn(v, e).astype(np.float32)
  # Distinct ids per row (sqrtn with repeated ids differs between bag and dense forms).
  ids = np.stack([r.permutation(v)[:6] for _ in range(5)]).astype(np.int32)
  ids[0, 3:] = -1       # padding
  ids[1, :] = -1        # empty row -> zeros
  ids[2, 5] = v + 3     # out of range: dropped like padding
  weights = r.rand(5, 6).astype(np.float32)
  got = bow.embedding_bag(jnp.asarray(table), ids, weights, pooling=pooling, pad_id=pad_id)
  want = dense_reference(table, ids, weights, pooling, pad_id)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[1], 0.0)


def test_embedding_bag_sum_with_repeated_ids_and_default_weights():
  table = jnp.arange(12.0).reshape(6, 2)
  ids = np.array([[2, 2, 5, -1]], np.int32)
  got = bow.embedding_bag(table, ids, pooling="sum")
  np.testing.assert_allclose(got, [2 * table[2] + table[5]])
  got = bow.embedding_bag(table, ids, pooling="mean")
  np.testing.assert_allclose(got, [(2 * table[2] + table[5]) / 3])


@pytest.mark.parametrize("pad_id,pad_value", [(None, -1), (0, 0), (0, -1)])
def test_padding_does_not_change_bow_output(pad_id, pad_value):
  model = models.get_model("bow", {"logits": HeadOutput(C, 0.0)}, vocab_size=30,
                           embed_dim=6, widths=(5,), pad_id=pad_id)
  r = np.random.RandomState(1)
  ids = r.randint(1, 30, size=(B, 4)).astype(np.int32)
  w = r.rand(B, 4).astype(np.float32)
  variables = model.init({"params": jax.random.key(0)}, {"token_ids": ids, "token_weights": w})
  # Padding with *non-zero* garbage weights: the id alone must mark it as padding.
  ids_p = np.concatenate([ids, np.full((B, 5), pad_value, np.int32)], axis=1)
  w_p = np.concatenate([w, r.rand(B, 5).astype(np.float32) + 1], axis=1)
  a = model.apply(variables, {"token_ids": ids, "token_weights": w})["pre_logits"]
  b = model.apply(variables, {"token_ids": ids_p, "token_weights": w_p})["pre_logits"]
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(b))


def test_bow_zero_weight_id0_is_harmless_without_pad_id():
  """pad_id=None: id 0 is a real word, but padding with weight 0 still changes nothing."""
  model = models.get_model("bow", {"logits": HeadOutput(4, 0.0)}, vocab_size=10,
                           embed_dim=3, widths=())
  ids = np.array([[3, 4, 0, 0]], np.int32)
  w = np.array([[1.0, 2.0, 0.0, 0.0]], np.float32)
  v = model.init({"params": jax.random.key(0)}, {"token_ids": ids, "token_weights": w})
  table = v["params"]["encoder"]["embedding"]
  got = model.apply(v, {"token_ids": ids, "token_weights": w})["pre_logits"]
  np.testing.assert_allclose(got, [(table[3] + 2 * table[4]) / 3], rtol=1e-6)


def test_bow_large_vocab_never_builds_batch_by_vocab():
  vocab, batch, tokens = 100_003, 64, 9
  model = models.get_model("bow", {"logits": HeadOutput(C, 0.0)}, vocab_size=vocab,
                           embed_dim=8, widths=(8,))
  x = {"token_ids": jnp.zeros((batch, tokens), jnp.int32),
       "token_weights": jnp.ones((batch, tokens), jnp.float32)}
  variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, x)

  def loss(v):
    return jnp.sum(model.apply(v, x)["logits"])

  for fn in (lambda v: model.apply(v, x), jax.grad(loss)):
    shapes = avals(jax.make_jaxpr(fn)(variables).jaxpr)
    with_vocab = {s for s in shapes if vocab in s}
    assert with_vocab <= {(vocab, 8)}, with_vocab  # only the table (and its gradient)


def test_bow_rejects_bad_inputs():
  with pytest.raises(ValueError, match="integer"):
    bow.embedding_bag(jnp.ones((4, 2)), jnp.ones((1, 3)), pooling="sum")
  with pytest.raises(ValueError, match="shape"):
    bow.embedding_bag(jnp.ones((4, 2)), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 2)))
  with pytest.raises(ValueError, match="pooling"):
    bow.embedding_bag(jnp.ones((4, 2)), jnp.ones((1, 3), jnp.int32), pooling="max")


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["resnet_tiny"] + [
    pytest.param(n, marks=pytest.mark.slow) for n in ("resnet18", "resnet50")])
def test_resnet_train_and_eval_modes(name):
  model, variables, _ = init(name)
  params, state = models.split_variables(variables)
  batch = make_batch(name, rng=6, batch_size=4)
  apply_train = jax.jit(lambda s, x: model.apply({"params": params, **s}, x, train=True,
                                                 mutable=["batch_stats"]))
  apply_eval = jax.jit(lambda s, x: model.apply({"params": params, **s}, x))

  out, new_state = apply_train(state, batch)
  assert set(new_state) == {"batch_stats"}
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   state["batch_stats"], new_state["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))  # every running mean/var moved

  # Train mode normalizes with batch statistics: an example's output depends on the batch.
  one = batch
  other = {"image": np.concatenate([batch["image"][:1], batch["image"][1:] * 5 + 3])}
  t1 = apply_train(state, one)[0]["pre_logits"]
  t2 = apply_train(state, other)[0]["pre_logits"]
  assert not np.allclose(t1[0], t2[0], atol=1e-4)
  # Eval mode uses running averages: outputs are per-example.
  e1 = apply_eval(new_state, one)["pre_logits"]
  e2 = apply_eval(new_state, other)["pre_logits"]
  np.testing.assert_allclose(e1[0], e2[0], rtol=1e-4, atol=1e-5)
  # Training without a mutable batch_stats is an error, not a silent no-update.
  with pytest.raises(Exception, match="batch_stats"):
    model.apply({"params": params, **state}, batch, train=True)


def test_resnet_imagenet_stem_on_tiny_images():
  model = models.get_model("resnet18", {"logits": HeadOutput(5, 0.0)}, width=2)
  x = {"image": jnp.ones((2, 32, 32, 3))}
  v = jax.eval_shape(model.init, {"params": jax.random.key(0)}, x)
  out = jax.eval_shape(model.apply, v, x)
  assert out["pre_logits"].shape == (2, 16) and out["logits"].shape == (2, 5)


@pytest.mark.parametrize("patch,posemb,pool", [(4, "learn", "gap"), (8, "sincos2d", "tok")])
def test_vit_small_patch(patch, posemb, pool):
  model = models.get_model(f"vit_ti/{patch}", {"logits": HeadOutput(C, 0.0)}, width=8,
                           depth=1, mlp_dim=16, num_heads=2, posemb=posemb, pool=pool)
  x = {"image": np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)}
  out, v = jax.jit(model.init_with_output)({"params": jax.random.key(0)}, x)
  enc = v["params"]["encoder"]
  assert enc["embedding"]["kernel"].shape == (patch, patch, 3, 8)
  assert ("pos_embedding" in enc) == (posemb == "learn")
  if posemb == "learn":
    assert enc["pos_embedding"].shape == (1, (32 // patch) ** 2, 8)
  assert ("cls" in enc) == (pool == "tok")
  assert out["pre_logits"].shape == (2, 8) and np.all(np.isfinite(out["pre_logits"]))
  assert not np.allclose(out["pre_logits"][0], out["pre_logits"][1])


def test_vit_variants_and_bad_patch():
  enc = models.get_encoder("vit_s/16")
  assert (enc.width, enc.depth, enc.mlp_dim, enc.num_heads, enc.patch_size) == (
      384, 12, 1536, 6, 16)
  enc = models.get_encoder("vit_ti")
  assert (enc.width, enc.depth, enc.mlp_dim, enc.num_heads) == (192, 12, 768, 3)
  model = models.get_model("vit_ti", {"logits": HeadOutput(3)}, patch_size=5, depth=1,
                           width=8, mlp_dim=8, num_heads=2)
  with pytest.raises(ValueError, match="multiple of patch_size"):
    model.init({"params": jax.random.key(0)}, {"image": jnp.ones((1, 32, 32, 3))})


# ----------------------------------------------------------------------------- options


def test_dropout_active_only_in_training():
  model, variables, _ = init("mlp")
  batch = make_batch("mlp")
  ev = model.apply(variables, batch)["pre_logits"]
  np.testing.assert_array_equal(ev, model.apply(variables, batch)["pre_logits"])
  tr, _ = model.apply(variables, batch, train=True, mutable=["batch_stats"],
                      rngs={"dropout": jax.random.key(0)})
  assert not np.allclose(tr["pre_logits"], ev)


@pytest.mark.parametrize("name", ["mlp", "bow", "resnet18", "vit_ti"])
def test_bfloat16_compute_with_float32_params(name):
  model = build(name, dtype=jnp.bfloat16)
  batch = make_batch(name)
  v = jax.eval_shape(model.init, {"params": jax.random.key(0)}, batch)
  assert {x.dtype for x in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(model.apply, v, batch)
  assert out["pre_logits"].dtype == jnp.bfloat16
  assert out["logits"].dtype == jnp.float32  # head_dtype defaults to float32
  out = jax.eval_shape(build(name, dtype=jnp.bfloat16, head_dtype=jnp.bfloat16).apply,
                       v, batch)
  assert out["logits"].dtype == jnp.bfloat16


def test_partition_heads_along_classes():
  from jax.sharding import Mesh, PartitionSpec as P
  model = build("mlp", partition_heads=("logits",))
  batch = make_batch("mlp")
  abstract = jax.eval_shape(model.init, {"params": jax.random.key(0)}, batch)
  mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "classes"))
  shardings = models.param_shardings(abstract, mesh)
  assert shardings["params"]["head_logits"]["kernel"].spec == P(None, "classes")
  assert shardings["params"]["head_logits"]["bias"].spec == P("classes")
  assert shardings["params"]["head_log_count"]["kernel"].spec == P()
  assert shardings["params"]["encoder"]["mlp"]["dense_0"]["kernel"].spec == P()

  boxed = jax.jit(model.init, out_shardings=shardings)({"params": jax.random.key(0)}, batch)
  assert isinstance(boxed["params"]["head_logits"]["kernel"], nn.LogicallyPartitioned)
  kernel, bias = models.head_params(boxed["params"], "logits")  # unboxes
  assert kernel.shape == (8, C) and bias.shape == (C,)
  variables = nn.unbox(boxed)
  out = model.apply(variables, batch)
  np.testing.assert_allclose(out["logits"], np.full((B, C), -math.log(C)), rtol=1e-6)
  with pytest.raises(ValueError, match="partition_heads"):
    build("mlp", partition_heads=("nope",)).init({"params": jax.random.key(0)}, batch)


def test_custom_encoder_and_array_inputs():
  class Identity(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
      return x

  model = models.MultiLabelModel(encoder=Identity(), head_outputs={"logits": HeadOutput(4, 1.)})
  x = jnp.ones((2, 3))
  v = model.init({"params": jax.random.key(0)}, x)
  out, state = model.apply(v, x, train=True, mutable=["batch_stats"])
  assert state == {} and out["logits"].shape == (2, 4)
  np.testing.assert_allclose(out["logits"], 1.0)
  # Encoders also accept bare arrays instead of the batch dict.
  m = models.get_model("mlp", {"logits": HeadOutput(4)}, widths=(3,))
  assert m.apply(m.init({"params": jax.random.key(0)}, x), x)["pre_logits"].shape == (2, 3)
  with pytest.raises(KeyError, match="features"):
    m.init({"params": jax.random.key(0)}, {"image": x})


def _wide_model(**kw):
  return models.get_model("bow", {"logits": HeadOutput(4, -1.0), "log_count": HeadOutput(1)},
                          vocab_size=6, embed_dim=3, widths=(5,), pad_id=0,
                          wide_heads=("logits",), wide_vocab_size=6, **kw)


def test_wide_path_adds_the_bag_of_its_table_rows():
  batch = {"token_ids": np.array([[1, 2, 0, -1], [3, 3, 0, 0]], np.int32),
           "token_weights": np.array([[0.5, 0.25, 9.0, 9.0], [1.0, 2.0, 0, 0]], np.float32)}
  model = _wide_model()
  params = model.init({"params": jax.random.PRNGKey(0)}, batch)["params"]
  assert params["wide_logits"]["table"].shape == (6, 4)
  assert "wide_log_count" not in params  # Only the named heads.
  np.testing.assert_array_equal(params["wide_logits"]["table"], 0)  # Zero at init.
  table = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
  params = dict(params, wide_logits={"table": jnp.asarray(table)})
  out = model.apply({"params": params}, batch)
  deep = model.apply({"params": dict(params, wide_logits={"table": jnp.zeros((6, 4))})}, batch)
  # Padding (id 0 and -1) adds nothing, whatever its weight; repeated ids add up.
  want = np.stack([0.5 * table[1] + 0.25 * table[2], 3.0 * table[3]])
  np.testing.assert_allclose(out["logits"] - deep["logits"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["log_count"], deep["log_count"])
  assert "logits" not in model.apply({"params": params}, batch, skip_heads=("logits",))


def test_wide_path_errors():
  batch = {"token_ids": np.array([[1]], np.int32), "token_weights": np.ones((1, 1), np.float32)}
  with pytest.raises(ValueError, match="wide_heads names unknown head 'nope'"):
    models.get_model("bow", {"logits": HeadOutput(4)}, vocab_size=6, wide_heads=("nope",),
                     wide_vocab_size=6).init({"params": jax.random.PRNGKey(0)}, batch)
  with pytest.raises(ValueError, match="need wide_vocab_size >= 1"):
    models.get_model("bow", {"logits": HeadOutput(4)}, vocab_size=6,
                     wide_heads=("logits",)).init({"params": jax.random.PRNGKey(0)}, batch)
