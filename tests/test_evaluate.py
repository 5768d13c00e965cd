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
  assert top["set_size_counts"] == dense["set_size_counts"]
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


def test_frequency_buckets_split_label_mass():
  counts = np.array([100, 0, 30, 30, 20, 10, 5, 5])  # Total 200.
  buckets = evaluate.frequency_buckets(counts, 3)
  assert buckets.tolist() == [2, 0, 1, 1, 0, 0, 0, 0]  # 100 | 30+30 | the rest.
  with pytest.raises(ValueError, match="num_buckets"):
    evaluate.frequency_buckets(counts, 0)


def test_bucket_metrics_and_pr_curve_match_sklearn():
  metrics_lib = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(1)
  n, c = 60, 12
  # Distinct scores per class on a grid, and edges between grid points: every bin holds one
  # score, so the histogram AP is exact.
  scores = np.stack([rng.permutation(n) for _ in range(c)], 1).astype(np.float32) / n
  edges = (np.arange(n - 1) + 0.5) / n
  dense = (rng.uniform(size=(n, c)) < 0.25).astype(int)
  dense[:, 7] = 0  # A class without positives is left out of its bucket's mAP.
  labels = np.where(dense, np.arange(c), -1).astype(np.int32)
  buckets = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
  t = 0.6
  result = evaluate.evaluate(
      lambda b: (b["scores"], None), batches(scores, labels, 16),
      decoders={"thr": lambda s, cnt: decoders_lib.threshold(s, t, max_labels=c)},
      num_classes=c, top_ks=(1,), bin_edges=edges, class_buckets=buckets, pr_curve=True)
  b = result["buckets"]
  assert b["num_classes"] == [4, 4, 4]
  assert b["num_positives"] == [dense[:, buckets == i].sum() for i in range(3)]
  ap = np.array([metrics_lib.average_precision_score(dense[:, j], scores[:, j])
                 if dense[:, j].any() else np.nan for j in range(c)])
  for i in range(3):
    assert b["map"][i] == pytest.approx(np.nanmean(ap[buckets == i]), abs=1e-6)
  pred = (scores >= t).astype(int)
  for i in range(3):
    cols = buckets == i
    assert b["decoders"]["thr"]["recall_micro"][i] == pytest.approx(
        metrics_lib.recall_score(dense[:, cols], pred[:, cols], average="micro"))
    used = cols & ((dense + pred).sum(0) > 0)
    assert b["decoders"]["thr"]["f1_macro"][i] == pytest.approx(
        metrics_lib.f1_score(dense[:, used], pred[:, used], average="macro"))
  sizes = result["set_size_counts"]
  assert sizes["thr"] == np.bincount(pred.sum(1)).tolist()
  assert sizes["labels"] == np.bincount(dense.sum(1)).tolist()
  curve = result["pr_curve"]
  for thr, p, r in zip(curve["threshold"], curve["precision"], curve["recall"]):
    sel = scores >= thr
    assert p == pytest.approx((dense & sel).sum() / max(sel.sum(), 1) if sel.any() else 1.0)
    assert r == pytest.approx((dense & sel).sum() / dense.sum())
  assert curve["threshold"] == sorted(curve["threshold"], reverse=True)


def test_calibrate_average_k_at_fixed_sizes():
  rng = np.random.default_rng(2)
  scores = rng.uniform(size=(50, 20)).astype(np.float32)
  labels = rng.integers(-1, 20, size=(50, 3)).astype(np.int32)
  cal = evaluate.calibrate(scores, labels, k=2.0, average_ks=(1, 3, 5, 50))
  assert sorted(cal["average_k_at"]) == [1, 3, 5]  # K > C is skipped.
  decoders = evaluate.make_decoders(objective_name="softmax", has_counts=False,
                                    calibration=cal, top_ks=(1,), max_set_size=20,
                                    num_classes=20)
  for k in (1, 3, 5):
    sets = decoders[f"average_k_{k}"](scores, None)
    assert float(np.asarray(sets.mask).sum(1).mean()) == pytest.approx(k)
