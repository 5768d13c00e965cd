"""PMI label embeddings with a cosine loss (after Chollet 2016, "Information-theoretical label
embeddings for large-scale image classification", arXiv:1607.05691).

The network regresses a d-dimensional vector instead of C logits. Targets are the normalised
sum of the example's label embeddings; decoding ranks classes by cosine similarity,
``normalize(pred) @ E.T`` (:func:`embedding_scores`): nearest label embeddings first.

The paper's construction and why it is not used as is
------------------------------------------------------
Chollet builds the PMI matrix of label co-occurrence, ``PMI_ij = log(P(i, j) / (P(i) P(j)))``
with the diagonal ``PMI_ii = log(1 / P(i))``, and takes ``E = U sqrt(S)`` from its SVD,
truncated to d. With d much smaller than the number of labels that behave independently this
fails on Zipf-distributed tags. On the main job's setting (hashtag_world, 20,000 classes, the
first 20,000 training examples, 8,455 labels seen, d = 128) it gives 1,579 seen labels a zero
vector and 5,614 a vector identical to another label's: 775 of the 1,000 most frequent labels,
and all 10 of the 10 most frequent, are degenerate, 88% of the training label occurrences. Two
things cause it:

* PMI is largest for the rarest labels (the diagonal ``log(N / n_i)``, and ``log(N / 4)`` for
  two labels seen once, together), so the top singular directions go to rare labels, and the
  frequent labels fall out of the rank-d subspace. Zeroing the diagonal does not help (769 of
  the top 1,000 are still degenerate): the rare off-diagonal pairs have the largest PMI too.
* Labels that co-occur form clusters (topics). A rank-d factorisation has about one
  direction per cluster, so every label of a cluster gets the same normalised vector.
  No rank-d factorisation of co-occurrence can keep thousands of labels apart in d = 128.

A further wrinkle: the PMI matrix is indefinite, and an SVD reports a negative eigenvalue as
a positive singular value with ``V = -U``; ``U sqrt(S)`` then treats an anti-correlated
direction as a similarity.

The construction here
---------------------
Every label seen in training gets a unit vector ``e_i = normalize(a s_i + b r_i)``, with
``a^2 = spectral_share`` (default 0.5) and ``b^2 = 1 - a^2``:

* ``s_i``, the **co-occurrence part**: the top-d positive eigenpairs of the
  frequency-weighted PMI, ``W^1/2 M W^1/2 = V L V^T`` with ``W = diag(n_i)`` (training counts)
  and ``M`` the (P)PMI without its diagonal, then ``s_i = normalize(W^-1/2 V L^1/2)_i`` (the
  paper's ``U sqrt(S)``, reweighted). This is the rank-d PSD matrix ``S S^T`` that minimises
  ``sum_ij n_i n_j (M_ij - s_i . s_j)^2`` (Eckart-Young with rank-one weights): errors on
  frequent pairs cost most, so the frequent labels own the subspace. A symmetric
  eigendecomposition has no U/V sign flips; negative eigenvalues (anti-similarity) are
  dropped. Labels outside the subspace have ``s_i = 0``.
* ``r_i``, the **label-specific part**, which takes over the diagonal's role (each label is
  most similar to itself): ``r = normalize((T + eps I) G)`` with ``G`` a seeded Gaussian
  ``[C, d]`` code book, ``eps = 0.1`` and ``T_ij = n_ij^2 / (n_i n_j) = P(i | j) P(j | i)``
  (1 on the diagonal, and between two labels that always appear together). Random codes in
  d dimensions are nearly orthogonal (cosine about ``1 / sqrt(d)``), so thousands of labels
  stay apart; labels that imply each other share codes. ``eps`` keeps labels with identical
  training columns (always together, never apart) distinct: their cosine is about 0.995,
  so they are each other's nearest neighbours.

So labels of one cluster are at cosine about ``a^2`` (0.5) from each other, labels with
nothing in common at about 0, and labels that always co-occur at about 1. Measured on the main
setting (quality on the 2,000 clean validation examples):

================================  =====  ========  ========  =======  =======  ======
construction                       zero  dup       top-1000  share    topic    set
                                         (labels)  degen.    degen.   AUC      prec.
================================  =====  ========  ========  =======  =======  ======
paper: PMI + diagonal, SVD        1,579  5,614     775       0.88     0.66     0.14
PPMI, no diagonal, eigsh          1,511  5,679     769       0.88     0.70     0.14
frequency-weighted eigsh only     1,777  4,986     595       0.70     0.99     0.18
random codes only                 0      0         0         0        0.53     0.998
this module (share 0.5)           0      0         0         0        0.99     0.93
================================  =====  ========  ========  =======  =======  ======

"topic AUC": how well cosine separates label pairs of one hashtag_world topic from pairs of
different topics (pairs of the 3,000 most frequent labels, weighted by ``n_i n_j``); "set
prec.": precision at ``|y|`` of decoding the normalised target ``sum_{c in y} e_c`` itself, the
ceiling of the objective. The 1,449 labels (4% of the occurrences) whose training columns are
identical to another label's are at cosine 0.99 from it: the data cannot tell them apart.
Building takes about 1 s on a quiet 2-core CPU (the 128 eigenpairs; the old sparse SVD took
12-24 s) and never forms a dense ``[C, C]`` above 2,048 seen labels.

Labels that never appear in the training labels have no statistics and keep the zero vector
(not normalisable): they score exactly 0 against every prediction and cannot be targets.
:func:`embedding_diagnostics` counts zero and duplicate vectors for the run report.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common

_DENSE_EIG_MAX_LABELS = 2048
_OWN_CODE_EPS = 0.1  # Tie-break of labels with identical training columns.


def _label_matrix(label_ids, num_classes: int) -> scipy.sparse.csr_matrix:
  """Binary sparse ``[N, C]`` matrix (duplicates once) from ids or dense labels."""
  labels = np.asarray(label_ids)
  if labels.ndim != 2:
    raise ValueError(f"`label_ids` must have rank 2, got shape {labels.shape}.")
  if np.issubdtype(labels.dtype, np.integer):
    labels_lib.validate_ids(labels, num_classes)
    rows, cols = np.nonzero(labels >= 0)
    cols = labels[rows, cols]
  else:
    if labels.shape[1] != num_classes:
      raise ValueError(f"`label_ids` (dense) has {labels.shape[1]} classes, expected "
                       f"{num_classes}.")
    rows, cols = np.nonzero(labels > 0)
  data = np.ones(len(rows), np.float64)
  y = scipy.sparse.csr_matrix((data, (rows, cols)), shape=(labels.shape[0], num_classes))
  y.sum_duplicates()
  y.data[:] = 1.0
  return y


def _pmi_from_counts(cooc: scipy.sparse.coo_matrix, counts: np.ndarray, n: int, *,
                     smoothing: float, positive: bool, diagonal: bool) -> scipy.sparse.csr_matrix:
  marg = counts + smoothing
  keep = slice(None) if diagonal else cooc.row != cooc.col
  row, col, data = cooc.row[keep], cooc.col[keep], cooc.data[keep]
  pmi = np.log(data * n / (marg[row] * marg[col]))
  if positive:
    pmi = np.maximum(pmi, 0.0)
  m = scipy.sparse.csr_matrix((pmi, (row, col)), shape=cooc.shape)
  m.eliminate_zeros()
  return m


def pmi_matrix(label_ids, num_classes: int, *, smoothing: float = 1.0, positive: bool = True,
               diagonal: bool = True) -> scipy.sparse.csr_matrix:
  """Sparse PMI matrix ``[C, C]`` of label co-occurrence (Chollet 2016).

  ``PMI_ij = log(n_ij * N / ((n_i + s) (n_j + s)))`` over pairs with ``n_ij > 0``, with the
  diagonal ``n_ii = n_i`` (``diagonal=False`` leaves it out); absent pairs are 0, and
  ``positive=True`` clips at 0 (PPMI).
  """
  if smoothing < 0:
    raise ValueError(f"`smoothing` must be >= 0, got {smoothing}.")
  y = _label_matrix(label_ids, num_classes)
  counts = np.asarray(y.sum(axis=0)).ravel()
  return _pmi_from_counts((y.T @ y).tocoo(), counts, max(y.shape[0], 1), smoothing=smoothing,
                          positive=positive, diagonal=diagonal)


def _normalize_rows(x: np.ndarray, rtol: float = 1e-8) -> np.ndarray:
  """Unit rows; rows below ``rtol`` times the largest norm (rounding noise) become 0."""
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  ok = norm > rtol * max(float(norm.max(initial=0.0)), 1e-300)
  return np.where(ok, x / np.where(ok, norm, 1.0), 0.0)


def _top_positive_eigs(a: scipy.sparse.csr_matrix, k: int, method: str,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Largest ``k`` eigenpairs of symmetric ``a``, keeping eigenvalues > 0; sign-fixed."""
  n = a.shape[0]
  if method == "dense" or k >= n - 1:
    lam, u = np.linalg.eigh(a.toarray())
    lam, u = lam[::-1][:k], u[:, ::-1][:, :k]
  else:
    v0 = np.random.default_rng(seed).standard_normal(n)
    lam, u = scipy.sparse.linalg.eigsh(a, k=k, which="LA", v0=v0)
    order = np.argsort(-lam)
    lam, u = lam[order], u[:, order]
  pos = lam > 1e-10 * max(float(np.abs(lam).max(initial=0.0)), 1e-300)
  lam, u = lam[pos], u[:, pos]
  # Deterministic signs (largest-magnitude entry positive): the same vectors from either solver.
  sign = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
  return lam, u * np.where(sign == 0, 1.0, sign)


def pmi_label_embeddings(label_ids, num_classes: int, dim: int, *, smoothing: float = 1.0,
                         positive: bool = True, method: str = "auto", seed: int = 0,
                         spectral_share: float = 0.5) -> np.ndarray:
  """Unit label embeddings: frequency-weighted PMI eigenvectors plus label-specific codes.

  The construction and its measurements are in the module docstring: ``e_i = normalize(a s_i
  + b r_i)``, ``a^2 = spectral_share``, with ``s_i`` from the top-``dim`` positive eigenpairs
  of ``W^1/2 M W^1/2`` (``M`` the PMI without diagonal, ``W`` the label counts; the paper's
  ``E = U sqrt(S)``, reweighted so that frequent labels own the subspace) and ``r_i`` a
  seeded random code shared between labels in proportion to ``P(i | j) P(j | i)``. Runs on
  the host (numpy/scipy) once, before training, over the labels seen in training only.
  ``method="auto"`` uses an exact dense ``eigh`` up to 2048 seen labels and ARPACK ``eigsh``
  on the sparse matrix (deterministic start vector) beyond; ``"dense"`` or ``"arpack"``
  force one (ARPACK needs ``dim`` below the number of seen labels, else dense is used).

  Args:
    label_ids: training labels, ids ``[N, L]`` (-1 padded) or dense ``[N, C]``.
    num_classes: C.
    dim: embedding dimension d, ``1 <= d <= C``.
    smoothing: pseudo-count added to each label's count in the PMI marginals.
    positive: clip PMI at 0 (PPMI).
    method: "auto", "dense" or "arpack".
    seed: seeds the code book ``G`` and the ARPACK start vector.
    spectral_share: ``a^2`` in [0, 1], the squared share of each vector given to the
      co-occurrence part. 0: label codes only; 1: the weighted eigenvectors only (labels
      outside the rank-d subspace are then zero, as in the paper's construction).

  Returns:
    float32 ``[C, dim]`` with L2-normalised rows for the labels seen in training and all-zero
    rows for labels never seen (they cannot be targets).

  Example:
    >>> E = pmi_label_embeddings(np.array([[0, 1], [1, 2], [0, -1]]), 4, 2)
    >>> E.shape, bool(np.all(E[3] == 0))
    ((4, 2), True)
  """
  if not 1 <= dim <= num_classes:
    raise ValueError(f"`dim` must be in [1, num_classes={num_classes}], got {dim}.")
  if method not in ("auto", "dense", "arpack"):
    raise ValueError(f"`method` must be 'auto', 'dense' or 'arpack', got {method!r}.")
  if method == "arpack" and dim >= num_classes:
    raise ValueError(f"method='arpack' needs dim < num_classes, got dim={dim}.")
  if not 0.0 <= spectral_share <= 1.0:
    raise ValueError(f"`spectral_share` must be in [0, 1], got {spectral_share}.")
  if smoothing < 0:
    raise ValueError(f"`smoothing` must be >= 0, got {smoothing}.")
  y = _label_matrix(label_ids, num_classes)
  counts = np.asarray(y.sum(axis=0)).ravel()
  seen = np.flatnonzero(counts)
  out = np.zeros((num_classes, dim), np.float32)
  if not len(seen):
    return out
  y = y[:, seen]
  n_seen, counts = len(seen), counts[seen]
  cooc = (y.T @ y).tocoo()
  e = np.zeros((n_seen, dim))
  a = np.sqrt(spectral_share)
  if a > 0:
    m = _pmi_from_counts(cooc, counts, y.shape[0], smoothing=smoothing, positive=positive,
                         diagonal=False)
    w = scipy.sparse.diags(np.sqrt(counts))
    if method == "auto":
      method = "dense" if n_seen <= _DENSE_EIG_MAX_LABELS else "arpack"
    lam, u = _top_positive_eigs((w @ m @ w).tocsr(), min(dim, n_seen), method, seed)
    # W^-1/2 V L^1/2, normalised: the per-row W^-1/2 does not change the direction.
    e[:, :len(lam)] = a * _normalize_rows(u * np.sqrt(lam))
  if a < 1:
    # T_ij = P(i | j) P(j | i): 1 on the diagonal and for labels always seen together.
    t = scipy.sparse.csr_matrix((cooc.data ** 2 / (counts[cooc.row] * counts[cooc.col]),
                                 (cooc.row, cooc.col)), shape=cooc.shape)
    g = np.random.default_rng([seed, 1]).standard_normal((n_seen, dim))
    r = t @ g + _OWN_CODE_EPS * g
    e += np.sqrt(1.0 - spectral_share) * _normalize_rows(r)
  out[seen] = _normalize_rows(e)
  return out


def embedding_diagnostics(embeddings, train_label_counts, *, atol: float = 1e-6) -> dict:
  """Degenerate label embeddings, for the run report.

  A label is degenerate when the decoder cannot single it out: its vector is zero (norm at
  most ``atol`` times the largest), or after normalisation it equals another label's to
  ``atol`` in every coordinate (a duplicate). Every member of a duplicate group counts. Only
  labels seen in training (count > 0) are counted: unseen labels are zero by construction.

  Args:
    embeddings: float ``[C, d]`` label embeddings.
    train_label_counts: ``[C]`` training occurrences of each label.
    atol: tolerance for zero and equal vectors.

  Returns:
    dict with ``num_zero`` and ``num_duplicate`` (seen labels with a zero or a duplicate
    vector), ``degenerate_share`` (share of the training label occurrences carried by them),
    ``num_seen`` (labels with a training occurrence) and ``top1000_degenerate`` (degenerate
    labels among the 1,000 most frequent seen ones).
  """
  e = np.asarray(embeddings, np.float64)
  counts = np.asarray(train_label_counts, np.float64).ravel()
  if e.ndim != 2 or counts.shape != (e.shape[0],):
    raise ValueError(f"Need `embeddings` [C, d] and `train_label_counts` [C], got shapes "
                     f"{e.shape} and {np.shape(train_label_counts)}.")
  norm = np.linalg.norm(e, axis=1)
  zero = norm <= atol * max(float(norm.max(initial=0.0)), 1e-300)
  dup = np.zeros(len(e), bool)
  live = np.flatnonzero(~zero)
  if len(live) > 1:
    u = e[live] / norm[live, None]
    # Equal vectors project within sqrt(d) atol on any unit direction: compare sorted neighbours
    # at growing offsets while some pair is in that window and one of the two is unmatched.
    direction = np.random.default_rng(0).standard_normal(e.shape[1])
    proj = u @ (direction / np.linalg.norm(direction))
    order = np.argsort(proj, kind="stable")
    u, proj = u[order], proj[order]
    found = np.zeros(len(live), bool)
    window = atol * np.sqrt(e.shape[1]) * (1 + 1e-9)
    for offset in range(1, len(live)):
      i = np.arange(len(live) - offset)
      cand = i[(proj[i + offset] - proj[i] <= window) & ~(found[i] & found[i + offset])]
      if not len(cand):
        break
      same = np.all(np.abs(u[cand] - u[cand + offset]) <= atol, axis=1)
      found[cand[same]] = found[cand[same] + offset] = True
    dup[live[order]] = found
  seen = counts > 0
  degenerate = (zero | dup) & seen
  top = np.argsort(-counts, kind="stable")[:min(1000, int(seen.sum()))]
  total = counts[seen].sum()
  return {
      "num_zero": int((zero & seen).sum()),
      "num_duplicate": int((dup & seen).sum()),
      "degenerate_share": float(counts[degenerate].sum() / total) if total > 0 else 0.0,
      "num_seen": int(seen.sum()),
      "top1000_degenerate": int(degenerate[top].sum()),
  }


def _normalize(x, eps=1e-12):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def label_embedding_cosine(pred, labels, embeddings, *, where=None) -> jax.Array:
  """Cosine loss ``1 - cos(pred, normalize(sum_{c in y} w_c E_c))``.

  Args:
    pred: float ``[B, d]`` predicted embeddings.
    labels: dense ``[B, C]`` weights or ids ``[B, L]``.
    embeddings: float ``[C, d]`` label embeddings, e.g. from :func:`pmi_label_embeddings`.
    where: optional bool ``[B]``.

  Returns:
    ``[B]`` losses in [0, 2]. Rows with no labels (or whose labels all have zero
    embeddings) have no target: they give 0 and count as masked.
  """
  pred = jnp.asarray(pred)
  embeddings = jnp.asarray(embeddings)
  labels_lib.check_rank(pred, 2, "pred")
  labels_lib.check_float(pred, "pred")
  labels_lib.check_rank(embeddings, 2, "embeddings")
  if embeddings.shape[1] != pred.shape[1]:
    raise ValueError(f"`embeddings` has dim {embeddings.shape[1]} (shape {embeddings.shape}) "
                     f"but `pred` has dim {pred.shape[1]} (shape {pred.shape}).")
  num_classes = embeddings.shape[0]
  labels = labels_lib.check_labels(labels, num_classes=num_classes, batch_size=pred.shape[0])
  where = labels_lib.check_where(where, pred.shape[0])
  dtype = _common.compute_dtype(pred)
  pred, embeddings = pred.astype(dtype), embeddings.astype(dtype)
  if labels_lib.is_ids(labels):
    keep = labels_lib.unique_mask(labels)
    gathered = embeddings[jnp.where(keep, labels, 0)]  # [B, L, d]
    target = jnp.sum(jnp.where(keep[..., None], gathered, 0.), axis=1)
  else:
    target = labels.astype(dtype) @ embeddings
  has_target = jnp.sum(target * target, axis=-1) > 0
  cos = jnp.sum(_normalize(pred) * _normalize(target), axis=-1)
  return _common.finalize(jnp.where(has_target, 1.0 - cos, 0.), where)


def embedding_scores(pred, embeddings) -> jax.Array:
  """Cosine scores ``normalize(pred) @ E.T`` ``[B, C]`` in [-1, 1] for decoding."""
  pred = jnp.asarray(pred)
  labels_lib.check_rank(pred, 2, "pred")
  dtype = _common.compute_dtype(pred)
  return _normalize(pred.astype(dtype)) @ jnp.asarray(embeddings, dtype).T
