"""Fuzzed fused heads (losses/fused.py): chunk sizes that do not divide C (C = 1
included), float32 and bfloat16 inputs, logits of +-1e4 mixed with normal ones, rows with
no labels, rows with every label, duplicate ids, random ``where`` and weights.

The logits ``x @ kernel + bias`` are steered by taking ``x`` from the fuzz problem's
logits and ``kernel = I + noise``, so label-aligned +-1e4 logits reach every chunk. The
float64 reference is the dense loss on the same (rounded) inputs. Both losses are
non-negative (binary cross-entropies; a cross-entropy against a distribution), and so are
the reduced variants, weighted sums with non-negative weights.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings, strategies as st

from multilabel_jax.losses import fused
from tests.fuzz_problems import NO_SHRINK, as_f64, problems

# Each example compiles its program once (~3 s): few examples, many rows each.
FAST = settings(max_examples=4, deadline=None, phases=NO_SHRINK)
MANY = settings(max_examples=20, deadline=None, phases=NO_SHRINK)
NUM_CLASSES = (1, 7, 13)
CHUNKS = (2, 3, 5)  # None divides 7 or 13; 2, 3, 5 > C = 1.


def ref_bce(z, y, ls):
  t = y * (1 - ls) + ls / 2
  return (t * np.logaddexp(0, -z) + (1 - t) * np.logaddexp(0, z)).sum(-1)


def ref_softmax(z, y):
  k = y.sum(-1)
  ce = scipy.special.logsumexp(z, -1) - (y * z).sum(-1) / np.maximum(k, 1)
  return np.where(k > 0, ce, 0.0)


@functools.partial(jax.jit, static_argnames=("chunk_size", "ls"))
def evaluate(x, kernel, bias, ids, where, weights, *, chunk_size, ls):
  """The four fused losses with their gradients w.r.t. ``(x, kernel, bias)``."""
  heads = {
      "bce": lambda *h: fused.linear_sigmoid_bce(*h, ids, chunk_size=chunk_size,
                                                 label_smoothing=ls, where=where),
      "softmax": lambda *h: fused.linear_softmax_xent(*h, ids, chunk_size=chunk_size,
                                                      where=where),
  }
  reduced = {
      "bce": lambda *h: fused.linear_sigmoid_bce_reduced(
          *h, ids, chunk_size=chunk_size, weights=weights, label_smoothing=ls, where=where),
      "softmax": lambda *h: fused.linear_softmax_xent_reduced(
          *h, ids, chunk_size=chunk_size, weights=weights, where=where),
  }
  out = {}
  for name in heads:
    per_example, vjp = jax.vjp(heads[name], x, kernel, bias)
    total, grads_reduced = jax.value_and_grad(reduced[name], argnums=(0, 1, 2))(x, kernel, bias)
    out[name] = dict(per_example=per_example, grads=vjp(weights.astype(per_example.dtype)),
                     total=total, grads_reduced=grads_reduced)
  return out


def check_fused(p, chunk_size, ls, with_where):
  b, c = p.dense.shape
  rng = p.rng
  x = p.logits
  kernel = jnp.asarray(np.eye(c) + 0.1 * rng.normal(size=(c, c)), p.dtype)
  bias = jnp.asarray(rng.normal(size=c), p.dtype)
  where = rng.random(b) < 0.7 if with_where else np.ones(b, bool)
  weights = np.where(rng.random(b) < 0.2, 0.0, rng.uniform(0.1, 2.0, b)).astype(np.float32)
  out = evaluate(x, kernel, bias, jnp.asarray(p.ids), jnp.asarray(where), jnp.asarray(weights),
                 chunk_size=chunk_size, ls=ls)

  z = as_f64(x) @ as_f64(kernel) + as_f64(bias)
  y = p.dense.astype(np.float64)
  # float32 logits of 1e4 (and their float32 GEMM) carry ~1e-3 absolute error each.
  tol_rows = 2e-6 * (1 + np.abs(z).sum(1) + np.abs(as_f64(x)).sum(1) * c)
  empty = p.rows("empty")
  for name, want in (("bce", ref_bce(z, y, ls)), ("softmax", ref_softmax(z, y))):
    o = jax.tree.map(as_f64, out[name])
    want = np.where(where, want, 0.0)
    tol = tol_rows + 1e-5 * np.abs(want)
    loss = o["per_example"]
    assert np.isfinite(loss).all(), (name, loss)
    np.testing.assert_array_less(np.abs(loss - want), tol, err_msg=f"{name} vs float64")
    assert (loss >= -tol).all(), (name, "negative", loss)
    np.testing.assert_array_equal(loss[~where], 0.0, err_msg=f"{name}: where")
    if name == "softmax":
      np.testing.assert_array_equal(loss[empty], 0.0, err_msg="softmax: rows without labels")
    # Reduced: the weighted sum of the same per-example losses, and the same gradients.
    assert np.isfinite(o["total"]), (name, o["total"])
    np.testing.assert_allclose(o["total"], np.sum(weights * loss), rtol=1e-5,
                               atol=float(np.sum(weights * tol)), err_msg=f"{name} reduced")
    assert o["total"] >= -np.sum(weights * tol)
    for arg, g, g_red, inp in zip(("x", "kernel", "bias"), o["grads"], o["grads_reduced"],
                                  (x, kernel, bias)):
      assert out[name]["grads"][("x", "kernel", "bias").index(arg)].dtype == inp.dtype
      assert np.isfinite(g).all() and np.isfinite(g_red).all(), (name, arg)
      scale = max(np.abs(g).max(), 1.0)
      np.testing.assert_allclose(g_red, g, rtol=2e-2 if p.dtype == jnp.bfloat16 else 1e-4,
                                 atol=1e-4 * scale, err_msg=f"{name} reduced grad {arg}")
    dx = o["grads"][0]
    np.testing.assert_array_equal(dx[~where], 0.0, err_msg=f"{name}: where, grad")
    if name == "softmax":
      np.testing.assert_array_equal(dx[empty], 0.0, err_msg="softmax: empty rows, grad")


fused_cases = dict(p=problems(num_classes=NUM_CLASSES), chunk_size=st.sampled_from(CHUNKS),
                   ls=st.sampled_from([0.0, 0.2]), with_where=st.booleans())


@FAST
@given(**fused_cases)
def test_fused_fuzz(p, chunk_size, ls, with_where):
  check_fused(p, chunk_size, ls, with_where)


@pytest.mark.slow
@MANY
@given(**fused_cases)
def test_fused_fuzz_many(p, chunk_size, ls, with_where):
  check_fused(p, chunk_size, ls, with_where)
