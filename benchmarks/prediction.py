"""Benchmark: prediction throughput of :class:`multilabel_jax.inference.Predictor` and of
its exported form (:mod:`multilabel_jax.serving`).

Random parameters of the right shapes (throughput does not depend on what was learned):

* ``debtags``: the debtags model of ``experiments/debtags.py`` (bag of words, embed 256,
  one hidden layer of 512, 598 classes, T = 256 tokens) on a vocabulary of 50,000 words
  fit on synthetic Zipf documents; records of four text fields and a ``depends`` list,
  read and featurised by the Predictor (:func:`data.jsonl.document`), and the same rows
  as arrays.
* ``hw20k`` / ``hw1m``: hashtag_world's MLP (features 64, hidden 256) with a 20,480-class
  dense softmax head and a 1,048,576-class fused one (streaming top-k over 8,192-class
  chunks: no ``[B, C]`` array).

Reported per row, in records per second, median over ``--runs`` after one warm-up (which
compiles): ``Predictor.predict`` (the natural decoder, top-1, plus the top 5 labels) from
raw records and from arrays, with label names; ``Predictor.decode`` (the same ids and
scores as arrays, no names); and, where exported, the loaded export (jax + numpy only) on
the same arrays, which must give the same ids and scores (checked). And the process's peak
RSS.

Usage:
  .venv/bin/python benchmarks/prediction.py --quick        # ~2 min, no 1M head
  .venv/bin/python benchmarks/prediction.py --out benchmarks/results/prediction.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time

import jax
import numpy as np

from multilabel_jax import inference, losses, models, serving
from multilabel_jax.data import text as text_lib


def _random_params(model, example, seed=0):
  params = model.init(jax.random.key(seed), example)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda p: (0.05 * rng.standard_normal(p.shape)).astype(np.float32), params)


def _words(n):
  return [f"w{i}" for i in range(n)]


def debtags_predictor(batch_size, vocab=50_000, classes=598):
  rng = np.random.default_rng(0)
  words = np.asarray(_words(vocab))
  zipf = 1.0 / np.arange(1, vocab + 1)
  zipf /= zipf.sum()
  featurizer = text_lib.TextFeaturizer(text_lib.TextConfig(sublinear_tf=True, max_tokens=256))
  featurizer.fit([" ".join(rng.choice(words, 60, p=zipf)) for _ in range(4000)] + [
      " ".join(words)])  # Every word in at least one document: a 50,000-word vocabulary.
  objective = losses.get_objective("softmax", classes)
  model = models.get_model("bow", objective.head_outputs, vocab_size=featurizer.num_embeddings,
                           embed_dim=256, widths=(512,), pooling="sum", dropout=0.0, pad_id=0)
  reader = inference.TextReader(featurizer, {
      "text_fields": ["package", "section", "synopsis", "description"],
      "token_fields": ["depends"], "id_field": "package"})
  example = reader.batch([["w1"]]).arrays
  predictor = inference.Predictor(
      model, objective, {"params": _random_params(model, example)},
      label_names=[f"facet::tag{i}" for i in range(classes)], reader=reader,
      batch_size=batch_size, r=64)
  records = [{"package": f"pkg{i}", "section": "utils",
              "synopsis": " ".join(rng.choice(words, 8, p=zipf)),
              "description": " ".join(rng.choice(words, 80, p=zipf)),
              "depends": ["libc6", f"lib{i % 50}"]} for i in range(4096)]
  return predictor, records


def hashtag_predictor(classes, batch_size, fused):
  objective = losses.get_objective("softmax", classes)
  model = models.get_model("mlp", objective.head_outputs, widths=(256,))
  example = {"features": np.zeros((1, 64), np.float32)}
  predictor = inference.Predictor(
      model, objective, {"params": _random_params(model, example)},
      label_names=[str(c) for c in range(classes)],
      reader=inference.ArrayReader({"features": ((64,), "float32")}), r=64,
      use_fused=fused, chunk_size=8192, batch_size=batch_size)
  return predictor


def _rate(fn, n, runs):
  times = []
  for _ in range(runs + 1):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return n / float(np.median(times[1:]))


def run_setting(name, predictor, inputs, n, runs, export):
  row = {"setting": name, "num_classes": predictor.num_classes, "rows": n,
         "head": "fused" if predictor.use_fused else "dense", "batch_size": predictor.batch_size}
  if isinstance(inputs, list):  # Raw records: reading and featurising included.
    row["records_per_s_from_records"] = _rate(lambda: predictor.predict(inputs[:n], top_k=5),
                                              n, runs)
    arrays = predictor.read(inputs[:n]).arrays
  else:
    arrays = {k: v[:n] for k, v in inputs.items()}
  row["records_per_s"] = _rate(lambda: predictor.predict(arrays, top_k=5), n, runs)
  row["ids_per_s"] = _rate(lambda: predictor.decode(arrays, top_k=5), n, runs)
  if export:
    with tempfile.TemporaryDirectory() as folder:
      predictor.export(folder, top_k=5)
      exported = serving.load(folder)
      got, want = exported(arrays), predictor.decode(arrays, top_k=5)
      row["export_equal"] = all(np.array_equal(got[k], want[k]) for k in want)
      row["export_ids_per_s"] = _rate(lambda: exported(arrays), n, runs)
  row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return row


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  features = np.random.default_rng(1).standard_normal((4096, 64)).astype(np.float32)
  settings = [("debtags", lambda: debtags_predictor(256), 1024 if args.quick else 4096, True),
              ("hw20k", lambda: (hashtag_predictor(20_480, 256, False), {"features": features}),
               1024 if args.quick else 4096, True)]
  if not args.quick:
    settings.append(("hw1m", lambda: (hashtag_predictor(1_048_576, 128, True),
                                      {"features": features}), 256, False))
  rows = []
  print("| setting | C | head | rows | records -> labels | arrays -> labels | arrays -> ids | "
        "export: arrays -> ids | export == Predictor | peak RSS MB |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name, build, n, export in settings:
    predictor, inputs = build()
    row = run_setting(name, predictor, inputs, n, args.runs, export)
    rows.append(row)
    fmt = lambda k: f"{row[k]:.0f}" if k in row else "-"  # pylint: disable=cell-var-from-loop
    print(f"| {name} | {row['num_classes']} | {row['head']} | {n} | "
          f"{fmt('records_per_s_from_records')} | {fmt('records_per_s')} | {fmt('ids_per_s')} | "
          f"{fmt('export_ids_per_s')} | {row.get('export_equal', '-')} | "
          f"{row['peak_rss_mb']:.0f} |", flush=True)
  meta = {"machine": platform.machine(), "cpus": jax.local_device_count(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "params": "random, of the shapes named in the module docstring"}
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
