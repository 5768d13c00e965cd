"""The train step alone, against the device's own GEMM peak (the roofline of issue 14).

For each config and batch size: the loop's own jitted ``train_step``
(:func:`multilabel_jax.train.make_train_step`, built by ``train_loop._parts``) on
``--batches`` distinct batches of the config's data placed on the device beforehand, so
that neither the input pipeline nor the host is timed. Reported per row: compile seconds,
the median over ``--repeats`` of the mean step time over ``--steps`` steps (one
``block_until_ready`` per repeat), examples/s, XLA's FLOP count of one compiled step
(``cost_analysis()``), and the achieved FLOP/s as a fraction of the GEMM peak measured on
the same device in the same process: an 8192 x 8192 x 8192 matrix product in bfloat16 and
in float32 (the precision the steps run at; on a GPU XLA may use TF32 tensor cores for it).

  python benchmarks/train_step.py --out /tmp/step.json              # CPU: minutes
  python benchmarks/train_step.py --configs hashtag_pretrain.py:million --batch_sizes 256,4096
  python benchmarks/train_step.py --configs hashtag_pretrain.py:million --chunk_sizes 8192,65536

The numbers are only as good as XLA's FLOP count: a fused head's chunk loop is a
``fori_loop``, whose body XLA counts once, so for fused heads the FLOPs are computed from
the head's shape instead (``head_flops``: 4 GEMMs of 2 B D C, the fused loss's recompute
included) and the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def gemm_peak(dtype: str, n: int = 8192, runs: int = 10) -> float:
  """FLOP/s of an ``n^3`` matrix product in ``dtype`` on the default device."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(f(a, b))
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times)


def bench(spec: str, batch_size: int, steps: int, repeats: int, num_batches: int,
          chunk_size: int = 0) -> dict:
  import jax
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  import train_loop  # pylint: disable=import-outside-toplevel

  config = train_loop.load_config(spec, None, batch_size)
  if chunk_size:
    config.head.chunk_size = chunk_size
  parts = train_loop._parts  # pylint: disable=protected-access
  train_data, mesh, step_fn, init, abstract, fused = parts(config)
  sharding = NamedSharding(mesh, P("data"))
  batches = [{k: jax.device_put(np.asarray(v), sharding)
              for k, v in train_data.train_batch(i, count=False).items()}
             for i in range(num_batches)]
  state = init(jax.random.key(config.seed))
  t0 = time.perf_counter()
  compiled = step_fn.lower(abstract, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
  state, _ = compiled(state, batches[0])  # Warm-up.
  jax.block_until_ready(state)
  means = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for i in range(steps):
      state, _ = compiled(state, batches[i % num_batches])
    jax.block_until_ready(state)
    means.append((time.perf_counter() - t0) / steps)
  step_s = statistics.median(means)
  c = train_data.info.num_classes
  d = int(config.model_options.get("widths", (512,))[-1])
  head_flops = 4 * 2 * batch_size * d * c  # Forward, two backward GEMMs, fused recompute.
  flops = head_flops if fused else xla_flops
  return {"config": spec, "batch_size": batch_size, "classes": c, "features": d,
          "fused": fused, "chunk_size": int(config.head.chunk_size), "compile_s": compile_s,
          "step_ms": step_s * 1e3,
          "step_ms_repeats": [m * 1e3 for m in means], "examples_per_s": batch_size / step_s,
          "xla_flops": xla_flops, "head_flops": head_flops,
          "flops_source": "head_flops" if fused else "xla", "tflops_per_s": flops / step_s / 1e12}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--configs", default="hashtag_pretrain.py,hashtag_pretrain.py:million",
                 help="Comma-separated experiments/ files[:arg].")
  p.add_argument("--batch_sizes", default="256,4096")
  p.add_argument("--chunk_sizes", default="0",
                 help="Fused heads' head.chunk_size values to try (0: the config's).")
  p.add_argument("--steps", type=int, default=50, help="Steps per timed repeat.")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--batches", type=int, default=8, help="Distinct batches cycled through.")
  p.add_argument("--gemm_n", type=int, default=8192)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
  args = p.parse_args()
  import jax
  device = jax.devices()[0]
  peaks = {dt: gemm_peak(dt, args.gemm_n) for dt in ("bfloat16", "float32")}
  print(f"device {device.device_kind} ({device.platform}) x{jax.device_count()}: GEMM peak "
        f"{peaks['bfloat16'] / 1e12:.1f} TFLOP/s bf16, {peaks['float32'] / 1e12:.1f} float32",
        flush=True)
  rows = []
  print("| config | B | classes | head (chunk) | compile s | step ms | examples/s | TFLOP/s | "
        "% bf16 peak | % f32 peak |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
  for spec in args.configs.split(","):
    for b, cs in [(b, cs) for b in map(int, args.batch_sizes.split(","))
                  for cs in map(int, args.chunk_sizes.split(","))]:
      r = bench(spec, b, args.steps, args.repeats, args.batches, cs)
      r["fraction_of_bf16_peak"] = r["tflops_per_s"] * 1e12 / peaks["bfloat16"]
      r["fraction_of_float32_peak"] = r["tflops_per_s"] * 1e12 / peaks["float32"]
      rows.append(r)
      head = f"fused ({r['chunk_size']})" if r["fused"] else "dense"
      print(f"| {spec} | {b} | {r['classes']} | {head} | "
            f"{r['compile_s']:.1f} | {r['step_ms']:.2f} | {r['examples_per_s']:,.0f} | "
            f"{r['tflops_per_s']:.2f} ({r['flops_source']}) | "
            f"{100 * r['fraction_of_bf16_peak']:.1f} | {100 * r['fraction_of_float32_peak']:.1f} |",
            flush=True)
      out = {"info": {"device": device.device_kind, "platform": device.platform,
                      "devices": jax.device_count(), "jax": jax.__version__,
                      "python": platform.python_version(), "host_cpus": os.cpu_count(),
                      "gemm_n": args.gemm_n, "steps": args.steps, "repeats": args.repeats,
                      "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
             "gemm_peak_flops": peaks, "rows": rows}
      pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      pathlib.Path(args.out).write_text(json.dumps(out, indent=1))  # After every row.
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
