"""Bayes-optimal decoding for instance-wise (samples) F1 from independent label marginals.

Given marginals ``p_c = P(y_c = 1 | x)`` of labels that are independent given ``x``, the set
``S`` maximising ``E[F1(S, y)]`` (``F1 = 2|S & y| / (|S| + |y|)``, 1 when both are empty) is
the top-k set of the classes by decreasing ``p`` for some k (Lewis 1995, "Evaluating and
optimizing autonomous text classification systems", SIGIR; proved in Ye, Chai, Lee & Chieu
2012, "Optimizing F-measures: A Tale of Two Approaches", ICML, Theorem 2). The expected F1
of each top-k set is computed exactly by dynamic programming over Poisson-binomial
distributions (Jansche 2007, "A maximum expected utility framework for binary sequence
labeling", ACL): TP ~ PoissonBinomial(p_1..p_k) and FN ~ PoissonBinomial(p_{k+1}..p_r),
independent, and ``E[F1] = sum_{a,b} P(TP=a) P(FN=b) 2a / (k + a + b)``.

Runs in numpy (float64, on the host: the evaluation) or jax.numpy (inside the compiled
prediction and its export) over the top-r probabilities of each row, with the rest of the
classes summarised by their total mass.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

_TIE_TOL = 1e-12  # E[F1] values this close count as a tie (the smallest k wins)


def _check_probs(probs) -> np.ndarray:
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2:
    raise ValueError(f"`probs` must have rank 2 [B, r], got shape {probs.shape}.")
  if not np.all((probs >= -1e-6) & (probs <= 1 + 1e-6)):  # also rejects NaN
    raise ValueError("`probs` must hold probabilities in [0, 1].")
  if np.any(np.diff(probs, axis=1) > 0):
    raise ValueError("`probs` rows must be sorted by decreasing probability.")
  return np.clip(probs, 0.0, 1.0)


def _check_tail(tail_mass, batch_size: int) -> Optional[np.ndarray]:
  if tail_mass is None:
    return None  # No tail: no Poisson columns to carry.
  tail_mass = np.asarray(tail_mass, np.float64)
  if tail_mass.shape != (batch_size,):
    raise ValueError(f"`tail_mass` must have shape [B]=({batch_size},), got {tail_mass.shape}.")
  if not np.all((tail_mass >= 0) & np.isfinite(tail_mass)):
    raise ValueError("`tail_mass` must be finite and >= 0.")
  return tail_mass


def _poisson_pmf(lam, n: int, xp):
  """``[B, n + 1]`` Poisson(lam) pmf on 0..n, the mass above n lumped at n."""
  j = np.arange(n + 1, dtype=np.float64)
  log_fact = np.array([math.lgamma(i + 1.0) for i in j])
  safe = xp.maximum(lam, 1e-300)[:, None]
  pmf = xp.exp(xp.where(j > 0, j * xp.log(safe), 0.0) - lam[:, None] - log_fact)
  pmf = xp.where(lam[:, None] > 0, pmf, (j == 0).astype(np.float64))  # Poisson(0): all at 0.
  rest = xp.maximum(1.0 - xp.sum(pmf[:, :-1], axis=1, keepdims=True), 0.0)
  return xp.concatenate([pmf[:, :-1], rest], axis=1)


def _add_bernoulli(dist, p, xp):
  """``[B, n] -> [B, n + 1]``: the count distribution with one more Bernoulli(p [B])."""
  zero = xp.zeros_like(dist[:, :1])
  p = p[:, None]
  return (xp.concatenate([dist * (1.0 - p), zero], axis=1)
          + xp.concatenate([zero, dist * p], axis=1))


def _f1_table(k: int, n: int) -> np.ndarray:
  """``[k + 1, n]``: F1 of a k-set with a true positives and b misses, 1 for 0/0."""
  a = np.arange(k + 1)[:, None]
  denom = k + a + np.arange(n)[None, :]
  return np.where(denom > 0, 2.0 * a / np.maximum(denom, 1), 1.0)


def expected_f1_of_top_k(probs, tail_mass=None, *, max_tail_labels: int = 32, xp=np):
  """Expected instance-wise F1 of predicting the top-k classes, for every k = 0..r.

  Args:
    probs: float ``[B, r]``, each row sorted by decreasing probability (e.g. the top-r
      marginals of a row), values in [0, 1].
    tail_mass: optional float ``[B]`` >= 0, the total expected count of the classes outside
      ``probs`` (default 0: there are none). Their count is modelled as Poisson(tail_mass), a
      sum of many small independent Bernoullis, with the mass above ``max_tail_labels``
      lumped at ``max_tail_labels``.
    max_tail_labels: int >= 0, the truncation of the tail count.
    xp: ``numpy`` (float64, inputs checked) or ``jax.numpy`` (traceable: no checks, the
      dtype of ``probs``).

  Returns:
    ``[B, r + 1]``, column k the expected F1 of the set of the first k classes.

  Example:
    >>> expected_f1_of_top_k([[0.9, 0.5, 0.1]]).round(3)
    array([[0.045, 0.728, 0.766, 0.637]])
  """
  if not isinstance(max_tail_labels, (int, np.integer)) or max_tail_labels < 0:
    raise ValueError(f"`max_tail_labels` must be an int >= 0, got {max_tail_labels!r}.")
  if xp is np:
    probs = _check_probs(probs)
    tail_mass = _check_tail(tail_mass, probs.shape[0])
  batch_size, r = probs.shape
  # TP distributions of the top-k sets, k = 0..r (forward).
  one = xp.ones((batch_size, 1), probs.dtype)
  tp = [one]
  for i in range(r):
    tp.append(_add_bernoulli(tp[-1], probs[:, i], xp))
  # FN distribution of classes k..r-1 plus the tail (backward), combined with TP as we go.
  if tail_mass is None:
    fn = one
  else:
    fn = _poisson_pmf(xp.asarray(tail_mass, probs.dtype), max_tail_labels, xp)
  out = [None] * (r + 1)
  for k in range(r, -1, -1):
    if k < r:
      fn = _add_bernoulli(fn, probs[:, k], xp)
    # einsum, not @: BLAS threads on tiny [B, k+1] x [k+1, n] products only contend.
    table = _f1_table(k, fn.shape[1]).astype(probs.dtype)
    out[k] = xp.sum(xp.einsum("ia,ab->ib", tp[k], table) * fn, axis=1)
  return xp.clip(xp.stack(out, axis=1), 0.0, 1.0) if batch_size else xp.zeros((0, r + 1))


def expected_f1_sets(probs, tail_mass=None, *, min_k: int = 0, max_k: Optional[int] = None,
                     max_tail_labels: int = 32, xp=np) -> Tuple[np.ndarray, np.ndarray]:
  """The size of the expected-F1-optimal top-k set of each row, and its expected F1.

  Args:
    probs, tail_mass, max_tail_labels, xp: as in :func:`expected_f1_of_top_k`.
    min_k: int in [0, r], the smallest set allowed. ``min_k=1`` is the optimum given that
      the row has a label: for k >= 1, F1 is 0 when y is empty, so ``E[F1 | y != {}] =
      E[F1] / P(y != {})`` ranks the sets >= 1 alike, and the empty set scores 0.
    max_k: optional int in [min_k, r] capping k (default r).

  Returns:
    ``(k, expected_f1)``: int32 ``[B]`` the best set size (ties within 1e-12: the smallest
    k), ``[B]`` its expected F1 (unconditional). Predict the first ``k[b]`` classes of row b.

  Example:
    >>> k, f1 = expected_f1_sets([[0.9, 0.5, 0.1], [0.3, 0.2, 0.2]])
    >>> k, f1.round(3)
    (array([2, 0], dtype=int32), array([0.766, 0.448]))
  """
  r = np.shape(probs)[1] if np.ndim(probs) == 2 else -1
  max_k = r if max_k is None else max_k
  for name, v, lo in (("min_k", min_k, 0), ("max_k", max_k, min_k)):
    if r >= 0 and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                   or not lo <= v <= r):
      raise ValueError(f"`{name}` must be an int in [{lo}, r={r}], got {v!r}.")
  values = expected_f1_of_top_k(probs, tail_mass, max_tail_labels=max_tail_labels, xp=xp)
  allowed = (np.arange(values.shape[1]) >= min_k) & (np.arange(values.shape[1]) <= max_k)
  ranked = xp.where(allowed, values, -1.0)
  best = xp.max(ranked, axis=1, keepdims=True, initial=-1.0)
  k = xp.argmax(ranked >= best - _TIE_TOL, axis=1).astype(np.int32)
  return k, xp.take_along_axis(values, k[:, None], axis=1)[:, 0]
