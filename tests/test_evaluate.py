"""Evaluation paths: the top-r path equals the dense path where both apply."""

import numpy as np
import pytest

from multilabel_jax import evaluate
from multilabel_jax.losses import decoders as decoders_lib


def batches(scores, labels, batch_size):
  for s in range(0, len(scores), batch_size):
    sl = slice(s, s + batch_size)
    yield {"scores": scores[sl], "label_ids": labels[sl], "mask": np.ones(len(scores[sl]), bool)}


def test_top_path_equals_dense_path():
  rng = np.random.default_rng(0)
  n, c, r = 60, 40, 12
  scores = rng.uniform(size=(n, c)).astype(np.float32)
  labels = rng.integers(-1, c, size=(n, 4)).astype(np.int32)
  labels[0] = -1
  labels[1] = [3, 3, -1, 5]  # Duplicates count once.
  counts = rng.uniform(0, 6, size=n).astype(np.float32)
  propensity = rng.uniform(0.1, 1.0, size=c)
  t_avg = decoders_lib.calibrate_average_k(scores, 2.0)
  dense = evaluate.evaluate(
      lambda b: (b["scores"], counts[:len(b["scores"])] * 0 + 2.0), batches(scores, labels, 16),
      decoders={
          "top_3": lambda s, cnt: decoders_lib.top_k(s, 3),
          "threshold_0.5": lambda s, cnt: decoders_lib.threshold(s, 0.5, max_labels=r),
          "average_k": lambda s, cnt: decoders_lib.threshold(s, t_avg, max_labels=r),
          "by_count": lambda s, cnt: decoders_lib.by_count(s, cnt, max_labels=r)},
      num_classes=c, top_ks=(1, 3, 5), propensity=propensity)

  def predict_top(b):
    order = np.argsort(-b["scores"], axis=1, kind="stable")[:, :r]
    return (np.take_along_axis(b["scores"], order, 1), order,
            np.full(len(order), 2.0, np.float32))

  top = evaluate.evaluate_top(
      predict_top, batches(scores, labels, 16),
      decoders=evaluate.top_decoders(threshold_t=0.5, average_k_t=t_avg, top_ks=(3,),
                                     has_counts=True),
      num_classes=c, top_ks=(1, 3, 5), propensity=propensity)
  assert top["num_examples"] == dense["num_examples"] == n
  for key, value in top["ranking"].items():
    assert value == pytest.approx(dense["ranking"][key], rel=1e-5, abs=1e-6), key
  # Truncation differs by design: the dense path counts dropped labels, the top path
  # counts rows whose r-th candidate still qualifies (it cannot see past r).
  rth = -np.sort(-scores, axis=1)[:, r - 1]
  assert top["decoders"]["threshold_0.5"]["num_truncated"] == (rth >= 0.5).sum() > 0
  assert top["decoders"]["average_k"]["num_truncated"] == (rth >= t_avg).sum()
  for name, metrics in top["decoders"].items():
    for key, value in metrics.items():
      if key == "num_truncated" and name != "top_3":
        continue
      assert value == pytest.approx(dense["decoders"][name][key], rel=1e-5, abs=1e-6), (name, key)
