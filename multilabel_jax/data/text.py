"""Bag-of-words text features as padded token ids plus weights (embedding-bag inputs).

A document becomes its distinct tokens, each with one weight:

* ``token_ids`` int32 ``[N, T]``: vocabulary ids in ``[1, num_embeddings)``, padded with
  ``PAD_TOKEN_ID = 0``.
* ``token_weights`` float32 ``[N, T]``: the token's weight, ``0.0`` on padding.

A model embeds with ``sum_t token_weights[n, t] * E[token_ids[n, t]]`` for a table ``E`` of
``num_embeddings`` rows. Padding has weight 0, so row 0 of ``E`` never contributes and no
mask is needed. A 100k-word vocabulary therefore never becomes a dense ``[B, V]`` array.

Vocabulary: either learned on the training split (words seen in at least ``min_count``
training documents, optionally the ``max_vocab_size`` most frequent) or the hashing trick
(``num_buckets`` buckets, CRC32 of the UTF-8 token; collisions merge tokens). Words not in a
learned vocabulary are dropped at transform time.

Weights (``weighting``):

* ``"tfidf"``: ``tf * idf`` with ``idf = ln((1 + n) / (1 + df)) + 1`` (``smooth_idf``) or
  ``ln(n / df) + 1``; ``tf`` is the raw count, or ``1 + ln(count)`` with ``sublinear_tf``.
  ``n`` and ``df`` are counted on the training documents. This is scikit-learn's
  ``TfidfVectorizer`` definition.
* ``"log_count"``: ``ln(1 + count)``; ``"count"``: ``count``; ``"binary"``: ``1``.

then L2-normalised per document (``norm="l2"``) or not (``norm=None``).

At most ``max_tokens`` (T) tokens are kept per document: those of highest weight (ties: lower
id), and the weights are normalised over the kept tokens. ``transform`` returns how many
distinct tokens each document lost, so truncation is counted, never silent.

The fitted state (config, vocabulary, document frequencies) saves to JSON with
:meth:`TextFeaturizer.save` so a run can store it next to its checkpoints.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
import re
import zlib
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from multilabel_jax.data import base

PAD_TOKEN_ID = 0
# scikit-learn's default: words of two or more word characters.
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_FORMAT = "multilabel_jax.text.TextFeaturizer/1"
_WEIGHTINGS = ("tfidf", "log_count", "count", "binary")

Document = Union[str, Sequence[str]]


def tokenize(text: str, *, lowercase: bool = True,
             token_pattern: str = DEFAULT_TOKEN_PATTERN) -> List[str]:
  """Splits ``text`` into word tokens (scikit-learn's default tokenisation)."""
  if lowercase:
    text = text.lower()
  return re.findall(token_pattern, text)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """How text becomes token ids and weights. See the module docstring.

  Attributes:
    vocab: ``"learned"`` (fit on train) or ``"hashing"``.
    min_count: learned vocab: keep words in at least this many training documents.
    max_vocab_size: learned vocab: keep at most this many words, by decreasing document
      frequency (ties: alphabetical). None: no limit.
    num_buckets: hashing: number of buckets (ids ``1..num_buckets``).
    weighting: ``"tfidf"``, ``"log_count"``, ``"count"`` or ``"binary"``.
    sublinear_tf: tfidf with ``tf = 1 + ln(count)``.
    smooth_idf: tfidf with ``idf = ln((1 + n) / (1 + df)) + 1``, else ``ln(n / df) + 1``.
    norm: ``"l2"`` or None.
    max_tokens: T, distinct tokens kept per document. None: the largest number of distinct
      tokens in a training document.
    lowercase: lowercase string documents before tokenising.
    token_pattern: regular expression of a token.
  """
  vocab: str = "learned"
  min_count: int = 1
  max_vocab_size: Optional[int] = None
  num_buckets: int = 2**18
  weighting: str = "tfidf"
  sublinear_tf: bool = False
  smooth_idf: bool = True
  norm: Optional[str] = "l2"
  max_tokens: Optional[int] = None
  lowercase: bool = True
  token_pattern: str = DEFAULT_TOKEN_PATTERN

  def __post_init__(self):
    if self.vocab not in ("learned", "hashing"):
      raise ValueError(f"TextConfig.vocab must be 'learned' or 'hashing', got {self.vocab!r}.")
    if self.weighting not in _WEIGHTINGS:
      raise ValueError(f"TextConfig.weighting must be one of {_WEIGHTINGS}, "
                       f"got {self.weighting!r}.")
    if self.norm not in ("l2", None):
      raise ValueError(f"TextConfig.norm must be 'l2' or None, got {self.norm!r}.")
    if self.min_count < 1 or self.num_buckets < 1:
      raise ValueError("TextConfig.min_count and num_buckets must be >= 1.")
    if self.max_tokens is not None and self.max_tokens < 1:
      raise ValueError(f"TextConfig.max_tokens must be >= 1 or None, got {self.max_tokens}.")


def hash_token(token: str, num_buckets: int) -> int:
  """Stable bucket id in ``[1, num_buckets]`` (CRC32; not Python's salted ``hash``)."""
  return 1 + zlib.crc32(token.encode("utf-8")) % num_buckets


class TextFeaturizer:
  """Fits a vocabulary and IDF on training documents; turns documents into id/weight bags.

  A document is a string (tokenised with :func:`tokenize`) or an already tokenised
  sequence of strings (used as is, e.g. ``["depends=python3", ...]``).

  Attributes (after ``fit``):
    vocabulary: learned vocab: ``[V]`` words, word ``vocabulary[i]`` has id ``i + 1``.
      None for hashing.
    num_embeddings: rows of the embedding table, ``V + 1`` (id 0 is padding).
    max_tokens: T.
    idf: float32 ``[num_embeddings]`` inverse document frequencies (0 at padding).
  """

  def __init__(self, config: TextConfig = TextConfig()):
    self.config = config
    self.vocabulary: Optional[List[str]] = None
    self._index: dict = {}
    self.document_frequency: Optional[np.ndarray] = None
    self.num_documents = 0
    self.max_tokens: Optional[int] = config.max_tokens

  # Fitting.

  @property
  def fitted(self) -> bool:
    return self.document_frequency is not None

  @property
  def num_embeddings(self) -> int:
    if self.config.vocab == "hashing":
      return self.config.num_buckets + 1
    self._check_fitted()
    return len(self.vocabulary) + 1

  def tokens(self, doc: Document) -> List[str]:
    """Tokens of one document (strings are tokenised, sequences kept)."""
    if isinstance(doc, str):
      return tokenize(doc, lowercase=self.config.lowercase,
                      token_pattern=self.config.token_pattern)
    return list(doc)

  def fit(self, docs: Iterable[Document]) -> "TextFeaturizer":
    """Learns the vocabulary (or bucket) document frequencies on training documents."""
    cfg = self.config
    doc_sets = [set(self.tokens(doc)) for doc in docs]
    self.num_documents = len(doc_sets)
    if cfg.vocab == "learned":
      word_df = collections.Counter()
      for distinct in doc_sets:
        word_df.update(distinct)
      kept = [(w, c) for w, c in word_df.items() if c >= cfg.min_count]
      kept.sort(key=lambda wc: (-wc[1], wc[0]))
      if cfg.max_vocab_size is not None:
        kept = kept[:cfg.max_vocab_size]
      self.vocabulary = [w for w, _ in kept]
      self._index = {w: i + 1 for i, w in enumerate(self.vocabulary)}
      df = np.zeros(len(kept) + 1, np.int64)
      df[1:] = [c for _, c in kept]
    else:
      df = np.zeros(cfg.num_buckets + 1, np.int64)
      for distinct in doc_sets:  # Documents per bucket (colliding words count once).
        df[list(self._ids(distinct))] += 1
    self.document_frequency = df
    if self.max_tokens is None:  # No truncation on train.
      self.max_tokens = max((len(self._ids(d)) for d in doc_sets), default=1) or 1
    return self

  @property
  def idf(self) -> np.ndarray:
    self._check_fitted()
    df = self.document_frequency.astype(np.float64)
    n = float(self.num_documents)
    with np.errstate(divide="ignore"):
      if self.config.smooth_idf:
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
      else:
        idf = np.where(df > 0, np.log(n / np.maximum(df, 1)) + 1.0, 0.0)
    idf[PAD_TOKEN_ID] = 0.0
    return idf.astype(np.float32)

  # Transforming.

  def _ids(self, tokens: Sequence[str]) -> collections.Counter:
    if self.config.vocab == "hashing":
      n = self.config.num_buckets
      return collections.Counter(hash_token(t, n) for t in tokens)
    index = self._index
    return collections.Counter(index[t] for t in tokens if t in index)

  def transform(self, docs: Iterable[Document]):
    """Documents to padded bags.

    Returns:
      ``(token_ids, token_weights, num_dropped)``: int32 ``[N, T]`` padded with
      ``PAD_TOKEN_ID``, float32 ``[N, T]`` with 0 on padding, and int32 ``[N]`` distinct
      tokens dropped because a document had more than T.
    """
    self._check_fitted()
    cfg, t_max = self.config, self.max_tokens
    idf = self.idf.astype(np.float64)
    docs = list(docs)
    ids = np.full((len(docs), t_max), PAD_TOKEN_ID, np.int32)
    weights = np.zeros((len(docs), t_max), np.float32)
    dropped = np.zeros(len(docs), np.int32)
    for n, doc in enumerate(docs):
      counts = self._ids(self.tokens(doc))
      if not counts:
        continue
      tok = np.fromiter(counts.keys(), np.int64, len(counts))
      cnt = np.fromiter(counts.values(), np.float64, len(counts))
      if cfg.weighting == "tfidf":
        tf = 1.0 + np.log(cnt) if cfg.sublinear_tf else cnt
        w = tf * idf[tok]
      elif cfg.weighting == "log_count":
        w = np.log1p(cnt)
      elif cfg.weighting == "count":
        w = cnt
      else:
        w = np.ones_like(cnt)
      order = np.lexsort((tok, -w))[:t_max]  # Highest weight first, ties: lower id.
      dropped[n] = len(tok) - len(order)
      tok, w = tok[order], w[order]
      if cfg.norm == "l2":
        norm = math.sqrt(float(np.dot(w, w)))
        w = w / norm if norm > 0 else w
      ids[n, :len(tok)] = tok
      weights[n, :len(tok)] = w
    return ids, weights, dropped

  def fit_transform(self, docs: Sequence[Document]):
    return self.fit(docs).transform(docs)

  def input_specs(self, prefix: str = "token") -> dict:
    """``{"token_ids": InputSpec((T,), "int32"), "token_weights": InputSpec((T,), "float32")}``."""
    self._check_fitted()
    return {f"{prefix}_ids": base.InputSpec((self.max_tokens,), "int32"),
            f"{prefix}_weights": base.InputSpec((self.max_tokens,), "float32")}

  def _check_fitted(self):
    if not self.fitted:
      raise ValueError("TextFeaturizer is not fitted: call fit() on the training documents "
                       "or load() a saved one.")

  # Saving.

  def to_json(self) -> dict:
    self._check_fitted()
    state = {"format": _FORMAT, "config": dataclasses.asdict(self.config),
             "num_documents": self.num_documents, "max_tokens": self.max_tokens}
    if self.config.vocab == "learned":
      state["vocabulary"] = self.vocabulary
      state["document_frequency"] = self.document_frequency[1:].tolist()
    else:  # Sparse: [bucket, df] pairs.
      nz = np.flatnonzero(self.document_frequency)
      state["document_frequency"] = [[int(i), int(self.document_frequency[i])] for i in nz]
    return state

  @classmethod
  def from_json(cls, state: dict) -> "TextFeaturizer":
    if state.get("format") != _FORMAT:
      raise ValueError(f"Not a saved TextFeaturizer (format {state.get('format')!r}, "
                       f"expected {_FORMAT!r}).")
    f = cls(TextConfig(**state["config"]))
    f.num_documents = int(state["num_documents"])
    f.max_tokens = int(state["max_tokens"])
    if f.config.vocab == "learned":
      f.vocabulary = list(state["vocabulary"])
      f._index = {w: i + 1 for i, w in enumerate(f.vocabulary)}
      f.document_frequency = np.asarray([0] + list(state["document_frequency"]), np.int64)
    else:
      df = np.zeros(f.config.num_buckets + 1, np.int64)
      for i, c in state["document_frequency"]:
        df[i] = c
      f.document_frequency = df
    return f

  def save(self, path) -> None:
    pathlib.Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

  @classmethod
  def load(cls, path) -> "TextFeaturizer":
    return cls.from_json(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
