"""PMI label embeddings (losses.embedding): every seen label a distinct unit vector,
co-occurrence structure kept, and the run-report diagnostics.

Regression: the paper's construction (Chollet 2016: SVD of the PMI matrix with its diagonal)
gave 6 of the 10 most frequent hashtags of the main job's setting a zero vector (and with
duplicates, all 10): rare labels own the top singular directions.
"""

import doctest

import numpy as np
import pytest

from multilabel_jax import losses
from multilabel_jax.data import hashtag_world
from multilabel_jax.losses import embedding


def _pad(rows):
  out = np.full((len(rows), max(len(r) for r in rows)), -1, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def _counts(ids, num_classes):
  return np.bincount(ids[ids >= 0], minlength=num_classes)


def _paper_embeddings(ids, num_classes, dim):
  """Chollet's construction: ``U sqrt(S)`` of the PMI matrix with its diagonal, normalised."""
  seen = np.flatnonzero(_counts(ids, num_classes))  # Unseen labels: zero rows and columns.
  u, s, _ = np.linalg.svd(losses.pmi_matrix(ids, num_classes)[seen][:, seen].toarray())
  e = np.zeros((num_classes, dim))
  e[seen] = u[:, :dim] * np.sqrt(s[:dim])
  norm = np.linalg.norm(e, axis=1, keepdims=True)
  ok = norm > 1e-6 * norm.max()
  return np.where(ok, e / np.where(ok, norm, 1.0), 0.0)


def _hashtag_labels(num_classes, num_examples):
  world = hashtag_world.HashtagWorld(num_classes, noise=0.25, num_validation=10, num_test=10)
  return world.read("train", np.arange(num_examples))["label_ids"]


@pytest.mark.parametrize("num_classes,method", [(60, "dense"), (60, "arpack"), (2600, "auto")])
def test_unit_norm_for_seen_labels_and_zero_for_unseen(num_classes, method):
  rng = np.random.default_rng(0)
  unseen = rng.choice(num_classes, num_classes // 5, replace=False)
  pool = np.setdiff1d(np.arange(num_classes), unseen)
  ids = _pad([rng.choice(pool, rng.integers(1, 5), replace=False) for _ in range(4000)])
  ids[::7, 0] = -1  # Padding and empty rows are fine.
  e = losses.pmi_label_embeddings(ids, num_classes, 16, method=method)
  seen = _counts(ids, num_classes) > 0
  assert e.shape == (num_classes, 16) and e.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(e[seen], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(e[~seen], 0.0)
  assert seen.sum() > (2048 if num_classes > 2048 else len(pool) - 5)  # "auto": ARPACK.


def test_dense_labels_and_ids_give_the_same_embeddings():
  rng = np.random.default_rng(1)
  ids = _pad([rng.choice(30, rng.integers(1, 4), replace=False) for _ in range(500)])
  dense = np.zeros((len(ids), 31), np.float32)
  rows = np.nonzero(ids >= 0)[0]
  dense[rows, ids[ids >= 0]] = 1.0
  np.testing.assert_array_equal(losses.pmi_label_embeddings(ids, 31, 8),
                                losses.pmi_label_embeddings(dense, 31, 8))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pair_rate", [0.3, 0.01])
def test_labels_always_seen_together_are_each_others_nearest_neighbour(seed, pair_rate):
  # Labels 0 and 1 appear together (never apart) among 300 labels with random, Zipf-weighted
  # co-occurrence; d = 8 holds at most 8 of the co-occurrence directions.
  rng = np.random.default_rng(seed)
  w = 1.0 / np.arange(1, 301)
  rows = []
  for _ in range(3000):
    row = list(2 + rng.choice(300, rng.integers(1, 4), p=w / w.sum(), replace=False))
    rows.append(row + [0, 1] if rng.random() < pair_rate else row)
  ids = _pad(rows)
  e = losses.pmi_label_embeddings(ids, 302, 8, seed=seed)
  sim = e @ e.T
  np.fill_diagonal(sim, -np.inf)
  assert np.argmax(sim[0]) == 1 and np.argmax(sim[1]) == 0
  assert sim[0, 1] > 0.99 and not np.array_equal(e[0], e[1])


@pytest.mark.parametrize("dim", [8, 16])
def test_cooccurring_labels_are_nearer_than_labels_that_never_cooccur(dim):
  # 10 blocks of 20 labels: two or three labels of one block per example, blocks never mix.
  # With d = 8 two blocks get no eigen-direction and rely on the random-projection fallback.
  rng = np.random.default_rng(0)
  ids = _pad([20 * rng.integers(10) + rng.choice(20, rng.integers(2, 4), replace=False)
              for _ in range(3000)])
  e = losses.pmi_label_embeddings(ids, 200, dim)
  block = np.arange(200) // 20
  sim = e @ e.T
  same = block[:, None] == block[None, :]
  np.fill_diagonal(same, False)
  other = block[:, None] != block[None, :]
  within = np.array([sim[i, same[i]].mean() for i in range(200)])
  across = np.array([sim[i, other[i]].mean() for i in range(200)])
  assert sim[same].mean() > 0.4 > 0.05 > abs(sim[other].mean())
  assert np.all(within > across)  # Every label, including the fallback blocks.
  if dim == 16:
    nearest = np.argmax(np.where(np.eye(200, dtype=bool), -np.inf, sim), axis=1)
    assert np.mean(block[nearest] == block) > 0.85


def test_frequent_labels_are_not_degenerate_on_zipf_labels():
  # hashtag_world at 2,000 classes (Zipf tags, 32 topics), d = 16: the paper's construction
  # makes every one of the 10 most frequent labels degenerate; this one none.
  ids = _hashtag_labels(2000, 5000)
  counts = _counts(ids, 2000)
  top = np.argsort(-counts, kind="stable")[:100]
  paper = embedding.embedding_diagnostics(_paper_embeddings(ids, 2000, 16), counts)
  assert paper["top1000_degenerate"] > 900 and paper["degenerate_share"] > 0.9
  e = losses.pmi_label_embeddings(ids, 2000, 16)
  diagnostics = embedding.embedding_diagnostics(e, counts)
  assert diagnostics == {"num_zero": 0, "num_duplicate": 0, "degenerate_share": 0.0,
                         "num_seen": int((counts > 0).sum()), "top1000_degenerate": 0}
  np.testing.assert_allclose(np.linalg.norm(e[top], axis=1), 1.0, rtol=1e-5)
  sim = e[top] @ e[top].T
  np.fill_diagonal(sim, -1.0)
  assert sim.max() < 0.99  # No two of the 100 most frequent labels (near-)coincide.
  # Topics still show: labels of one topic are nearer than labels of different topics.
  world = hashtag_world.HashtagWorld(2000, noise=0.25, num_validation=10, num_test=10)
  same_topic = world.topic_of_class[top][:, None] == world.topic_of_class[top][None, :]
  np.fill_diagonal(same_topic, False)
  assert sim[same_topic].mean() > 0.3 > 0.05 > abs(sim[~same_topic].mean())


def test_embedding_diagnostics_on_a_hand_made_table():
  rng = np.random.default_rng(0)
  e = rng.normal(size=(8, 4))
  e[1] = 0.0                     # A zero vector (seen).
  e[3] = 2.5 * e[2]              # A duplicate pair after normalisation...
  e[5] = e[4] + 1e-8             # ...and one within 1e-6.
  e[6] = e[0] + 1e-3             # Near, not a duplicate.
  e[7] = 0.0                     # Unseen: zero by construction, not counted.
  counts = np.array([40, 30, 10, 10, 5, 3, 2, 0])
  got = embedding.embedding_diagnostics(e.astype(np.float32), counts)
  assert got == {"num_zero": 1, "num_duplicate": 4, "num_seen": 7, "top1000_degenerate": 5,
                 "degenerate_share": pytest.approx((30 + 10 + 10 + 5 + 3) / 100)}
  # Every member of a group counts; a group of three and a clean table.
  e[0] = e[6] = -e[2]
  e[0] *= 3.0
  three = embedding.embedding_diagnostics(e, counts)
  assert three["num_duplicate"] == 4 + 2 and three["top1000_degenerate"] == 7
  clean = embedding.embedding_diagnostics(rng.normal(size=(50, 3)), np.ones(50))
  assert clean == {"num_zero": 0, "num_duplicate": 0, "degenerate_share": 0.0, "num_seen": 50,
                   "top1000_degenerate": 0}
  with pytest.raises(ValueError, match="train_label_counts"):
    embedding.embedding_diagnostics(e, counts[:5])


def test_embedding_diagnostics_finds_many_duplicates_fast():
  # 2,000 copies of 20 vectors (the paper's collapse at scale) and 2,000 distinct ones.
  rng = np.random.default_rng(0)
  e = np.concatenate([np.repeat(rng.normal(size=(20, 16)), 100, axis=0),
                      rng.normal(size=(2000, 16))])
  got = embedding.embedding_diagnostics(e, np.ones(4000))
  assert got["num_duplicate"] == 2000 and got["degenerate_share"] == 0.5


def test_dense_and_arpack_paths_agree():
  rng = np.random.default_rng(2)
  ids = _pad([rng.choice(300, rng.integers(1, 5), replace=False) for _ in range(600)])
  e_dense = losses.pmi_label_embeddings(ids, 300, 8, method="dense")
  e_sparse = losses.pmi_label_embeddings(ids, 300, 8, method="arpack")
  np.testing.assert_allclose(e_sparse, e_dense, atol=1e-4)


def test_spectral_share_ends_and_validation():
  ids = _hashtag_labels(500, 2000)
  counts = _counts(ids, 500)
  own = losses.pmi_label_embeddings(ids, 500, 16, spectral_share=0.0)
  spectral = losses.pmi_label_embeddings(ids, 500, 16, spectral_share=1.0)
  seen = counts > 0
  np.testing.assert_allclose(np.linalg.norm(own[seen], axis=1), 1.0, rtol=1e-5)
  assert embedding.embedding_diagnostics(own, counts)["num_duplicate"] == 0
  # The co-occurrence part alone collapses each topic onto about one direction.
  assert embedding.embedding_diagnostics(spectral, counts)["num_duplicate"] > seen.sum() / 2
  with pytest.raises(ValueError, match="`spectral_share`"):
    losses.pmi_label_embeddings(ids, 500, 16, spectral_share=1.5)
  with pytest.raises(ValueError, match="`smoothing`"):
    losses.pmi_label_embeddings(ids, 500, 16, smoothing=-1.0)
  assert not losses.pmi_label_embeddings(np.full((3, 2), -1), 5, 2).any()  # No labels at all.


def test_pmi_matrix_without_diagonal():
  rng = np.random.default_rng(3)
  ids = _pad([rng.choice(12, rng.integers(1, 4), replace=False) for _ in range(200)])
  full = losses.pmi_matrix(ids, 12, positive=False).toarray()
  off = embedding.pmi_matrix(ids, 12, positive=False, diagonal=False).toarray()
  np.testing.assert_allclose(off, full - np.diag(np.diag(full)), atol=1e-12)


def test_docstring_example():
  result = doctest.testmod(embedding, extraglobs={"np": np})
  assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_main_setting_top1000_labels_are_not_degenerate():
  # The main job's setting: hashtag_world 20k classes, its first 20,000 training examples
  # (config.data.stats_examples), d = 128 (experiments/hashtag_pretrain.py).
  from experiments import hashtag_pretrain  # pylint: disable=g-import-not-at-top
  config = hashtag_pretrain.get_config("loss=embedding")
  world = hashtag_world.HashtagWorld(**config.data.options.to_dict())
  num_classes, dim = config.data.options.num_classes, config.objective_options.dim
  ids = world.read("train", np.arange(config.data.stats_examples))["label_ids"]
  e = losses.pmi_label_embeddings(ids, num_classes, dim)
  got = embedding.embedding_diagnostics(e, _counts(ids, num_classes))
  assert got["top1000_degenerate"] == 0
  assert got["num_zero"] == got["num_duplicate"] == 0 and got["degenerate_share"] == 0.0
  assert got["num_seen"] > 8000
