"""Tests of the input pipeline: determinism and resumption, sharding, exact eval coverage,
resampling, label statistics and bad-data handling."""

import numpy as np
import pytest

from multilabel_jax.data import base
from multilabel_jax.data import pipeline as pl
from multilabel_jax.data.hashtag_world import HashtagWorld


class ArraySource:
  """In-memory source: ``features[i] = [i]``, so batches reveal which examples they hold."""

  def __init__(self, labels, num_classes, max_labels, n_eval=None):
    self.labels = np.asarray(labels)
    n = len(self.labels)
    self._n = {"train": n, "validation": n if n_eval is None else n_eval}
    self.info = base.DatasetInfo(
        name="array", num_classes=num_classes, max_labels=max_labels,
        inputs={"features": base.InputSpec((1,), "float32")},
        train_label_counts=np.zeros(num_classes, np.int64), num_train_examples=n)

  def num_examples(self, split):
    return self._n[split]

  def read(self, split, indices):
    indices = np.asarray(indices)
    assert (indices < self._n[split]).all()
    return {"features": indices[:, None].astype(np.float32),
            "label_ids": self.labels[indices % len(self.labels)].astype(np.int32)}


def _source(n=103, c=10):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, c, (n, 3))
  labels[rng.random((n, 3)) < 0.3] = -1
  labels[:, 0] = rng.integers(0, c, n)
  return ArraySource(labels, c, 3)


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1000, 12345])
def test_feistel_is_a_permutation(n):
  perm = pl.feistel_permutation(np.arange(n), n, (7, 1))
  np.testing.assert_array_equal(np.sort(perm), np.arange(n))
  if n > 100:
    assert (perm != np.arange(n)).mean() > 0.9
    assert not np.array_equal(perm, pl.feistel_permutation(np.arange(n), n, (7, 2)))


def test_train_epochs_cover_each_example_once():
  n, b = 120, 8
  idx = np.concatenate([pl.train_indices(s, global_batch_size=b, seed=3, num_examples=n)
                        for s in range(2 * n // b)])
  np.testing.assert_array_equal(np.sort(idx[:n]), np.arange(n))
  np.testing.assert_array_equal(np.sort(idx[n:]), np.arange(n))
  assert not np.array_equal(idx[:n], idx[n:])  # A new permutation each epoch.
  # Epoch boundary inside a batch (n not a multiple of b).
  idx = np.concatenate([pl.train_indices(s, global_batch_size=8, seed=3, num_examples=100)
                        for s in range(25)])
  for e in range(2):
    np.testing.assert_array_equal(np.sort(idx[e * 100:(e + 1) * 100]), np.arange(100))


@pytest.mark.parametrize("procs", [2, 3, 4])
def test_train_shards_partition_global_batch(procs):
  for n in [None, 50, 10_000]:
    for step in [0, 7]:
      glob = pl.train_indices(step, global_batch_size=12, seed=1, num_examples=n)
      shards = [pl.train_indices(step, global_batch_size=12, seed=1, num_examples=n,
                                 process_index=p, process_count=procs) for p in range(procs)]
      assert all(len(s) == 12 // procs for s in shards)
      np.testing.assert_array_equal(np.concatenate(shards), glob)
      if n is None or n >= 12:
        assert len(set(np.concatenate(shards))) == 12  # Disjoint.
  with pytest.raises(ValueError):
    pl.train_indices(0, global_batch_size=10, seed=0, num_examples=None, process_count=4)


@pytest.mark.parametrize("procs", [1, 2, 4])
def test_eval_covers_every_example_exactly_once(procs):
  src = _source(n=103)
  seen = []
  for p in range(procs):
    pipe = pl.InputPipeline(src, global_batch_size=16, process_index=p, process_count=procs)
    nb = 0
    for batch in pipe.eval_iter("validation"):
      nb += 1
      assert batch["features"].shape == (16 // procs, 1) and batch["mask"].shape == (16 // procs,)
      seen.extend(batch["features"][batch["mask"], 0].astype(int))
      assert (batch["label_ids"][~batch["mask"]] == -1).all()
    assert nb == 7  # ceil(103 / 16), the same on every process.
  np.testing.assert_array_equal(np.sort(seen), np.arange(103))


@pytest.mark.parametrize("procs", [1, 2, 4])
def test_eval_cut_at_max_examples_is_the_same_on_every_process(procs):
  """``eval_iter(split, max_examples)``: the first 40 examples once, in ceil(40 / 16) = 3
  batches on every process (a process cannot cut the others' rows; evaluate.iterate)."""
  src = _source(n=103)
  seen = []
  for p in range(procs):
    pipe = pl.InputPipeline(src, global_batch_size=16, process_index=p, process_count=procs)
    batches = list(pipe.eval_iter("validation", 40))
    assert len(batches) == 3
    for batch in batches:
      seen.extend(batch["features"][batch["mask"], 0].astype(int))
      assert (batch["label_ids"][~batch["mask"]] == -1).all()
  np.testing.assert_array_equal(np.sort(seen), np.arange(40))


def test_resume_sees_the_same_batches():
  src = _source(n=50)
  pipe = pl.InputPipeline(src, global_batch_size=8, seed=5, process_index=0, process_count=1)
  full = [b["features"][:, 0] for b in pipe.train_iter(0, num_steps=12)]
  again = pl.InputPipeline(src, global_batch_size=8, seed=5, process_index=0, process_count=1)
  resumed = [b["features"][:, 0] for b in again.train_iter(start_step=7, num_steps=5)]
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(full[3], pipe.train_batch(3)["features"][:, 0])
  other = pl.InputPipeline(src, global_batch_size=8, seed=6, process_index=0, process_count=1)
  assert not np.array_equal(other.train_batch(0)["features"], pipe.train_batch(0)["features"])


def test_label_stats_and_propensities():
  src = _source(n=200)
  pipe = pl.InputPipeline(src, global_batch_size=8, process_index=0, process_count=1)
  st = pipe.label_stats
  assert st is pipe.label_stats  # Computed once.
  expected = np.zeros(10, np.int64)
  for row in src.labels:
    for c in set(row[row >= 0]):
      expected[c] += 1
  np.testing.assert_array_equal(st.counts, expected)
  sizes = [len(set(r[r >= 0])) for r in src.labels]
  np.testing.assert_array_equal(st.labels_per_example, np.bincount(sizes, minlength=4))
  assert st.mean_labels_per_example == pytest.approx(np.mean(sizes))
  p = st.propensities()
  assert ((p > 0) & (p < 1)).all() and (np.diff(p[np.argsort(st.counts)]) >= -1e-12).all()


@pytest.mark.parametrize("processes", [2, 3, 7])
def test_label_stats_of_process_shares_add_up_to_the_whole(processes):
  src = _source(n=200)
  whole = pl.compute_label_stats(src, "train", 200, chunk=16)
  parts = [pl.compute_label_stats(src, "train", 200, chunk=16, process_index=p,
                                  process_count=processes) for p in range(processes)]
  np.testing.assert_array_equal(sum(p.counts for p in parts), whole.counts)
  np.testing.assert_array_equal(sum(p.labels_per_example for p in parts),
                                whole.labels_per_example)
  # Each share counts its own rows: disjoint, and together every example once.
  assert [int(p.labels_per_example.sum()) for p in parts] == [
      200 * (i + 1) // processes - 200 * i // processes for i in range(processes)]
  assert all(p.num_examples == 200 for p in parts)


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_inverse_sqrt_resampling(reduce):
  labels = np.array([[0, -1], [0, 1], [1, -1], [2, -1], [-1, -1]] * 4)  # counts 8, 8, 4.
  src = ArraySource(labels, 3, 2)
  pipe = pl.InputPipeline(src, global_batch_size=500, seed=0, resample=reduce,
                          process_index=0, process_count=1)
  inv = 1 / np.sqrt([8, 8, 4])
  w = np.array([inv[0], (inv[0] + inv[1]) / 2 if reduce == "mean" else max(inv[:2]),
                inv[1], inv[2], 0.0] * 4)
  np.testing.assert_allclose(np.diff(pipe.sampling_cdf, prepend=0), w)
  idx = np.concatenate([pipe.train_indices(s) for s in range(40)])
  freq = np.bincount(idx % 5, minlength=5) / len(idx)
  target = w[:5] / w[:5].sum()
  assert freq[4] == 0  # No labels, never sampled.
  np.testing.assert_allclose(freq, target, atol=4 * np.sqrt(0.25 / len(idx)))
  np.testing.assert_array_equal(pipe.train_indices(3), pipe.train_indices(3))
  with pytest.raises(ValueError):
    pl.InputPipeline(HashtagWorld(100, dim=4), global_batch_size=4, resample="mean",
                     process_index=0, process_count=1)


def test_bad_labels_counted_and_strict_raises():
  labels = np.array([[0, 1, 2, 3, -1],     # 4 labels, max_labels 3: one truncated.
                     [5, 11, -7, -1, -1],  # Two out of range.
                     [-1, -1, -1, -1, -1],  # Empty.
                     [1, -1, -1, -1, -1]])
  src = ArraySource(labels, 10, 3)
  pipe = pl.InputPipeline(src, global_batch_size=4, process_index=0, process_count=1)
  batch = next(pipe.eval_iter("validation"))
  np.testing.assert_array_equal(batch["label_ids"],
                                [[0, 1, 2], [5, -1, -1], [-1, -1, -1], [1, -1, -1]])
  expect = {"truncated_labels": 1, "out_of_range_ids": 2, "empty_label_sets": 1}
  for k, v in expect.items():
    assert pipe.stats.as_dict()[k] == v and src.info.stats.as_dict()[k] == v
  for row, name in [(0, "truncated_labels"), (1, "out_of_range_ids"), (2, "empty_label_sets")]:
    one = ArraySource(labels[row:row + 1], 10, 3)
    strict = pl.InputPipeline(one, global_batch_size=1, strict=True, process_index=0,
                              process_count=1)
    with pytest.raises(ValueError, match=name):
      next(strict.eval_iter("validation"))
    with pytest.raises(ValueError, match=name):
      strict.train_batch(0)
  ok = pl.InputPipeline(ArraySource(labels[2:4], 10, 3), global_batch_size=2, strict=True,
                        allow_empty_labels=True, process_index=0, process_count=1)
  assert ok.train_batch(0)["label_ids"].shape == (2, 3)


def test_hashtag_world_through_the_pipeline():
  w = HashtagWorld(500, dim=8, num_validation=37, seed=2)
  pipe = pl.InputPipeline(w, global_batch_size=16, seed=1, process_index=1, process_count=2,
                          stats_examples=4000)
  b = next(pipe.train_iter(3))
  np.testing.assert_array_equal(b["label_ids"],
                                w.read("train", np.arange(56, 64))["label_ids"])
  st = pipe.label_stats
  assert st.num_examples == 4000
  assert st.mean_labels_per_example == pytest.approx(
      w.expected_label_frequencies("train").sum(), rel=0.05)
  ev = list(pipe.eval_iter("validation"))
  # Process 1 holds rows 8..15 of each global batch of 16: examples 8-15 and 24-31.
  got = np.concatenate([e["features"][e["mask"]] for e in ev])
  np.testing.assert_array_equal(got, w.read("validation", np.r_[8:16, 24:32])["features"])
  assert len(ev) == 3 and not ev[2]["mask"].any()


def test_prefetch_0_reads_the_same_batches_without_tensorflow(monkeypatch):
  """``prefetch=0`` (no tf.data) gives exactly tf.data's batches, and needs no TensorFlow."""
  def batches(prefetch):
    pipe = pl.InputPipeline(_source(), global_batch_size=8, seed=1, process_index=0,
                            process_count=1, prefetch=prefetch)
    return (list(pipe.train_iter(start_step=3, num_steps=5))
            + list(pipe.eval_iter("validation")))

  read_ahead = batches(2)
  monkeypatch.setitem(__import__("sys").modules, "tensorflow", None)  # import fails
  with pytest.raises(ImportError):
    batches(2)
  inline = batches(0)
  assert len(inline) == len(read_ahead) == 5 + 13
  for a, b in zip(read_ahead, inline):
    assert a.keys() == b.keys()
    for k in a:
      assert a[k].dtype == b[k].dtype, k
      np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("bad", [-1, 1.5, None])
def test_prefetch_must_be_a_non_negative_int(bad):
  with pytest.raises(ValueError, match="`prefetch` must be an int >= 0"):
    pl.InputPipeline(_source(), global_batch_size=8, process_index=0, process_count=1,
                     prefetch=bad)
