"""Set metrics (precision/recall/F1/Hamming of decoded sets) against sklearn."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from multilabel_jax.metrics import sets as set_metrics

N, C = 10, 6
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


class Sets(NamedTuple):  # Duck-typed stand-in for the decoders' DecodedSets.
  ids: jax.Array
  mask: jax.Array


def make_sets(seed, density=0.3):
  rng = np.random.default_rng(seed)
  pred = rng.random((N, C)) < density
  true = rng.random((N, C)) < density
  pred[0], true[0] = False, False  # Both empty: zero_division.
  pred[:, 1] = False  # A class never predicted.
  true[:, 1], true[:, 2] = False, False  # Classes never relevant.
  pred[:, 2] = False  # Class 2 absent from both.
  return pred, true


def to_ids(dense, width=C + 2, seed=0):
  """Dense -> shuffled ids with -1 padding and a duplicate, fixed width."""
  rng = np.random.default_rng(seed)
  ids = np.full((dense.shape[0], width), -1, np.int32)
  for i, row in enumerate(dense):
    r = list(np.flatnonzero(row))
    r += r[:1]
    rng.shuffle(r)
    ids[i, :len(r)] = r
  return ids


SK = {"precision": (set_metrics.precision_score, skm.precision_score),
      "recall": (set_metrics.recall_score, skm.recall_score),
      "f1": (set_metrics.f1_score, skm.f1_score)}


@pytest.mark.parametrize("metric", sorted(SK))
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_matches_sklearn_all_averages(metric, zero_division):
  ours_fn, sk_fn = SK[metric]
  pred, true = make_sets(0)
  for average in ("micro", "macro", "samples", None):
    want = sk_fn(true, pred, average=average, zero_division=zero_division)
    got = ours_fn(pred, true, average=average, zero_division=zero_division)
    np.testing.assert_allclose(got, want, atol=1e-6, err_msg=str(average))
  present = true.any(0) | pred.any(0)
  want = sk_fn(true, pred, average="macro", labels=np.flatnonzero(present),
               zero_division=zero_division)
  got = ours_fn(pred, true, average="macro", macro_classes="present",
                zero_division=zero_division)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_hamming_set_size_and_coverage():
  pred, true = make_sets(1)
  np.testing.assert_allclose(set_metrics.hamming_loss(pred, true), skm.hamming_loss(true, pred),
                             atol=1e-6)
  np.testing.assert_allclose(set_metrics.mean_set_size(pred), pred.sum(1).mean(), atol=1e-6)
  np.testing.assert_allclose(set_metrics.average_k_accuracy(pred, true),
                             (pred & true).sum() / true.sum(), atol=1e-6)


def test_decoded_sets_object_and_all_format_pairs():
  pred, true = make_sets(2)
  ids = to_ids(pred)
  sets = Sets(ids=jnp.asarray(np.where(ids >= 0, ids, 0)), mask=jnp.asarray(ids >= 0))
  want = skm.f1_score(true, pred, average="macro", zero_division=0)
  for p in (pred, ids, sets):
    for t in (true, to_ids(true, seed=3)):
      got = set_metrics.f1_score(p, t, average="macro", num_classes=C)
      np.testing.assert_allclose(got, want, atol=1e-6)
      np.testing.assert_allclose(set_metrics.hamming_loss(p, t, num_classes=C),
                                 skm.hamming_loss(true, pred), atol=1e-6)


def test_where_and_jit():
  pred, true = make_sets(3)
  where = np.arange(N) % 3 != 0
  fn = jax.jit(lambda p, t, w: set_metrics.f1_score(p, t, average="samples", where=w))
  np.testing.assert_allclose(fn(to_ids(pred), to_ids(true), where),
                             skm.f1_score(true[where], pred[where], average="samples",
                                          zero_division=0), atol=1e-6)
  np.testing.assert_allclose(set_metrics.hamming_loss(pred, true, where=where),
                             skm.hamming_loss(true[where], pred[where]), atol=1e-6)


def test_errors():
  pred, true = make_sets(4)
  with pytest.raises(ValueError, match="num_classes"):
    set_metrics.f1_score(to_ids(pred), to_ids(true), average="macro")
  with pytest.raises(ValueError, match="threshold"):
    set_metrics.f1_score(pred.astype(np.float32), true)
  with pytest.raises(ValueError, match="classes"):
    set_metrics.f1_score(pred, true[:, :4])


@SETTINGS
@given(seed=st.integers(0, 10_000), density=st.sampled_from([0.0, 0.3, 0.7, 1.0]))
def test_properties(seed, density):
  pred, true = make_sets(seed, density)
  perm = np.random.default_rng(seed).permutation(C)
  for metric, (fn, _) in SK.items():
    for average in ("micro", "macro", "samples"):
      dense = fn(pred, true, average=average)
      ids = fn(to_ids(pred, seed=seed), to_ids(true, seed=seed + 1), average=average,
               num_classes=C)
      permuted = fn(pred[:, perm], true[:, perm], average=average)
      np.testing.assert_allclose(ids, dense, atol=1e-6, err_msg=f"{metric} {average}")
      np.testing.assert_allclose(permuted, dense, atol=1e-6, err_msg=f"{metric} {average}")
      assert 0 <= float(dense) <= 1
