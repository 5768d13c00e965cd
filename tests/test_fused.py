"""Tests for multilabel_jax.losses.fused and streaming_top_k.

References: optax on dense logits (independent of this package), numpy float64 brute
force, jax.test_util.check_grads, lax.top_k on the full logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import fused
from multilabel_jax.losses import streaming_top_k

B, D, C = 6, 5, 23
IDS = np.array([[1, 5, 5, -1], [22, 0, -1, -1], [-1, -1, -1, -1], [3, 3, 3, 3],
                [7, 8, 9, 10], [21, -1, 2, -1]], np.int32)


def _data(b=B, d=D, c=C, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, d)).astype(np.float32) * scale
  k = rng.normal(size=(d, c)).astype(np.float32) * scale
  bias = rng.normal(size=(c,)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(k), jnp.asarray(bias)


def _dense_y(ids, c):
  y = np.zeros((ids.shape[0], c), np.float32)
  for i, row in enumerate(np.asarray(ids)):
    for j in row:
      if 0 <= j < c:
        y[i, j] = 1.0  # Duplicates count once.
  return jnp.asarray(y)


def dense_bce(x, k, b, ids, ls=0.0):
  t = _dense_y(ids, k.shape[1]) * (1 - ls) + ls / 2
  return optax.sigmoid_binary_cross_entropy(x @ k + b, t).sum(-1)


def dense_softmax(x, k, b, ids):
  y = _dense_y(ids, k.shape[1])
  n = y.sum(-1, keepdims=True)
  loss = optax.softmax_cross_entropy(x @ k + b, y / jnp.maximum(n, 1))
  return jnp.where(n[:, 0] > 0, loss, 0.0)


def np_bce(x, k, b, ids, ls=0.0):
  z = np.asarray(x, np.float64) @ np.asarray(k, np.float64) + np.asarray(b, np.float64)
  t = np.asarray(_dense_y(ids, k.shape[1]), np.float64) * (1 - ls) + ls / 2
  return (np.logaddexp(0, z) - t * z).sum(-1)


def np_softmax(x, k, b, ids):
  z = np.asarray(x, np.float64) @ np.asarray(k, np.float64) + np.asarray(b, np.float64)
  y = np.asarray(_dense_y(ids, k.shape[1]), np.float64)
  n = y.sum(-1)
  m = z.max(-1)
  lse = m + np.log(np.exp(z - m[:, None]).sum(-1))
  return np.where(n > 0, lse - (y * z).sum(-1) / np.maximum(n, 1), 0.0)


def _close(a, b, rtol=1e-5):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-30))


def _grads(f, *args):
  w = jnp.linspace(0.5, 2.0, args[0].shape[0])  # A non-uniform cotangent g_b.
  return jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=(0, 1, 2))(*args)


BCE = lambda ls=0.0, cs=8, where=None: (
    lambda x, k, b: fused.linear_sigmoid_bce(x, k, b, IDS, chunk_size=cs, label_smoothing=ls,
                                             where=where))
SOFTMAX = lambda cs=8, where=None: (
    lambda x, k, b: fused.linear_softmax_xent(x, k, b, IDS, chunk_size=cs, where=where))


@pytest.mark.parametrize("cs,ls", [(1, 0.0), (5, 0.1), (23, 0.0), (64, 0.1)])  # C=23.
def test_bce_matches_dense(cs, ls):
  x, k, b = _data()
  _close(BCE(ls, cs)(x, k, b), np_bce(x, k, b, IDS, ls))
  for g, r in zip(_grads(BCE(ls, cs), x, k, b), _grads(lambda *a: dense_bce(*a, IDS, ls), x, k, b)):
    _close(g, r)


@pytest.mark.parametrize("cs", [1, 5, 23, 64])
def test_softmax_matches_dense(cs):
  x, k, b = _data()
  _close(SOFTMAX(cs)(x, k, b), np_softmax(x, k, b, IDS))
  for g, r in zip(_grads(SOFTMAX(cs), x, k, b), _grads(lambda *a: dense_softmax(*a, IDS), x, k, b)):
    _close(g, r)


def test_matches_package_dense_losses():
  from multilabel_jax.losses import sigmoid, softmax  # The package's dense references.
  x, k, b = _data()
  ids = jnp.asarray(IDS)
  _close(BCE(0.2)(x, k, b), sigmoid.sigmoid_bce(x @ k + b, ids, label_smoothing=0.2))
  _close(SOFTMAX()(x, k, b), softmax.softmax_xent(x @ k + b, ids))


@pytest.mark.parametrize("kind", ["bce", "softmax"])
def test_reduced_matches_dense(kind):
  x, k, b = _data(seed=1)
  w = jnp.asarray(np.random.default_rng(2).uniform(0.1, 2.0, size=B).astype(np.float32))
  where = jnp.array([True, True, False, True, True, True])
  if kind == "bce":
    red = lambda x, k, b, w: fused.linear_sigmoid_bce_reduced(
        x, k, b, IDS, chunk_size=5, weights=w, label_smoothing=0.1, where=where)
    ref = lambda x, k, b, w: jnp.sum(jnp.where(where, w * dense_bce(x, k, b, IDS, 0.1), 0))
  else:
    red = lambda x, k, b, w: fused.linear_softmax_xent_reduced(
        x, k, b, IDS, chunk_size=5, weights=w, where=where)
    ref = lambda x, k, b, w: jnp.sum(jnp.where(where, w * dense_softmax(x, k, b, IDS), 0))
  _close(red(x, k, b, w), ref(x, k, b, w))
  # A non-unit outer scale checks that the backward multiplies by the cotangent.
  g_red = jax.grad(lambda *a: 3.0 * red(*a), argnums=(0, 1, 2, 3))(x, k, b, w)
  g_ref = jax.grad(lambda *a: 3.0 * ref(*a), argnums=(0, 1, 2, 3))(x, k, b, w)
  for g, r in zip(g_red, g_ref):
    _close(g, r)


def test_reduced_default_is_mean_over_where():
  x, k, b = _data()
  where = jnp.array([True, False, True, True, False, True])
  got = fused.linear_sigmoid_bce_reduced(x, k, b, IDS, chunk_size=8, where=where)
  per = fused.linear_sigmoid_bce(x, k, b, IDS, chunk_size=8)
  _close(got, jnp.sum(jnp.where(where, per, 0)) / 4)
  got = fused.linear_softmax_xent_reduced(x, k, b, IDS, chunk_size=8)
  _close(got, jnp.mean(fused.linear_softmax_xent(x, k, b, IDS, chunk_size=8)))


def test_zero_positive_rows():
  x, k, b = _data()
  ids = np.full((B, 3), -1, np.int32)
  z = np.asarray(x @ k + b, np.float64)
  _close(fused.linear_sigmoid_bce(x, k, b, ids, chunk_size=7), np.logaddexp(0, z).sum(-1))
  loss, g = jax.value_and_grad(
      lambda x: fused.linear_softmax_xent(x, k, b, ids, chunk_size=7).sum())(x)
  assert float(loss) == 0.0 and not np.any(np.asarray(g))


def test_duplicates_count_once():
  x, k, b = _data()
  dup = np.array([[4, 4, 4, 9]] * B, np.int32)
  once = np.array([[4, 9, -1, -1]] * B, np.int32)
  for f in (fused.linear_sigmoid_bce, fused.linear_softmax_xent):
    _close(f(x, k, b, dup, chunk_size=4), f(x, k, b, once, chunk_size=4), rtol=1e-6)
  _close(fused.linear_softmax_xent(x, k, b, dup, chunk_size=4), np_softmax(x, k, b, once))


def test_where_mask():
  x, k, b = _data()
  where = jnp.array([True, False, True, False, True, True])
  for f, ref in ((BCE(cs=6, where=where), dense_bce), (SOFTMAX(cs=6, where=where), dense_softmax)):
    got = f(x, k, b)
    _close(got, jnp.where(where, ref(x, k, b, IDS), 0.0))
    gx = _grads(f, x, k, b)[0]
    assert not np.any(np.asarray(gx)[~np.asarray(where)])


def test_extreme_logits_finite():
  # |logits| up to ~1e4: softplus / logsumexp must not overflow in any chunk.
  x, k, b = _data(scale=40.0)
  z = np.asarray(x @ k + b)
  assert np.abs(z).max() > 5e3
  for f, ref in ((BCE(0.1, 5), lambda *a: np_bce(*a, IDS, 0.1)),
                 (SOFTMAX(5), lambda *a: np_softmax(*a, IDS))):
    loss = f(x, k, b)
    grads = _grads(f, x, k, b)
    assert np.all(np.isfinite(loss)) and all(np.all(np.isfinite(g)) for g in grads)
    _close(loss, ref(x, k, b), rtol=1e-4)


def test_bfloat16_inputs():
  x, k, b = _data(b=8, d=16, c=37, seed=3)
  ids = np.random.default_rng(0).integers(-1, 37, size=(8, 4)).astype(np.int32)
  xb, kb, bb = (a.astype(jnp.bfloat16) for a in (x, k, b))
  up = lambda a: a.astype(jnp.float32)  # The same bf16 values, computed in f32.
  for f, ref in ((fused.linear_sigmoid_bce, dense_bce), (fused.linear_softmax_xent, dense_softmax)):
    loss = f(xb, kb, bb, ids, chunk_size=8)
    assert loss.dtype == jnp.float32
    _close(loss, ref(up(xb), up(kb), up(bb), ids), rtol=1e-5)
    g = jax.grad(lambda *a: f(*a, ids, chunk_size=8).sum(), argnums=(0, 1, 2))(xb, kb, bb)
    r = jax.grad(lambda *a: ref(*a, ids).sum(), argnums=(0, 1, 2))(up(xb), up(kb), up(bb))
    for gi, ri, a in zip(g, r, (xb, kb, bb)):
      assert gi.dtype == a.dtype
      _close(up(gi), ri, rtol=2e-2)  # bf16 output rounding.


def test_check_grads_numerically():
  x, k, b = _data(b=3, d=4, c=11, seed=4)
  ids = np.array([[0, 10, -1], [5, 5, -1], [-1, -1, -1]], np.int32)
  for f in (lambda *a: fused.linear_sigmoid_bce(*a, ids, chunk_size=4, label_smoothing=0.1),
            lambda *a: fused.linear_softmax_xent(*a, ids, chunk_size=4)):
    check_grads(lambda *a: f(*a).sum(), (x, k, b), order=1, modes=["rev"], eps=1e-2,
                atol=2e-2, rtol=2e-2)


def _all_avals(jaxpr):
  for eqn in jaxpr.eqns:
    for v in eqn.outvars:
      yield v.aval
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # ClosedJaxpr
          yield from _all_avals(sub.jaxpr)
        elif hasattr(sub, "eqns"):  # Jaxpr
          yield from _all_avals(sub)


@pytest.mark.parametrize("name", ["linear_sigmoid_bce", "linear_softmax_xent",
                                  "linear_sigmoid_bce_reduced", "linear_softmax_xent_reduced"])
def test_no_batch_by_classes_array(name):
  b, d, c = 7, 3, 97
  x, k, bias = _data(b, d, c)
  ids = np.array([[1, 96, -1]] * b, np.int32)
  f = getattr(fused, name)
  loss = lambda x, k, bias: jnp.sum(f(x, k, bias, ids, chunk_size=16))
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, k, bias)
  shapes = {tuple(getattr(a, "shape", ())) for a in _all_avals(jaxpr.jaxpr)}
  assert (b, 16) in shapes  # The chunk logits exist ...
  assert not any(b in s and c in s for s in shapes)  # ... a [B, C] array does not.


def test_errors():
  x, k, b = _data()
  with pytest.raises(ValueError, match="kernel"):
    fused.linear_sigmoid_bce(x, k[:3], b, IDS, chunk_size=8)
  with pytest.raises(ValueError, match="x"):
    fused.linear_softmax_xent(x[0], k, b, IDS, chunk_size=8)
  with pytest.raises(ValueError, match="bias"):
    fused.linear_softmax_xent(x, k, b[:4], IDS, chunk_size=8)
  with pytest.raises(ValueError, match="label_ids"):
    fused.linear_sigmoid_bce(x, k, b, IDS.astype(np.float32), chunk_size=8)
  with pytest.raises(ValueError, match="label_ids"):
    fused.linear_sigmoid_bce(x, k, b, IDS[:, 0], chunk_size=8)
  with pytest.raises(ValueError, match="label_ids"):
    fused.linear_sigmoid_bce(x, k, b, IDS[:3], chunk_size=8)
  with pytest.raises(ValueError, match="label_ids"):
    fused.linear_softmax_xent(x, k, b, IDS + C, chunk_size=8)
  with pytest.raises(ValueError, match="chunk_size"):
    fused.linear_softmax_xent(x, k, b, IDS, chunk_size=0)
  with pytest.raises(ValueError, match="label_smoothing"):
    fused.linear_sigmoid_bce(x, k, b, IDS, chunk_size=8, label_smoothing=1.0)
  with pytest.raises(ValueError, match="weights"):
    fused.linear_sigmoid_bce_reduced(x, k, b, IDS, chunk_size=8, weights=jnp.ones(3))
  with pytest.raises(ValueError, match="where"):
    fused.linear_sigmoid_bce(x, k, b, IDS, chunk_size=8, where=jnp.ones(3, bool))


def test_out_of_range_ids_dropped_under_jit():
  x, k, b = _data()
  bad = IDS.copy()
  bad[0, 3] = C + 5
  clean = IDS.copy()
  for f in (fused.linear_sigmoid_bce, fused.linear_softmax_xent):
    got = jax.jit(lambda ids: f(x, k, b, ids, chunk_size=8))(bad)
    _close(got, f(x, k, b, clean, chunk_size=8), rtol=1e-6)


_PROPERTY = given(b=st.integers(1, 5), c=st.integers(1, 40), cs=st.integers(1, 16),
                  n_ids=st.integers(1, 6), seed=st.integers(0, 2**16),
                  ls=st.sampled_from([0.0, 0.3]))


@settings(max_examples=4, deadline=None)
@_PROPERTY
def test_property_matches_float64(b, c, cs, n_ids, seed, ls):
  _check_property(b, c, cs, n_ids, seed, ls)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@_PROPERTY
def test_property_matches_float64_many(b, c, cs, n_ids, seed, ls):
  _check_property(b, c, cs, n_ids, seed, ls)


def _check_property(b, c, cs, n_ids, seed, ls):
  x, k, bias = _data(b, 3, c, seed=seed)
  ids = np.random.default_rng(seed).integers(-1, c, size=(b, n_ids)).astype(np.int32)
  _close(fused.linear_sigmoid_bce(x, k, bias, ids, chunk_size=cs, label_smoothing=ls),
         np_bce(x, k, bias, ids, ls))
  _close(fused.linear_softmax_xent(x, k, bias, ids, chunk_size=cs), np_softmax(x, k, bias, ids))
  kk = min(c, 1 + seed % 4)
  vals, top = streaming_top_k.linear_top_k(x, k, bias, kk, chunk_size=cs)
  ref_v, ref_i = jax.lax.top_k(x @ k + bias, kk)
  _close(vals, ref_v)
  np.testing.assert_array_equal(top, ref_i)


@pytest.mark.parametrize("k_top,cs", [(1, 4), (5, 3), (5, 10), (23, 8)])
def test_linear_top_k(k_top, cs):
  x, k, b = _data(seed=5)
  vals, ids = jax.jit(lambda x: streaming_top_k.linear_top_k(x, k, b, k_top, chunk_size=cs))(x)
  ref_v, ref_i = jax.lax.top_k(x @ k + b, k_top)
  _close(vals, ref_v)
  np.testing.assert_array_equal(ids, ref_i)
  assert ids.dtype == jnp.int32 and vals.shape == (B, k_top)


def test_linear_top_k_ties_lower_id_first():
  x = jnp.ones((2, 1))
  k = jnp.zeros((1, 10))
  b = jnp.array([0, 1, 1, 0, 1, 0, 0, 1, 0, 1], jnp.float32)
  _, ids = streaming_top_k.linear_top_k(x, k, b, 4, chunk_size=3)
  np.testing.assert_array_equal(ids, [[1, 2, 4, 7]] * 2)


def test_linear_top_k_errors():
  x, k, b = _data()
  with pytest.raises(ValueError, match="k"):
    streaming_top_k.linear_top_k(x, k, b, C + 1, chunk_size=4)
  with pytest.raises(ValueError, match="k"):
    streaming_top_k.linear_top_k(x, k, b, 0, chunk_size=4)


@pytest.mark.parametrize("k_avg,cs", [(3.0, 5), (0.5, 23), (3.4, 4)])  # m = 5, 0, 7.
def test_average_k_threshold_matches_two_head(k_avg, cs):
  from multilabel_jax.losses import two_head  # The dense reference rule.
  x, k, b = _data(seed=6)
  where = jnp.array([True, True, True, False, True, True])
  ids = jnp.asarray(IDS)
  t, lse = streaming_top_k.linear_average_k_threshold(x, k, b, ids, k_avg, chunk_size=cs,
                                                      where=where)
  z = x @ k + b
  _close(lse, jax.nn.logsumexp(z, -1))
  probs = jnp.exp(z - lse[:, None])
  observed = (_dense_y(IDS, C) > 0) & where[:, None]
  pseudo = observed | ((probs >= t) & ~observed & where[:, None])
  ref = two_head.average_k_pseudo_labels(z, ids, k_avg, where=where)
  np.testing.assert_array_equal(pseudo, ref)
  assert np.isfinite(t) == (k_avg > 1), t  # 10 labels observed in the 5 active rows.
