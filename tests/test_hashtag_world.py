"""Tests of the hashtag_world simulator: determinism, statistics vs the configured model,
exactness of the oracle marginals."""

import itertools

import numpy as np
import pytest

from multilabel_jax.data import base  # noqa: F401
from multilabel_jax.labels import validate_ids
from multilabel_jax.data.hashtag_world import HashtagWorld


@pytest.fixture(scope="module")
def world():
  return HashtagWorld(2000, group_size=3, num_topics=20, dim=32, noise=0.3,
                      num_validation=100_000, seed=3)


def test_protocol_shapes_and_sizes(world):
  assert world.num_examples("train") is None
  assert world.num_examples("validation") == 100_000
  b = world.read("validation", np.arange(7))
  assert b["features"].shape == (7, 32) and b["features"].dtype == np.float32
  assert b["label_ids"].shape == (7, world.info.max_labels)
  assert b["label_ids"].dtype == np.int32
  validate_ids(b["label_ids"], world.num_classes)
  assert (b["label_ids"][:, 0] >= 0).all()  # Clean rows: the visible tag is always there.
  with pytest.raises(IndexError):
    world.read("test", [10_000])  # num_test default 10,000
  with pytest.raises(ValueError):
    world.read("dev", [0])


def test_example_is_pure_function_of_seed_split_index(world):
  idx = np.array([5, 123456789, 0, 77])
  a = world.read("train", idx)
  b = world.read("train", idx[::-1])
  for k in a:
    np.testing.assert_array_equal(a[k], b[k][::-1])
  one = world.read("train", idx[1:2])
  np.testing.assert_array_equal(one["features"][0], a["features"][1])
  twin = HashtagWorld(2000, group_size=3, num_topics=20, dim=32, noise=0.3, num_validation=100_000, seed=3)
  np.testing.assert_array_equal(twin.read("train", idx)["features"], a["features"])
  other = HashtagWorld(2000, group_size=3, num_topics=20, dim=32, noise=0.3, seed=4)
  assert not np.allclose(other.read("train", idx)["features"], a["features"])
  small = idx[[0, 2, 3]]
  assert not np.allclose(world.read("test", small)["features"], a["features"][[0, 2, 3]])
  np.testing.assert_array_equal(world.read_labels("train", idx), a["label_ids"])


def test_labels_sets_no_duplicates(world):
  y = world.read("validation", np.arange(3000))["label_ids"]
  for row in y:
    v = row[row >= 0]
    assert len(set(v)) == len(v)
    assert (row[len(v):] == -1).all()  # Compacted to the left.


def test_zipf_visible_mentions(world):
  n = 60_000
  c0 = world.latent("validation", np.arange(n))["visible_class"]
  expected = (np.arange(world.num_classes) + 1.0) ** -1.0
  expected /= expected.sum()
  np.testing.assert_allclose(world.class_weights, expected)
  counts = np.bincount(c0, minlength=world.num_classes)
  for c in [0, 1, 5, 50]:
    sd = np.sqrt(n * expected[c] * (1 - expected[c]))
    assert abs(counts[c] - n * expected[c]) < 5 * sd, c


def test_label_frequencies_match_model(world):
  n = 30_000
  y = world.read("validation", np.arange(n))["label_ids"]
  f = world.expected_label_frequencies("validation")
  counts = np.bincount(y[y >= 0], minlength=world.num_classes)
  top = np.argsort(-f)[:30]
  sd = np.sqrt(n * f[top] * (1 - f[top]))
  assert (np.abs(counts[top] - n * f[top]) < 5 * sd).all()
  # Mean number of labels per example: sum_c f_c, clean; observe_prob times that, train.
  sizes = (y >= 0).sum(1)
  assert abs(sizes.mean() - f.sum()) < 5 * sizes.std() / np.sqrt(n)
  assert 2.0 < f.sum() < 3.0 and sizes.max() > 3
  yt = world.read("train", np.arange(n))["label_ids"]
  tsizes = (yt >= 0).sum(1)
  ft = world.expected_label_frequencies("train")
  np.testing.assert_allclose(ft, world.observe_prob * f)
  assert abs(tsizes.mean() - ft.sum()) < 5 * tsizes.std() / np.sqrt(n)
  np.testing.assert_array_equal(world.info.train_label_counts,
                                np.round(ft * 1_000_000).astype(np.int64))


def test_synonyms_share_the_prototype(world):
  lat = world.latent("validation", np.arange(40_000))
  x = world.read("validation", np.arange(40_000))["features"]
  means = [x[lat["visible_class"] == c].mean(0) for c in (0, 1, 2, 3)]  # Group 0 = {0, 1, 2}.
  same = np.linalg.norm(means[0] - means[1])
  other = np.linalg.norm(means[0] - means[3])
  assert same < 0.1 < other


def test_posterior_matches_brute_force(world):
  idx = np.arange(50)
  lat = world.latent("test", idx)
  x = world._latent_vector(2, idx, lat)
  pg, pt = world._posteriors(x)
  protos = np.concatenate([world.topic_codes[world.topic_of_group],
                           world.slot_codes[world.slot_of_group]], 1)       # [G, D]
  feats = x @ world.rotation.T
  proto_feats = protos @ world.rotation.T
  ll = -((feats[:, None] - proto_feats[None]) ** 2).sum(-1) / (2 * world.noise**2)
  logp = np.log(world.group_weights) + ll
  brute = np.exp(logp - logp.max(1, keepdims=True))
  brute /= brute.sum(1, keepdims=True)
  np.testing.assert_allclose(pg, brute, atol=1e-9)
  np.testing.assert_allclose(pt.sum(1), 1.0)


def test_label_model_formula_by_enumeration():
  """P(c in y | visible group) from the closed form vs exhaustive enumeration."""
  w = HashtagWorld(6, group_size=2, num_topics=2, dim=4, context_rate=1.2, max_context=2)
  q = w.context_rate / w.max_context
  for g in range(w.num_groups):
    t = w.topic_of_group[g]
    members = np.where(w.group_of_class == g)[0]
    topic_classes = np.where(w.topic_of_class == t)[0]
    outcomes = [(-1, 1 - q)] + [(c, q * w.class_weights[c] / w.topic_weights[t])
                                for c in topic_classes]
    prob = np.zeros(6)
    for c0 in members:
      for combo in itertools.product(outcomes, repeat=w.max_context):
        p = w.synonym_share[c0] * np.prod([o[1] for o in combo])
        for c in {c0} | {o[0] for o in combo if o[0] >= 0}:
          prob[c] += p
    pg = np.zeros((1, w.num_groups)); pg[0, g] = 1
    pt = np.zeros((1, w.num_topics)); pt[0, t] = 1
    formula = w._combine(pt[:, w.topic_of_class], pg[:, w.group_of_class], np.arange(6))[0]
    np.testing.assert_allclose(formula, prob, atol=1e-12)


def test_oracle_calibrated_and_dominates(world):
  n = 4000
  idx = np.arange(n)
  y = world.read("validation", idx)["label_ids"]
  m = world.oracle_marginals("validation", idx)
  dense = np.zeros_like(m, bool)
  rows = np.repeat(idx, y.shape[1])
  ok = y.reshape(-1) >= 0
  dense[rows[ok], y.reshape(-1)[ok]] = True
  # Sum of marginals = expected number of labels given x.
  assert abs(m.sum(1).mean() - dense.sum(1).mean()) < 5 * dense.sum(1).std() / np.sqrt(n)
  # Calibration: in each probability bin, the hit rate matches the mean prediction.
  for lo, hi in [(0.05, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.0)]:
    sel = (m >= lo) & (m < hi)
    if sel.sum() < 200:
      continue
    rate, pred = dense[sel].mean(), m[sel].mean()
    assert abs(rate - pred) < 4 * np.sqrt(pred * (1 - pred) / sel.sum()) + 0.01, (lo, hi)
  # The oracle beats the prior and knowing-the-group-only guesses at P@1.
  p1 = dense[idx, m.argmax(1)].mean()
  assert p1 > dense[:, 0].mean() + 0.2
  # Observed-train marginals scale by observe_prob; sparse forms agree with dense.
  ids, probs = world.oracle_marginals("validation", idx[:20], top_k=5)
  np.testing.assert_allclose(probs, np.sort(m[:20], 1)[:, ::-1][:, :5], rtol=1e-6)
  at = world.oracle_marginals_at("validation", idx[:20], np.where(ids > 2, ids, -1))
  np.testing.assert_allclose(at, np.where(ids > 2, probs, 0), rtol=1e-6)
  obs = world.oracle_marginals("train", idx[:20], observed=True)
  np.testing.assert_allclose(obs, world.observe_prob * world.oracle_marginals("train", idx[:20]),
                             rtol=1e-6)
  from_inputs = world.oracle_marginals_from_inputs(world.read("validation", idx[:20]))
  np.testing.assert_allclose(from_inputs, m[:20], atol=1e-4)


def test_images_carry_the_latent():
  w = HashtagWorld(500, dim=16, image_size=16, seed=1)
  b = w.read("validation", np.arange(8))
  assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.float32
  assert 0.2 < b["image"].mean() < 0.8
  np.testing.assert_allclose(w.oracle_marginals_from_inputs({"image": b["image"]}),
                             w.oracle_marginals("validation", np.arange(8)), atol=1e-3)
  np.testing.assert_allclose(w.image_basis.T @ w.image_basis, np.eye(16), atol=1e-10)


def test_million_classes_is_cheap():
  w = HashtagWorld(1_000_000, dim=64, seed=0)
  idx = np.array([0, 10**12, 42])
  b = w.read("train", idx)
  validate_ids(b["label_ids"], 1_000_000)
  ids, probs = w.oracle_marginals("train", idx, top_k=10)
  assert ids.shape == (3, 10) and (np.diff(probs, axis=1) <= 0).all()
  assert 0 < probs[:, 0].max() <= 1
  with pytest.raises(ValueError):
    w.oracle_marginals("train", idx)


@pytest.mark.slow
def test_default_world_is_learnable_by_a_small_mlp():
  """The 20k-class default: a 128-512-20k MLP, 150 Adam steps of 512 (~1 min on 2 CPU cores),
  reaches a clearly non-trivial P@1 (about 0.45; the oracle gets about 0.65, the prior 0.13)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  w = HashtagWorld()
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  params = {"w1": jax.random.normal(k1, (w.dim, 512)) / np.sqrt(w.dim), "b1": jnp.zeros(512),
            "w2": jax.random.normal(k2, (512, w.num_classes)) * 0.01,
            "b2": jnp.asarray(np.log(w.class_weights), jnp.float32)}

  def logits_fn(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  def loss_fn(p, x, ids):  # Softmax cross-entropy on the normalised label set.
    logp = jax.nn.log_softmax(logits_fn(p, x))
    valid = ids >= 0
    ll = jnp.take_along_axis(logp, jnp.maximum(ids, 0), 1) * valid
    return -jnp.sum(ll.sum(1) / jnp.maximum(valid.sum(1), 1)) / ids.shape[0]

  opt = optax.adam(2e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s, x, ids):
    g = jax.grad(loss_fn)(p, x, ids)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  for i in range(150):
    b = w.read("train", np.arange(i * 512, (i + 1) * 512))
    params, state = step(params, state, b["features"], b["label_ids"])
  ev = w.read("validation", np.arange(3000))
  top1 = np.asarray(jnp.argmax(logits_fn(params, ev["features"]), -1))
  p1 = (ev["label_ids"] == top1[:, None]).any(1).mean()
  oracle = w.oracle_marginals("validation", np.arange(3000)).argmax(1)
  o1 = (ev["label_ids"] == oracle[:, None]).any(1).mean()
  assert 0.3 < p1 < o1 + 0.02, (p1, o1)
