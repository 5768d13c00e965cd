"""hashtag_world: a simulated hashtag dataset whose Bayes-optimal marginals are known exactly.

A deterministic :class:`~multilabel_jax.data.base.Source` standing in for Instagram hashtag
pretraining (Mahajan et al. 2018, "Exploring the Limits of Weakly Supervised Pretraining"):
Zipf-distributed hashtags, synonyms that the input cannot tell apart (the ambiguity that
Average-K classification addresses), topical co-occurrence, a varying number of tags per
example, and missing training labels. Example ``i`` of a split is a pure function of
``(seed, split, i)`` (counter-based hashing, ``base.uniform``/``base.normal``): nothing per
example is stored, random access costs O(batch) and any process can read any shard.

Generative model (C classes, group size s, K topics, D feature dimensions)
---------------------------------------------------------------------------
Structure (a function of ``seed`` only, O(C) memory):

* Class ``c`` has Zipf weight ``w_c = (c + 1)^-zipf_exponent / H`` (class id = frequency rank).
* Synonym groups: ``group(c) = c // s``, i.e. ``s`` adjacent ranks of similar frequency; the
  group weight is ``W_g = sum_{c in g} w_c`` and ``h_c = w_c / W_g``.
* Topics: the G groups are dealt to K topics by a seeded permutation (balanced sizes);
  ``pi_t = sum of W_g over the topic``. Within its topic a group has a *slot* ``j(g)`` (its
  rank there), so a group is the pair ``(t(g), j(g))``.
* Codes: topic codes ``u_t ~ N(0, I/D1)`` in ``R^D1`` and slot codes ``v_j ~ N(0, I/D2)`` in
  ``R^D2`` (``D1 = D // 2``, ``D2 = D - D1``, slot codes shared by all topics), and a fixed
  random rotation ``Q`` of ``R^D``.

Per example:

1. Visible mention: ``c0 ~ w``; its group ``g = group(c0)`` and topic ``t = t(g)``.
2. Latent ``x = [u_t ; v_j(g)] + noise * N(0, I_D)``; ``features = Q x`` (float32 ``[D]``).
   Synonyms share ``g``, hence their features have the same distribution.
   Optional ``image`` (``[S, S, 3]``): ``0.5 + kappa * B x + image_noise * (I - B B^T) n``, with
   B orthonormal smooth columns (low-frequency 2-D DCT atoms, randomly mixed), so
   ``B^T (image - 0.5) / kappa = x`` exactly: the image carries the same information.
3. Context mentions: ``max_context`` slots, each active with probability
   ``context_rate / max_context`` and then picking ``c ~ w`` restricted to topic ``t``.
4. Clean labels ``y`` = the set of mentioned classes (``1 + max_context`` at most, so
   ``max_labels = 1 + max_context`` and nothing is ever truncated). Training labels keep each
   tag of ``y`` independently with probability ``observe_prob`` (missing-label noise, so a
   training row may be empty); validation/test labels are clean.

Exact oracle
------------
The posterior of the visible group is a finite mixture,
``P(g | x) propto W_g exp((x1.u_t(g) - |u_t(g)|^2/2 + x2.v_j(g) - |v_j(g)|^2/2) / noise^2)``,
computed in O(K D1 + M D2 + G) per example; ``P(t | x)`` sums it over the topic's groups.
With ``rho_c = (context_rate / max_context) w_c / pi_t(c)`` and ``e_c = (1 - rho_c)^max_context``
(the chance that no context slot picks c given its topic),

    P(y_c = 1 | x) = P(t(c) | x) (1 - e_c) + P(group(c) | x) h_c e_c,

and ``observe_prob`` times that for observed training labels. The same formula with the prior
(``P(t) = pi_t``, ``P(g) = W_g``) gives the expected label frequencies
``f_c = pi_t(c) (1 - e_c) + w_c e_c``; the expected number of tags per example is
``sum_c f_c``. Mention counts follow Zipf exactly (``E[#mentions of c] = (1 + context_rate) w_c``);
set frequencies ``f_c`` bend slightly below it for the head classes (repeat mentions count once).

``info.train_label_counts`` holds the **expected** observed counts
``round(observe_prob * f_c * N)`` with ``N = num_train`` or, for the unbounded stream,
``nominal_train_size``. The pipeline's ``LabelStats`` counts real samples instead.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from multilabel_jax.data import base

SPLITS = {"train": 0, "validation": 1, "test": 2}
# Independent random streams of one example.
_VISIBLE, _NOISE, _ACTIVE, _CONTEXT, _OBSERVE, _IMAGE = range(6)
_STRUCTURE = 7  # Key of the seeded structure (weights, topics, codes).
MAX_DENSE_CLASSES = 100_000


def _dct_basis(size: int, dim: int) -> np.ndarray:
  """``[size * size * 3, dim]`` orthonormal low-frequency 2-D DCT-II atoms, one channel each."""
  if dim > 3 * size * size:
    raise ValueError(f"`dim`={dim} exceeds the {3 * size * size} pixels of a "
                     f"{size}x{size}x3 image.")
  x = np.arange(size)
  freqs = sorted(((p, q) for p in range(size) for q in range(size)), key=lambda f: (sum(f), f))
  atoms = []
  for p, q in freqs:
    cp = np.cos(np.pi * (2 * x + 1) * p / (2 * size)) * math.sqrt((1 if p == 0 else 2) / size)
    cq = np.cos(np.pi * (2 * x + 1) * q / (2 * size)) * math.sqrt((1 if q == 0 else 2) / size)
    for ch in range(3):
      atom = np.zeros((size, size, 3))
      atom[:, :, ch] = np.outer(cp, cq)
      atoms.append(atom.reshape(-1))
      if len(atoms) == dim:
        return np.stack(atoms, axis=1)
  raise AssertionError("unreachable")


class HashtagWorld:
  """The simulator; see the module docstring for the model.

  Args:
    num_classes: C hashtags (tested up to 1M).
    zipf_exponent: exponent of the class weights ``(c + 1)^-zipf_exponent``.
    group_size: s, synonyms per group (1: no synonyms). Larger groups, more ambiguity.
    num_topics: K; default ``round(sqrt(number of groups))``.
    dim: D, feature dimension (even, >= 2).
    noise: per-dimension std of the latent noise (codes have unit expected norm); the knob
      for how well the group can be recovered from the input.
    context_rate: expected number of context mentions (before de-duplication).
    max_context: context slots; ``max_labels = 1 + max_context``.
    observe_prob: probability that a true tag appears in a *training* label set.
    num_train: size of the training split, or None for an unbounded stream.
    num_validation, num_test: sizes of the clean evaluation splits.
    image_size: if set, ``read`` also returns ``image`` float32 ``[S, S, 3]``.
    image_noise: std of the image noise orthogonal to the latent (texture; no information).
    nominal_train_size: N for the expected ``train_label_counts`` of an unbounded stream.
    seed: everything is a pure function of it.
  """

  # Dense oracle marginals ([B, C] on the host) up to this many classes; above, top_k only.
  max_dense_marginal_classes = MAX_DENSE_CLASSES

  def __init__(self, num_classes: int = 20_000, *, zipf_exponent: float = 1.0,
               group_size: int = 2, num_topics: Optional[int] = None, dim: int = 128,
               noise: float = 0.2, context_rate: float = 2.0, max_context: int = 8,
               observe_prob: float = 0.7, num_train: Optional[int] = None,
               num_validation: int = 10_000, num_test: int = 10_000,
               image_size: Optional[int] = None, image_noise: float = 0.05,
               nominal_train_size: int = 1_000_000, seed: int = 0):
    if num_classes < 2:
      raise ValueError(f"`num_classes` must be >= 2, got {num_classes}.")
    if not 1 <= group_size <= num_classes:
      raise ValueError(f"`group_size` must be in [1, num_classes], got {group_size}.")
    if dim < 2:
      raise ValueError(f"`dim` must be >= 2, got {dim}.")
    if noise <= 0:
      raise ValueError(f"`noise` must be positive, got {noise}.")
    if max_context < 0 or not 0 <= context_rate <= max_context:
      raise ValueError(f"Need 0 <= context_rate <= max_context, got {context_rate}, {max_context}.")
    if not 0 < observe_prob <= 1:
      raise ValueError(f"`observe_prob` must be in (0, 1], got {observe_prob}.")
    self.num_classes, self.group_size, self.dim = num_classes, group_size, dim
    self.noise, self.context_rate, self.max_context = noise, context_rate, max_context
    self.observe_prob, self.seed = observe_prob, seed
    self.zipf_exponent = zipf_exponent
    self._sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    c = num_classes
    ranks = np.arange(c, dtype=np.float64)
    w = (ranks + 1) ** -zipf_exponent
    self.class_weights = w / w.sum()                              # w_c, [C]
    self.group_of_class = (np.arange(c) // group_size).astype(np.int32)
    g = int(self.group_of_class[-1]) + 1
    self.num_groups = g
    self.group_weights = np.bincount(self.group_of_class, self.class_weights, g)  # W_g
    k = num_topics or max(1, round(math.sqrt(g)))
    if not 1 <= k <= g:
      raise ValueError(f"`num_topics` must be in [1, {g}] (the number of groups), got {k}.")
    self.num_topics = k
    rng = np.random.default_rng([seed, _STRUCTURE])
    topic = np.empty(g, np.int32)
    topic[rng.permutation(g)] = np.arange(g) % k
    self.topic_of_group = topic
    # Groups sorted by (topic, id): each topic is a contiguous run; slot = rank in the run.
    self._group_order = np.lexsort((np.arange(g), topic))
    counts = np.bincount(topic, minlength=k)
    self._topic_group_start = np.concatenate([[0], np.cumsum(counts)])
    self._group_rank = np.argsort(self._group_order)              # Inverse permutation.
    self._class_pos = self._group_rank[self.group_of_class]       # Class -> its group's rank.
    slot = np.empty(g, np.int32)
    slot[self._group_order] = np.arange(g) - self._topic_group_start[topic[self._group_order]]
    self.slot_of_group = slot
    self.num_slots = int(counts.max())
    self.topic_of_class = topic[self.group_of_class]
    self.topic_weights = np.bincount(self.topic_of_class, self.class_weights, k)  # pi_t
    self.synonym_share = self.class_weights / self.group_weights[self.group_of_class]  # h_c
    rho = (context_rate / max(max_context, 1)) * self.class_weights / self.topic_weights[
        self.topic_of_class]
    self._no_context = (1 - rho) ** max_context                   # e_c
    self._cdf = np.cumsum(self.class_weights)
    # Classes sorted by topic, for context draws restricted to a topic.
    self._class_order = np.lexsort((np.arange(c), self.topic_of_class)).astype(np.int32)
    self._topic_cdf = np.concatenate([[0.], np.cumsum(self.class_weights[self._class_order])])
    self._topic_class_start = np.concatenate(
        [[0], np.cumsum(np.bincount(self.topic_of_class, minlength=k))])
    d1 = dim // 2
    self._d1 = d1
    self.topic_codes = rng.normal(size=(k, d1)) / math.sqrt(d1)            # u, [K, D1]
    self.slot_codes = rng.normal(size=(self.num_slots, dim - d1)) / math.sqrt(dim - d1)  # v
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    self.rotation = q * np.sign(np.diag(r))                       # Q, [D, D]
    self.image_size, self.image_noise = image_size, image_noise
    inputs = {"features": base.InputSpec((dim,), "float32")}
    if image_size:
      mix, r2 = np.linalg.qr(rng.normal(size=(dim, dim)))
      self.image_basis = _dct_basis(image_size, dim) @ (mix * np.sign(np.diag(r2)))  # B
      typical = math.sqrt((2 + dim * noise**2) / (3 * image_size**2))
      self.image_scale = 0.15 / typical                           # kappa: pixel std ~0.15
      inputs["image"] = base.InputSpec((image_size, image_size, 3), "float32")
    nominal = num_train if num_train is not None else nominal_train_size
    counts = np.round(self.expected_label_frequencies("train") * nominal).astype(np.int64)
    self.info = base.DatasetInfo(
        name="hashtag_world", num_classes=c, max_labels=1 + max_context, inputs=inputs,
        train_label_counts=counts, num_train_examples=num_train)

  # ---------------------------------------------------------------------------- Source API.

  def num_examples(self, split: str) -> Optional[int]:
    self._split_id(split)
    return self._sizes[split]

  def read(self, split: str, indices) -> dict:
    """``features`` float32 ``[B, D]`` (+ ``image`` ``[B, S, S, 3]``), ``label_ids`` int32
    ``[B, 1 + max_context]`` -1 padded."""
    idx, sid = self._check(split, indices)
    lat = self._latent(sid, idx)
    x = self._latent_vector(sid, idx, lat)
    out = {"features": (x @ self.rotation.T).astype(np.float32)}
    if self.image_size:
      out["image"] = self._image(sid, idx, x)
    out["label_ids"] = self._labels(split, sid, idx, lat["topic"], lat["visible_class"])
    return out

  def read_labels(self, split: str, indices) -> np.ndarray:
    """``label_ids`` alone, without building inputs (fast path for label statistics)."""
    idx, sid = self._check(split, indices)
    lat = self._latent(sid, idx)
    return self._labels(split, sid, idx, lat["topic"], lat["visible_class"])

  # ------------------------------------------------------------------------------- Oracle.

  def latent(self, split: str, indices) -> dict:
    """The hidden variables: ``visible_class``, ``group``, ``topic``, ``slot`` (int ``[B]``)."""
    idx, sid = self._check(split, indices)
    return self._latent(sid, idx)

  def expected_label_frequencies(self, split: str = "validation") -> np.ndarray:
    """float64 ``[C]``: P(c in the label set) of a random example; for ``"train"`` the observed
    (after missing-label noise) frequency. Sums to the expected number of labels per row."""
    f = self.topic_weights[self.topic_of_class] * (1 - self._no_context) + (
        self.class_weights * self._no_context)
    return f * (self.observe_prob if split == "train" else 1.0)

  def oracle_marginals(self, split: str, indices, *, top_k: Optional[int] = None,
                       observed: bool = False):
    """Bayes-optimal ``P(y_c = 1 | x)`` of examples ``indices`` (exact latent, no rounding).

    Args:
      split, indices: which examples.
      top_k: None for dense float32 ``[B, C]`` (C <= 100,000), else
        ``(ids int32 [B, k], probs float32 [B, k])`` sorted by decreasing probability.
      observed: marginals of the *observed* training labels (times ``observe_prob``).
    """
    idx, sid = self._check(split, indices)
    x = self._latent_vector(sid, idx, self._latent(sid, idx))
    return self._marginals(x, top_k=top_k, observed=observed)

  def oracle_marginals_from_inputs(self, inputs: dict, *, top_k: Optional[int] = None,
                                   observed: bool = False):
    """Like :meth:`oracle_marginals` from a batch's ``features`` (or ``image``), e.g. after
    the pipeline; exact up to float32 rounding of the inputs."""
    if "features" in inputs:
      x = np.asarray(inputs["features"], np.float64) @ self.rotation
    else:
      img = np.asarray(inputs["image"], np.float64).reshape(len(inputs["image"]), -1)
      x = (img - 0.5) @ self.image_basis / self.image_scale
    return self._marginals(x, top_k=top_k, observed=observed)

  def oracle_marginals_at(self, split: str, indices, class_ids, *,
                          observed: bool = False) -> np.ndarray:
    """float32 ``[B, L]``: ``P(y_c = 1 | x)`` at padded ``class_ids`` ``[B, L]`` (0 at -1)."""
    idx, sid = self._check(split, indices)
    class_ids = np.asarray(class_ids)
    x = self._latent_vector(sid, idx, self._latent(sid, idx))
    pg, pt = self._posteriors(x, by_topic=True)
    safe = np.maximum(class_ids, 0)
    rows = np.arange(len(idx))[:, None]
    m = self._combine(pt[rows, self.topic_of_class[safe]], pg[rows, self._class_pos[safe]], safe)
    m = np.where(class_ids >= 0, m, 0.0)
    return (m * (self.observe_prob if observed else 1.0)).astype(np.float32)

  # ---------------------------------------------------------------------------- Internals.

  def _split_id(self, split: str) -> int:
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; hashtag_world has {sorted(SPLITS)}.")
    return SPLITS[split]

  def _check(self, split, indices):
    sid = self._split_id(split)
    idx = np.asarray(indices, np.int64).reshape(-1)
    n = self._sizes[split]
    if idx.size and (idx.min() < 0 or (n is not None and idx.max() >= n)):
      raise IndexError(f"Indices of split {split!r} must be in [0, {n}), got "
                       f"[{idx.min()}, {idx.max()}].")
    return idx, sid

  def _latent(self, sid, idx) -> dict:
    u = base.uniform(self.seed, sid, idx, _VISIBLE)
    c0 = np.minimum(np.searchsorted(self._cdf, u * self._cdf[-1], side="right"),
                    self.num_classes - 1)
    group = self.group_of_class[c0]
    return {"visible_class": c0.astype(np.int32), "group": group,
            "topic": self.topic_of_group[group], "slot": self.slot_of_group[group]}

  def _latent_vector(self, sid, idx, lat) -> np.ndarray:
    """x, float64 ``[B, D]``."""
    mean = np.concatenate([self.topic_codes[lat["topic"]], self.slot_codes[lat["slot"]]], 1)
    eps = base.normal(self.seed, sid, idx[:, None], _NOISE, np.arange(self.dim))
    return mean + self.noise * eps

  def _image(self, sid, idx, x) -> np.ndarray:
    s, basis = self.image_size, self.image_basis
    n = base.normal(self.seed, sid, idx[:, None], _IMAGE, np.arange(basis.shape[0]))
    perp = n - (n @ basis) @ basis.T
    img = 0.5 + self.image_scale * (x @ basis.T) + self.image_noise * perp
    return img.reshape(len(idx), s, s, 3).astype(np.float32)

  def _labels(self, split, sid, idx, topic, c0) -> np.ndarray:
    b, n = len(idx), self.max_context
    active = base.uniform(self.seed, sid, idx[:, None], _ACTIVE, np.arange(n)) < (
        self.context_rate / max(n, 1))
    u = base.uniform(self.seed, sid, idx[:, None], _CONTEXT, np.arange(n))
    lo = self._topic_class_start[topic][:, None]
    hi = self._topic_class_start[topic + 1][:, None]
    target = self._topic_cdf[lo] + u * (self._topic_cdf[hi] - self._topic_cdf[lo])
    pos = np.clip(np.searchsorted(self._topic_cdf, target, side="right") - 1, lo, hi - 1)
    context = np.where(active, self._class_order[pos], -1)
    ids = np.concatenate([c0[:, None], context], axis=1).astype(np.int32)
    # A repeated mention counts once: keep the first occurrence.
    earlier = np.tril(np.ones((n + 1, n + 1), bool), -1)
    dup = ((ids[:, :, None] == ids[:, None, :]) & earlier).any(-1)
    ids[dup] = -1
    if split == "train" and self.observe_prob < 1:
      keep = base.uniform(self.seed, sid, idx[:, None], _OBSERVE, ids) < self.observe_prob
      ids[~keep] = -1
    order = np.argsort(ids < 0, axis=1, kind="stable")             # Compact to the left.
    return np.take_along_axis(ids, order, axis=1).reshape(b, n + 1)

  def _posteriors(self, x, by_topic: bool = False):
    """``P(g | x)`` float64 ``[B, G]`` and ``P(t | x)`` ``[B, K]``; with ``by_topic`` the
    groups are in ``_group_order`` (index them with ``_class_pos``), saving a gather.

    The likelihood factorises over (topic, slot): ``P(g | x) propto W_g A_t(g) S_j(g)``, so the
    exponentials are taken over K + M values, not G.
    """
    x1, x2 = x[:, :self._d1], x[:, self._d1:]
    u, v, var = self.topic_codes, self.slot_codes, self.noise**2
    a = (x1 @ u.T - 0.5 * np.sum(u * u, 1)) / var
    b = (x2 @ v.T - 0.5 * np.sum(v * v, 1)) / var
    # Every topic has (nearly) every slot, so the best group is within ~log(W) of
    # max(a) + max(b): no underflow of the groups that matter.
    ea = np.exp(a - a.max(axis=1, keepdims=True))
    eb = np.exp(b - b.max(axis=1, keepdims=True))
    order = self._group_order                                       # Groups by topic.
    pg = self.group_weights[order] * ea[:, self.topic_of_group[order]]
    pg *= eb[:, self.slot_of_group[order]]
    pt = np.add.reduceat(pg, self._topic_group_start[:-1], axis=1)
    z = pt.sum(axis=1, keepdims=True)
    pt /= z
    pg /= z
    return (pg if by_topic else pg[:, self._group_rank]), pt

  def _combine(self, pt_c, pg_c, c):
    e = self._no_context[c]
    return pt_c * (1 - e) + pg_c * self.synonym_share[c] * e

  def _marginals(self, x, *, top_k, observed):
    c = self.num_classes
    if top_k is None and c > MAX_DENSE_CLASSES:
      raise ValueError(f"Dense marginals of {c} classes are too large; pass top_k or use "
                       "oracle_marginals_at.")
    if top_k is not None and not 1 <= top_k <= c:
      raise ValueError(f"`top_k` must be in [1, {c}], got {top_k}.")
    scale = self.observe_prob if observed else 1.0
    chunk = max(1, (1 << 22) // c)
    dense, ids, probs = [], [], []
    for s in range(0, len(x), chunk):
      pg, pt = self._posteriors(x[s:s + chunk], by_topic=True)
      m = self._combine(pt[:, self.topic_of_class], pg[:, self._class_pos], np.arange(c))
      m *= scale
      if top_k is None:
        dense.append(m.astype(np.float32))
        continue
      top = np.argpartition(-m, top_k - 1, axis=1)[:, :top_k] if top_k < c else (
          np.broadcast_to(np.arange(c), m.shape))
      val = np.take_along_axis(m, top, 1)
      order = np.argsort(-val, axis=1, kind="stable")
      ids.append(np.take_along_axis(top, order, 1).astype(np.int32))
      probs.append(np.take_along_axis(val, order, 1).astype(np.float32))
    if top_k is None:
      return np.concatenate(dense) if dense else np.zeros((0, c), np.float32)
    if not ids:
      return np.zeros((0, top_k), np.int32), np.zeros((0, top_k), np.float32)
    return np.concatenate(ids), np.concatenate(probs)
