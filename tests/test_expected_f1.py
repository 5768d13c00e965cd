"""Expected-F1 decoding against brute-force enumeration, exact tail references and Monte Carlo."""

import doctest
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from multilabel_jax.losses import expected_f1
from multilabel_jax.losses.expected_f1 import expected_f1_of_top_k, expected_f1_sets

RNG = np.random.default_rng(0)


def all_vectors(r):
  """float ``[2^r, r]``: every 0/1 vector of length r."""
  return np.array(list(itertools.product([0.0, 1.0], repeat=r))).reshape(2 ** r, r)


def brute_force_expected_f1(p, sets, tail_pmf=(1.0,)):
  """E[F1(S, y)] for each row S of ``sets [M, r]``, by enumerating all 2^r label vectors.

  ``tail_pmf[n]``: probability of n extra true labels outside the r classes (never predicted).
  """
  ys = all_vectors(len(p))
  p_y = np.prod(np.where(ys == 1, p, 1 - p), axis=1)
  inter = sets @ ys.T  # [M, 2^r]
  size_s = sets.sum(1)[:, None]
  size_y = ys.sum(1)[None, :]
  total = np.zeros(len(sets))
  for n, p_n in enumerate(tail_pmf):
    denom = size_s + size_y + n
    f1 = np.where(denom == 0, 1.0, 2 * inter / np.maximum(denom, 1))
    total += p_n * (f1 @ p_y)
  return total


def top_k_sets(r):
  return np.tril(np.ones((r + 1, r)), -1)  # row k: the first k classes


def random_probs(batch_size, r):
  """Sorted rows mixing uniform, near-0/1 and exact 0/1 probabilities."""
  kind = RNG.integers(3)
  p = [RNG.uniform(size=(batch_size, r)), RNG.beta(0.2, 0.2, size=(batch_size, r)),
       RNG.choice([0.0, 1.0, 0.5, RNG.uniform()], size=(batch_size, r))][kind]
  return -np.sort(-p, axis=1)


@pytest.mark.parametrize("r", range(0, 8))
def test_matches_brute_force_and_top_k_is_optimal(r):
  for _ in range(6):
    probs = random_probs(3, r)
    values = expected_f1_of_top_k(probs)
    k, best = expected_f1_sets(probs)
    assert values.shape == (3, r + 1) and values.dtype == np.float64
    for b in range(3):
      ref = brute_force_expected_f1(probs[b], top_k_sets(r))
      np.testing.assert_allclose(values[b], ref, rtol=0, atol=1e-12)
      # Lewis / Ye et al.: the best top-k set is as good as the best of all 2^r subsets.
      best_any = brute_force_expected_f1(probs[b], all_vectors(r)).max()
      assert abs(best[b] - best_any) < 1e-9
      assert abs(values[b, k[b]] - best[b]) < 1e-15


@pytest.mark.parametrize("lam", [0.3, 2.0, 5.0])
def test_tail_matches_exact_poisson(lam):
  probs = random_probs(2, 5)
  pmf = [math.exp(-lam) * lam ** n / math.factorial(n) for n in range(120)]
  values = expected_f1_of_top_k(probs, np.full(2, lam))
  for b in range(2):
    np.testing.assert_allclose(values[b], brute_force_expected_f1(probs[b], top_k_sets(5), pmf),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_tail_matches_many_small_bernoullis(lam):
  # The tail as 200 independent Bernoulli(lam / 200) labels: F1 depends on them only through
  # their count, which is Binomial(200, lam / 200). Poisson vs Binomial differ by O(lam / 200).
  n, q = 200, lam / 200
  pmf = [math.comb(n, i) * q ** i * (1 - q) ** (n - i) for i in range(n + 1)]
  probs = np.array([[0.9, 0.7, 0.4, 0.2, 0.05], [0.6, 0.6, 0.1, 0.0, 0.0]])
  values = expected_f1_of_top_k(probs, np.full(2, lam))
  for b in range(2):
    np.testing.assert_allclose(values[b], brute_force_expected_f1(probs[b], top_k_sets(5), pmf),
                               rtol=0, atol=1e-3)


def test_tail_truncation_lumps_mass_at_max_tail_labels():
  lam, cap = 3.0, 2
  pmf = [math.exp(-lam) * lam ** n / math.factorial(n) for n in range(cap)]
  pmf.append(1 - sum(pmf))  # P(min(N, cap) = cap)
  probs = np.array([[0.8, 0.5, 0.3]])
  values = expected_f1_of_top_k(probs, [lam], max_tail_labels=cap)
  np.testing.assert_allclose(values[0], brute_force_expected_f1(probs[0], top_k_sets(3), pmf),
                             rtol=0, atol=1e-12)


def test_monte_carlo_r64_with_tail():
  rng = np.random.default_rng(1)
  r, draws = 64, 20000
  probs = -np.sort(-rng.beta(0.3, 2.0, size=(2, r)), axis=1)
  tail = np.array([1.5, 0.2])
  values = expected_f1_of_top_k(probs, tail)
  k = np.arange(r + 1)
  for b in range(2):
    y = rng.uniform(size=(draws, r)) < probs[b]
    n_tail = rng.poisson(tail[b], size=draws)
    tp = np.concatenate([np.zeros((draws, 1)), np.cumsum(y, axis=1)], axis=1)  # [draws, r+1]
    denom = k + y.sum(1, keepdims=True) + n_tail[:, None]
    f1 = np.where(denom == 0, 1.0, 2 * tp / np.maximum(denom, 1))
    # 5 standard errors of the mean (sd <= 0.5, so <= 0.018), plus 5 / draws for events too
    # rare to be sampled (k = 0 scores 1 only when y is empty, here P ~ 2e-5).
    tol = 5 * f1.std(0) / np.sqrt(draws) + 5 / draws
    assert np.all(np.abs(f1.mean(0) - values[b]) <= tol)


def test_all_zero_all_one_and_certain_labels():
  k, f1 = expected_f1_sets(np.zeros((2, 5)))
  np.testing.assert_array_equal(k, 0)
  np.testing.assert_array_equal(f1, 1.0)
  np.testing.assert_array_equal(expected_f1_of_top_k(np.zeros((1, 3))), [[1, 0, 0, 0]])
  k, f1 = expected_f1_sets(np.ones((2, 5)))
  np.testing.assert_array_equal(k, 5)
  np.testing.assert_array_equal(f1, 1.0)
  k, f1 = expected_f1_sets([[1.0, 0.0, 0.0, 0.0]])
  assert k[0] == 1 and f1[0] == 1.0
  k, f1 = expected_f1_sets([[1.0, 1.0, 0.5, 0.0, 0.0]])
  # Top-2: F1 = 1 or 4/5; top-3: 1 or 4/5 as well, so the tie goes to k = 2.
  assert k[0] == 2 and abs(f1[0] - 0.9) < 1e-15


def test_extreme_values_stay_finite():
  probs = np.array([[1.0, 1 - 1e-16, 1e-300, 0.0], [1 + 5e-7, 0.5, 0.5, -5e-7]])
  for tail in [None, [0.0, 1e-300], [1e6, 1e-12], [1e300, 50.0]]:
    for cap in [0, 1, 64]:
      values = expected_f1_of_top_k(probs, tail, max_tail_labels=cap)
      assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1))
      k, f1 = expected_f1_sets(probs, tail, max_tail_labels=cap)
      assert np.all(np.isfinite(f1))
  assert expected_f1_of_top_k(np.zeros((0, 4))).shape == (0, 5)
  # r = 0: only the empty set, right exactly when the tail is empty too.
  np.testing.assert_allclose(expected_f1_of_top_k(np.zeros((2, 0)), [0.0, 1.0]),
                             [[1.0], [math.exp(-1.0)]], rtol=1e-15)


def test_max_k_caps_the_set_size():
  probs = np.array([[0.99, 0.98, 0.97, 0.9], [0.9, 0.1, 0.05, 0.0]])
  values = expected_f1_of_top_k(probs)
  k, f1 = expected_f1_sets(probs, max_k=2)
  np.testing.assert_array_equal(k, np.argmax(values[:, :3], axis=1))
  np.testing.assert_array_equal(f1, values[:, :3].max(1))
  k, _ = expected_f1_sets(probs, max_k=0)
  np.testing.assert_array_equal(k, 0)


@pytest.mark.parametrize("call, match", [
    (lambda: expected_f1_of_top_k([0.5, 0.2]), r"`probs` must have rank 2"),
    (lambda: expected_f1_of_top_k([[1.1, 0.2]]), r"`probs` must hold probabilities in \[0, 1\]"),
    (lambda: expected_f1_of_top_k([[0.5, -0.1]]), r"`probs` must hold probabilities"),
    (lambda: expected_f1_of_top_k([[np.nan, 0.1]]), r"`probs` must hold probabilities"),
    (lambda: expected_f1_of_top_k([[0.2, 0.5]]), r"`probs` rows must be sorted"),
    (lambda: expected_f1_of_top_k([[0.5, 0.2]], [0.1, 0.1]), r"`tail_mass` must have shape"),
    (lambda: expected_f1_of_top_k([[0.5, 0.2]], [-0.1]), r"`tail_mass` must be finite and >= 0"),
    (lambda: expected_f1_of_top_k([[0.5, 0.2]], [np.inf]), r"`tail_mass` must be finite"),
    (lambda: expected_f1_of_top_k([[0.5]], max_tail_labels=-1), r"`max_tail_labels` must be"),
    (lambda: expected_f1_sets([[0.5, 0.2]], max_k=3), r"`max_k` must be an int in \[0, r=2\]"),
    (lambda: expected_f1_sets([[0.5, 0.2]], max_k=-1), r"`max_k` must be an int"),
    (lambda: expected_f1_sets([[0.5, 0.2]], max_k=1.0), r"`max_k` must be an int"),
    (lambda: expected_f1_sets([0.5, 0.2], max_k=1), r"`probs` must have rank 2"),
])
def test_bad_input_names_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_docstring_examples():
  assert doctest.testmod(expected_f1).failed == 0


prob = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4).flatmap(lambda b: st.integers(0, 8).flatmap(lambda r: st.tuples(
    st.lists(st.lists(prob, min_size=r, max_size=r), min_size=b, max_size=b),
    st.lists(st.one_of(st.just(0.0), st.floats(0.0, 20.0)), min_size=b, max_size=b),
    st.permutations(range(b))))))
def test_properties(case):
  rows, tail, perm = case
  probs = -np.sort(-np.array(rows, np.float64).reshape(len(rows), -1), axis=1)
  tail, perm = np.array(tail), np.array(perm)
  values = expected_f1_of_top_k(probs, tail)
  k, f1 = expected_f1_sets(probs, tail)
  assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1))
  rows_idx = np.arange(len(k))
  np.testing.assert_array_equal(f1, values[rows_idx, k])
  assert np.all(f1 >= values.max(1) - 1e-12)
  for b in rows_idx:  # ties go to the smallest k
    assert np.all(values[b, :k[b]] < values[b].max() - 1e-12)
  k_perm, f1_perm = expected_f1_sets(probs[perm], tail[perm])
  np.testing.assert_array_equal(k_perm, k[perm])
  np.testing.assert_allclose(f1_perm, f1[perm], rtol=0, atol=1e-13)
  np.testing.assert_allclose(expected_f1_of_top_k(probs[perm], tail[perm]), values[perm],
                             rtol=0, atol=1e-13)


@pytest.mark.parametrize("r", [1, 3, 6])
def test_min_k_1_is_the_optimum_given_a_label(r):
  """Conditioned on y != {}, the best of all 2^r - 1 non-empty sets is the chosen top-k."""
  for _ in range(4):
    probs = random_probs(2, r)
    probs[:, 0] = np.maximum(probs[:, 0], 0.05)  # P(y != {}) > 0.
    k, _ = expected_f1_sets(probs, min_k=1)
    for b in range(2):
      ys = all_vectors(r)[1:]  # Non-empty label vectors only, renormalised.
      p_y = np.prod(np.where(ys == 1, probs[b], 1 - probs[b]), axis=1)
      p_y /= p_y.sum()
      sets = all_vectors(r)[1:]
      f1 = 2 * (sets @ ys.T) / (sets.sum(1)[:, None] + ys.sum(1)[None, :])
      conditional = f1 @ p_y
      chosen = 2 * (top_k_sets(r)[k[b]] @ ys.T) / (k[b] + ys.sum(1)) @ p_y
      assert k[b] >= 1
      np.testing.assert_allclose(chosen, conditional.max(), atol=1e-9)


def test_jax_numpy_path_matches_numpy_under_jit():
  import jax
  import jax.numpy as jnp
  probs = -np.sort(-RNG.beta(0.3, 2.0, size=(16, 12)), axis=1)
  tail = RNG.uniform(0, 2, size=16)
  ref_k, ref_f1 = expected_f1_sets(probs, tail, min_k=1)
  fn = jax.jit(lambda p, t: expected_f1_sets(p, t, min_k=1, xp=jnp))
  k, f1 = fn(jnp.asarray(probs, jnp.float32), jnp.asarray(tail, jnp.float32))
  np.testing.assert_array_equal(np.asarray(k), ref_k)
  np.testing.assert_allclose(np.asarray(f1), ref_f1, atol=1e-5)
