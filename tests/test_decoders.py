"""Decoders against numpy brute force and sklearn, and their set-size rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from sklearn.metrics import f1_score

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import decoders

RNG = np.random.default_rng(0)


def sets_as_python(sets):
  ids, mask = np.asarray(sets.ids), np.asarray(sets.mask)
  return [set(ids[b][mask[b]].tolist()) for b in range(len(ids))]


def test_top_k_matches_argsort():
  s = RNG.normal(size=(5, 9)).astype(np.float32)
  sets = decoders.top_k(s, 3)
  np.testing.assert_array_equal(sets.ids, np.argsort(-s, axis=1)[:, :3])
  assert np.asarray(sets.mask).all() and not np.asarray(sets.num_truncated).any()
  dense = decoders.top_k(s, 3, dense=True)
  assert dense.dtype == jnp.bool_ and (np.asarray(dense).sum(1) == 3).all()


@pytest.mark.parametrize("per_class", [False, True])
def test_threshold_matches_numpy_and_orders_by_margin(per_class):
  s = RNG.uniform(size=(6, 8)).astype(np.float32)
  t = RNG.uniform(0.3, 0.7, size=8).astype(np.float32) if per_class else np.float32(0.5)
  want = s >= t
  sets = decoders.threshold(s, t)
  assert sets_as_python(sets) == [set(np.nonzero(w)[0].tolist()) for w in want]
  np.testing.assert_array_equal(decoders.threshold(s, t, dense=True), want)
  mask = np.asarray(sets.mask)
  margins = np.take_along_axis(s - t, np.maximum(np.asarray(sets.ids), 0), 1)
  assert (np.diff(margins, axis=1)[mask[:, 1:]] <= 0).all()


def test_threshold_counts_truncation():
  s = np.array([[0.9, 0.8, 0.7, 0.1], [0.2, 0.1, 0.0, 0.6]], np.float32)
  sets = decoders.threshold(s, 0.5, max_labels=2)
  assert sets_as_python(sets) == [{0, 1}, {3}]
  np.testing.assert_array_equal(sets.num_truncated, [1, 0])


def test_by_count_takes_rounded_counts():
  s = RNG.normal(size=(4, 6)).astype(np.float32)
  counts = np.array([0.2, 1.5, 2.4, 9.0], np.float32)
  sets = decoders.by_count(s, counts, max_labels=4)
  order = np.argsort(-s, axis=1)
  want_sizes = [0, 2, 2, 4]
  assert sets_as_python(sets) == [set(order[b, :n].tolist()) for b, n in enumerate(want_sizes)]
  np.testing.assert_array_equal(sets.num_truncated, [0, 0, 0, 2])  # round(9) capped at C=6.
  dense = np.asarray(decoders.by_count(s, counts, dense=True))
  np.testing.assert_array_equal(dense.sum(1), [0, 2, 2, 6])


def test_decoders_jit_and_to_dense():
  s = RNG.normal(size=(3, 5)).astype(np.float32)
  sets = jax.jit(lambda x: decoders.threshold(x, 0.0, max_labels=3))(s)
  dense = np.asarray(sets.to_dense(5))
  np.testing.assert_array_equal(dense.sum(1), np.asarray(sets.sizes))
  assert dense[np.asarray(sets.mask)[:, :1].ravel(), :].any()


@given(n=st.integers(1, 40), c=st.integers(1, 12), k=st.floats(0, 12), seed=st.integers(0, 999))
def test_calibrate_average_k_selects_n_times_k(n, c, k, seed):
  k = min(k, c)
  rng = np.random.default_rng(seed)
  scores = rng.permutation(n * c).reshape(n, c).astype(np.float32) / (n * c)  # No ties.
  t = decoders.calibrate_average_k(scores, k)
  total = int((scores >= t).sum())
  assert abs(total - round(n * k)) <= 0  # Exact without ties.
  assert abs(total / n - k) <= 1 / n + 1e-9  # i.e. average K within one example.


def test_calibrate_average_k_from_per_row_top_scores():
  s = RNG.normal(size=(50, 400)).astype(np.float32)
  t_full = decoders.calibrate_average_k(s, 3.0)
  top = np.sort(s, axis=1)[:, ::-1][:, :20]
  assert decoders.calibrate_average_k(top, 3.0, num_classes=400) == t_full
  with pytest.raises(ValueError, match="pass more scores per row"):
    decoders.calibrate_average_k(top[:, :2], 3.0, num_classes=400)


def test_calibrate_average_k_where_and_edges():
  s = RNG.normal(size=(10, 4)).astype(np.float32)
  where = np.arange(10) < 6
  t = decoders.calibrate_average_k(s, 2.0, where=where)
  assert (s[where] >= t).sum() == 12
  assert decoders.calibrate_average_k(s, 0.0) == float("inf")
  assert decoders.calibrate_average_k(s, 4.0) == float("-inf")
  with pytest.raises(ValueError, match="`k` must be in"):
    decoders.calibrate_average_k(s, 5.0)


def brute_force_best_f1(scores, positive):
  best = 0.0
  for t in np.unique(scores):
    best = max(best, f1_score(positive, scores >= t, zero_division=0))
  return best


def test_calibrate_class_thresholds_reach_best_f1():
  n, c = 60, 7
  y = RNG.uniform(size=(n, c)) < 0.3
  y[:, 6] = False  # A class without validation positives.
  s = (y * 0.5 + RNG.uniform(size=(n, c))).astype(np.float32)
  s[:5, 0] = s[5, 0]  # Ties.
  t = decoders.calibrate_class_thresholds(s, y.astype(np.float32), class_chunk=3)
  for j in range(6):
    got = f1_score(y[:, j], s[:, j] >= t[j], zero_division=0)
    assert got == pytest.approx(brute_force_best_f1(s[:, j], y[:, j]))
  # The fallback for class 6 is the pooled micro-F1-optimal threshold.
  assert f1_score(y.ravel(), s.ravel() >= t[6]) == pytest.approx(
      brute_force_best_f1(s.ravel(), y.ravel()))
  ids, _ = labels_lib.dense_to_ids(y, 7)
  np.testing.assert_array_equal(decoders.calibrate_class_thresholds(s, ids), t)
  assert decoders.calibrate_class_thresholds(s, y, fallback="never")[6] == np.inf
  few = decoders.calibrate_class_thresholds(s, y, min_positives=int(y[:, 0].sum()) + 1)
  assert few[0] == t[6]  # Class 0 now has too few positives: the global fallback.


def test_decoder_bad_input():
  s = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match=r"`k` must be an int in \[1, C=3\]"):
    decoders.top_k(s, 4)
  with pytest.raises(ValueError, match="`scores` must have rank 2"):
    decoders.top_k(s[0], 1)
  with pytest.raises(ValueError, match=r"`t` must be a scalar or have shape \(3,\)"):
    decoders.threshold(s, np.zeros(4))
  with pytest.raises(ValueError, match=r"`counts` must have shape \(2,\)"):
    decoders.by_count(s, np.zeros(3))
  with pytest.raises(ValueError, match="`metric` must be 'f1'"):
    decoders.calibrate_class_thresholds(s, s, metric="map")


def test_threshold_compares_bfloat16_scores_with_the_float32_threshold():
  # Regression: t was rounded to the scores' dtype, so a float32 t between two adjacent
  # bfloat16 values admitted the lower one (0.5 < t = 0.50195).
  s = jnp.array([[0.5, 0.50390625, 1.0]], jnp.bfloat16)
  t = np.float32(0.501953125)
  want = np.array([[False, True, True]])
  np.testing.assert_array_equal(decoders.threshold(s, t, dense=True), want)
  np.testing.assert_array_equal(decoders.threshold(s, np.full(3, t), dense=True), want)
  assert sets_as_python(decoders.threshold(s, t)) == [{1, 2}]


def test_threshold_at_infinity_keeps_equal_scores():
  # Regression: the margin inf - inf is NaN, so scores == t = +-inf were dropped although
  # the rule is scores >= t (t = -inf is what calibrate_average_k returns for k = C).
  s = np.array([[np.inf, 1.0, -np.inf]], np.float32)
  for t, want in ((np.inf, [{0}]), (-np.inf, [{0, 1, 2}])):
    assert sets_as_python(decoders.threshold(s, t)) == want
    assert set(np.flatnonzero(np.asarray(decoders.threshold(s, t, dense=True))[0])) == want[0]


def test_calibration_accepts_bfloat16_scores():
  # Regression: numpy does not count bfloat16 as floating, so both calibrations raised
  # "`val_scores` must be floating, got bfloat16".
  s = jnp.asarray(RNG.normal(size=(20, 6)), jnp.bfloat16)
  t = decoders.calibrate_average_k(s, 2.0)
  assert int(np.asarray(decoders.threshold(s, t, dense=True)).sum()) == 40
  y = RNG.uniform(size=(20, 6)) < 0.3
  t_class = decoders.calibrate_class_thresholds(s, y)
  s32 = np.asarray(s, np.float32)  # The same values: the same cuts (midpoints may differ).
  np.testing.assert_array_equal(
      decoders.threshold(s, t_class, dense=True),
      decoders.threshold(s32, decoders.calibrate_class_thresholds(s32, y), dense=True))
