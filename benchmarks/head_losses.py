"""Benchmark: fused chunked head losses vs dense JAX, PyTorch dense and the bare GEMM bound.

Forward + backward of ``loss(x @ W + b, ids)`` w.r.t. ``(x, W, b)``, mean over the batch.
``--losses two_head`` adds the two-head Average-K loss (Garcin et al. 2023) of two heads
``(Ws, bs)``, ``(Wm, bm)`` with K = 6 (about 1.5 pseudo-labels a row on top of the 1-8
observed); its GEMM variants run the matmuls of both heads, and it has no torch variant.
Every variant runs in its own subprocess (clean peak RSS). Reported per variant: median
wall time over ``--runs`` runs after one warm-up, XLA temp memory
(``compiled.memory_analysis().temp_size_in_bytes``) and process peak RSS.

Variants:
  gemm:      the three matmuls of a dense head's forward + backward alone (the bound):
             x @ W, g @ W.T, x.T @ g with a given g [B, C].
  gemm_chunked: the same three matmuls over class chunks of --chunk_size (dlogits := logits),
             no loss math: the floor of the chunked structure, no [B, C] buffer.
  fused:     multilabel_jax.losses.fused per-example loss, .mean(), jax.grad (4 GEMMs;
             two_head: fused_two_head, 10 GEMMs against a bound of 6).
  reduced:   the reduced (scalar) fused variant, gradients computed in the forward
             (two_head: 8 GEMMs).
  dense:     optax on materialised logits with a dense multi-hot target (two_head: the
             package's dense losses.two_head_average_k on both heads' logits).
  torch:     PyTorch (on the GPU when there is one), dense logits
             (binary_cross_entropy_with_logits / cross_entropy with probability targets).

``--losses top_k`` times decoding instead: the top-64 classes of ``x @ W + b`` per row (the
evaluation's and the Predictor's candidates), whose bound is the forward GEMM alone:
  gemm:      x @ W + b with the [B, C] logits materialised (1 GEMM, the bound).
  gemm_chunked: the same GEMM over class chunks, each chunk's logits summed into a [B]
             vector so that XLA cannot drop it: the floor of the chunked structure.
  streaming: losses.streaming_top_k.linear_top_k (chunked GEMM + running top-k merge).
  dense:     lax.top_k on the materialised [B, C] logits.

Usage:
  .venv/bin/python benchmarks/head_losses.py --quick          # small sizes, ~1 min
  .venv/bin/python benchmarks/head_losses.py                  # full run (~20 min, 2 cores)
  .venv/bin/python benchmarks/head_losses.py --quick --losses two_head --out /tmp/th.json
  python benchmarks/head_losses.py --sizes 1024:512:131072,4096:1024:131072   # a GPU's rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("gemm", "gemm_chunked", "fused", "reduced", "dense", "torch")
LOSSES = ("bce", "softmax", "two_head", "top_k")
TOP_K_VARIANTS = ("gemm", "gemm_chunked", "streaming", "dense")
TWO_HEAD_K = 6.0
TOP_K = 64


def _make_data(b, d, c, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  x = (rng.standard_normal((b, d)) * 1.0).astype(np.float32)
  w = (rng.standard_normal((d, c)) * 0.02).astype(np.float32)
  bias = np.zeros((c,), np.float32)
  ids = np.full((b, 8), -1, np.int32)
  npos = rng.integers(1, 9, size=b)
  for i in range(b):
    ids[i, :npos[i]] = rng.choice(c, size=npos[i], replace=False)
  return x, w, bias, ids


def _heads(args, w, bias):
  """The head parameters: ``(W, b)``, or ``(Ws, bs, Wm, bm)`` for the two-head loss."""
  if args.loss != "two_head":
    return w, bias
  _, wm, bm, _ = _make_data(args.B, args.D, args.C, seed=1)
  return w, bias, wm, bm


def _time(fn, runs):
  fn()  # Warm-up (compile).
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  times.sort()
  return times[len(times) // 2], times


def child(args):
  x, w, bias, ids = _make_data(args.B, args.D, args.C)
  out = {"variant": args.variant, "loss": args.loss, "B": args.B, "D": args.D, "C": args.C}
  if args.variant == "torch":
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(os.cpu_count())
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    xt = torch.tensor(x, requires_grad=True, device=dev)
    wt = torch.tensor(w, requires_grad=True, device=dev)
    bt = torch.tensor(bias, requires_grad=True, device=dev)
    y = torch.zeros(args.B, args.C, device=dev)
    rows = torch.arange(args.B, device=dev)[:, None].expand(-1, ids.shape[1])
    idt = torch.tensor(ids, dtype=torch.long, device=dev)
    y[rows[idt >= 0], idt[idt >= 0]] = 1.0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out["torch_device"] = dev.type

    def step():
      for t in (xt, wt, bt):
        t.grad = None
      z = xt @ wt + bt
      if args.loss == "bce":
        loss = F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1).mean()
      else:
        loss = F.cross_entropy(z, y / y.sum(-1, keepdim=True))
      loss.backward()
      sync()
    out["median_s"], out["times_s"] = _time(step, args.runs)
    out["temp_bytes"] = None
  else:
    import jax
    import jax.numpy as jnp
    import optax
    from multilabel_jax import labels as labels_lib
    from multilabel_jax.losses import chunked_head, fused, fused_two_head, two_head
    xj, idj = jnp.asarray(x), jnp.asarray(ids)
    heads = tuple(map(jnp.asarray, _heads(args, w, bias)))  # (W, b) per head.
    cs = args.chunk_size
    kw = {"k": TWO_HEAD_K} if args.loss == "two_head" else {}
    if args.loss == "top_k":
      fn, fargs = _top_k_fn(args.variant, cs), (xj,) + heads
    elif args.variant == "gemm":
      g = jnp.full((args.B, args.C), 1e-3, jnp.float32)  # A stand-in for dlogits.

      def f(x, g, *heads):
        return [(x @ w, g @ w.T, x.T @ g) for w in heads[::2]]
      fn, fargs = jax.jit(f), (xj, g) + heads
    elif args.variant == "gemm_chunked":
      def f(x, *heads):
        def body(carry, start, kc, bc):
          dx, dk = carry
          z = x @ kc + bc
          dk = jax.lax.dynamic_update_slice_in_dim(dk, x.T @ z, start, axis=1)
          return dx + z @ kc.T, dk
        return [chunked_head.for_each_chunk(w, b, cs, body,
                                            (jnp.zeros_like(x), jnp.zeros_like(w)), refs=(x,))
                for w, b in zip(heads[::2], heads[1::2])]
      fn, fargs = jax.jit(f), (xj,) + heads
    else:
      if args.variant == "fused":
        loss_fn = {"bce": fused.linear_sigmoid_bce, "softmax": fused.linear_softmax_xent,
                   "two_head": fused_two_head.linear_two_head_average_k}[args.loss]
        obj = lambda x, *h: loss_fn(x, *h, idj, chunk_size=cs, **kw).mean()
      elif args.variant == "reduced":
        loss_fn = {"bce": fused.linear_sigmoid_bce_reduced,
                   "softmax": fused.linear_softmax_xent_reduced,
                   "two_head": fused_two_head.linear_two_head_average_k_reduced}[args.loss]
        obj = lambda x, *h: loss_fn(x, *h, idj, chunk_size=cs, **kw)
      else:
        def obj(x, *heads_and_ids):  # ids traced: ids_to_dense runs inside the jit.
          *h, ids = heads_and_ids
          z = x @ h[0] + h[1]
          if args.loss == "two_head":
            return two_head.two_head_average_k(z, x @ h[2] + h[3], ids, k=TWO_HEAD_K).mean()
          y = labels_lib.ids_to_dense(ids, args.C)
          if args.loss == "bce":
            return optax.sigmoid_binary_cross_entropy(z, y).sum(-1).mean()
          return optax.softmax_cross_entropy(z, y / y.sum(-1, keepdims=True)).mean()
      fargs = (xj,) + heads + ((idj,) if args.variant == "dense" else ())
      fn = jax.jit(jax.value_and_grad(obj, argnums=tuple(range(1 + len(heads)))))
    mem = fn.lower(*fargs).compile().memory_analysis()
    out["temp_bytes"] = int(mem.temp_size_in_bytes) if mem is not None else None
    if args.compile_only:
      out["median_s"] = None
    else:
      run = lambda: jax.block_until_ready(fn(*fargs))
      out["median_s"], out["times_s"] = _time(run, args.runs)
  out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print("RESULT " + json.dumps(out), flush=True)


def _top_k_fn(variant, chunk_size):
  """The jitted decoding variant of ``--losses top_k`` on ``(x, W, b)``."""
  import jax
  import jax.numpy as jnp
  from multilabel_jax.losses import chunked_head, streaming_top_k
  if variant == "gemm":
    return jax.jit(lambda x, w, b: x @ w + b)
  if variant == "gemm_chunked":
    def chunked(x, w, b):
      def body(total, start, kc, bc):
        del start
        return total + jnp.sum(x @ kc + bc, axis=1)
      return chunked_head.for_each_chunk(w, b, chunk_size, body, jnp.zeros(x.shape[:1]),
                                         refs=(x,))
    return jax.jit(chunked)
  if variant == "streaming":
    return jax.jit(lambda x, w, b: streaming_top_k.linear_top_k(x, w, b, TOP_K,
                                                                chunk_size=chunk_size))
  if variant == "dense":
    return jax.jit(lambda x, w, b: jax.lax.top_k(x @ w + b, TOP_K))
  raise ValueError(f"--variant {variant!r}: --losses top_k takes {TOP_K_VARIANTS}")


def run_child(loss, variant, b, d, c, runs, chunk_size, compile_only=False):
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--loss", loss, "--variant",
         variant, "--B", str(b), "--D", str(d), "--C", str(c), "--runs", str(runs),
         "--chunk_size", str(chunk_size)] + (["--compile_only"] if compile_only else [])
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  return {"variant": variant, "loss": loss, "B": b, "D": d, "C": c,
          "error": (proc.stderr or proc.stdout)[-600:]}


def _ratio(a, b):
  return None if a is None or b is None or not b else a / b


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--quick", action="store_true")
  p.add_argument("--child", action="store_true")
  p.add_argument("--compile_only", action="store_true")
  p.add_argument("--loss", default="bce")
  p.add_argument("--variant", default="fused")
  p.add_argument("--B", type=int, default=1024)
  p.add_argument("--D", type=int, default=512)
  p.add_argument("--C", type=int, default=4096)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--chunk_size", type=int, default=4096)
  p.add_argument("--out", default=None)
  p.add_argument("--sizes", default="",
                 help="B:D:C,... rows instead of the defaults (the 1M row stays; top_k excluded)")
  p.add_argument("--losses", default="bce,softmax",
                 help=f"comma-separated, from {LOSSES}")
  args = p.parse_args()
  if args.child:
    return child(args)

  if args.quick:
    sizes, runs, big = [(256, 128, 4096), (256, 128, 16384)], 3, (64, 64, 65536)
  else:
    sizes, runs, big = [(1024, 512, c) for c in (4096, 32768, 131072)], 5, (256, 256, 1 << 20)
  if args.sizes:
    sizes = [tuple(map(int, row.split(":"))) for row in args.sizes.split(",")]
  losses = args.losses.split(",")
  if set(losses) - set(LOSSES):
    p.error(f"--losses {args.losses!r}: choose from {LOSSES}")
  rows = []
  for loss in losses:
    if loss == "top_k":
      for (b, d, c) in ([(64, 64, 65536)] if args.quick else [(256, 256, 131072), big]):
        res = {v: run_child(loss, v, b, d, c, runs, args.chunk_size) for v in TOP_K_VARIANTS}
        rows.append(res)
        _print_top_k_row(b, d, c, res)
      continue
    variants = [v for v in VARIANTS if not (loss == "two_head" and v == "torch")]
    for (b, d, c) in sizes:
      res = {v: run_child(loss, v, b, d, c, runs, args.chunk_size) for v in variants}
      rows.append(res)
      _print_row(loss, b, d, c, res)
    b, d, c = big
    res = {v: run_child(loss, v, b, d, c, max(3, runs - 2), args.chunk_size)
           for v in ("gemm", "gemm_chunked", "fused", "reduced")}
    res["dense"] = run_child(loss, "dense", b, d, c, 1, args.chunk_size, compile_only=True)
    rows.append(res)
    _print_row(loss, b, d, c, res)

  info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "platform": platform.platform(), "python": platform.python_version(),
          "chunk_size": args.chunk_size, "quick": args.quick, "losses": losses,
          "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  try:
    import jax
    info["jax"] = jax.__version__
  except ImportError:
    pass
  out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                 "head_losses_quick.json" if args.quick else "head_losses.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump({"info": info, "rows": rows}, f, indent=1)
  print(f"wrote {out}")


def _print_top_k_row(b, d, c, res):
  t = {v: res[v].get("median_s") for v in TOP_K_VARIANTS}
  mb = {v: res[v].get("temp_bytes") for v in TOP_K_VARIANTS}
  print(f"top_{TOP_K}  B={b:5d} D={d:4d} C={c:8d} | "
        + " ".join(f"{v}={t[v]:.3f}s" if t[v] is not None else f"{v}=-" for v in TOP_K_VARIANTS)
        + " | streaming/gemm=" + (f"{_ratio(t['streaming'], t['gemm']):.2f}"
                                   if t["streaming"] and t["gemm"] else "-")
        + " | temp MiB " + " ".join(f"{v}={mb[v] / 2**20:.0f}" for v in TOP_K_VARIANTS
                                     if mb[v] is not None), flush=True)
  for v in res:
    if "error" in res[v]:
      print(f"  {v} failed: {res[v]['error']}", flush=True)


def _print_row(loss, b, d, c, res):
  g = lambda v, k: res.get(v, {}).get(k)
  t = {v: g(v, "median_s") for v in VARIANTS}
  fmt = lambda r: "  -  " if r is None else f"{r:5.2f}"
  mb = lambda v: "-" if g(v, "temp_bytes") is None else f"{g(v, 'temp_bytes') / 2**20:.0f}"
  print(f"{loss:7s} B={b:5d} D={d:4d} C={c:8d} | "
        + " ".join(f"{v}={t[v]:.3f}s" if t[v] is not None else f"{v}=-" for v in VARIANTS)
        + (f" | gemm {6 * b * d * c / t['gemm'] / 1e12:.2f} TFLOP/s" if t["gemm"] else "")
        + f" | fused/gemm={fmt(_ratio(t['fused'], t['gemm']))}"
        f" reduced/gemm_chunked={fmt(_ratio(t['reduced'], t['gemm_chunked']))}"
        f" reduced/gemm={fmt(_ratio(t['reduced'], t['gemm']))}"
        f" dense/reduced={fmt(_ratio(t['dense'], t['reduced']))}"
        f" torch/reduced={fmt(_ratio(t['torch'], t['reduced']))}"
        f" | temp MiB fused={mb('fused')} reduced={mb('reduced')} dense={mb('dense')}"
        f" dense/reduced={fmt(_ratio(g('dense', 'temp_bytes'), g('reduced', 'temp_bytes')))}",
        flush=True)
  for v in res:
    if "error" in res[v]:
      print(f"  {v} failed: {res[v]['error']}", flush=True)


if __name__ == "__main__":
  main()
