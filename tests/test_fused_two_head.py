"""Tests for multilabel_jax.losses.fused_two_head.

References: the package's dense ``two_head_average_k`` on materialised logits (autodiff for
the gradients), and an independent numpy float64 brute force of the loss and its gradient
(the pseudo-label rule written out with a sort).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from multilabel_jax.losses import fused_two_head, two_head
from tests.test_fused import IDS, _all_avals, _close, _dense_y

B, D, C = 6, 5, 23  # IDS: duplicates (rows 0, 3), an empty row (2), ids in [0, 23).
WHERE = np.array([True, True, True, False, True, True])
FUSED = fused_two_head.linear_two_head_average_k
REDUCED = fused_two_head.linear_two_head_average_k_reduced


def _heads(b=B, d=D, c=C, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  shapes = ((b, d), (d, c), (c,), (d, c), (c,))
  return tuple(jnp.asarray(rng.normal(size=s).astype(np.float32), dtype) for s in shapes)


def dense(x, ws, bs, wm, bm, ids, *, k, weight=1.0, where=None):
  return two_head.two_head_average_k(x @ ws + bs, x @ wm + bm, jnp.asarray(ids), k=k,
                                     weight=weight, where=where)


def np_two_head(x, ws, bs, wm, bm, ids, *, k, weight=1.0, where=None, g=None):
  """float64 ``(loss [B], grads of sum_b g_b loss_b w.r.t. (x, ws, bs, wm, bm), #pseudo)``."""
  x, ws, bs, wm, bm = (np.asarray(a, np.float64) for a in (x, ws, bs, wm, bm))
  zs, zm = x @ ws + bs, x @ wm + bm
  b, c = zs.shape
  active = np.ones(b, bool) if where is None else np.asarray(where, bool)
  y = np.asarray(_dense_y(ids, c), np.float64)
  observed = (y > 0) & active[:, None]
  p = np.exp(zs - zs.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  is_cand = active[:, None] & ~observed
  cand = np.sort(p[is_cand])[::-1]
  m = min(max(int(np.round(k * active.sum())) - int(observed.sum()), 0),
          min(int(np.ceil(k * b)), b * c))
  threshold = np.inf if m == 0 else (cand[m - 1] if m <= cand.size else -1.0)
  mined = is_cand & (p >= threshold)
  t = (observed | mined).astype(np.float64)
  n = y.sum(1)
  lse = np.log(np.exp(zs - zs.max(1, keepdims=True)).sum(1)) + zs.max(1)
  soft = np.where(n > 0, lse - (y * zs).sum(1) / np.maximum(n, 1), 0.0)
  bce = (np.logaddexp(0, zm) - t * zm).sum(1)
  loss = np.where(active, soft + weight * bce, 0.0)
  g = np.ones(b) if g is None else np.asarray(g, np.float64)
  g = np.where(active, g, 0.0)
  dzs = (g * (n > 0))[:, None] * (p - y / np.maximum(n, 1)[:, None])
  dzm = (g * weight)[:, None] * (1 / (1 + np.exp(-zm)) - t)
  grads = (dzs @ ws.T + dzm @ wm.T, x.T @ dzs, dzs.sum(0), x.T @ dzm, dzm.sum(0))
  return loss, grads, int(mined.sum()), m


COTANGENT = jnp.linspace(0.5, 2.0, B)  # A non-uniform g_b.


def _loss_grads(f, args, g=COTANGENT):
  """``(f(*args), grads of sum_b g_b f_b)``, jitted (eager dispatch is 6x slower here)."""
  grad = jax.grad(lambda *a: jnp.sum(f(*a) * g), argnums=range(len(args)))
  return jax.jit(lambda *a: (f(*a), grad(*a)))(*args)


# k=0.5: the 10-12 observed labels exceed round(k n), no pseudo-label; k=3.4, 6.0: m > 0.
@pytest.mark.parametrize("k,cs,where", [(0.5, 23, None), (3.4, 5, None), (3.4, 4, WHERE),
                                        (6.0, 1, WHERE), (6.0, 64, None)])
def test_matches_dense_and_float64(k, cs, where):
  args = _heads()
  w = None if where is None else jnp.asarray(where)
  f = lambda *a: FUSED(*a, IDS, k=k, weight=0.7, chunk_size=cs, where=w)
  ref = lambda *a: dense(*a, IDS, k=k, weight=0.7, where=w)
  loss, grads = _loss_grads(f, args)
  ref_loss, ref_grads = _loss_grads(ref, args)
  assert loss.shape == (B,) and loss.dtype == jnp.float32
  _close(loss, ref_loss)
  np_loss, np_grads, n_mined, _ = np_two_head(*args, IDS, k=k, weight=0.7, where=where,
                                             g=COTANGENT)
  _close(loss, np_loss)
  assert (n_mined > 0) == (k > 1), n_mined
  for got, r, r64 in zip(grads, ref_grads, np_grads):
    _close(got, r)
    _close(got, r64)
  if where is not None:
    assert float(loss[3]) == 0.0 and not np.any(np.asarray(grads[0])[3])


@pytest.mark.parametrize("where", [None, WHERE])
def test_reduced_matches_dense(where):
  args = _heads(seed=1)
  w = jnp.asarray(np.random.default_rng(2).uniform(0.1, 2.0, size=B).astype(np.float32))
  wh = None if where is None else jnp.asarray(where)
  red = lambda *a: REDUCED(*a[:5], IDS, k=3.4, weight=a[6], chunk_size=5, weights=a[5],
                           where=wh)
  ref = lambda *a: jnp.sum(jnp.where(wh if wh is not None else True, a[5], 0.0)
                           * dense(*a[:5], IDS, k=3.4, weight=a[6], where=wh))
  full = args + (w, jnp.float32(0.7))
  # An outer scale checks that the backward multiplies by the cotangent; args 5, 6 are the
  # example weights and the BCE weight.
  loss, g_red = _loss_grads(red, full, 3.0)
  ref_loss, g_ref = _loss_grads(ref, full, 3.0)
  _close(loss, ref_loss)
  for got, r in zip(g_red, g_ref):
    _close(got, r)


def test_reduced_default_is_mean_and_matches_per_example():
  args = _heads(seed=3)
  wh = jnp.asarray(WHERE)
  got, g_red = _loss_grads(lambda *a: REDUCED(*a, IDS, k=2.0, chunk_size=7, where=wh), args,
                           1.0)
  per, g_per = _loss_grads(lambda *a: FUSED(*a, IDS, k=2.0, chunk_size=7, where=wh), args,
                           1.0 / WHERE.sum())
  _close(got, jnp.sum(per) / WHERE.sum())
  for a, r in zip(g_red, g_per):
    _close(a, r)


def test_ties_at_the_threshold_are_all_pseudo_labels():
  # A zero softmax kernel: every row has the same probabilities, three distinct values,
  # so the m-th largest candidate lies inside a large tie group that crosses chunks.
  x, _, _, wm, bm = _heads(seed=4)
  ws = jnp.zeros((D, C))
  bs = jnp.asarray(np.tile([2.0, 1.0, 0.0], 8)[:C], jnp.float32)
  args = (x, ws, bs, wm, bm)
  k = 2.5
  _, _, n_mined, m = np_two_head(*args, IDS, k=k)
  assert n_mined > m > 0, (n_mined, m)  # The tie really includes more than m pairs.
  pseudo = two_head.average_k_pseudo_labels(x @ ws + bs, jnp.asarray(IDS), k)
  assert int(pseudo.sum()) - int(_dense_y(IDS, C).sum()) == n_mined
  ref_loss, ref_grads = _loss_grads(lambda *a: dense(*a, IDS, k=k), args)
  for cs in (4, 23):
    loss, grads = _loss_grads(lambda *a: FUSED(*a, IDS, k=k, chunk_size=cs), args)
    _close(loss, ref_loss)
    for got, r in zip(grads, ref_grads):
      _close(got, r)


def test_empty_rows_and_duplicates():
  args = _heads(seed=5)
  empty = np.full((B, 3), -1, np.int32)
  got = jax.jit(lambda *a: FUSED(*a, empty, k=2.0, chunk_size=6))(*args)
  _close(got, np_two_head(*args, empty, k=2.0)[0])  # Only the multi-label head's BCE.
  dup = np.array([[4, 4, 4, 9]] * B, np.int32)
  once = np.array([[4, 9, -1, -1]] * B, np.int32)
  f = jax.jit(lambda ids: FUSED(*args, ids, k=3.0, chunk_size=4))
  _close(f(dup), f(once), rtol=1e-6)
  _close(f(dup), np_two_head(*args, once, k=3.0)[0])


def test_bfloat16_inputs():
  args = _heads(b=8, d=16, c=37, seed=6, dtype=jnp.bfloat16)
  ids = np.random.default_rng(0).integers(-1, 37, size=(8, 4)).astype(np.int32)
  up = tuple(a.astype(jnp.float32) for a in args)  # The same bf16 values, computed in f32.
  loss, g = _loss_grads(lambda *a: FUSED(*a, ids, k=3.0, chunk_size=8), args, 1.0)
  ref_loss, r = _loss_grads(lambda *a: dense(*a, ids, k=3.0), up, 1.0)
  assert loss.dtype == jnp.float32 and np.all(np.isfinite(loss))
  _close(loss, ref_loss, rtol=1e-5)
  for gi, ri, a in zip(g, r, args):
    assert gi.dtype == a.dtype and np.all(np.isfinite(gi.astype(jnp.float32)))
    _close(gi.astype(jnp.float32), ri, rtol=2e-2)  # bf16 output rounding.
  _, red = _loss_grads(lambda *a: REDUCED(*a, ids, k=3.0, chunk_size=8), args, 1.0)
  for gi, ri, a in zip(red, r, args):
    assert gi.dtype == a.dtype
    _close(gi.astype(jnp.float32), ri / 8, rtol=2e-2)


def test_jit_with_traced_ids_and_where():
  args = _heads(seed=7)
  f = jax.jit(lambda ids, w: FUSED(*args, ids, k=3.4, chunk_size=5, where=w))
  ref = jax.jit(lambda w: dense(*args, IDS, k=3.4, where=w))
  _close(f(IDS, WHERE), ref(WHERE))


def _num_gemms(jaxpr):
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == "dot_general"
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):
          n += _num_gemms(sub.jaxpr)
        elif hasattr(sub, "eqns"):
          n += _num_gemms(sub)
  return n


@pytest.mark.parametrize("fn,gemms", [(FUSED, 10), (REDUCED, 8)])
def test_no_batch_by_classes_array_and_gemm_count(fn, gemms):
  b, c = 7, 96
  args = _heads(b=b, d=3, c=c)
  ids = np.array([[1, 95, -1]] * b, np.int32)
  loss = lambda *a: jnp.sum(fn(*a, ids, k=2.0, chunk_size=16))
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=range(5)))(*args).jaxpr
  shapes = {tuple(getattr(a, "shape", ())) for a in _all_avals(jaxpr)}
  assert (b, 16) in shapes  # The chunk logits exist ...
  assert not any(b in s and c in s for s in shapes)  # ... a [B, C] array does not.
  # C is a multiple of the chunk: each pass is one loop body, one GEMM per class chunk each.
  assert _num_gemms(jaxpr) == gemms


def test_errors():
  x, ws, bs, wm, bm = _heads()
  ok = dict(k=2.0, chunk_size=8)
  cases = [
      ((x, ws[:3], bs, wm, bm), ok, "softmax_kernel"),
      ((x, ws, bs[:4], wm, bm), ok, "softmax_bias"),
      ((x, ws, bs, wm[:3], bm), ok, "multilabel_kernel"),
      ((x, ws, bs, wm[:, :20], bm[:20]), ok, "multilabel_kernel"),
      ((x, ws, bs, wm, bm[:4]), ok, "multilabel_bias"),
      ((x[0], ws, bs, wm, bm), ok, "x"),
      ((x, ws, bs, wm, bm), dict(ok, k=0.0), "k"),
      ((x, ws, bs, wm, bm), dict(ok, chunk_size=0), "chunk_size"),
      ((x, ws, bs, wm, bm), dict(ok, where=jnp.ones(3, bool)), "where"),
  ]
  for args, kwargs, name in cases:
    with pytest.raises(ValueError, match=f"`{name}`"):
      FUSED(*args, IDS, **kwargs)
  with pytest.raises(ValueError, match="label_ids"):
    FUSED(x, ws, bs, wm, bm, IDS[:3], **ok)
  with pytest.raises(ValueError, match="label_ids"):
    FUSED(x, ws, bs, wm, bm, IDS + C, **ok)
  with pytest.raises(ValueError, match="`weights`"):
    REDUCED(x, ws, bs, wm, bm, IDS, weights=jnp.ones(3), **ok)


_PROPERTY = given(b=st.integers(1, 5), c=st.integers(1, 40), cs=st.integers(1, 16),
                  n_ids=st.integers(1, 6), seed=st.integers(0, 2**16),
                  k=st.sampled_from([0.3, 1.0, 2.6, 7.0]))


@settings(max_examples=3, deadline=None)
@_PROPERTY
def test_property_matches_float64(b, c, cs, n_ids, seed, k):
  _check_property(b, c, cs, n_ids, seed, k)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@_PROPERTY
def test_property_matches_float64_many(b, c, cs, n_ids, seed, k):
  _check_property(b, c, cs, n_ids, seed, k)


def _check_property(b, c, cs, n_ids, seed, k):
  args = _heads(b, 3, c, seed=seed)
  rng = np.random.default_rng(seed)
  ids = rng.integers(-1, c, size=(b, n_ids)).astype(np.int32)
  where = rng.random(b) < 0.8
  g = jnp.asarray(rng.uniform(0.5, 2.0, size=b).astype(np.float32))
  f = lambda *a: FUSED(*a, ids, k=k, weight=0.5, chunk_size=cs, where=jnp.asarray(where))
  loss, grads, _, _ = np_two_head(*args, ids, k=k, weight=0.5, where=where, g=g)
  got_loss, got_grads = _loss_grads(f, args, g)
  _close(got_loss, loss)
  for got, r in zip(got_grads, grads):
    _close(got, r)
