"""The evaluation path: one streaming pass for dense and fused heads, exact mAP, calibration."""

import shutil

import numpy as np
import pytest
from sklearn import metrics as skm

from multilabel_jax import calibration, evaluate, losses, metrics, scoring, train
from multilabel_jax.losses import decoders as decoders_lib
from tests.train_util import tiny_config


def batches_of(scores, labels, batch_size, extra=None):
  def gen():
    for s in range(0, len(scores), batch_size):
      sl = slice(s, s + batch_size)
      b = {"scores": scores[sl], "label_ids": labels[sl], "mask": np.ones(len(scores[sl]), bool)}
      if extra is not None:
        b["counts"] = extra[sl]
      yield b
  return gen


def dense(labels, c):
  out = np.zeros((len(labels), c), int)
  for i, row in enumerate(labels):
    out[i, row[row >= 0]] = 1
  return out


def _problem(seed=0, n=60, c=40):
  rng = np.random.default_rng(seed)
  scores = rng.uniform(size=(n, c)).astype(np.float32)
  labels = rng.integers(-1, c, size=(n, 4)).astype(np.int32)
  labels[0] = -1
  labels[1] = [3, 3, -1, 5]  # Duplicates count once.
  return scores, labels


def test_ranking_and_sets_equal_the_dense_references():
  scores, labels = _problem()
  n, c = scores.shape
  y = dense(labels, c)
  objective = losses.get_objective("sigmoid", c)
  scorer = scoring.array_scorer(lambda b: b["scores"], r=12)
  result = evaluate.evaluate(scorer, batches_of(scores, labels, 16), objective=objective,
                             num_classes=c, top_ks=(1, 3, 5), r=12, pr_curve=True)
  ranking = result["ranking"]
  for k in (1, 3, 5):
    want = float(metrics.masked_mean(metrics.precision_at_k(scores, labels, k)))
    assert ranking[f"precision_at_{k}"] == pytest.approx(want, abs=1e-6)
  cols = y.sum(0) > 0
  assert ranking["map"] == pytest.approx(
      skm.average_precision_score(y[:, cols], scores[:, cols], average="macro"), abs=1e-6)
  assert ranking["map_micro"] == pytest.approx(
      skm.average_precision_score(y, scores, average="micro"), abs=1e-6)
  rank = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
  pred = (scores >= 0.5) & (rank < 12)  # A set holds at most r = 12 labels.
  m = result["decoders"]["threshold_0.5"]
  assert m["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"), abs=1e-6)
  assert m["num_truncated"] == int(np.maximum((scores >= 0.5).sum(1) - 12, 0).sum()) > 0
  assert result["set_size_counts"]["labels"] == np.bincount(y.sum(1)).tolist()
  assert result["map_method"].startswith("exact")


def test_expected_f1_sets_are_the_best_top_k_of_the_whole_rows():
  """The decoder sees the top r and the row's score sum; its sets are those chosen from all
  C marginals (the tail beyond r as a Poisson count, so close to, not always equal to, the
  exact choice), never empty, and scored like any other decoder."""
  rng = np.random.default_rng(3)
  n, c, r = 50, 40, 8
  scores = (rng.beta(0.3, 3.0, size=(n, c))).astype(np.float32)
  labels = np.where(rng.uniform(size=(n, c)) < scores, np.arange(c), -1).astype(np.int32)
  labels[:, 0] = np.where((labels >= 0).any(1), labels[:, 0], 7)  # Every row has a label.
  objective = losses.get_objective("sigmoid", c)
  assert "expected_f1" in evaluate.decoder_rules(objective, {}, top_ks=(1,), r=r)
  assert "expected_f1" not in evaluate.decoder_rules(losses.get_objective("softmax", c), {},
                                                     top_ks=(1,), r=r)
  scorer = scoring.array_scorer(lambda b: b["scores"], r=r)
  result = evaluate.evaluate(scorer, batches_of(scores, labels, 16), objective=objective,
                             num_classes=c, top_ks=(1,), r=r)
  order = np.argsort(-scores, axis=1, kind="stable")
  top = np.take_along_axis(scores, order, axis=1).astype(np.float64)
  exact_k, _ = losses.expected_f1_sets(top, min_k=1)  # All C classes, no tail model.
  approx_k, _ = losses.expected_f1_sets(top[:, :r], top[:, r:].sum(1), min_k=1, max_k=r)
  assert (approx_k >= 1).all() and np.mean(approx_k == np.minimum(exact_k, r)) >= 0.9
  y = dense(labels, c)
  pred = np.zeros_like(y)
  for i, k in enumerate(approx_k):
    pred[i, order[i, :k]] = 1
  m = result["decoders"]["expected_f1"]
  assert m["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"), abs=1e-6)
  assert m["f1_samples"] == pytest.approx(skm.f1_score(y, pred, average="samples"), abs=1e-6)


def test_calibration_equals_the_full_score_calibration():
  scores, labels = _problem(1, n=80, c=30)
  scores = np.round(scores, 2)  # Ties.
  c = scores.shape[1]
  objective = losses.get_objective("softmax", c)
  scorer = scoring.array_scorer(lambda b: b["scores"], r=c)
  val = evaluate.evaluate(scorer, batches_of(scores, labels, 32), objective=objective,
                          num_classes=c, top_ks=(1,), r=c, keep_values=True)
  cal = calibration.calibrate(val["_calibration_inputs"], num_classes=c, k=None,
                           average_ks=(1, 3, 50))
  np.testing.assert_array_equal(
      cal["class_thresholds"],
      decoders_lib.calibrate_class_thresholds(scores, labels, min_positives=5))
  k = calibration.mean_labels(labels)
  assert cal["average_k"] == {"k": k, "threshold": decoders_lib.calibrate_average_k(scores, k)}
  assert sorted(cal["average_k_at"]) == [1, 3]  # K > C is skipped.
  test = evaluate.evaluate(scorer, batches_of(scores, labels, 32), objective=objective,
                           num_classes=c, top_ks=(1,), r=c, calibration=cal)
  for kk in (1, 3):  # Ties are never split: the sets hold all of a tie group.
    t = cal["average_k_at"][kk]
    assert t == decoders_lib.calibrate_average_k(scores, kk)
    assert test["decoders"][f"average_k_{kk}"]["mean_set_size"] == pytest.approx(
        (scores >= t).sum(1).mean(), abs=1e-6)
  pred = scores >= cal["class_thresholds"][None]
  assert test["decoders"]["class_thresholds"]["f1_micro"] == pytest.approx(
      skm.f1_score(dense(labels, c), pred, average="micro"), abs=1e-6)


def test_by_count_and_buckets():
  scores, labels = _problem(2)
  n, c = scores.shape
  y = dense(labels, c)
  counts = np.random.default_rng(3).uniform(0, 6, size=n).astype(np.float32)
  objective = losses.get_objective("count_distribution", c)
  scorer = scoring.array_scorer(lambda b: b["scores"], r=4, counts_fn=lambda b: b["counts"])
  buckets = np.arange(c) % 3
  result = evaluate.evaluate(scorer, batches_of(scores, labels, 16, counts),
                             objective=objective, num_classes=c, top_ks=(1,), r=4,
                             class_buckets=buckets)
  n_count = np.round(counts).astype(int)
  assert result["decoders"]["by_count"]["num_truncated"] == int(np.maximum(n_count - 4, 0).sum())
  ap = np.array([skm.average_precision_score(y[:, j], scores[:, j]) if y[:, j].any()
                 else np.nan for j in range(c)])
  for b in range(3):
    assert result["buckets"]["map"][b] == pytest.approx(np.nanmean(ap[buckets == b]), abs=1e-6)
    assert result["buckets"]["num_positives"][b] == y[:, buckets == b].sum()


def test_frequency_buckets_split_label_mass():
  counts = np.array([100, 0, 30, 30, 20, 10, 5, 5])  # Total 200.
  buckets = evaluate.frequency_buckets(counts, 3)
  assert buckets.tolist() == [2, 0, 1, 1, 0, 0, 0, 0]  # 100 | 30+30 | the rest.
  with pytest.raises(ValueError, match="num_buckets"):
    evaluate.frequency_buckets(counts, 0)


def _assert_reports_equal(a, b):
  assert a["num_examples"] == b["num_examples"]
  assert a["set_size_counts"] == b["set_size_counts"]
  assert a["ranking"].keys() == b["ranking"].keys()
  for key, value in a["ranking"].items():
    assert b["ranking"][key] == pytest.approx(value, abs=1e-6), key
  assert a["decoders"].keys() == b["decoders"].keys()
  for name, m in a["decoders"].items():
    for key, value in m.items():
      assert b["decoders"][name][key] == pytest.approx(value, abs=1e-6), (name, key)


def _dense_then_fused(tmp_path, loss):
  config = tiny_config(loss)
  report_dense = train.train_and_evaluate(config, tmp_path / "dense")
  shutil.copytree(tmp_path / "dense", tmp_path / "fused")
  config.head.fused = "on"
  config.head.chunk_size = 24  # Does not divide 64 classes.
  config.allow_config_change = True
  report_fused = train.train_and_evaluate(config, tmp_path / "fused")  # Restores, evaluates.
  assert report_fused["train"]["fused_head"] and not report_dense["train"]["fused_head"]
  assert report_fused["train"]["start_step"] == config.total_steps
  return report_dense, report_fused


@pytest.mark.parametrize("loss", ["softmax", "two_head"])
def test_the_same_model_evaluates_identically_through_dense_and_fused_heads(tmp_path, loss):
  a, b = _dense_then_fused(tmp_path, loss)
  _assert_reports_equal(a["test"], b["test"])
  _assert_reports_equal(a["oracle"], b["oracle"])
  assert a["calibration"]["average_k"]["threshold"] == pytest.approx(
      b["calibration"]["average_k"]["threshold"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "count_distribution"])
def test_dense_and_fused_evaluation_agree_for_the_other_fused_objectives(tmp_path, loss):
  a, b = _dense_then_fused(tmp_path, loss)
  _assert_reports_equal(a["test"], b["test"])


def test_report_map_equals_sklearn_on_the_oracle(tmp_path):
  from multilabel_jax.data import hashtag_world  # pylint: disable=g-import-not-at-top
  config = tiny_config("softmax")
  report = train.train_and_evaluate(config, tmp_path)
  world = hashtag_world.HashtagWorld(**config.data.options.to_dict())
  n = world.num_examples("test")
  batch = world.read("test", np.arange(n))
  marg = world.oracle_marginals_from_inputs(batch)
  ids = batch["label_ids"]
  y = dense(np.asarray(ids), world.info.num_classes)
  cols = y.sum(0) > 0
  assert report["oracle"]["ranking"]["map"] == pytest.approx(
      skm.average_precision_score(y[:, cols], marg[:, cols]), abs=1e-6)
  assert report["oracle"]["ranking"]["map_micro"] == pytest.approx(
      skm.average_precision_score(y, marg, average="micro"), abs=1e-6)
  # The Bayes-optimal sets: expected-F1 top-k of the marginals (top r, the rest as a tail).
  r = report["evaluation_path"].split("_")[1]
  order = np.argsort(-marg, axis=1, kind="stable")[:, :int(r)]
  top = np.take_along_axis(marg, order, axis=1).astype(np.float64)
  k, _ = losses.expected_f1_sets(top, np.maximum(marg.sum(1) - top.sum(1), 0), min_k=1)
  pred = np.zeros_like(y)
  for i, ki in enumerate(k):
    pred[i, order[i, :ki]] = 1
  vs = report["against_oracle"]
  assert vs["bayes_f1_samples"] == pytest.approx(
      skm.f1_score(y, pred, average="samples"), abs=1e-4)
  assert vs["fraction_of_oracle_p1"] == pytest.approx(
      report["test"]["ranking"]["precision_at_1"]
      / report["oracle"]["ranking"]["precision_at_1"])
  for name, m in report["test"]["decoders"].items():
    assert vs["regret_f1_samples"][name] == pytest.approx(
        vs["bayes_f1_samples"] - m["f1_samples"])
  assert "Samples-F1 regret of each decoder" in (tmp_path / "report.md").read_text()
  rel = report["reliability"]  # Softmax's scores are shares of the row's labels.
  assert rel["reads_as"] == "distribution" and sum(rel["count"]) == n * int(r)
  assert "Reliability against the oracle" in (tmp_path / "report.md").read_text()


def _reliability_by_brute_force(scores, marg, r, edges, distribution):
  order = np.argsort(-scores, axis=1, kind="stable")[:, :r]
  s = np.take_along_axis(scores, order, 1).ravel()
  t = np.take_along_axis(marg, order, 1)
  if distribution:
    t = t / marg.sum(1, keepdims=True)
  t = t.ravel()
  nb = len(edges) - 1
  b = np.array([min(max(int(np.sum(edges <= v)) - 1, 0), nb - 1) for v in s])
  count = np.array([np.sum(b == i) for i in range(nb)])
  gaps = [abs(s[b == i].mean() - t[b == i].mean()) if count[i] else 0.0 for i in range(nb)]
  return count, np.dot(count, gaps) / count.sum(), np.abs(s - t).mean()


@pytest.mark.parametrize("reads_as", ["marginal", "distribution", "expected_count"])
def test_reliability_against_the_oracle_equals_brute_force(reads_as):
  from multilabel_jax import report  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  marg = rng.beta(0.3, 3.0, size=(37, 50))
  if reads_as == "distribution":
    scores = rng.dirichlet(np.ones(50) * 0.3, size=37)
  else:
    scores = np.clip(marg + rng.normal(0, 0.1, marg.shape), 1e-6, 1.3 if reads_as ==
                     "expected_count" else 1.0)
  ids = np.full((37, 4), -1, np.int32)
  batches = lambda: iter([{"label_ids": ids[:20], "mask": np.ones(20, bool), "i": slice(0, 20)},
                          {"label_ids": ids[20:], "mask": np.arange(17) < 15,
                           "i": slice(20, 37)}])
  scorer = scoring.array_scorer(lambda b: scores[b["i"]].astype(np.float32), r=7)
  rel = report.reliability(scorer, lambda b: marg[b["i"]], batches, reads_as)
  keep = np.r_[np.arange(20), 20 + np.arange(15)]  # The masked rows are left out.
  count, ece, mae = _reliability_by_brute_force(scores[keep].astype(np.float32).astype(
      np.float64), marg[keep], 7, report.RELIABILITY_EDGES, reads_as == "distribution")
  assert rel["count"] == count.tolist()
  assert rel["ece"] == pytest.approx(ece, rel=1e-5)
  assert rel["mean_abs_error"] == pytest.approx(mae, rel=1e-5)
  assert rel["oracle"][int(np.argmax(count))] is not None
  assert report.reliability(scorer, lambda b: marg[b["i"]], batches, "") is None


def test_exact_marginals_are_calibrated_against_themselves():
  from multilabel_jax import report  # pylint: disable=g-import-not-at-top
  marg = np.random.default_rng(1).beta(0.3, 3.0, size=(16, 40))
  batches = lambda: iter([{"label_ids": np.full((16, 2), -1, np.int32),
                           "mask": np.ones(16, bool)}])
  for reads_as, scores in (("marginal", marg), ("distribution", marg / marg.sum(1, keepdims=True))):
    rel = report.reliability(scoring.array_scorer(lambda b, s=scores: s.astype(np.float32), 5),
                             lambda b: marg, batches, reads_as)
    assert rel["ece"] < 1e-6 and rel["mean_abs_error"] < 1e-6


def test_the_oracle_is_evaluated_only_where_its_dense_marginals_exist():
  from multilabel_jax import report  # pylint: disable=g-import-not-at-top
  from multilabel_jax.data import hashtag_world  # pylint: disable=g-import-not-at-top
  config = tiny_config("softmax")
  limit = hashtag_world.MAX_DENSE_CLASSES
  small = hashtag_world.HashtagWorld(1000, num_validation=8, num_test=8)
  assert report.oracle_scorer(config, small, r=64) is not None
  config.eval.oracle = False
  assert report.oracle_scorer(config, small, r=64) is None
  config.eval.oracle = True
  # Above the limit the simulator refuses dense marginals, so the report has no oracle part
  # (the `full` config's 131,072 classes crashed the final evaluation before).
  big = hashtag_world.HashtagWorld(limit + 1, num_validation=8, num_test=8)
  with pytest.raises(ValueError, match="too large"):
    big.oracle_marginals_from_inputs(big.read("test", np.arange(2)))
  assert report.oracle_scorer(config, big, r=64) is None
  at_limit = hashtag_world.HashtagWorld(limit, num_validation=8, num_test=8)
  assert report.oracle_scorer(config, at_limit, r=64) is not None


def test_average_k_beyond_the_top_r_is_found_exactly_by_counting_passes():
  scores, labels = _problem(4, n=50, c=30)
  scores[:5] = 1.0  # Saturated rows: all their candidates pass any average-K threshold.
  scores[5:10] = np.round(scores[5:10], 1)  # Ties.
  c = scores.shape[1]
  objective = losses.get_objective("sigmoid", c)
  scorer = scoring.array_scorer(lambda b: b["scores"], r=2)
  batches = batches_of(scores, labels, 16)
  val = evaluate.evaluate(scorer, batches, objective=objective, num_classes=c, top_ks=(1,), r=2,
                          keep_values=True)
  with pytest.raises(ValueError, match="pass more scores per row"):
    calibration.calibrate(val["_calibration_inputs"], num_classes=c, k=3.0)
  cal = calibration.calibrate(val["_calibration_inputs"], num_classes=c, k=3.0,
                              average_ks=(1, 5, 30), count_at_least=calibration.counter(
                                  scorer, batches))
  assert cal["average_k"]["threshold"] == decoders_lib.calibrate_average_k(scores, 3.0)
  for kk in (1, 5, 30):
    assert cal["average_k_at"][kk] == decoders_lib.calibrate_average_k(scores, kk), kk


def test_pooled_order_statistic_is_exact():
  rng = np.random.default_rng(5)
  pooled = np.concatenate([rng.normal(size=200), [-np.inf, 0.0, -0.0, 3.5, 3.5, 1e-30]])
  pooled = pooled.astype(np.float32)
  want = np.sort(pooled)[::-1]
  qs = [1, 2, 5, 100, 205, 206]
  got = calibration.pooled_order_statistic(
      lambda t: (pooled[None, :] >= np.asarray(t)[:, None]).sum(1), qs)
  assert got == [float(want[q - 1]) for q in qs]
