"""Losses against optax and float64 numpy references, gradients, and properties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, strategies as st
from jax import test_util

from multilabel_jax import labels as labels_lib
from multilabel_jax import losses

RNG = np.random.default_rng(0)


def random_problem(rng, batch=6, num_classes=9, max_labels=4, empty_row=True):
  logits = rng.normal(size=(batch, num_classes)).astype(np.float32) * 3
  ids = np.full((batch, max_labels), -1, np.int32)
  for b in range(batch):
    n = 0 if (empty_row and b == 0) else rng.integers(1, max_labels + 1)
    ids[b, :n] = rng.choice(num_classes, n, replace=False)
  dense = np.asarray(labels_lib.ids_to_dense(ids, num_classes))
  return logits, ids, dense


# Float64 numpy references, written from the papers' formulas.
def np_softplus(x):
  return np.logaddexp(0, x)


def np_asl(z, y, gp, gn, clip, eps=1e-8):
  p = scipy.special.expit(z)
  pm = np.maximum(p - clip, 0) if clip else p
  pos = -((1 - p) ** gp) * np.log(p)
  neg = -(pm ** gn) * np.log(np.maximum(1 - pm, eps))
  return (y * pos + (1 - y) * neg).sum(-1)


def np_zlpr(z, y):
  pos, neg = y > 0, y <= 0
  a = np.log1p(np.sum(np.where(neg, np.exp(z), 0), -1))
  b = np.log1p(np.sum(np.where(pos, np.exp(-z), 0), -1))
  return a + b


def np_softmax_xent(z, y):
  t = y / np.maximum(y.sum(-1, keepdims=True), 1e-30)
  lse = scipy.special.logsumexp(z, axis=-1)
  return np.where(y.sum(-1) > 0, lse - (t * z).sum(-1), 0.)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_sigmoid_bce_matches_optax(smoothing):
  z, ids, dense = random_problem(RNG)
  t = dense * (1 - smoothing) + smoothing / 2
  want = optax.sigmoid_binary_cross_entropy(z, t).sum(-1)
  for y in (ids, dense):
    np.testing.assert_allclose(losses.sigmoid_bce(z, y, label_smoothing=smoothing), want,
                               rtol=1e-5, atol=1e-5)


def test_sigmoid_bce_soft_dense_targets_match_optax():
  z, _, _ = random_problem(RNG)
  y = RNG.uniform(size=z.shape).astype(np.float32)
  np.testing.assert_allclose(losses.sigmoid_bce(z, y),
                             optax.sigmoid_binary_cross_entropy(z, y).sum(-1), rtol=1e-5)


def test_softmax_xent_matches_optax_and_masks_empty_rows():
  z, ids, dense = random_problem(RNG)
  target = dense / np.maximum(dense.sum(-1, keepdims=True), 1)
  want = np.where(dense.sum(-1) > 0, optax.softmax_cross_entropy(z, target), 0)
  assert want[0] == 0  # Row 0 is empty by construction.
  for y in (ids, dense):
    np.testing.assert_allclose(losses.softmax_xent(z, y), want, rtol=1e-5, atol=1e-6)


def test_softmax_xent_normalises_dense_weights():
  z, _, _ = random_problem(RNG, empty_row=False)
  w = RNG.uniform(size=z.shape).astype(np.float32)
  np.testing.assert_allclose(losses.softmax_xent(z, w), np_softmax_xent(z, w), rtol=1e-5)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_optax(alpha):
  z, ids, dense = random_problem(RNG)
  want = optax.sigmoid_focal_loss(z, dense, alpha=alpha, gamma=2.0).sum(-1)
  for y in (ids, dense):
    np.testing.assert_allclose(losses.focal(z, y, gamma=2.0, alpha=alpha), want, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("gp,gn,clip", [(0., 4., 0.05), (1., 2., 0.), (0., 0., 0.)])
def test_asymmetric_matches_numpy(gp, gn, clip):
  z, ids, dense = random_problem(RNG)
  want = np_asl(z.astype(np.float64), dense, gp, gn, clip)
  for y in (ids, dense):
    got = losses.asymmetric(z, y, gamma_pos=gp, gamma_neg=gn, clip=clip)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_asymmetric_without_focusing_or_clip_is_bce():
  z, ids, _ = random_problem(RNG)
  np.testing.assert_allclose(losses.asymmetric(z, ids, gamma_pos=0, gamma_neg=0, clip=0),
                             losses.sigmoid_bce(z, ids), rtol=1e-5)


def test_zlpr_matches_numpy():
  z, ids, dense = random_problem(RNG)
  want = np_zlpr(z.astype(np.float64), dense)
  for y in (ids, dense):
    np.testing.assert_allclose(losses.zlpr(z, y), want, rtol=1e-5)


def np_squared_hinge(z, y, margin=1.0):
  sign = np.where(y > 0, 1.0, -1.0)
  return (np.maximum(margin - sign * z, 0.0) ** 2).sum(-1)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_squared_hinge_matches_numpy(margin):
  z, ids, dense = random_problem(RNG)
  want = np_squared_hinge(z.astype(np.float64), dense, margin)
  for y in (ids, dense):
    np.testing.assert_allclose(losses.squared_hinge(z, y, margin=margin), want, rtol=1e-5)


def test_squared_hinge_is_zero_when_every_margin_is_met():
  ids = np.array([[0, 2], [1, -1]], np.int32)
  z = np.where(np.asarray(labels_lib.ids_to_dense(ids, 4)) > 0, 1.5, -1.0).astype(np.float32)
  np.testing.assert_array_equal(losses.squared_hinge(z, ids), [0.0, 0.0])


def test_count_distribution_matches_numpy():
  z, ids, dense = random_problem(RNG)
  log_count = RNG.normal(size=(z.shape[0],)).astype(np.float32)
  n = dense.sum(-1)
  poisson = -scipy.stats.poisson.logpmf(n, np.exp(log_count.astype(np.float64)))
  want = np_softmax_xent(z.astype(np.float64), dense) + 0.5 * poisson
  for y in (ids, dense):
    got = losses.count_distribution(z, log_count[:, None], y, count_weight=0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_count_scores_and_abs_kl_match_numpy():
  z, ids, dense = random_problem(RNG)
  log_count = RNG.normal(size=(z.shape[0],)).astype(np.float32)
  scores = np.asarray(losses.count_scores(z, log_count), np.float64)
  want_scores = np.exp(log_count)[:, None] * scipy.special.softmax(z.astype(np.float64), -1)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
  eps = 1e-4
  p, q = np.maximum(want_scores, eps), np.maximum(dense, eps)
  want = np.abs((p - q) * np.log(p / q)).sum(-1)
  for y in (ids, dense):
    np.testing.assert_allclose(losses.abs_kl(scores.astype(np.float32), y, eps=eps), want,
                               rtol=1e-4)


def test_abs_kl_count_shrinks_when_the_distribution_is_uncertain():
  # The loss's best count for a fixed distribution P: exact when P is sure, far below the
  # true count when P spreads mass beyond the labels (the docstring's warning).
  num_classes, labels = 200, np.array([[0, 1, 2]], np.int32)
  log_z = jnp.linspace(-4.0, 3.0, 2001)

  def best_count(p):
    loss = jax.vmap(lambda lz: losses.abs_kl(
        losses.count_scores(jnp.log(p)[None], lz[None]), labels)[0])(log_z)
    return float(jnp.exp(log_z[jnp.argmin(loss)]))

  sure = np.full(num_classes, 1e-12)
  sure[:3] = 1 / 3
  unsure = np.full(num_classes, 1e-12)
  unsure[:3], unsure[3:103] = 0.1, 0.7 / 100
  assert best_count(sure) == pytest.approx(3.0, rel=0.01)
  assert best_count(unsure) < 0.6  # round(Z) = 0: by_count decodes empty sets.


def np_pseudo_labels(z, dense, k):
  probs = scipy.special.softmax(z.astype(np.float64), -1)
  observed = dense > 0
  m = int(round(k * z.shape[0])) - observed.sum()
  out = observed.copy()
  if m > 0:
    cand = np.where(observed, -1, probs).ravel()
    chosen = np.argsort(-cand, kind="stable")[:m]
    out.ravel()[chosen] = True
  return out


@pytest.mark.parametrize("k", [1.0, 2.5, 4.0])
def test_two_head_pseudo_labels_and_loss(k):
  z, ids, dense = random_problem(RNG, batch=8, num_classes=12)
  ml = RNG.normal(size=z.shape).astype(np.float32)
  pseudo = np_pseudo_labels(z, dense, k)
  assert pseudo.sum() == max(round(k * 8), dense.sum())
  for y in (ids, dense):
    np.testing.assert_array_equal(losses.average_k_pseudo_labels(z, y, k), pseudo)
    want = np_softmax_xent(z.astype(np.float64), dense)
    want = want + 0.3 * optax.sigmoid_binary_cross_entropy(ml, pseudo.astype(np.float32)).sum(-1)
    got = losses.two_head_average_k(z, ml, y, k=k, weight=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_two_head_pseudo_labels_ignore_masked_rows_and_carry_no_gradient():
  z, ids, _ = random_problem(RNG, batch=8, num_classes=12)
  where = np.arange(8) < 5
  pseudo = np.asarray(losses.average_k_pseudo_labels(z, ids, 2.0, jnp.asarray(where)))
  assert not pseudo[~where].any()
  assert pseudo[where].sum() == max(10, (ids[:5] >= 0).sum())
  grad = jax.grad(lambda s: jnp.sum(losses.average_k_pseudo_labels(s, ids, 2.0)
                                    .astype(jnp.float32) * s))(jnp.asarray(z))
  np.testing.assert_array_equal(grad, np.asarray(losses.average_k_pseudo_labels(z, ids, 2.0)))


def test_label_embedding_cosine_matches_numpy():
  z, ids, dense = random_problem(RNG)
  emb = RNG.normal(size=(z.shape[1], 5)).astype(np.float32)
  pred = RNG.normal(size=(z.shape[0], 5)).astype(np.float32)
  target = dense @ emb
  norms = np.linalg.norm(target, axis=1)
  cos = (pred * target).sum(1) / (np.linalg.norm(pred, axis=1) * np.maximum(norms, 1e-30))
  want = np.where(norms > 0, 1 - cos, 0)
  for y in (ids, dense):
    np.testing.assert_allclose(losses.label_embedding_cosine(pred, y, emb), want, rtol=1e-5,
                               atol=1e-6)
  scores = losses.embedding_scores(pred, emb)
  np.testing.assert_allclose(scores, pred @ emb.T / np.linalg.norm(pred, axis=1)[:, None],
                             rtol=1e-5, atol=1e-6)


def test_pmi_matrix_matches_dense_numpy():
  _, ids, dense = random_problem(RNG, batch=40, num_classes=7)
  dense = dense.astype(np.float64)
  n, s = len(dense), 0.5
  cooc = dense.T @ dense
  marg = dense.sum(0) + s
  with np.errstate(divide="ignore"):
    want = np.where(cooc > 0, np.log(cooc * n / np.outer(marg, marg)), 0)
  got = losses.pmi_matrix(ids, 7, smoothing=s, positive=False).toarray()
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  got_pos = losses.pmi_matrix(ids, 7, smoothing=s).toarray()
  np.testing.assert_allclose(got_pos, np.maximum(want, 0), atol=1e-12)


def test_pmi_embeddings_factorise_and_group_cooccurring_labels():
  rng = np.random.default_rng(1)
  # Two communities of labels: {0..4} and {5..9}; label 10 never appears.
  rows = [rng.choice(5, 2, replace=False) + 5 * (i % 2) for i in range(2000)]
  ids = np.array(rows, np.int32)
  emb = losses.pmi_label_embeddings(ids, 11, 10, smoothing=1.0)
  assert emb.shape == (11, 10) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb[:10], axis=1), 1, rtol=1e-5)
  np.testing.assert_array_equal(emb[10], 0)
  sim = emb @ emb.T
  within = sim[0, 1:5].mean()
  across = sim[0, 5:10].mean()
  assert within > across + 0.1
  # Full-rank dense factorisation reproduces the PMI matrix: E E^T = U S U^T = M (PSD here
  # up to sign, so compare |.| of the reconstruction before normalisation via ARPACK path).
  m = losses.pmi_matrix(ids, 11).toarray()
  u, s, vt = np.linalg.svd(m)
  np.testing.assert_allclose((u * s) @ vt, m, atol=1e-8)


def test_pmi_embeddings_truncated_svd_path_agrees_with_dense():
  _, ids, _ = random_problem(RNG, batch=600, num_classes=300, max_labels=4, empty_row=False)
  e_sparse = losses.pmi_label_embeddings(ids, 300, 8, method="arpack")
  e_dense = losses.pmi_label_embeddings(ids, 300, 8, method="dense")
  m = losses.pmi_matrix(ids, 300)
  s_dense = np.linalg.svd(m.toarray(), compute_uv=False)[:8]
  s_sparse = scipy.sparse.linalg.svds(m, k=8, return_singular_vectors=False)
  np.testing.assert_allclose(np.sort(s_sparse)[::-1], s_dense, rtol=1e-6)
  # Same embeddings (signs are fixed the same way).
  nonzero = np.linalg.norm(e_dense, axis=1) > 0
  np.testing.assert_array_equal(np.linalg.norm(e_sparse, axis=1) > 0, nonzero)
  assert nonzero.sum() > 8
  np.testing.assert_allclose(e_sparse, e_dense, atol=1e-3)


# --- Gradients (finite differences in float64) ---

def _grad_cases():
  z, ids, dense = random_problem(np.random.default_rng(3), batch=3, num_classes=5, max_labels=2)
  lc = np.array([0.3, -0.2, 0.5])
  emb = np.random.default_rng(4).normal(size=(5, 3))
  pred = np.random.default_rng(5).normal(size=(3, 3))
  return [
      ("sigmoid_bce", lambda s: losses.sigmoid_bce(s, ids, label_smoothing=0.1), z),
      ("softmax_xent", lambda s: losses.softmax_xent(s, ids), z),
      ("focal", lambda s: losses.focal(s, ids), z),
      ("asl", lambda s: losses.asymmetric(s, ids, gamma_pos=1.0, clip=0.0), z),
      ("zlpr", lambda s: losses.zlpr(s, ids), z),
      ("squared_hinge", lambda s: losses.squared_hinge(s, ids), z),
      ("count", lambda s: losses.count_distribution(s, lc, ids), z),
      ("abs_kl", lambda s: losses.abs_kl(losses.count_scores(s, lc), ids, eps=1e-3), z),
      ("two_head", lambda s: losses.two_head_average_k(s, s * 0.5, ids, k=2.0), z),
      ("embedding", lambda p: losses.label_embedding_cosine(p, ids, emb), pred),
  ]


@pytest.mark.parametrize("name,fn,x", _grad_cases(), ids=[c[0] for c in _grad_cases()])
def test_gradients_match_finite_differences(name, fn, x):
  with jax.enable_x64(True):
    x64 = jnp.asarray(x, jnp.float64)
    test_util.check_grads(lambda s: jnp.sum(fn(s) * jnp.arange(1.0, 1.0 + s.shape[0])),
                          (x64,), order=1, modes=("rev",), eps=1e-5, atol=1e-4, rtol=1e-4)


# --- Properties ---

LOSS_FNS = {
    "sigmoid_bce": lambda z, y, w=None: losses.sigmoid_bce(z, y, where=w),
    "softmax_xent": lambda z, y, w=None: losses.softmax_xent(z, y, where=w),
    "focal": lambda z, y, w=None: losses.focal(z, y, where=w),
    "asl": lambda z, y, w=None: losses.asymmetric(z, y, where=w),
    "zlpr": lambda z, y, w=None: losses.zlpr(z, y, where=w),
    "squared_hinge": lambda z, y, w=None: losses.squared_hinge(z, y, where=w),
    "count": lambda z, y, w=None: losses.count_distribution(z, z[:, 0], y, where=w),
    "abs_kl": lambda z, y, w=None: losses.abs_kl(losses.count_scores(z, z[:, 0]), y, where=w),
    "two_head": lambda z, y, w=None: losses.two_head_average_k(z, -z, y, k=2.0, where=w),
    "embedding": lambda z, y, w=None: losses.label_embedding_cosine(
        jnp.stack([z.sum(1), z[:, 0], z.max(1)], 1), y, jnp.asarray(np.random.default_rng(0).normal(size=(z.shape[1], 3)),
                                 jnp.float32), where=w),
}


@st.composite
def problems(draw, extreme=False):
  # Few distinct shapes: each new shape costs an XLA compile.
  batch = draw(st.sampled_from([1, 3, 5]))
  num_classes = draw(st.sampled_from([1, 2, 5, 8]))
  max_labels = draw(st.sampled_from([1, 3]))
  seed = draw(st.integers(0, 2**31))
  rng = np.random.default_rng(seed)
  if extreme:
    z = rng.choice([-1e4, 1e4, 0.0, 30.0], size=(batch, num_classes)).astype(np.float32)
  else:
    z = (rng.normal(size=(batch, num_classes)) * 4).astype(np.float32)
  ids = rng.integers(-1, num_classes, size=(batch, max_labels)).astype(np.int32)
  return z, ids


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
@given(problem=problems())
def test_dense_and_ids_agree(name, problem):
  z, ids = problem
  num_classes = z.shape[1]
  dense = labels_lib.ids_to_dense(ids, num_classes)
  np.testing.assert_allclose(LOSS_FNS[name](z, ids), LOSS_FNS[name](z, dense), rtol=2e-5,
                             atol=2e-5)


@pytest.mark.parametrize("name", sorted(set(LOSS_FNS) - {"embedding", "count", "abs_kl"}))
@given(problem=problems(), seed=st.integers(0, 1000))
def test_invariant_under_class_permutation(name, problem, seed):
  z, ids = problem
  perm = np.random.default_rng(seed).permutation(z.shape[1])
  inverse = np.argsort(perm)
  permuted_ids = np.where(ids >= 0, inverse[np.maximum(ids, 0)], -1).astype(np.int32)
  np.testing.assert_allclose(LOSS_FNS[name](z, ids), LOSS_FNS[name](z[:, perm], permuted_ids),
                             rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSS_FNS))
@given(problem=problems(extreme=True))
def test_extreme_logits_stay_finite_with_finite_gradients(name, dtype, problem):
  z, ids = problem
  z = jnp.asarray(z, dtype)
  loss = LOSS_FNS[name](z, ids)
  assert loss.shape == (z.shape[0],)
  assert np.isfinite(np.asarray(loss, np.float32)).all()
  grad = jax.grad(lambda s: jnp.sum(LOSS_FNS[name](s, ids)))(z)
  assert np.isfinite(np.asarray(grad, np.float32)).all()


NON_NEGATIVE = set(LOSS_FNS)


@pytest.mark.parametrize("name", sorted(NON_NEGATIVE))
@given(problem=problems())
def test_losses_are_non_negative(name, problem):
  z, ids = problem
  assert (np.asarray(LOSS_FNS[name](z, ids)) >= -1e-5).all()


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_where_masks_examples_jit_and_vmap(name):
  z, ids, _ = random_problem(RNG, batch=4, num_classes=6, max_labels=2)
  where = np.array([True, False, True, False])
  fn = LOSS_FNS[name]
  full = fn(z, ids)
  masked = jax.jit(fn)(z, ids, where)
  if name == "two_head":  # Batch-coupled: masked rows leave the pseudo-label pool.
    np.testing.assert_allclose(masked[where], fn(z[where], ids[where]), rtol=1e-5)
    np.testing.assert_array_equal(masked[~where], 0)
  else:
    np.testing.assert_allclose(masked, np.where(where, full, 0), rtol=1e-5, atol=1e-6)
    per_row = jax.vmap(lambda a, b: fn(a[None], b[None])[0])(jnp.asarray(z), jnp.asarray(ids))
    np.testing.assert_allclose(per_row, full, rtol=1e-5, atol=1e-6)


def test_empty_rows_documented_behaviour():
  z, ids, _ = random_problem(RNG, batch=3, num_classes=5)
  empty = np.full((3, 2), -1, np.int32)
  for name in ("softmax_xent", "embedding"):
    np.testing.assert_array_equal(LOSS_FNS[name](z, empty), 0)
  for name in ("sigmoid_bce", "focal", "asl", "zlpr", "abs_kl"):  # squared_hinge: below.
    assert (np.asarray(LOSS_FNS[name](z, empty)) > 0).all(), name
  # count_distribution keeps its count term: Poisson NLL of n = 0 is Z.
  lc = z[:, 0]
  np.testing.assert_allclose(losses.count_distribution(z, lc, empty), np.exp(lc), rtol=1e-5,
                             atol=1e-6)


def test_duplicate_ids_count_once():
  z, _, _ = random_problem(RNG, batch=2, num_classes=5)
  for name, fn in LOSS_FNS.items():
    np.testing.assert_allclose(fn(z, np.array([[1, 1, 3], [2, -1, 2]], np.int32)),
                               fn(z, np.array([[1, 3, -1], [2, -1, -1]], np.int32)),
                               rtol=1e-6, err_msg=name)


# --- Bad input ---

@pytest.mark.parametrize("fn", [losses.sigmoid_bce, losses.softmax_xent, losses.zlpr,
                                losses.focal, losses.asymmetric, losses.squared_hinge])
def test_bad_input_raises_naming_the_argument(fn):
  z = np.zeros((2, 4), np.float32)
  with pytest.raises(ValueError, match="`logits` must have rank 2"):
    fn(z[0], np.array([[0]]))
  with pytest.raises(ValueError, match="`labels` has batch size 3"):
    fn(z, np.zeros((3, 1), np.int32))
  with pytest.raises(ValueError, match=r"`labels` \(dense\) has 5 classes"):
    fn(z, np.zeros((2, 5), np.float32))
  with pytest.raises(ValueError, match="negative weights"):
    fn(z, -np.ones((2, 4), np.float32))
  with pytest.raises(ValueError, match="contains id 4 but num_classes is 4"):
    fn(z, np.array([[4], [0]], np.int32))
  with pytest.raises(ValueError, match="`logits` must have a floating dtype"):
    fn(z.astype(np.int32), np.array([[0], [1]], np.int32))
  with pytest.raises(ValueError, match=r"`where` must have shape \(2,\)"):
    fn(z, np.array([[0], [1]], np.int32), where=np.ones(3, bool))


@pytest.mark.parametrize("fn", [losses.sigmoid_bce, losses.focal, losses.asymmetric])
def test_binary_losses_reject_dense_targets_above_one(fn):
  z = np.zeros((1, 2), np.float32)
  with pytest.raises(ValueError, match=r"`labels` \(dense\) contains 2.0; .* \[0, 1.0\]"):
    fn(z, np.array([[2.0, 0.0]], np.float32))  # Would give a negative "loss" otherwise.
  assert np.isfinite(fn(z, np.array([[1.0, 0.5]], np.float32))).all()


def test_other_bad_inputs():
  with pytest.raises(ValueError, match="`log_count` must have shape"):
    losses.count_distribution(np.zeros((2, 3)), np.zeros(3), np.array([[0], [1]]))
  with pytest.raises(ValueError, match="`multilabel_logits` has shape"):
    losses.two_head_average_k(np.zeros((2, 3)), np.zeros((2, 4)), np.array([[0], [1]]), k=1)
  with pytest.raises(ValueError, match="`embeddings` has dim 4"):
    losses.label_embedding_cosine(np.zeros((2, 3)), np.array([[0], [1]]), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="`dim` must be in"):
    losses.pmi_label_embeddings(np.array([[0]]), 3, 4)
  with pytest.raises(ValueError, match="`label_smoothing`"):
    losses.sigmoid_bce(np.zeros((1, 2)), np.array([[0]]), label_smoothing=1.0)


def test_asymmetric_logs_are_exact_not_clamped():
  # Documented: no eps clamp inside the logs (unlike the reference implementation), so a
  # confidently wrong negative costs ~|logit| and keeps its gradient; ASL(0, 0, 0) == BCE.
  z = jnp.array([[1e4, -1e4, 30.0]], jnp.float32)
  ids = np.array([[1]], np.int32)
  asl = lambda s: losses.asymmetric(s, ids, gamma_pos=0, gamma_neg=0, clip=0)
  np.testing.assert_allclose(asl(z), losses.sigmoid_bce(z, ids), rtol=1e-6)
  np.testing.assert_allclose(asl(z), [2e4 + 30.0], rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda s: asl(s).sum())(z), [[1.0, -1.0, 1.0]], atol=1e-6)
