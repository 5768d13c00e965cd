"""Exact two-pass mAP (metrics.average_precision) against sklearn and the decoders' calibration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import decoders
from multilabel_jax.metrics import average_precision as apm


def make_data(seed, n=40, c=9, ties=False, p=0.3):
  """float32 scores [n, c] and dense bool labels; class 2 has no positive, row 0 no label."""
  rng = np.random.default_rng(seed)
  scores = rng.random((n, c)).astype(np.float32)
  if ties:
    scores = np.round(scores, 1).astype(np.float32)  # Positive-negative ties included.
  dense = rng.random((n, c)) < p
  if c > 2:
    dense[:, 2] = False
  dense[0] = False
  return scores, dense


def to_ids(dense, seed=0):
  """Padded ids [n, C + 2] in shuffled order, with -1 padding and a duplicate id in some rows."""
  rng = np.random.default_rng(seed)
  rows = []
  for row in dense:
    ids = list(np.flatnonzero(row))
    if ids and rng.random() < 0.5:
      ids.append(ids[0])  # Duplicates count once.
    rows.append(rng.permutation(ids))
  out = np.full((len(rows), dense.shape[1] + 2), -1, np.int32)  # One width: fewer compiles.
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def sklearn_map(scores, dense, mask=None):
  if mask is not None:
    scores, dense = scores[mask], dense[mask]
  cols = dense.any(0)
  return (skm.average_precision_score(dense[:, cols], scores[:, cols], average="macro"),
          skm.average_precision_score(dense, scores, average="micro"))


def two_pass(scores, ids, mask=None, splits=(None,), block=4096):
  """Both passes through update_dense, over batches of the given sizes (None: the rest)."""
  n, c = scores.shape
  mask = np.ones(n, bool) if mask is None else mask
  edges = np.cumsum([0] + [s for s in splits if s is not None])
  bounds = list(zip(edges[:-1], edges[1:])) + ([(edges[-1], n)] if None in splits else [])
  ap = apm.ExactAveragePrecision(c)
  for lo, hi in bounds:
    ap.add_positives(ids[lo:hi], labels_lib.gather_at_ids(scores[lo:hi], ids[lo:hi]),
                     mask[lo:hi])
  ap.finish_pass_one()
  for lo, hi in bounds:
    apm.update_dense(ap, scores[lo:hi], ids[lo:hi], mask[lo:hi], block=block)
  return ap


def check(result, scores, dense, mask=None):
  macro, micro = sklearn_map(scores, dense, mask)
  assert result["map_macro"] == pytest.approx(macro, abs=1e-6)
  assert result["map_micro"] == pytest.approx(micro, abs=1e-6)
  d = dense if mask is None else dense[mask]
  assert result["num_positives"] == d.sum()
  assert result["num_classes_with_positives"] == d.any(0).sum()


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fmt", ["dense", "ids"])
def test_one_shot_matches_sklearn(ties, fmt):
  scores, dense = make_data(1, ties=ties)
  check(apm.average_precision_dense(scores, dense if fmt == "dense" else to_ids(dense)),
        scores, dense)


def test_streaming_with_padding_duplicates_mask_and_ties_matches_sklearn():
  scores, dense = make_data(2, ties=True)
  ids = to_ids(dense, seed=3)
  mask = np.random.default_rng(4).random(40) < 0.75
  ap = two_pass(scores, ids, mask, splits=(7, 1, 20, None), block=5)  # Blocks padded.
  check(ap.compute(), scores, dense, mask)
  one_shot = apm.average_precision_dense(scores, ids, mask)
  for key, value in ap.compute().items():
    assert value == pytest.approx(one_shot[key], abs=1e-12)


def test_per_class_matches_sklearn():
  scores, dense = make_data(5, ties=True)
  got = two_pass(scores, to_ids(dense), splits=(20, None)).per_class()
  want = [skm.average_precision_score(dense[:, j], scores[:, j]) if dense[:, j].any() else np.nan
          for j in range(dense.shape[1])]
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert np.isnan(got[2])


def test_large_c_in_class_chunks_and_positive_blocks():
  n, c, chunk, block = 64, 100_000, 25_000, 64
  rng = np.random.default_rng(6)
  scores = rng.random((n, c), dtype=np.float32)
  ids = np.stack([rng.choice(c, 3, replace=False) for _ in range(n)]).astype(np.int32)
  ids[5] = -1  # A row without labels.
  mask = np.ones(n, bool)
  mask[7] = False
  ap = apm.ExactAveragePrecision(c)
  ap.add_positives(ids, np.take_along_axis(scores, np.maximum(ids, 0), 1), mask)
  ap.finish_pass_one()
  cols = jax.jit(apm.column_counts)
  for start in range(0, ap.num_positives, block):
    cls = ap.positive_classes[start:start + block]
    ap.add_column_counts(start, *cols(scores[:, cls], ap.positive_scores[start:start + block],
                                      cls, ids, mask))
  pooled = jax.jit(apm.pooled_counts)
  for lo in range(0, c, chunk):
    ap.add_pooled_counts(*pooled(scores[:, lo:lo + chunk], lo, ap.pooled_thresholds, ids, mask))
  dense = np.asarray(labels_lib.ids_to_dense(ids, c, jnp.bool_))
  check(ap.compute(), scores, dense, mask)
  # The state is O(P + C): nothing of size N * C.
  sizes = [v.size for v in vars(ap).values() if isinstance(v, np.ndarray)]
  assert sizes and max(sizes) <= c + 1


@pytest.mark.parametrize("min_positives", [1, 3])
@pytest.mark.parametrize("fallback", ["global", "never", 0.25])
def test_class_thresholds_equal_calibrate_class_thresholds(min_positives, fallback):
  scores, dense = make_data(7, ties=True, p=0.15)
  dense[:, 5] = False
  dense[3, 5] = True  # A class with a single positive.
  ap = two_pass(scores, to_ids(dense), splits=(7, 1, 20, None), block=5)
  got = ap.class_thresholds(min_positives=min_positives, fallback=fallback)
  want = decoders.calibrate_class_thresholds(scores, dense, min_positives=min_positives,
                                             fallback=fallback)
  assert got.dtype == want.dtype
  np.testing.assert_array_equal(got, want)


def test_class_thresholds_without_ties_and_at_the_lowest_score():
  scores, dense = make_data(8)
  dense[:, 4] = True  # Best cut keeps every row: the threshold is the lowest score itself.
  ap = two_pass(scores, to_ids(dense), splits=(20, None))
  np.testing.assert_array_equal(ap.class_thresholds(),
                                decoders.calibrate_class_thresholds(scores, dense))


def test_micro_pr_curve_matches_sklearn():
  scores, dense = make_data(9, ties=True)
  ap = two_pass(scores, to_ids(dense), splits=(20, None))
  curve = ap.micro_pr_curve()
  prec, rec, thr = skm.precision_recall_curve(dense.ravel(), scores.ravel())
  t = np.asarray(curve["threshold"], np.float32)
  assert np.all(np.diff(t) < 0) and len(t) == len(np.unique(scores[dense]))
  idx = np.searchsorted(thr, t)
  np.testing.assert_array_equal(thr[idx], t)
  np.testing.assert_allclose(curve["precision"], prec[idx], atol=1e-12)
  np.testing.assert_allclose(curve["recall"], rec[idx], atol=1e-12)
  small = ap.micro_pr_curve(max_points=4)
  assert len(small["threshold"]) == 4
  assert small["threshold"][0] == curve["threshold"][0]
  assert small["threshold"][-1] == curve["threshold"][-1]


def test_device_functions_under_jit_match_brute_force():
  rng = np.random.default_rng(10)
  b, c = 6, 5
  scores = np.round(rng.random((b, c)), 1).astype(np.float32)
  ids = np.array([[0, 0, 3], [1, -1, -1], [-1, -1, -1], [4, 2, 1], [3, -1, 3], [0, 1, 2]],
                 np.int32)
  mask = np.array([1, 1, 1, 0, 1, 1], bool)
  pos = np.asarray(labels_lib.ids_to_dense(ids, c, jnp.bool_))
  neg = ~pos & mask[:, None]
  classes = np.array([0, 3, 1, 4], np.int32)
  thr = np.array([0.5, 0.2, 0.9, 0.0], np.float32)
  count, below = jax.jit(apm.column_counts)(scores[:, classes], thr, classes, ids, mask)
  for k, (cl, t) in enumerate(zip(classes, thr)):
    col, n_k = scores[:, cl], neg[:, cl]
    assert count[k] == np.sum(n_k & (col >= t))
    assert below[k] == np.max(col[n_k & (col < t)], initial=-np.inf)
  sorted_thr = np.sort(rng.random(7).astype(np.float32))
  sorted_thr[3] = sorted_thr[4]  # Tied positive scores.
  hist, bin_max = jax.jit(apm.pooled_counts)(scores[:, 2:], jnp.int32(2), sorted_thr, ids, mask)
  bins = np.searchsorted(sorted_thr, scores[:, 2:], side="right")[neg[:, 2:]]
  vals = scores[:, 2:][neg[:, 2:]]
  np.testing.assert_array_equal(hist, np.bincount(bins, minlength=8))
  want_max = [np.max(vals[bins == k], initial=-np.inf) for k in range(8)]
  np.testing.assert_array_equal(bin_max, want_max)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), c=st.integers(1, 6), seed=st.integers(0, 2**16),
       ties=st.booleans(), masked=st.booleans())
def test_property_random_shapes_match_sklearn(n, c, seed, ties, masked):
  rng = np.random.default_rng(seed)
  scores = rng.random((12, c)).astype(np.float32)  # Rows >= n are padding (masked out).
  if ties:
    scores = np.round(scores, 1).astype(np.float32)
  dense = rng.random((12, c)) < 0.4
  mask = (rng.random(12) < 0.7 if masked else np.ones(12, bool)) & (np.arange(12) < n)
  if not dense[mask].any():
    dense[np.argmax(mask), 0] = mask.any()
  if not dense[mask].any():
    return
  check(two_pass(scores, to_ids(dense, seed), mask).compute(), scores, dense, mask)


def test_empty_and_missing_counts():
  ap = apm.ExactAveragePrecision(4)
  ap.finish_pass_one()
  apm.update_dense(ap, np.zeros((3, 4), np.float32), np.full((3, 2), -1, np.int32))
  result = ap.compute()
  assert np.isnan(result["map_macro"]) and np.isnan(result["map_micro"])
  np.testing.assert_array_equal(ap.class_thresholds(), np.full(4, np.inf))
  scores, dense = make_data(11, c=4)
  ap = apm.ExactAveragePrecision(4)
  ids = to_ids(dense)
  ap.add_positives(ids, labels_lib.gather_at_ids(scores, ids))
  ap.finish_pass_one()
  assert np.isnan(ap.compute()["map_micro"])  # No pass 2 yet.


def test_bad_input_raises():
  ap = apm.ExactAveragePrecision(4)
  ids = np.array([[0, 1], [2, -1]], np.int32)
  with pytest.raises(ValueError, match="finish_pass_one"):
    ap.add_column_counts(0, np.zeros(2, np.int32), np.zeros(2, np.float32))
  with pytest.raises(ValueError, match="finish_pass_one"):
    ap.add_pooled_counts(np.zeros(3, np.int32), np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="positive_classes"):
    _ = ap.positive_classes
  with pytest.raises(ValueError, match="label_scores"):
    ap.add_positives(ids, np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match="label_ids"):
    ap.add_positives(np.array([[5]], np.int32), np.zeros((1, 1), np.float32))
  with pytest.raises(ValueError, match="mask"):
    ap.add_positives(ids, np.zeros((2, 2), np.float32), np.ones(3, bool))
  with pytest.raises(ValueError, match="num_classes"):
    apm.ExactAveragePrecision(0)
  ap.add_positives(ids, np.array([[0.9, 0.5], [0.4, 0.0]], np.float32))
  ap.finish_pass_one()
  with pytest.raises(ValueError, match="hist"):
    ap.add_pooled_counts(np.zeros(3, np.int32), np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="start"):
    ap.add_column_counts(3, np.zeros(1, np.int32), np.zeros(1, np.float32))
  with pytest.raises(ValueError, match="max_below"):
    ap.add_column_counts(0, np.zeros(2, np.int32), np.zeros(1, np.float32))
  with pytest.raises(ValueError, match="scores"):
    apm.update_dense(ap, np.zeros((2, 5), np.float32), ids)
  scores = np.zeros((2, 4), np.float32)
  with pytest.raises(ValueError, match="thresholds"):
    apm.column_counts(scores[:, :3], np.zeros(2, np.float32), np.zeros(3, np.int32), ids)
  with pytest.raises(ValueError, match="label_ids"):
    apm.pooled_counts(scores, 0, ap.pooled_thresholds, ids[:1])
  ap.add_column_counts(0, np.zeros(2, np.int32), np.zeros(2, np.float32))  # Block 2 missed.
  with pytest.raises(ValueError, match="unevenly"):
    ap.per_class()
  ap.add_pooled_counts(*apm.pooled_counts(scores[:1], 0, ap.pooled_thresholds, ids[:1]))
  with pytest.raises(ValueError, match="negative entries"):
    ap.micro_pr_curve()
  with pytest.raises(ValueError, match="fallback"):
    ap.class_thresholds(fallback="sometimes")
