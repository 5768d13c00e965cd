"""Streaming clu metrics: batch-split == one-shot, and the histogram mAP bracket."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from multilabel_jax import metrics
from multilabel_jax.metrics import histogram_average_precision as sap
from multilabel_jax.metrics import sets as set_metrics
from multilabel_jax.metrics import streaming as sm

N, C, B = 24, 7, 4  # Examples, classes, batches.


def make_data(seed=0, ties=False):
  rng = np.random.default_rng(seed)
  scores = rng.random((N, C)).astype(np.float32)
  if ties:
    scores = np.round(scores * 4) / 4
  labels = rng.random((N, C)) < 0.3
  pred = rng.random((N, C)) < 0.3
  mask = rng.random(N) < 0.8
  return scores, labels, pred, mask


def to_ids(dense, width=C + 1):
  ids = np.full((dense.shape[0], width), -1, np.int32)
  for i, row in enumerate(dense):
    r = np.flatnonzero(row)[::-1]
    ids[i, :len(r)] = r
  return ids


def stream(cls, batches=B, jit=True, **outputs):
  """Merges ``cls.from_model_output`` over ``batches`` equal splits of ``outputs``."""
  fn = jax.jit(lambda **kw: cls.from_model_output(**kw)) if jit else cls.from_model_output
  state = cls.empty()
  for part in range(batches):
    chunk = {k: np.array_split(v, batches)[part] for k, v in outputs.items()}
    state = state.merge(fn(**chunk))
  return state.compute()


@pytest.mark.parametrize("ids", [False, True])
def test_at_k_and_psp_streaming_equals_one_shot(ids):
  scores, labels, _, mask = make_data(1)
  y = to_ids(labels) if ids else labels
  p = np.asarray(metrics.propensities(metrics.label_counts(labels, C), N))
  for cls, fn in ((sm.PrecisionAtK, metrics.precision_at_k), (sm.RecallAtK, metrics.recall_at_k),
                  (sm.NdcgAtK, metrics.ndcg_at_k)):
    got = stream(cls.with_k(3), scores=scores, labels=y, mask=mask)
    want = metrics.masked_mean(fn(scores, labels, 3, where=mask), mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=cls.__name__)
  got = stream(sm.PSPAtK.with_options(2, p), scores=scores, labels=y, mask=mask)
  np.testing.assert_allclose(got, metrics.psp_at_k(scores, labels, p, 2, where=mask), rtol=1e-6)


@pytest.mark.parametrize("ids", [False, True])
def test_set_metrics_streaming_equal_sklearn(ids):
  _, labels, pred, mask = make_data(2)
  y, p = (to_ids(labels), to_ids(pred)) if ids else (labels, pred)
  sk = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
  for metric, sk_fn in sk.items():
    for average in ("micro", "macro", "samples"):
      cls = sm.SetMetric.with_options(metric, average=average, num_classes=C)
      got = stream(cls, predictions=p, labels=y, mask=mask)
      want = sk_fn(labels[mask], pred[mask], average=average, zero_division=0)
      np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{metric} {average}")
  cls = sm.SetMetric.with_options("hamming_loss", num_classes=C)
  np.testing.assert_allclose(stream(cls, predictions=p, labels=y, mask=mask),
                             skm.hamming_loss(labels[mask], pred[mask]), atol=1e-6)
  for metric, fn in (("mean_set_size", set_metrics.mean_set_size),
                     ("average_k_accuracy", set_metrics.average_k_accuracy)):
    cls = sm.SetMetric.with_options(metric)
    want = fn(pred, where=mask) if metric == "mean_set_size" else fn(pred, labels, where=mask)
    np.testing.assert_allclose(stream(cls, predictions=p, labels=y, mask=mask), want, atol=1e-6)


# ------------------------------------------------------------------ histogram mAP


def exact_ap(scores, labels, average):
  if average == "micro":
    return skm.average_precision_score(labels, scores, average="micro")
  keep = labels.any(0)
  return np.mean(skm.average_precision_score(labels[:, keep], scores[:, keep], average=None))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_histogram_bracket_contains_exact_ap_and_shrinks(ties, average):
  rng = np.random.default_rng(3)
  n, c = 300, 5
  labels = rng.random((n, c)) < 0.2
  logits = rng.normal(size=(n, c)) + 2.0 * labels
  if ties:
    logits = np.round(logits * 2) / 2
  scores = jax.nn.sigmoid(jnp.asarray(logits, jnp.float32))
  scores = np.array(scores)
  scores[:5] = 1.0  # Saturated sigmoid: exact ties at 1.
  exact = exact_ap(scores, labels, average)
  widths = []
  for level in range(1, 6):  # Nested edges: each level refines the previous one.
    edges = sap.default_bin_edges(2 ** level + 2, max_logit=6.0)
    cls = sap.HistogramAveragePrecision.with_options(c, bin_edges=edges, average=average)
    est = stream(cls, batches=2, jit=False, scores=scores, labels=labels)
    assert est.lower - 1e-9 <= exact <= est.upper + 1e-9, (level, est, exact)
    assert abs(est.value - exact) <= est.error + 1e-9
    widths.append(est.error)
  assert all(b <= a + 1e-12 for a, b in zip(widths, widths[1:])), widths
  assert widths[-1] < widths[0] / 4, widths


def test_histogram_resolving_every_score_is_exact():
  scores, labels, _, _ = make_data(4)  # Distinct scores.
  values = np.unique(scores)
  edges = (values[1:] + values[:-1]) / 2  # One score per bin: zero-width bracket.
  cls = sap.HistogramAveragePrecision.with_options(C, bin_edges=edges, average="both")
  out = stream(cls, scores=scores, labels=to_ids(labels))
  for key, average in (("", "macro"), ("_micro", "micro")):
    assert out[key].error < 1e-9
    np.testing.assert_allclose(out[key].value, exact_ap(scores, labels, average), rtol=1e-6)


def test_histogram_ids_mask_and_memory():
  scores, labels, _, mask = make_data(5)
  cls = sap.HistogramAveragePrecision.with_options(C, average="macro")
  dense = cls.from_model_output(scores=scores, labels=labels, mask=mask)
  ids = cls.from_model_output(scores=scores, labels=to_ids(labels), mask=mask)
  np.testing.assert_array_equal(dense.positives, ids.positives)
  np.testing.assert_array_equal(dense.totals.sum(1), np.full(C, mask.sum()))
  nbytes = dense.positives.nbytes + dense.totals.nbytes
  assert nbytes == 2 * C * (len(cls.bin_edges) + 1) * 4


def test_lower_sum_matches_direct_sum():
  tp = np.array([0., 3., 10., 0.])
  d = np.array([0., 5., 1000., 7.])
  p = np.array([40., 100., 17., 3.])
  direct = [sum((t + j) / (dd + j) for j in range(1, int(pp) + 1)) for t, dd, pp in zip(tp, d, p)]
  got = sap._lower_sum(tp, d, p)  # pylint: disable=protected-access
  assert np.all(got <= np.array(direct) + 1e-12)
  np.testing.assert_allclose(got, direct, rtol=1e-3)


# ------------------------------------------------------------------------ collection


def test_collection_streaming_equals_one_shot():
  scores, labels, pred, mask = make_data(6)
  p = np.asarray(metrics.propensities(metrics.label_counts(labels, C), N))
  Metrics = sm.make_collection((1, 3), num_classes=C, propensity=p, average_precision=True,
                               sets=True)
  state = None
  for part in range(B):
    chunk = {k: np.array_split(v, B)[part] for k, v in
             dict(scores=scores, labels=to_ids(labels), predictions=pred, mask=mask).items()}
    update = Metrics.single_from_model_output(**chunk)
    state = update if state is None else state.merge(update)
  out = state.compute()
  np.testing.assert_allclose(
      out["precision_at_3"], metrics.masked_mean(metrics.precision_at_k(scores, labels, 3), mask))
  np.testing.assert_allclose(out["psp_at_1"], metrics.psp_at_k(scores, labels, p, 1, where=mask),
                             rtol=1e-6)
  np.testing.assert_allclose(out["f1_macro"],
                             skm.f1_score(labels[mask], pred[mask], average="macro",
                                          zero_division=0), atol=1e-6)
  for name, average in (("map", "macro"), ("map_micro", "micro")):
    exact = metrics.mean_average_precision(scores, labels, average, where=mask)
    assert abs(out[name] - exact) <= out[f"{name}_error"] + 1e-6
  assert {"ndcg_at_1", "recall_at_3", "hamming_loss", "mean_set_size"} <= set(out)


def test_errors():
  with pytest.raises(ValueError, match="num_classes"):
    sm.SetMetric.with_options("f1", average="macro")
  with pytest.raises(ValueError, match="increasing"):
    sap.HistogramAveragePrecision.with_options(3, bin_edges=[0.5, 0.2])


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), levels=st.integers(1, 4), density=st.floats(0.05, 0.9))
def test_bracket_contains_exact_ap_property(seed, levels, density):
  rng = np.random.default_rng(seed)
  labels = rng.random((40, 3)) < density
  labels[0] = True
  scores = (np.round(rng.random((40, 3)) * levels) / levels).astype(np.float32)  # Ties.
  edges = np.sort(rng.random(3))
  for average in ("macro", "micro"):
    cls = sap.HistogramAveragePrecision.with_options(3, bin_edges=edges, average=average)
    est = cls.from_model_output(scores=scores, labels=labels).compute()
    assert est.lower - 1e-9 <= exact_ap(scores, labels, average) <= est.upper + 1e-9
    assert 0 <= est.lower <= est.upper <= 1
