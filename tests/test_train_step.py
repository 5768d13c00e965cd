"""The pure train and eval steps, alone: no data pipeline, checkpoints or writers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multilabel_jax import losses, models, train

C, D, B = 24, 8, 16


def _setup(loss="sigmoid", lr=0.1):
  objective = losses.get_objective(loss, C)
  model = models.get_model("mlp", objective.head_outputs, widths=(16,))
  tx = optax.sgd(lr)
  rng = np.random.default_rng(0)
  batch = {"features": rng.normal(size=(B, D)).astype(np.float32),
           "label_ids": rng.integers(-1, C, size=(B, 3)).astype(np.int32)}
  state = train.init_state(model, tx, {"features": batch["features"][:1]}, jax.random.key(0))
  return objective, model, tx, batch, state


def _reference_loss(model, objective, params, batch):
  outputs = model.apply({"params": params}, batch)
  w = objective.example_weights(batch["label_ids"])
  return jnp.sum(w * objective.loss(outputs, batch["label_ids"])) / jnp.maximum(w.sum(), 1)


@pytest.mark.parametrize("loss", ["sigmoid", "softmax", "two_head"])
@pytest.mark.parametrize("use_fused", [False, True])
def test_train_step_is_one_sgd_update_of_the_objective_loss(loss, use_fused):
  objective, model, tx, batch, state = _setup(loss)
  step = jax.jit(train.make_train_step(model, objective, tx, lambda s: 0.1, use_fused=use_fused,
                                       chunk_size=10))
  new, metrics = step(state, batch)
  value, grads = jax.value_and_grad(
      lambda p: _reference_loss(model, objective, p, batch))(state["params"])
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-5)
  want = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, state["params"], grads)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         new["params"], want)
  assert int(new["step"]) == 1 and int(new["skipped_updates"]) == 0
  assert int(new["first_nonfinite"]) == -1


@pytest.mark.parametrize("freeze", [False, True])
def test_a_nonfinite_update_is_not_applied_and_is_counted_on_device(freeze):
  objective, model, tx, batch, state = _setup()
  step = jax.jit(train.make_train_step(model, objective, tx, lambda s: 0.1, use_fused=False,
                                       freeze_on_nonfinite=freeze))
  bad = dict(batch, features=np.full_like(batch["features"], np.nan))
  s1, m1 = step(state, batch)
  s2, m2 = step(s1, bad)
  assert not np.isfinite(m2["loss"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, s2["params"], s1["params"])
  assert (int(s2["step"]), int(s2["skipped_updates"]), int(s2["first_nonfinite"])) == (2, 1, 2)
  s3, _ = step(s2, batch)  # A good batch after the bad one.
  assert int(s3["first_nonfinite"]) == 2 and int(s3["step"]) == 3
  moved = not all(np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(s3["params"]), jax.tree_util.tree_leaves(s2["params"])))
  assert moved != freeze  # Frozen since step 2 ("raise"), or training on ("skip").
  del m1


def test_the_moving_average_of_the_params_follows_its_recursion():
  """``ema_decay`` d: after each applied update, ema = d * ema + (1 - d) * params (numpy,
  from the params of each step); a skipped (non-finite) update leaves it as it was."""
  objective, model, tx, batch, _ = _setup()
  state = train.init_state(model, tx, {"features": batch["features"][:1]}, jax.random.key(0),
                           ema=True)
  jax.tree_util.tree_map(np.testing.assert_array_equal, state["ema_params"], state["params"])
  step = jax.jit(train.make_train_step(model, objective, tx, lambda s: 0.1, use_fused=False,
                                       ema_decay=0.8))
  want = jax.tree_util.tree_map(np.asarray, state["params"])
  bad = dict(batch, features=np.full_like(batch["features"], np.nan))
  for b in (batch, batch, bad, batch):
    state, _ = step(state, b)
    if b is not bad:
      want = jax.tree_util.tree_map(lambda e, p: 0.8 * e + 0.2 * np.asarray(p), want,
                                    state["params"])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           state["ema_params"], want)
  assert int(state["skipped_updates"]) == 1
  assert not np.allclose(jax.tree_util.tree_leaves(state["ema_params"])[0],
                         jax.tree_util.tree_leaves(state["params"])[0])
  evaluated = train.evaluation_state(state)
  assert evaluated["params"] is state["ema_params"] and evaluated["step"] is state["step"]
  plain = train.init_state(model, tx, {"features": batch["features"][:1]}, jax.random.key(0))
  assert "ema_params" not in plain and train.evaluation_state(plain) is plain


@pytest.mark.parametrize("loss", ["softmax", "count_distribution"])
def test_eval_step_is_the_same_for_dense_and_fused_heads(loss):
  objective, model, tx, batch, state = _setup(loss)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(  # Non-zero heads, so that scores differ between classes.
      lambda p: p + 0.3 * rng.normal(size=p.shape).astype(p.dtype), state["params"])
  state = dict(state, params=params)
  batch = dict(batch, mask=np.ones(B, bool))
  classes = np.array([0, 3, 5, 23], np.int32)
  thresholds = np.array([0.01, 0.02, 0.05, 0.5], np.float32)
  pooled = np.sort(rng.uniform(0, 0.1, size=6).astype(np.float32))
  scalar = np.array([0.02, 0.05], np.float32)
  per_class = rng.uniform(0.0, 0.08, size=C).astype(np.float32)
  out = {}
  for fused in (False, True):
    one, two = train.make_eval_step(model, objective, r=5, use_fused=fused, chunk_size=7)
    first = jax.jit(one)(state, batch, scalar, per_class)
    second = jax.jit(two)(state, batch, classes, thresholds, pooled)
    out[fused] = (first, second)
  (dense, dense2), (fused, fused2) = out[False], out[True]
  np.testing.assert_array_equal(dense.ids, fused.ids)
  np.testing.assert_array_equal(dense.margin_ids, fused.margin_ids)
  for a, b in zip(jax.tree_util.tree_leaves((dense, dense2)),
                  jax.tree_util.tree_leaves((fused, fused2))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  scores = objective.scores(model.apply({"params": params}, batch))  # The dense reference.
  np.testing.assert_allclose(dense.values, jax.lax.top_k(scores, 5)[0], rtol=1e-6)
  np.testing.assert_array_equal(dense.above, (scores[:, :, None] >= scalar).sum(1))
  np.testing.assert_array_equal(dense.class_above, (scores >= per_class).sum(1))
  assert (dense.class_above > 5).any()  # Some sets are longer than r: truncation is counted.
