"""Tests for multilabel_jax.data.text: bag-of-words ids + weights."""

import zlib

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from multilabel_jax.data import text

TRAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "A quick brown dog outpaces a quick red fox!",
    "Lazy dogs sleep; the fox naps, the fox dreams.",
    "Python code: the interpreter runs python scripts.",
    "GTK toolkit for graphical desktop programs, GTK+ version 3",
    "Desktop automation utility for X11 and the GTK desktop",
]
TEST = ["a red python fox and an unseen zebra", "nothing known here qwerty", ""]


def _dense(featurizer, ids, weights):
  """[N, V] dense from the bags, columns in the featurizer's vocabulary order."""
  dense = np.zeros((ids.shape[0], featurizer.num_embeddings), np.float64)
  for n in range(ids.shape[0]):
    np.add.at(dense[n], ids[n], weights[n])
  return dense[:, 1:]


def _sklearn_dense(vectorizer, featurizer, docs):
  """sklearn's matrix with columns reordered to the featurizer's vocabulary."""
  x = vectorizer.transform(docs).toarray()
  cols = [vectorizer.vocabulary_[w] for w in featurizer.vocabulary]
  assert len(cols) == x.shape[1]  # Same vocabulary.
  return x[:, cols]


def test_tokenize_matches_sklearn_analyzer():
  analyzer = CountVectorizer().build_analyzer()
  for doc in TRAIN + TEST + ["Ünïcode wörds, x y, 42 and 7"]:
    assert text.tokenize(doc) == analyzer(doc)
  assert text.tokenize("Don't STOP", lowercase=False) == ["Don", "STOP"]


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(sublinear_tf=True),
    dict(smooth_idf=False),
    dict(min_df=2),
    dict(norm=None, sublinear_tf=True),
])
def test_tfidf_matches_sklearn(kwargs):
  sk = TfidfVectorizer(**kwargs).fit(TRAIN)
  config = text.TextConfig(min_count=kwargs.get("min_df", 1),
                           sublinear_tf=kwargs.get("sublinear_tf", False),
                           smooth_idf=kwargs.get("smooth_idf", True),
                           norm=kwargs.get("norm", "l2"))
  f = text.TextFeaturizer(config).fit(TRAIN)
  assert sorted(f.vocabulary) == sorted(sk.vocabulary_)
  np.testing.assert_allclose(
      f.idf[1:], sk.idf_[[sk.vocabulary_[w] for w in f.vocabulary]], rtol=1e-6)
  for docs in (TRAIN, TEST):  # Train, and unseen documents with OOV words.
    ids, weights, dropped = f.transform(docs)
    assert ids.dtype == np.int32 and weights.dtype == np.float32
    assert not dropped.any()
    np.testing.assert_allclose(_dense(f, ids, weights), _sklearn_dense(sk, f, docs),
                               rtol=1e-6, atol=1e-7)


def test_hand_computed_tfidf_and_ordering():
  # Pre-tokenised: df(x)=1, df(y)=2, df(z)=1, n=2 -> idf x=z=ln(3/2)+1, y=1.
  f = text.TextFeaturizer(text.TextConfig()).fit([["x", "y", "x"], ["y", "z"]])
  assert f.vocabulary == ["y", "x", "z"]  # df descending, then alphabetical.
  assert f.num_embeddings == 4 and f.max_tokens == 2
  ids, weights, dropped = f.transform([["x", "y", "x"], ["q"], []])
  idf_x = np.log(1.5) + 1
  wx, wy = 2 * idf_x, 1.0
  norm = np.sqrt(wx**2 + wy**2)
  np.testing.assert_array_equal(ids, [[2, 1], [0, 0], [0, 0]])  # Highest weight first.
  np.testing.assert_allclose(weights, [[wx / norm, wy / norm], [0, 0], [0, 0]], rtol=1e-6)
  np.testing.assert_array_equal(dropped, [0, 0, 0])


@pytest.mark.parametrize("weighting,expected_ids,expected", [
    ("log_count", [2, 1], [np.log(3.0), np.log(2.0)]),
    ("count", [2, 1], [2.0, 1.0]),
    ("binary", [1, 2], [1.0, 1.0]),  # Tie: lower id first.
])
def test_other_weightings_unnormalised(weighting, expected_ids, expected):
  f = text.TextFeaturizer(text.TextConfig(weighting=weighting, norm=None))
  f.fit([["x", "y", "x"], ["y", "z"]])
  ids, weights, _ = f.transform([["x", "y", "x"]])
  np.testing.assert_array_equal(ids, [expected_ids])
  np.testing.assert_allclose(weights, [expected], rtol=1e-6)


def test_truncation_keeps_heaviest_and_counts():
  f = text.TextFeaturizer(text.TextConfig(weighting="count", max_tokens=2))
  f.fit([["a", "b", "c"]])
  ids, weights, dropped = f.transform([["c", "a", "a", "b", "b", "b"], ["c"]])
  # Vocabulary (all df 1): a=1, b=2, c=3. Counts b=3, a=2, c=1 -> keep b, a.
  np.testing.assert_array_equal(ids, [[2, 1], [3, 0]])
  np.testing.assert_allclose(weights, [[3 / np.sqrt(13), 2 / np.sqrt(13)], [1, 0]], rtol=1e-6)
  np.testing.assert_array_equal(dropped, [1, 0])


def test_max_vocab_size_and_min_count():
  docs = [["a", "b", "c"], ["a", "b"], ["a", "d"]]
  f = text.TextFeaturizer(text.TextConfig(max_vocab_size=2)).fit(docs)
  assert f.vocabulary == ["a", "b"]
  f = text.TextFeaturizer(text.TextConfig(min_count=2)).fit(docs)
  assert f.vocabulary == ["a", "b"]
  assert f.max_tokens == 2  # Distinct in-vocabulary tokens of a train doc.


def test_hashing_matches_learned_vocab_without_collisions():
  cfg = text.TextConfig(vocab="hashing", num_buckets=2**20, sublinear_tf=True)
  hashed = text.TextFeaturizer(cfg).fit(TRAIN)
  learned = text.TextFeaturizer(text.TextConfig(sublinear_tf=True)).fit(TRAIN)
  buckets = {text.hash_token(w, cfg.num_buckets) for w in learned.vocabulary}
  assert len(buckets) == len(learned.vocabulary)  # No collision in this corpus.
  assert hashed.num_embeddings == 2**20 + 1
  for doc in TRAIN + TEST[:1]:
    h_ids, h_w, _ = hashed.transform([doc])
    l_ids, l_w, _ = learned.transform([doc])
    words = {learned.vocabulary[i - 1]: w for i, w in zip(l_ids[0], l_w[0]) if i}
    expected = {text.hash_token(t, cfg.num_buckets): w for t, w in words.items()}
    got = {int(i): float(w) for i, w in zip(h_ids[0], h_w[0]) if i}
    if doc in TRAIN:
      assert got.keys() == expected.keys()
      np.testing.assert_allclose([got[k] for k in expected], list(expected.values()),
                                 rtol=1e-6)
    assert all(1 <= k <= cfg.num_buckets for k in got)


def test_hash_token_is_stable_crc32():
  assert text.hash_token("hello", 16) == 1 + 907060870 % 16 == 7
  assert zlib.crc32(b"hello") == 907060870


def test_hashing_collisions_merge_counts():
  cfg = text.TextConfig(vocab="hashing", num_buckets=1, weighting="count", norm=None)
  f = text.TextFeaturizer(cfg).fit([["a", "b"], ["c"]])
  assert f.document_frequency.tolist() == [0, 2]  # Colliding words count once per doc.
  ids, weights, _ = f.transform([["a", "b", "b"]])
  np.testing.assert_array_equal(ids, [[1]])
  np.testing.assert_allclose(weights, [[3.0]])


@pytest.mark.parametrize("vocab", ["learned", "hashing"])
def test_save_load_round_trip(tmp_path, vocab):
  f = text.TextFeaturizer(text.TextConfig(vocab=vocab, num_buckets=1000, min_count=1,
                                          max_tokens=5)).fit(TRAIN)
  path = tmp_path / "vocab.json"
  f.save(path)
  g = text.TextFeaturizer.load(path)
  assert g.config == f.config and g.max_tokens == 5
  assert g.vocabulary == f.vocabulary and g.num_embeddings == f.num_embeddings
  for a, b in zip(f.transform(TRAIN + TEST), g.transform(TRAIN + TEST)):
    np.testing.assert_array_equal(a, b)


def test_input_specs_and_errors():
  f = text.TextFeaturizer()
  with pytest.raises(ValueError, match="not fitted"):
    f.transform(["x"])
  f.fit(TRAIN)
  specs = f.input_specs()
  assert specs["token_ids"].shape == (f.max_tokens,) and specs["token_ids"].dtype == "int32"
  assert specs["token_weights"].dtype == "float32"
  with pytest.raises(ValueError, match="weighting"):
    text.TextConfig(weighting="bm25")
  with pytest.raises(ValueError, match="vocab"):
    text.TextConfig(vocab="bpe")
  with pytest.raises(ValueError, match="format"):
    text.TextFeaturizer.from_json({"format": "other"})
