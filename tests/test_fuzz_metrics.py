"""Fuzzed metrics (metrics.py, set_metrics.py): random shapes (C = 1 included), float32 and
bfloat16 scores with ties and +-1e4 values, rows with no labels and rows with every label,
duplicate ids, random ``where``.

Properties: the metrics defined as fractions stay in [0, 1] (coverage error in
``[|Y|, C]``, set size in ``[0, C]``); dense and id labels (and dense, id and
``DecodedSets`` predictions) give the same values; rows without labels give what the
docstrings say (P@k, R@k, nDCG@k and coverage 0; LRAP 1); masked rows give 0. P@k and the
set metrics are also checked against numpy brute force.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from multilabel_jax import metrics
from multilabel_jax.metrics import sets as set_metrics
from multilabel_jax.losses import decoders
from tests.fuzz_problems import (NO_SHRINK, ROW_KINDS, as_f64, ids_with_repeats, label_rows,
                                 score_matrices)

# Each example compiles its programs once (~2-4 s): few examples, many rows each.
FAST = settings(max_examples=5, deadline=None, phases=NO_SHRINK)
MANY = settings(max_examples=25, deadline=None, phases=NO_SHRINK)
ATOL = 1e-6


@functools.partial(jax.jit, static_argnames="k")
def ranking_metrics(scores, labels_by_format, propensity, where, *, k):
  """Every ranking metric for each label format, in one program (one compilation)."""
  return {fmt: _ranking_metrics(scores, labels, propensity, where, k)
          for fmt, labels in labels_by_format.items()}


def _ranking_metrics(scores, labels, propensity, where, k):
  psp = metrics.psp_at_k_terms(scores, labels, propensity, k, where=where)
  p_at_k = metrics.precision_at_k(scores, labels, k, where=where)
  return {
      "p@k": p_at_k,
      "p@k_mean": metrics.masked_mean(p_at_k, where),
      "label_counts": metrics.label_counts(labels, scores.shape[1]),
      "r@k": metrics.recall_at_k(scores, labels, k, where=where),
      "ndcg@k": metrics.ndcg_at_k(scores, labels, k, where=where),
      "psp_num": psp.numerator, "psp_den": psp.denominator,
      "psp@k": metrics.psp_at_k(scores, labels, propensity, k, where=where),
      "map_macro": metrics.mean_average_precision(scores, labels, "macro", where=where),
      "map_micro": metrics.mean_average_precision(scores, labels, "micro", where=where),
      "lrap": metrics.label_ranking_average_precision(scores, labels, where=where),
      "coverage": metrics.coverage_error(scores, labels, where=where),
  }


UNIT_RANGE = ("p@k", "p@k_mean", "r@k", "ndcg@k", "psp@k", "map_macro", "map_micro", "lrap")


def check_ranking(scores, ids, dense, k, where, rng):
  c = dense.shape[1]
  n_train = int(rng.choice([3, 1000]))
  propensity = np.asarray(metrics.propensities(rng.integers(0, n_train + 1, c), n_train))
  assert ((propensity > 0) & (propensity < 1)).all(), propensity
  out = ranking_metrics(scores, {"ids": jnp.asarray(ids), "dense": jnp.asarray(dense)},
                        jnp.asarray(propensity), jnp.asarray(where), k=k)
  from_ids, from_dense = (jax.tree.map(as_f64, out[fmt]) for fmt in ("ids", "dense"))
  for name, value in from_dense.items():
    np.testing.assert_allclose(from_ids[name], value, atol=ATOL, err_msg=f"{name}: ids vs dense")
    assert np.isfinite(value).all(), name
  for name in UNIT_RANGE:
    v = from_dense[name]
    assert ((v >= -ATOL) & (v <= 1 + ATOL)).all(), (name, v)
  m = from_dense
  n_pos = dense.sum(1)
  empty, full = where & (n_pos == 0), where & (n_pos == c)
  for name in ("p@k", "r@k", "ndcg@k", "coverage", "psp_num", "psp_den"):
    np.testing.assert_array_equal(m[name][empty], 0.0, err_msg=f"{name}: rows without labels")
  for name in ("p@k", "r@k", "ndcg@k", "lrap", "coverage", "psp_num", "psp_den"):
    np.testing.assert_array_equal(m[name][~where], 0.0, err_msg=f"{name}: masked rows")
  np.testing.assert_array_equal(m["lrap"][empty], 1.0)  # sklearn: no labels -> 1.
  np.testing.assert_allclose(m["p@k"][full], 1.0)
  np.testing.assert_allclose(m["r@k"][full], k / c, rtol=1e-6)
  np.testing.assert_allclose(m["ndcg@k"][full], 1.0, rtol=1e-6)
  np.testing.assert_allclose(m["lrap"][full], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(m["coverage"][full], c)
  has = where & (n_pos > 0)
  assert ((m["coverage"][has] >= n_pos[has]) & (m["coverage"][has] <= c)).all()
  assert (m["psp_num"] <= m["psp_den"] * (1 + 1e-6) + ATOL).all()
  # P@k by brute force: top k by a stable sort, ties to the lower class index.
  top = np.argsort(-as_f64(scores), axis=1, kind="stable")[:, :k]
  want = np.take_along_axis(dense, top, 1).sum(1) / k
  np.testing.assert_allclose(m["p@k"], np.where(where, want, 0.0), atol=ATOL)
  np.testing.assert_allclose(m["p@k_mean"], want[where].mean() if where.any() else 0.0,
                             atol=ATOL)
  np.testing.assert_array_equal(m["label_counts"], dense.sum(0))
  if not (dense[where] > 0).any():  # No positive anywhere: mAP is 0, not NaN.
    assert m["map_macro"] == 0 and m["map_micro"] == 0


@functools.partial(jax.jit, static_argnames=("num_classes", "zero_division"))
def set_scores(predictions_by_format, labels_by_format, where, *, num_classes, zero_division):
  """Every set metric on dense predictions and labels, and for each other (prediction
  format, label format) pair the confusion counts all set metrics derive from, with the
  two metrics that read the formats themselves (set size, Hamming loss). One program."""
  pred, labels = predictions_by_format["dense"], labels_by_format["dense"]
  out = {}
  for metric, fn in (("precision", set_metrics.precision_score),
                     ("recall", set_metrics.recall_score), ("f1", set_metrics.f1_score)):
    for average in ("micro", "macro", "samples", None):
      out[f"{metric}_{average}"] = fn(pred, labels, average=average, where=where,
                                      zero_division=zero_division)
    out[f"{metric}_present"] = fn(pred, labels, average="macro", where=where,
                                  zero_division=zero_division, macro_classes="present")
  out["hamming"] = set_metrics.hamming_loss(pred, labels, where=where)
  out["set_size"] = set_metrics.mean_set_size(pred, where=where)
  out["average_k_accuracy"] = set_metrics.average_k_accuracy(
      pred, labels, zero_division=zero_division, where=where)
  pairs = {}
  for p_fmt, p in predictions_by_format.items():
    for l_fmt, y in labels_by_format.items():
      pairs[p_fmt, l_fmt] = dict(
          counts=set_metrics.set_counts(p, y, num_classes=num_classes, where=where)._asdict(),
          hamming=set_metrics.hamming_loss(p, y, num_classes=num_classes, where=where),
          set_size=set_metrics.mean_set_size(p, where=where))
  return out, pairs


def brute_force_set_scores(pred, true, where, zero_division):
  """sklearn's definitions, written out on dense bool arrays (masked rows dropped)."""
  pred, true = pred[where], true[where]

  def ratio(num, den):
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.where(den > 0, num / np.where(den > 0, den, 1), zero_division)
  tp = pred & true
  counts = {"micro": (tp.sum(), pred.sum(), true.sum()),
            "samples": (tp.sum(1), pred.sum(1), true.sum(1)),
            None: (tp.sum(0), pred.sum(0), true.sum(0))}
  out = {}
  for average, (t, p, y) in counts.items():
    values = {"precision": ratio(t, p), "recall": ratio(t, y), "f1": ratio(2 * t, p + y)}
    for metric, v in values.items():
      if average == "samples":
        v = v.mean() if v.size else 0.0
      out[f"{metric}_{average}"] = v
      if average is None:
        out[f"{metric}_macro"] = v.mean()
  n = pred.shape[0]
  out["hamming"] = (pred != true).sum() / (n * pred.shape[1]) if n else 0.0
  out["set_size"] = pred.sum(1).mean() if n else 0.0
  out["average_k_accuracy"] = ratio(tp.sum(), true.sum())
  return out


def check_sets(scores, ids, dense, where, zero_division, rng):
  b, c = dense.shape
  s = as_f64(scores)
  pred = s >= np.median(s)  # Sets of every size, empty and full rows included.
  order = np.argsort(-np.where(pred, s, -np.inf), axis=1, kind="stable")
  mask = np.arange(c) < pred.sum(1, keepdims=True)
  sets = decoders.DecodedSets(np.where(mask, order, -1).astype(np.int32), mask,
                              np.zeros(b, np.int32))
  pred_ids = ids_with_repeats(rng, pred, c + 2)
  base, pairs = set_scores(
      {"dense": jnp.asarray(pred), "ids": jnp.asarray(pred_ids), "sets": sets},
      {"dense": jnp.asarray(dense), "ids": jnp.asarray(ids)},
      jnp.asarray(where), num_classes=c, zero_division=zero_division)
  base, pairs = jax.tree.map(as_f64, (base, pairs))
  for pair, values in pairs.items():  # Every format pair: the same counts and values.
    jax.tree.map(lambda a, b, pair=pair: np.testing.assert_allclose(a, b, atol=ATOL,
                                                                    err_msg=str(pair)),
                 values, pairs["dense", "dense"])
  np.testing.assert_allclose(pairs["dense", "dense"]["hamming"], base["hamming"], atol=ATOL)
  want = brute_force_set_scores(pred, dense > 0, where, zero_division)
  for name, v in want.items():
    np.testing.assert_allclose(base[name], v, atol=ATOL, err_msg=f"{name}: brute force")
  for name, v in base.items():
    if name != "set_size":
      assert ((v >= -ATOL) & (v <= 1 + ATOL)).all(), (name, v)
  assert -ATOL <= base["set_size"] <= c + ATOL
  np.testing.assert_allclose(base["average_k_accuracy"], base["recall_micro"], atol=ATOL)


def check_metrics(problem, data):
  scores, rng = problem
  b, c = scores.shape
  kinds = data.draw(st.lists(st.sampled_from(ROW_KINDS), min_size=b, max_size=b), label="rows")
  width = data.draw(st.sampled_from([2, c + 2]), label="width")
  ids, dense = label_rows(rng, kinds, c, width)
  k = data.draw(st.sampled_from(sorted({1, min(3, c), c})), label="k")
  where = rng.random(b) < 0.75 if data.draw(st.booleans(), label="use_where") else np.ones(b, bool)
  zero_division = data.draw(st.sampled_from([0.0, 1.0]), label="zero_division")
  check_ranking(scores, ids, dense, k, where, rng)
  check_sets(scores, ids, dense, where, zero_division, rng)


@FAST
@given(problem=score_matrices(), data=st.data())
def test_metrics_fuzz(problem, data):
  check_metrics(problem, data)


@pytest.mark.slow
@MANY
@given(problem=score_matrices(), data=st.data())
def test_metrics_fuzz_many(problem, data):
  check_metrics(problem, data)
