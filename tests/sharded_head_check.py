"""Multi-device checks for multilabel_jax.losses.sharded_head; run by test_sharded_head.py.

Run as a script in a fresh process: it forces 8 CPU devices before jax is imported.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from multilabel_jax.losses import fused
from multilabel_jax.losses import sharded_head as sh
from multilabel_jax.losses import streaming_top_k

B, D, C = 8, 5, 64


def close(a, b, rtol=1e-5):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-30))


def main():
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(D, C)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(C,)), jnp.float32)
  ids = rng.integers(-1, C, size=(B, 5)).astype(np.int32)
  ids[0] = [3, 3, 60, -1, -1]  # Duplicates; ids in the first and last shard.
  ids[1] = -1  # No labels.
  w = jnp.linspace(0.5, 2.0, B)
  where = jnp.array([True] * 6 + [False, True])
  n_checks = 0
  for shape, names, batch_axis in (((8,), ("classes",), None),
                                   ((2, 4), ("data", "classes"), "data")):
    mesh = jax.make_mesh(shape, names)
    ks = jax.device_put(k, NamedSharding(mesh, P(None, "classes")))
    bs = jax.device_put(b, NamedSharding(mesh, P("classes")))
    kw = dict(mesh=mesh, chunk_size=3, batch_axis=batch_axis)  # 3 does not divide C/n.
    pairs = [
        (lambda x, k, b: (fused.linear_sigmoid_bce(
            x, k, b, ids, chunk_size=5, label_smoothing=0.1, where=where) * w).sum(),
         lambda x, k, b: (sh.sharded_linear_sigmoid_bce(
             x, k, b, ids, label_smoothing=0.1, where=where, **kw) * w).sum()),
        (lambda x, k, b: (fused.linear_softmax_xent(x, k, b, ids, chunk_size=5, where=where)
                          * w).sum(),
         lambda x, k, b: (sh.sharded_linear_softmax_xent(x, k, b, ids, where=where, **kw)
                          * w).sum()),
        (lambda x, k, b: fused.linear_sigmoid_bce_reduced(x, k, b, ids, chunk_size=5, weights=w),
         lambda x, k, b: sh.sharded_linear_sigmoid_bce_reduced(x, k, b, ids, weights=w, **kw)),
        (lambda x, k, b: fused.linear_softmax_xent_reduced(x, k, b, ids, chunk_size=5,
                                                           where=where),
         lambda x, k, b: sh.sharded_linear_softmax_xent_reduced(x, k, b, ids, where=where,
                                                                **kw)),
    ]
    for single, sharded in pairs:
      v1, g1 = jax.value_and_grad(single, argnums=(0, 1, 2))(x, k, b)
      step = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))
      v2, g2 = step(x, ks, bs)
      close(v2, v1)
      for a, r in zip(g2, g1):
        close(a, r)
      # The kernel/bias gradients stay sharded along classes; W is never all-gathered.
      assert g2[1].sharding.spec == P(None, "classes"), g2[1].sharding
      assert g2[2].sharding.spec == P("classes"), g2[2].sharding
      assert g2[1].addressable_shards[0].data.shape == (D, C // shape[-1])
      hlo = step.lower(x, ks, bs).compile().as_text()
      assert "all-gather" not in hlo, "unexpected all-gather in the sharded loss"
      n_checks += 1
    # Per-example outputs match row by row.
    close(sh.sharded_linear_softmax_xent(x, ks, bs, ids, **kw),
          fused.linear_softmax_xent(x, k, b, ids, chunk_size=4))
    # Top-k: per-shard top-k + merge equals lax.top_k on the full logits.
    for kk in (1, 5, 8, 11):
      vals, top = jax.jit(lambda x, k, b, kk=kk: sh.sharded_linear_top_k(
          x, k, b, kk, **kw))(x, ks, bs)
      ref_v, ref_i = jax.lax.top_k(x @ k + b, kk)
      close(vals, ref_v)
      np.testing.assert_array_equal(top, ref_i)
      n_checks += 1
  # Errors.
  mesh = jax.make_mesh((8,), ("classes",))
  for bad, match in (((x, k[:, :60], b[:60]), "divisible"),):
    try:
      sh.sharded_linear_sigmoid_bce(*bad, ids % 60, mesh=mesh, chunk_size=4)
    except ValueError as e:
      assert match in str(e), e
    else:
      raise AssertionError("expected ValueError")
  try:
    sh.sharded_linear_sigmoid_bce(x, k, b, ids, mesh=mesh, chunk_size=4, axis_name="model")
  except ValueError as e:
    assert "axis_name" in str(e), e
  else:
    raise AssertionError("expected ValueError")
  print(f"OK {n_checks}")


if __name__ == "__main__":
  main()
