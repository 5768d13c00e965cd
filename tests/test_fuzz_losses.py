"""Fuzzed losses: random shapes (C = 1 included), float32 and bfloat16 logits, +-1e4 logits
mixed with normal ones, rows with no labels, rows with every label, duplicate ids.

Each loss is checked against a float64 numpy reference written from its docstring (which
also fixes what a row without labels does), for finite values and gradients, for
non-negativity, and for equal results from dense and id labels. Unlike test_losses.py, the
logits here reach +-1e4 *together with* normal values and label-aligned extremes, in both
dtypes, and every loss option that changes the numerics is drawn.

Non-negative by construction (each is asserted):
  sigmoid_bce, focal, asymmetric: sums of -w log(q) with q <= 1, w >= 0 (targets in [0, 1]);
  softmax_xent: cross-entropy of a distribution against a softmax, >= 0;
  zlpr: log(1 + non-negative sums);
  count_distribution: softmax cross-entropy plus a Poisson NLL, -log pmf >= 0 (beyond
    log_count = 30 the rate continues linearly, which keeps the NLL increasing, so >= 0);
  abs_kl: a sum of absolute values;
  two_head_average_k: cross-entropy plus weight (>= 0) times BCE;
  label_embedding_cosine: 1 - cos, in [0, 2].
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings, strategies as st

from multilabel_jax import losses
from tests.fuzz_problems import EXTREME, NO_SHRINK, as_f64, problems

# Each example compiles its program once (~3 s): few examples, many rows each.
FAST = settings(max_examples=4, deadline=None, phases=NO_SHRINK)
MANY = settings(max_examples=25, deadline=None, phases=NO_SHRINK)
EMB_DIM = 3
MAX_LOG_COUNT = 30.0  # count.py: exp() continues linearly beyond this log-count.


def aux_inputs(p):
  """Extra inputs some losses take, drawn from the problem's generator."""
  b, c = p.dense.shape
  rng = p.rng
  log_count = rng.normal(size=b) * 2
  log_count = np.where(rng.random(b) < 0.4, rng.choice([-EXTREME, 40.0, EXTREME], b), log_count)
  ml_logits = np.where(rng.random((b, c)) < 0.5, rng.choice([-EXTREME, EXTREME], (b, c)),
                       rng.normal(size=(b, c)) * 4)
  pred = rng.normal(size=(b, EMB_DIM)) * rng.choice([1.0, EXTREME])
  pred[rng.random(b) < 0.25] = 0.0  # A prediction with no direction.
  emb = rng.normal(size=(c, EMB_DIM))
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  emb[rng.random(c) < 0.25] = 0.0  # Labels never seen in training have zero embeddings.
  return {"log_count": jnp.asarray(log_count, p.dtype),
          "ml_logits": jnp.asarray(ml_logits, p.dtype),
          "pred": jnp.asarray(pred, p.dtype),
          "embeddings": jnp.asarray(emb, jnp.float32)}


# ---------------------------------------------------------------- float64 references


def log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


def ref_bce(z, y, ls=0.0):
  t = y * (1 - ls) + ls / 2
  return (t * np.logaddexp(0, -z) + (1 - t) * np.logaddexp(0, z)).sum(-1)


def ref_softmax(z, y):
  """Empty rows: 0 (masked), as softmax_xent documents."""
  k = y.sum(-1, keepdims=True)
  ce = scipy.special.logsumexp(z, axis=-1) - (y / np.maximum(k, 1) * z).sum(-1)
  return np.where(k[:, 0] > 0, ce, 0.0)


def ref_focal(z, y, gamma, alpha):
  a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
  pos = a_pos * np.exp(gamma * log_sigmoid(-z)) * np.logaddexp(0, -z)
  neg = a_neg * np.exp(gamma * log_sigmoid(z)) * np.logaddexp(0, z)
  return (y * pos + (1 - y) * neg).sum(-1)


def ref_asymmetric(z, y, gp, gn, clip, eps=1e-8):
  """Exact logs; eps floors 1 - p_m only when clip > 0 (see the docstring)."""
  pos = np.exp(gp * log_sigmoid(-z)) * np.logaddexp(0, -z)
  if clip == 0:
    neg = np.exp(gn * log_sigmoid(z)) * np.logaddexp(0, z)
  else:
    pm = np.maximum(scipy.special.expit(z) - clip, 0.0)
    one_minus_pm = np.minimum(scipy.special.expit(-z) + clip, 1.0)
    neg = -(pm ** gn) * np.log(np.maximum(one_minus_pm, eps))
  return (y * pos + (1 - y) * neg).sum(-1)


def ref_squared_hinge(z, y, margin):
  return (np.maximum(margin - np.where(y > 0, 1.0, -1.0) * z, 0.0) ** 2).sum(-1)


def ref_zlpr(z, y):
  """Empty rows: the negative term only."""
  def log1p_sum_exp(x, mask):
    x = np.where(mask, x, -np.inf)
    return scipy.special.logsumexp(np.concatenate([np.zeros_like(x[:, :1]), x], 1), axis=1)
  return log1p_sum_exp(z, y <= 0) + log1p_sum_exp(-z, y > 0)


def ref_count(z, log_count, y, count_weight=1.0):
  """Empty rows: the Poisson term only."""
  n = y.sum(-1)
  capped = np.minimum(log_count, MAX_LOG_COUNT)
  rate = np.exp(capped) * (1 + log_count - capped)
  poisson = rate - n * log_count + scipy.special.gammaln(n + 1)
  return ref_softmax(z, y) + count_weight * poisson


def ref_abs_kl(scores, y, eps):
  p, q = np.maximum(scores, eps), np.maximum(y, eps)
  return np.abs((p - q) * np.log(p / q)).sum(-1)


def check_pseudo_labels(pseudo, softmax_logits, y, k):
  """The documented rule: the observed labels plus every candidate at or above the m-th
  highest softmax probability of the batch, m = round(k B) - #observed. Probabilities in
  float64; candidates within float32 rounding of the threshold may go either way."""
  z = softmax_logits
  probs = np.exp(z - scipy.special.logsumexp(z, axis=-1, keepdims=True))
  observed = y > 0
  assert (pseudo >= observed).all(), "an observed label is not a pseudo-label"
  added, candidates = pseudo & ~observed, probs[~observed]
  m = min(int(round(k * y.shape[0])) - int(observed.sum()), candidates.size)
  if m <= 0:
    assert not added.any(), "pseudo-labels although the observed labels reach k B"
    return
  t = np.sort(candidates)[::-1][m - 1]
  assert added.sum() >= m, (added.sum(), m)
  assert (added[~observed & (probs > t * (1 + 1e-5))]).all(), "missed a label above t"
  assert not added[~observed & (probs < t * (1 - 1e-5))].any(), "added a label below t"


def ref_two_head(z, ml, y, pseudo, weight):
  """Softmax term as softmax_xent (empty rows 0) plus BCE on the given pseudo-labels."""
  return ref_softmax(z, y) + weight * ref_bce(ml, pseudo)


def ref_embedding(pred, y, emb):
  """Rows without a target (no labels, or only zero embeddings): 0, masked."""
  target = y @ emb
  tn, pn = np.linalg.norm(target, axis=1), np.linalg.norm(pred, axis=1)
  cos = (pred * target).sum(1) / (np.maximum(pn, 1e-12) * np.maximum(tn, 1e-12))
  return np.where(tn > 0, 1 - cos, 0.0)


# -------------------------------------------------------------------- the losses


class Case:
  """A loss under test: ``fn(logits, labels, aux, **opts)``, its float64 reference
  ``ref(logits, dense_labels, aux, **opts)`` on numpy inputs, the inputs it is
  differentiated by, and whether rows without labels are masked (no loss or no gradient
  on the logits)."""

  def __init__(self, fn, ref, grad_args=("logits",), empty_rows_masked=False):
    self.fn, self.ref = fn, ref
    self.grad_args = grad_args
    self.empty_rows_masked = empty_rows_masked


def ref_count_scores(z, log_count):
  log_softmax = z - scipy.special.logsumexp(z, axis=-1, keepdims=True)
  return np.exp(log_softmax + np.minimum(log_count, MAX_LOG_COUNT)[:, None])


CASES = {
    "sigmoid_bce": Case(lambda z, y, a, ls: losses.sigmoid_bce(z, y, label_smoothing=ls),
                        lambda z, y, a, ls: ref_bce(z, y, ls)),
    "softmax_xent": Case(lambda z, y, a: losses.softmax_xent(z, y),
                         lambda z, y, a: ref_softmax(z, y), empty_rows_masked=True),
    "focal": Case(lambda z, y, a, gamma, alpha: losses.focal(z, y, gamma=gamma, alpha=alpha),
                  lambda z, y, a, gamma, alpha: ref_focal(z, y, gamma, alpha)),
    "asymmetric": Case(
        lambda z, y, a, gp, gn, clip: losses.asymmetric(z, y, gamma_pos=gp, gamma_neg=gn,
                                                        clip=clip),
        lambda z, y, a, gp, gn, clip: ref_asymmetric(z, y, gp, gn, clip)),
    "zlpr": Case(lambda z, y, a: losses.zlpr(z, y), lambda z, y, a: ref_zlpr(z, y)),
    "squared_hinge": Case(lambda z, y, a, margin: losses.squared_hinge(z, y, margin=margin),
                          lambda z, y, a, margin: ref_squared_hinge(z, y, margin)),
    "count_distribution": Case(
        lambda z, y, a: losses.count_distribution(z, a["log_count"], y),
        lambda z, y, a: ref_count(z, a["log_count"], y),
        grad_args=("logits", "log_count"), empty_rows_masked=True),
    "abs_kl": Case(
        lambda z, y, a, eps: losses.abs_kl(losses.count_scores(z, a["log_count"]), y, eps=eps),
        lambda z, y, a, eps: ref_abs_kl(ref_count_scores(z, a["log_count"]), y, eps),
        grad_args=("logits", "log_count")),
    "two_head_average_k": Case(
        lambda z, y, a, k: losses.two_head_average_k(z, a["ml_logits"], y, k=k, weight=0.5),
        lambda z, y, a, k: ref_two_head(z, a["ml_logits"], y, a["pseudo"], 0.5),
        grad_args=("logits", "ml_logits"), empty_rows_masked=True),
    "label_embedding_cosine": Case(
        lambda z, y, a: losses.label_embedding_cosine(a["pred"], y, a["embeddings"]),
        lambda z, y, a: ref_embedding(a["pred"], y, a["embeddings"]),
        grad_args=("pred",), empty_rows_masked=True),
}

# Options that change the numerics (0 vs > 0 focusing, clipping, smoothing, k vs C).
OPTIONS = st.fixed_dictionaries({
    "sigmoid_bce": st.fixed_dictionaries({"ls": st.sampled_from([0.0, 0.1])}),
    "focal": st.fixed_dictionaries({"gamma": st.sampled_from([0.0, 2.0]),
                                    "alpha": st.sampled_from([None, 0.25])}),
    "asymmetric": st.sampled_from([dict(gp=0.0, gn=4.0, clip=0.05),
                                   dict(gp=1.0, gn=2.0, clip=0.0),
                                   dict(gp=0.0, gn=0.0, clip=0.0)]),
    "abs_kl": st.fixed_dictionaries({"eps": st.sampled_from([1e-6, 1e-2])}),
    "squared_hinge": st.fixed_dictionaries({"margin": st.sampled_from([1.0, 0.25])}),
    "two_head_average_k": st.fixed_dictionaries({"k": st.sampled_from([0.5, 2.0, 20.0])}),
}).map(lambda d: tuple((name, tuple(sorted(d.get(name, {}).items()))) for name in CASES))


@functools.partial(jax.jit, static_argnames="options")
def evaluate_all(logits, ids, dense, aux, options):
  """Every loss on id and dense labels, and its gradients (via the ids), in one program:
  one compilation per shape and dtype instead of one per loss and op."""
  inputs = dict(aux, logits=logits)
  out = {}
  for name, opts in options:
    case, opts = CASES[name], dict(opts)

    def loss(labels, diff, case=case, opts=opts):
      args = dict(inputs, **diff)
      return case.fn(args["logits"], labels, args, **opts)

    from_ids, vjp = jax.vjp(lambda d: loss(ids, d), {a: inputs[a] for a in case.grad_args})
    weights = jnp.arange(1.0, 1.0 + logits.shape[0], dtype=from_ids.dtype)  # Non-uniform.
    out[name] = (from_ids, loss(dense, {}), vjp(weights)[0])
    if name == "two_head_average_k":
      out["pseudo"] = losses.average_k_pseudo_labels(logits, ids, opts["k"])
  return out


def _tolerance(logits, aux, values):
  """Absolute tolerance per row: float32 rounding of sums of terms as large as 1e4."""
  mag = np.abs(logits).sum(1) + np.abs(aux["ml_logits"]).sum(1)
  mag += np.minimum(np.abs(aux["log_count"]), 1e4)
  return 1e-5 * np.abs(values) + 2e-6 * (1 + mag)


def check_all_losses(p, options):
  aux = aux_inputs(p)
  out = evaluate_all(p.logits, jnp.asarray(p.ids), jnp.asarray(p.dense), aux, options)
  z, y = as_f64(p.logits), p.dense.astype(np.float64)
  aux64 = {k: as_f64(v) for k, v in aux.items()}
  aux64["pseudo"] = np.asarray(out["pseudo"])
  check_pseudo_labels(aux64["pseudo"], z, y, dict(dict(options)["two_head_average_k"])["k"])
  empty = p.rows("empty")
  for name, opts in options:
    case = CASES[name]
    from_ids, from_dense, grads = (jax.tree.map(as_f64, x) for x in out[name])
    want = case.ref(z, y, aux64, **dict(opts))
    tol = _tolerance(z, aux64, want)
    msg = f"{name} {dict(opts)}"
    assert from_ids.shape == (z.shape[0],), msg
    assert np.isfinite(from_ids).all() and np.isfinite(from_dense).all(), (msg, from_ids)
    np.testing.assert_array_less(np.abs(from_ids - want), tol, err_msg=f"{msg}: vs float64")
    np.testing.assert_array_less(np.abs(from_dense - from_ids), tol,
                                 err_msg=f"{msg}: dense vs ids")
    assert (from_ids >= -tol).all(), (msg, "negative", from_ids)
    if name == "label_embedding_cosine":
      assert (from_ids <= 2 + tol).all(), (msg, from_ids)
    for arg, g in grads.items():
      assert out[name][2][arg].dtype == aux.get(arg, p.logits).dtype, (msg, arg)
      assert np.isfinite(g).all(), (msg, arg, g)
    if case.empty_rows_masked:
      arg = case.grad_args[0]
      np.testing.assert_array_equal(grads[arg][empty], 0.0, err_msg=f"{msg}: empty rows")
    if name in ("softmax_xent", "label_embedding_cosine"):  # "contribute 0, masked".
      np.testing.assert_array_equal(from_ids[empty], 0.0, err_msg=f"{msg}: empty rows")
    if name == "softmax_xent":  # Uniform 1/C targets: logsumexp(z) - mean(z) >= log C.
      full = p.rows("full")
      assert (from_ids[full] >= np.log(z.shape[1]) - tol[full]).all(), (msg, from_ids)


@FAST
@given(p=problems(), options=OPTIONS)
def test_losses_fuzz(p, options):
  check_all_losses(p, options)


@pytest.mark.slow
@MANY
@given(p=problems(), options=OPTIONS)
def test_losses_fuzz_many(p, options):
  check_all_losses(p, options)
