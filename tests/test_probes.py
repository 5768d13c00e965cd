"""The debtags feature probes' own arithmetic, against brute force."""

import numpy as np
import scipy.sparse

from multilabel_jax.studies import probes


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
