"""Tests for multilabel_jax.optim: the wide path's SGD group beside the main optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from multilabel_jax import configs, optim


def _params():
  return {"encoder": {"embedding": jnp.ones((3, 2))}, "head_logits": {"kernel": jnp.ones((2, 4)),
                                                                      "bias": jnp.zeros(4)},
          "wide_logits": {"table": jnp.full((3, 4), 2.0)}}


def test_param_groups():
  groups = optim.param_groups(_params())
  assert groups["wide_logits"] == {"table": "wide"}
  assert set(jax.tree_util.tree_leaves(groups["encoder"])) == {"main"}


def test_wide_group_is_sgd_with_l2_and_the_rest_is_the_main_optimizer():
  c = configs.base_config().optimizer
  c.warmup_steps, c.schedule, c.momentum = 0, "constant", 0.9
  c.lr, c.wide_lr, c.wide_weight_decay, c.clip_norm = 1e-2, 0.5, 0.1, 0.0
  params = _params()
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 3.0), params)
  tx, schedule = optim.make_optimizer(c, 100, wide=True)
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  # Wide: SGD with momentum on (grad + wd * w); the first step has no momentum yet.
  np.testing.assert_allclose(updates["wide_logits"]["table"], -0.5 * (3.0 + 0.1 * 2.0), rtol=1e-6)
  updates2, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates2["wide_logits"]["table"], -0.5 * 3.2 * 1.9, rtol=1e-6)
  # Main: exactly the optimizer without a wide group.
  main_tx, _ = optim.make_optimizer(c, 100)
  main_params = {k: v for k, v in params.items() if k != "wide_logits"}
  want, _ = main_tx.update({k: grads[k] for k in main_params}, main_tx.init(main_params),
                           main_params)
  for k in main_params:
    for got, exp in zip(jax.tree_util.tree_leaves(updates[k]), jax.tree_util.tree_leaves(want[k])):
      np.testing.assert_allclose(got, exp, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(0)), c.lr, rtol=1e-6)
  assert isinstance(tx, optax.GradientTransformation)


def test_deep_lr_with_wide_scales_the_main_group_only_when_a_wide_path_is_built():
  c = configs.base_config().optimizer
  c.warmup_steps, c.schedule, c.clip_norm, c.weight_decay = 0, "constant", 0.0, 0.0
  c.lr, c.deep_lr_with_wide = 1e-3, 1e-4
  params = _params()
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 3.0), params)
  tx, schedule = optim.make_optimizer(c, 100, wide=True)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(float(schedule(0)), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(updates["encoder"]["embedding"], -1e-4, rtol=1e-4)  # Adam: lr.
  np.testing.assert_allclose(updates["wide_logits"]["table"], -c.wide_lr * (3.0 + 4e-5 * 2.0),
                             rtol=1e-6)  # The wide group keeps wide_lr.
  alone, alone_schedule = optim.make_optimizer(c, 100)  # No wide path: the deep part is all.
  main = {k: v for k, v in params.items() if k != "wide_logits"}
  u, _ = alone.update({k: grads[k] for k in main}, alone.init(main), main)
  np.testing.assert_allclose(float(alone_schedule(0)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(u["encoder"]["embedding"], -1e-3, rtol=1e-4)
