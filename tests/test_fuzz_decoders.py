"""Fuzzed decoders: random shapes (C = 1 included), float32 and bfloat16 scores with ties,
saturated and +-1e4 values; every decoder returns valid sets within its size rule.

Valid sets (``DecodedSets``): ids in ``[0, C)`` on valid slots and -1 elsewhere, valid slots
first, no repeated id, ``sizes == mask.sum(1)``, members in order of decreasing score (or
margin), and ``dense=True`` / ``to_dense`` giving the same membership. Size rules:
``top_k``: exactly k (``1 <= k <= C``, else ValueError); ``threshold``: exactly the scores
``>= t``, at most ``max_labels`` of them with the rest counted in ``num_truncated``;
``by_count``: ``clip(round(count), 0, C)`` (round half to even), capped likewise;
``calibrate_average_k``: ``round(n k)`` labels on the calibration set, i.e. the mean set size
within half an example of k, unless scores tie at the cut (then the whole tie group).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from multilabel_jax.losses import decoders
from tests.fuzz_problems import (DTYPES, EXTREME, NUM_CLASSES, ROW_KINDS, SCORE_STYLES,
                                 as_f64, label_rows, make_scores, score_matrices)

FAST = settings(max_examples=8, deadline=None)
MANY = settings(max_examples=80, deadline=None)


def check_valid_sets(sets, order_by, num_classes, slots):
  """The structural rules every ``DecodedSets`` obeys; returns python sets per row."""
  ids, mask = np.asarray(sets.ids), np.asarray(sets.mask)
  b = order_by.shape[0]
  assert ids.shape == mask.shape == (b, slots) and ids.dtype == np.int32 and mask.dtype == bool
  assert ((ids >= 0) & (ids < num_classes))[mask].all(), ids
  assert (ids[~mask] == -1).all(), ids
  assert (mask[:, 1:] <= mask[:, :-1]).all(), mask  # Valid slots first.
  np.testing.assert_array_equal(np.asarray(sets.sizes), mask.sum(1))
  assert (np.asarray(sets.num_truncated) >= 0).all()
  members = []
  for row, valid, key in zip(ids, mask, order_by):
    chosen = row[valid]
    assert len(set(chosen.tolist())) == len(chosen), row  # No repeated id.
    assert (np.diff(key[chosen]) <= 0).all(), (row, key)  # Decreasing score / margin.
    members.append(set(chosen.tolist()))
  dense = np.asarray(sets.to_dense(num_classes))
  assert [set(np.flatnonzero(d).tolist()) for d in dense] == members
  return members


def check_best_chosen(members, scores):
  """Every chosen class scores at least as high as every class not chosen."""
  for b, chosen in enumerate(members):
    rest = sorted(set(range(scores.shape[1])) - chosen)
    if chosen and rest:
      assert scores[b, sorted(chosen)].min() >= scores[b, rest].max(), (b, chosen)


def check_top_k(scores, data):
  s, c = as_f64(scores), scores.shape[1]
  k = data.draw(st.integers(1, c))
  sets = decoders.top_k(scores, k)
  members = check_valid_sets(sets, s, c, k)
  assert all(len(m) == k for m in members)
  check_best_chosen(members, s)
  dense = np.asarray(decoders.top_k(scores, k, dense=True))
  assert [set(np.flatnonzero(d).tolist()) for d in dense] == members
  for bad in (0, c + 1):
    with pytest.raises(ValueError, match="`k` must be an int"):
      decoders.top_k(scores, bad)


def draw_threshold(data, s, rng):
  """A scalar or per-class threshold, often equal to a score or between two scores."""
  c = s.shape[1]
  values = np.unique(s)
  mids = (values[1:] + values[:-1]) / 2 if values.size > 1 else values
  pool = np.concatenate([values, mids, [0.5, 0.0]]).astype(np.float32)
  if data.draw(st.booleans(), label="per_class"):
    return rng.choice(pool, c)
  return np.float32(pool[data.draw(st.integers(0, pool.size - 1), label="t")])


def check_threshold(scores, data, rng):
  s, c = as_f64(scores), scores.shape[1]
  t = draw_threshold(data, s, rng)
  max_labels = data.draw(st.sampled_from([None] + list(range(1, c + 1))), label="max_labels")
  qualifies = s >= np.float64(np.asarray(t, np.float32))  # Exactly the scores >= t.
  np.testing.assert_array_equal(decoders.threshold(scores, t, dense=True), qualifies)
  sets = decoders.threshold(scores, t, max_labels=max_labels)
  slots = c if max_labels is None else max_labels
  margin = s - np.asarray(t, np.float64)
  members = check_valid_sets(sets, margin, c, slots)
  count = qualifies.sum(1)
  np.testing.assert_array_equal(np.asarray(sets.sizes), np.minimum(count, slots))
  np.testing.assert_array_equal(np.asarray(sets.num_truncated), count - np.minimum(count, slots))
  for b, chosen in enumerate(members):
    assert chosen <= set(np.flatnonzero(qualifies[b]).tolist())
  check_best_chosen(members, np.where(qualifies, margin, -np.inf))


COUNTS = [-EXTREME, -1.0, 0.0, 0.49, 0.5, 1.5, 2.5, 3.7, 7.5, 8.0, 9.0, EXTREME]


def check_by_count(scores, data, rng):
  s, (b, c) = as_f64(scores), scores.shape
  counts = np.where(rng.random(b) < 0.5, rng.choice(COUNTS, b),
                    rng.uniform(-1, c + 2, b)).astype(np.float32)
  max_labels = data.draw(st.sampled_from([None] + list(range(1, c + 1))), label="max_labels")
  wanted = np.clip(np.round(counts), 0, c).astype(int)  # np.round: half to even.
  slots = c if max_labels is None else max_labels
  sets = decoders.by_count(scores, counts, max_labels=max_labels)
  members = check_valid_sets(sets, s, c, slots)
  np.testing.assert_array_equal(np.asarray(sets.sizes), np.minimum(wanted, slots))
  np.testing.assert_array_equal(np.asarray(sets.num_truncated),
                                wanted - np.minimum(wanted, slots))
  check_best_chosen(members, s)
  dense = np.asarray(decoders.by_count(scores, counts, dense=True))
  np.testing.assert_array_equal(dense.sum(1), wanted)
  if max_labels is None:  # Ties are broken the same way (lower class first) in both forms.
    assert [set(np.flatnonzero(d).tolist()) for d in dense] == members


def check_decoders(scores, rng, data):
  check_top_k(scores, data)
  check_threshold(scores, data, rng)
  check_by_count(scores, data, rng)


@FAST
@given(problem=score_matrices(), data=st.data())
def test_decoders_fuzz(problem, data):
  scores, rng = problem
  check_decoders(scores, rng, data)


@pytest.mark.slow
@MANY
@given(problem=score_matrices(), data=st.data())
def test_decoders_fuzz_many(problem, data):
  scores, rng = problem
  check_decoders(scores, rng, data)


# ------------------------------------------------------------------------ calibration


def check_calibrate_average_k(scores, k, where):
  s = np.asarray(scores)  # The calibration runs on the host, in the scores' own dtype.
  c = s.shape[1]
  rows = s[where]
  n = rows.shape[0]
  t = decoders.calibrate_average_k(s, k, where=where)
  selected = as_f64(rows) >= t
  np.testing.assert_array_equal(np.asarray(decoders.threshold(rows, t, dense=True)), selected)
  m = int(round(n * k))
  flat = np.sort(as_f64(rows).ravel())[::-1]
  if m == 0:
    assert t == np.inf and not selected.any()
  elif m == n * c:
    assert t == -np.inf and selected.all()
  elif flat[m - 1] > flat[m]:  # No tie at the cut: exactly m labels.
    assert selected.sum() == m, (selected.sum(), m)
    assert abs(selected.sum() / n - k) <= 0.5 / n + 1e-9
  else:  # A tie at the cut: the whole tie group is in.
    assert selected.sum() == (flat >= flat[m - 1]).sum()
  return t


@st.composite
def calibration_sets(draw):
  n = draw(st.sampled_from([1, 5, 40]))
  c = draw(st.sampled_from(NUM_CLASSES))
  styles = draw(st.lists(st.sampled_from(SCORE_STYLES), min_size=n, max_size=n))
  dtype = draw(st.sampled_from(DTYPES))
  k = draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0, float(c)]), st.floats(0, c)))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  where = rng.random(n) < 0.8 if draw(st.booleans()) else np.ones(n, bool)
  return jnp.asarray(make_scores(rng, (n, c), styles), dtype), k, where, rng


@settings(max_examples=40, deadline=None)
@given(problem=calibration_sets())
def test_calibrate_average_k_fuzz(problem):
  scores, k, where, _ = problem
  t = check_calibrate_average_k(scores, k, where)
  # The top-r path gives the same threshold, or says it needs more scores per row.
  c = scores.shape[1]
  r = max(1, c // 2)
  top = -np.sort(-np.asarray(scores)[where], axis=1)[:, :r]
  if 0 < r < c and where.any():
    try:
      t_top = decoders.calibrate_average_k(top, k, num_classes=c)
    except ValueError as e:
      assert "more scores per row" in str(e)
    else:
      assert t_top == t


def brute_force_best_f1(s, positive):
  best = 0.0
  for t in np.unique(s):
    pred = s >= t
    tp = (pred & positive).sum()
    best = max(best, 2 * tp / (pred.sum() + positive.sum()))
  return best


class_threshold_cases = dict(problem=calibration_sets(), min_positives=st.sampled_from([1, 2]),
                             fallback=st.sampled_from(["global", "never", 0.25]), data=st.data())


@settings(max_examples=12, deadline=None)
@given(**class_threshold_cases)
def test_calibrate_class_thresholds_fuzz(problem, min_positives, fallback, data):
  check_class_thresholds(problem, min_positives, fallback, data)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(**class_threshold_cases)
def test_calibrate_class_thresholds_fuzz_many(problem, min_positives, fallback, data):
  check_class_thresholds(problem, min_positives, fallback, data)


def check_class_thresholds(problem, min_positives, fallback, data):
  scores, _, _, rng = problem
  n, c = scores.shape
  kinds = data.draw(st.lists(st.sampled_from(ROW_KINDS), min_size=n, max_size=n))
  ids, dense = label_rows(rng, kinds, c, c + 2)
  t = decoders.calibrate_class_thresholds(scores, ids, min_positives=min_positives,
                                          fallback=fallback)
  assert t.shape == (c,) and not np.isnan(t).any()
  np.testing.assert_array_equal(
      decoders.calibrate_class_thresholds(scores, dense, min_positives=min_positives,
                                          fallback=fallback), t)
  s, y = as_f64(scores), dense > 0
  predicted = np.asarray(decoders.threshold(scores, t, dense=True))
  np.testing.assert_array_equal(predicted, s >= as_f64(t))
  for j in range(c):
    if y[:, j].sum() >= min_positives:
      tp = (predicted[:, j] & y[:, j]).sum()
      f1 = 2 * tp / (predicted[:, j].sum() + y[:, j].sum())
      assert f1 == pytest.approx(brute_force_best_f1(s[:, j], y[:, j]), abs=1e-12), j
    elif fallback == "never":
      assert t[j] == np.inf
    elif fallback == 0.25:
      assert t[j] == np.float32(0.25).astype(t.dtype)
    elif not y.any():
      assert t[j] == np.inf  # No positive anywhere: never predict.
    else:  # "global": the threshold that maximises the pooled micro-F1.
      pooled = s >= as_f64(t[j])
      f1 = 2 * (pooled & y).sum() / (pooled.sum() + y.sum())
      assert f1 == pytest.approx(brute_force_best_f1(s.ravel(), y.ravel()), abs=1e-12)
