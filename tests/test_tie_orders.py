"""AP over the orders of tied scores (metrics.tie_orders) against brute force and sklearn."""

import doctest
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from multilabel_jax.metrics import tie_orders
from tests.test_average_precision import make_data, to_ids

ap_over_orders = tie_orders.expected_average_precision_per_class


def brute_force(scores, relevant) -> float:
  """Mean AP of one class over every order of its items that keeps the scores descending."""
  values = []
  for order in itertools.permutations(range(len(scores))):
    s, y = scores[list(order)], relevant[list(order)]
    if np.all(s[:-1] >= s[1:]):
      hits = np.cumsum(y)
      values.append(np.sum(y * hits / np.arange(1, len(y) + 1)) / y.sum())
  return float(np.mean(values))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=7))
def test_equals_the_mean_over_every_order_of_the_ties(items):
  scores = np.array([s for s, _ in items], np.float32)
  relevant = np.array([y for _, y in items], float)
  got = ap_over_orders(scores[:, None], relevant[:, None])[0]
  if not relevant.any():
    assert np.isnan(got)
  else:
    np.testing.assert_allclose(got, brute_force(scores, relevant), rtol=1e-12)


def test_without_ties_it_is_sklearns_average_precision():
  scores, dense = make_data(0, n=60, c=12)
  got = ap_over_orders(scores, dense.astype(np.float32), block=5)  # Blocks split the classes.
  for c in range(12):
    if dense[:, c].any():
      assert got[c] == pytest.approx(skm.average_precision_score(dense[:, c], scores[:, c]),
                                     abs=1e-12)
    else:
      assert np.isnan(got[c])


def test_a_tie_reads_above_sklearns_step_when_few_of_its_items_are_positive():
  # One positive tied with nine negatives at the top: sklearn's step gives 1/10; the ten
  # orders give the mean of 1/r, the harmonic number H_10 / 10.
  scores = np.full((10, 1), 0.5, np.float32)
  relevant = np.zeros((10, 1), np.float32)
  relevant[3] = 1.0
  assert skm.average_precision_score(relevant[:, 0], scores[:, 0]) == pytest.approx(0.1)
  assert ap_over_orders(scores, relevant)[0] == pytest.approx(np.sum(1 / np.arange(1, 11)) / 10)


@pytest.mark.parametrize("seed", [0, 1])
def test_ids_dense_class_order_and_masked_rows_agree(seed):
  scores, dense = make_data(seed, ties=True)
  want = ap_over_orders(scores, dense.astype(np.float32))
  np.testing.assert_allclose(ap_over_orders(scores, to_ids(dense, seed)), want, rtol=1e-12)
  perm = np.random.default_rng(seed).permutation(scores.shape[1])
  np.testing.assert_allclose(ap_over_orders(scores[:, perm], dense[:, perm].astype(float)),
                             want[perm], rtol=1e-12)
  where = np.arange(len(scores)) % 3 != 0
  np.testing.assert_allclose(ap_over_orders(scores, dense.astype(float), where=where),
                             ap_over_orders(scores[where], dense[where].astype(float)),
                             rtol=1e-12)


def test_extreme_scores_stay_finite_and_ordered():
  scores = np.array([[3e38], [-3e38], [np.inf], [-np.inf]], np.float32)
  relevant = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
  assert ap_over_orders(scores, relevant)[0] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="`scores` contains NaN"):
    ap_over_orders(np.array([[np.nan]], np.float32), np.array([[1.0]], np.float32))
  with pytest.raises(ValueError, match="`labels` .dense. has 3 classes"):
    ap_over_orders(np.zeros((2, 2), np.float32), np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match="`scores` must have rank 2"):
    ap_over_orders(np.zeros(2, np.float32), np.zeros((2, 1), np.float32))


def test_docstring_example():
  assert doctest.testmod(tie_orders).failed == 0


def test_oracle_ranking_reads_the_simulators_test_rows_both_ways(monkeypatch):
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  from multilabel_jax.data.hashtag_world import HashtagWorld  # pylint: disable=g-import-not-at-top
  from multilabel_jax.studies import oracle_ranking  # pylint: disable=g-import-not-at-top
  scale = sweep.TUNED_PRESETS["tuned_tiny"]["ambiguity_low"].final
  config = sweep.hashtag_config("softmax", 0, scale, group_size=1, noise=0.15)
  got = oracle_ranking.evaluate(config, batch_size=24)["oracle_ranking"]
  world = HashtagWorld(**config.data.options.to_dict())
  idx = np.arange(scale.num_test)
  marginals = world.oracle_marginals("test", idx)  # From the latent, not the features.
  dense = np.zeros(marginals.shape, bool)
  for i, row in enumerate(world.read_labels("test", idx)):
    dense[i, row[row >= 0]] = True
  has = dense.any(axis=0)
  step = np.mean([skm.average_precision_score(dense[:, c], marginals[:, c])
                  for c in np.flatnonzero(has)])
  assert got["num_examples"] == scale.num_test and got["num_classes_with_positives"] == has.sum()
  assert got["map_step"] == pytest.approx(step, abs=1e-6)
  assert got["map_over_tie_orders"] == pytest.approx(
      np.nanmean(ap_over_orders(marginals, dense)), abs=1e-6)
  # The low-ambiguity world ties most positives, and the step reading puts them low.
  assert got["tied_positives"] > 0.5 and got["map_over_tie_orders"] > got["map_step"] + 0.05
  monkeypatch.setattr(oracle_ranking.builders, "build_source", lambda c: object())
  with pytest.raises(ValueError, match="`config.data.name` 'hashtag_world' has no oracle"):
    oracle_ranking.evaluate(config)
