"""Ranking metrics against sklearn and numpy brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from multilabel_jax import metrics

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def make_data(seed, n=12, c=7, density=0.3, ties=False, empty_rows=True):
  """Random scores [n, c] and multi-hot labels [n, c]; optionally tied scores / empty rows."""
  rng = np.random.default_rng(seed)
  scores = rng.random((n, c)).astype(np.float32)
  if ties:
    scores = np.round(scores * 3) / 3  # Few distinct values: many ties.
  labels = rng.random((n, c)) < density
  if not empty_rows:
    labels[np.arange(n), rng.integers(0, c, n)] = True
  return scores, labels


def to_ids(dense, rng=None, extra=2):
  """Dense multi-hot -> shuffled ids with -1 padding and a duplicate per row."""
  rng = rng or np.random.default_rng(0)
  n = dense.shape[0]
  width = dense.shape[1] + extra  # Fixed width: fewer recompilations.
  ids = np.full((n, width), -1, np.int32)
  for i in range(n):
    row = list(np.flatnonzero(dense[i]))
    if row:
      row.append(row[0])  # Duplicates count once.
    rng.shuffle(row)
    ids[i, :len(row)] = row
  return ids


def brute_topk(scores, k):
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]  # Ties: lower index first.


# ------------------------------------------------------------------- P@k, R@k, nDCG@k


@pytest.mark.parametrize("k", [1, 3, 7])
def test_precision_recall_at_k_brute_force(k):
  scores, labels = make_data(0, ties=True)
  top = brute_topk(scores, k)
  hits = np.take_along_axis(labels, top, 1).sum(1)
  np.testing.assert_allclose(metrics.precision_at_k(scores, labels, k), hits / k, rtol=1e-6)
  np.testing.assert_allclose(metrics.recall_at_k(scores, labels, k),
                             hits / np.maximum(labels.sum(1), 1), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5, 7])
def test_ndcg_matches_sklearn(k):
  scores, labels = make_data(1, n=30)
  ours = metrics.ndcg_at_k(scores, labels, k)
  assert not labels.sum(1).all()  # Some rows without labels: sklearn gives 0.
  per_row = [skm.ndcg_score(labels[i:i + 1], scores[i:i + 1], k=k) for i in range(30)]
  np.testing.assert_allclose(ours, per_row, atol=1e-6)
  np.testing.assert_allclose(metrics.masked_mean(ours), skm.ndcg_score(labels, scores, k=k),
                             atol=1e-6)


def test_at_k_ids_and_jit():
  scores, labels = make_data(2)
  ids = to_ids(labels)
  for fn in (metrics.precision_at_k, metrics.recall_at_k, metrics.ndcg_at_k):
    jitted = jax.jit(fn, static_argnums=2)
    np.testing.assert_allclose(jitted(scores, ids, 3), fn(scores, labels, 3), atol=1e-6)


def test_where_masks_rows():
  scores, labels = make_data(3)
  where = np.arange(12) % 3 != 0
  for fn in (metrics.precision_at_k, metrics.ndcg_at_k):
    masked = fn(scores, labels, 2, where=where)
    assert np.all(np.asarray(masked)[~where] == 0)
    np.testing.assert_allclose(metrics.masked_mean(masked, where),
                               np.mean(fn(scores[where], labels[where], 2)), atol=1e-6)


def test_k_out_of_range_raises():
  scores, labels = make_data(4)
  with pytest.raises(ValueError, match="k"):
    metrics.precision_at_k(scores, labels, 8)
  with pytest.raises(ValueError, match="scores"):
    metrics.precision_at_k(scores.astype(np.int32), labels, 2)


# ------------------------------------------------------------------------------- PSP


def test_propensities_match_pyxclib_formula():
  counts = np.array([0, 1, 10, 1000], np.float32)
  n, a, b = 5000, 0.55, 1.5
  c = (np.log(n) - 1) * (b + 1) ** a
  inv_p = 1 + c * (counts + b) ** (-a)  # pyxclib compute_inv_propesity
  np.testing.assert_allclose(1 / metrics.propensities(counts, n, a, b), inv_p, rtol=1e-5)


def brute_psp(scores, labels, p, k):
  """Direct transcription: weighted hits in the top k / best weighted hits in k."""
  w = np.where(labels, 1 / p, 0)
  num = np.take_along_axis(w, brute_topk(scores, k), 1).sum()
  den = np.sort(w, axis=1)[:, ::-1][:, :k].sum()
  return num / den


@pytest.mark.parametrize("k", [1, 3, 5])
def test_psp_brute_force_and_ids(k):
  scores, labels = make_data(5, n=20)
  p = np.asarray(metrics.propensities(metrics.label_counts(labels, 7), 20))
  want = brute_psp(scores, labels, p, k)
  np.testing.assert_allclose(metrics.psp_at_k(scores, labels, p, k), want, rtol=1e-5)
  np.testing.assert_allclose(metrics.psp_at_k(scores, to_ids(labels), p, k), want, rtol=1e-5)
  terms = metrics.psp_at_k_terms(scores, labels, p, k)
  assert np.all(np.asarray(terms.numerator) <= np.asarray(terms.denominator) + 1e-6)


def test_label_counts_ids_equal_dense():
  _, labels = make_data(6)
  np.testing.assert_array_equal(metrics.label_counts(to_ids(labels), 7), labels.sum(0))


# ------------------------------------------------------------------ whole-ranking metrics


@pytest.mark.parametrize("ties", [False, True])
def test_map_matches_sklearn(ties):
  scores, labels = make_data(7, n=25, ties=ties)
  labels[:, 2] = False
  has_pos = labels.any(0)
  assert not has_pos.all()  # Some classes without positives: left out of the macro mean.
  per_class = skm.average_precision_score(labels[:, has_pos], scores[:, has_pos], average=None)
  np.testing.assert_allclose(metrics.mean_average_precision(scores, labels, "macro"),
                             np.mean(per_class), rtol=1e-5)
  np.testing.assert_allclose(metrics.mean_average_precision(scores, labels, "micro"),
                             skm.average_precision_score(labels, scores, average="micro"),
                             rtol=1e-5)
  ap, pos = metrics.average_precision_per_class(scores, labels)
  np.testing.assert_allclose(np.asarray(ap)[has_pos], per_class, rtol=1e-5)
  np.testing.assert_array_equal(pos, has_pos)


def test_map_where_equals_subset():
  scores, labels = make_data(8, n=20, ties=True)
  where = np.arange(20) % 4 != 1
  for average in ("macro", "micro"):
    np.testing.assert_allclose(
        metrics.mean_average_precision(scores, labels, average, where=where),
        metrics.mean_average_precision(scores[where], labels[where], average), rtol=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_lrap_and_coverage_match_sklearn(ties):
  scores, labels = make_data(9, n=25, ties=ties)
  labels[0] = True  # All relevant: LRAP 1.
  labels[1] = False
  assert not labels.any(1).all()  # Rows without labels: LRAP 1, coverage 0.
  np.testing.assert_allclose(
      metrics.masked_mean(metrics.label_ranking_average_precision(scores, labels)),
      skm.label_ranking_average_precision_score(labels, scores), rtol=1e-5)
  np.testing.assert_allclose(metrics.masked_mean(metrics.coverage_error(scores, labels)),
                             skm.coverage_error(labels, scores), rtol=1e-5)


def test_whole_ranking_jit():
  scores, labels = make_data(10, ties=True)
  ids = to_ids(labels)
  fn = jax.jit(metrics.mean_average_precision, static_argnums=2)
  np.testing.assert_allclose(fn(scores, ids, "micro"),
                             metrics.mean_average_precision(scores, labels, "micro"), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(metrics.coverage_error)(scores, ids),
                             metrics.coverage_error(scores, labels))


# --------------------------------------------------------------------------- properties


def _all_metrics(scores, labels, p, k):
  return {
      "p@k": metrics.masked_mean(metrics.precision_at_k(scores, labels, k)),
      "r@k": metrics.masked_mean(metrics.recall_at_k(scores, labels, k)),
      "ndcg@k": metrics.masked_mean(metrics.ndcg_at_k(scores, labels, k)),
      "psp@k": metrics.psp_at_k(scores, labels, p, k),
      "map": metrics.mean_average_precision(scores, labels, "macro"),
      "map_micro": metrics.mean_average_precision(scores, labels, "micro"),
      "lrap": metrics.masked_mean(metrics.label_ranking_average_precision(scores, labels)),
  }


@SETTINGS
@given(seed=st.integers(0, 10_000), density=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
       ties=st.booleans())
def test_dense_equals_ids_and_unit_range(seed, density, ties):
  c = 6  # Fixed shapes keep the eager op cache warm.
  scores, labels = make_data(seed, 8, c, density, ties=ties)
  k = 3
  p = np.random.default_rng(seed).uniform(0.1, 1.0, c)
  dense = _all_metrics(scores, labels, p, k)
  ids = _all_metrics(scores, to_ids(labels, np.random.default_rng(seed)), p, k)
  for name, value in dense.items():
    np.testing.assert_allclose(ids[name], value, atol=1e-6, err_msg=name)
    assert -1e-6 <= float(value) <= 1 + 1e-6, (name, value)
  cov_d = metrics.coverage_error(scores, labels)
  np.testing.assert_allclose(metrics.coverage_error(scores, to_ids(labels)), cov_d)


@SETTINGS
@given(seed=st.integers(0, 10_000), ties=st.booleans())
def test_class_permutation_invariance(seed, ties):
  scores, labels = make_data(seed, 8, 6, 0.4, ties=ties)
  perm = np.random.default_rng(seed).permutation(6)
  p = np.random.default_rng(seed + 1).uniform(0.1, 1.0, 6)
  before = _all_metrics(scores, labels, p, 3)
  after = _all_metrics(scores[:, perm], labels[:, perm], p[perm], 3)
  # top_k breaks ties by class index, so the @k metrics are invariant only without ties.
  tie_safe = ("map", "map_micro", "lrap")
  for name, value in before.items():
    if ties and name not in tie_safe:
      continue
    np.testing.assert_allclose(after[name], value, atol=1e-6, err_msg=name)


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top
  from multilabel_jax.metrics import histogram_average_precision, ranking, sets
  flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
  for module in (ranking, sets, histogram_average_precision):
    result = doctest.testmod(module, extraglobs={"jnp": jnp}, optionflags=flags)
    assert result.attempted > 0 and result.failed == 0, (module.__name__, result)


def test_ranking_metrics_over_a_single_item():
  # Regression: the tie-group ends of a ranking of one item were dropped (an empty [R, 0]
  # column), so AP over one example, LRAP at C = 1 and micro mAP of one pair were 0.
  scores = np.array([[0.3, 0.9, 0.1]], np.float32)
  labels = np.array([[True, False, True]])
  per_class = [skm.average_precision_score(labels[:, j], scores[:, j]) for j in (0, 2)]
  np.testing.assert_allclose(metrics.mean_average_precision(scores, labels, "macro"),
                             np.mean(per_class), rtol=1e-6)
  one = np.array([[0.3]], np.float32)
  np.testing.assert_allclose(metrics.label_ranking_average_precision(one, np.array([[1.0]])),
                             [skm.label_ranking_average_precision_score([[1]], one)])
  np.testing.assert_allclose(metrics.mean_average_precision(one, np.array([[1.0]]), "micro"), 1)


def test_propensities_stay_in_unit_interval_or_raise():
  # Regression: for N < 3, c = (log N - 1)(b + 1)^a <= 0, and N = 1 gave p = -3.1 and
  # p = 8e6 (PSP@k of any sign); such N now raise, and every N >= 3 gives 0 < p < 1.
  counts = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
  for n in (1, 2):
    with pytest.raises(ValueError, match="`num_train_examples` must be >= 3"):
      metrics.propensities(counts[:n + 1], n)
  for n in (3, 10, 10**6):
    p = np.asarray(metrics.propensities(counts, n))
    assert ((p > 0) & (p < 1)).all() and (np.diff(p) > 0).all(), (n, p)
