"""The debtags validation probes' own arithmetic (features, ensembles), against brute force."""

import numpy as np
import scipy.sparse

from multilabel_jax.studies import ensembles, probes


def test_precision_at_k_counts_labels_among_the_top_k():
  scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
  labels = scipy.sparse.csr_matrix(np.array([[1, 0, 0], [1, 0, 1]], float))
  assert probes.precision_at(scores, labels, 1) == 0.5      # Hit, miss.
  assert probes.precision_at(scores, labels, 2) == 0.5      # (1 + 1) / 2 per row.


def test_knn_votes_average_the_nearest_label_sets_by_similarity():
  rng = np.random.default_rng(0)
  x_train = rng.random((12, 5))
  x_train /= np.linalg.norm(x_train, axis=1, keepdims=True)
  x_eval = x_train[:3] * 0.9 + rng.random((3, 5)) * 0.1
  x_eval /= np.linalg.norm(x_eval, axis=1, keepdims=True)
  y_train = (rng.random((12, 4)) < 0.4).astype(float)
  got = probes.knn_votes(scipy.sparse.csr_matrix(x_eval), scipy.sparse.csr_matrix(x_train),
                         scipy.sparse.csr_matrix(y_train), k=3)
  for n in range(3):
    sim = x_train @ x_eval[n]
    near = np.argsort(-sim)[:3]
    want = (sim[near, None] * y_train[near]).sum(0) / sim[near].sum()
    np.testing.assert_allclose(got[n], want, rtol=1e-12)


def test_standardise_gives_mean_zero_and_unit_sd_over_the_whole_matrix():
  scores = np.random.default_rng(1).normal(3.0, 5.0, (7, 4))
  got = ensembles.standardise(scores)
  np.testing.assert_allclose(got, (scores - scores.mean()) / scores.std(), rtol=1e-12)
  assert abs(got.mean()) < 1e-12 and abs(got.std() - 1) < 1e-12
  assert np.all(ensembles.standardise(np.ones((2, 3))) == 0)  # No spread: no division by 0.


def test_ensembles_average_every_subset_with_equal_weights():
  labels = scipy.sparse.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], float))
  members = {"a": np.array([[2.0, 0, 1.5], [0, 1, 0]]),      # Row 0 right, row 1 right.
             "b": np.array([[0, 0, 1.0], [0, 0, 3.0]]),      # Both wrong.
             "c": np.array([[0, 1.0, 0], [0, 3.0, 0]])}      # Row 0 wrong, row 1 right.
  pad = lambda x: np.hstack([x, np.full((2, 3), -5.0)])  # 6 classes: P@5 is defined.
  labels = scipy.sparse.csr_matrix(np.hstack([labels.toarray(), np.zeros((2, 3))]))
  members = {k: pad(v) for k, v in members.items()}
  got = ensembles.combinations(members, labels)
  assert list(got) == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
  assert [got[k]["precision_at_1"] for k in ("a", "b", "c")] == [1.0, 0.0, 0.5]
  # a+b: row 0 [1, 0, 1.25] -> class 2 (miss); row 1 [0, .5, 1.5] -> class 2 (miss).
  assert got["a+b"]["precision_at_1"] == 0.0 and got["a+b"]["members"] == 2
  # a+b+c: row 0 [2/3, 1/3, 2.5/3] -> class 2 (miss); row 1 [0, 4/3, 1] -> class 1 (hit).
  assert got["a+b+c"]["precision_at_1"] == 0.5
  for name, p in got.items():
    mean = sum(members[m] for m in name.split("+")) / len(name.split("+"))
    assert p["precision_at_5"] == probes.precision_at(mean, labels, 5)


def test_dependency_votes_average_the_linked_train_packages_label_sets():
  train = [{"package": "a", "depends": ["libc"]}, {"package": "b", "depends": ["libc", "x", "q"]},
           {"package": "libc", "depends": []}, {"package": "c", "depends": ["e"]}]
  y_train = scipy.sparse.csr_matrix(np.eye(4))  # Train package n has label n alone.
  evals = [{"package": "x", "depends": ["libc", "libc", "nowhere"]},  # Links: libc, b.
           {"package": "e", "depends": []},                          # Link: c depends on e.
           {"package": "z", "depends": ["nowhere"]}]                 # No train link.
  got = probes.dependency_votes(evals, train, y_train)
  # x depends on libc (2 train dependants: weight 1 / log 4), and b (3 dependencies:
  # weight 1 / log 5) depends on x.
  w_libc, w_b = 1 / np.log(4), 1 / np.log(5)
  np.testing.assert_allclose(got[0], (w_libc * np.eye(4)[2] + w_b * np.eye(4)[1])
                             / (w_libc + w_b), rtol=1e-12)
  np.testing.assert_allclose(got[1], np.eye(4)[3], rtol=1e-12)
  assert np.all(got[2] == 0)
  evals[0]["package"] = "y"  # Nothing depends on y: only libc links it.
  np.testing.assert_allclose(probes.dependency_votes(evals, train, y_train)[0], np.eye(4)[2])
