"""PMI label embeddings with a cosine loss (after Chollet 2016, "Information-theoretical label
embeddings for large-scale image classification", arXiv:1607.05691).

The network regresses a d-dimensional vector instead of C logits. Targets are the normalised
sum of the example's label embeddings; decoding ranks classes by cosine similarity,
``normalize(pred) @ E.T`` (:func:`embedding_scores`): nearest label embeddings first.

The paper's construction, and why it is not used as is
-------------------------------------------------------
Chollet builds the PMI matrix of label co-occurrence, ``PMI_ij = log(P(i, j) / (P(i) P(j)))``
with the diagonal ``PMI_ii = log(1 / P(i))`` (:func:`pmi_matrix`), and takes ``E = U sqrt(S)``
from its SVD, truncated to d. On Zipf-distributed tags with d far below the number of labels
that behave independently, this makes most labels degenerate. On the main job's setting
(hashtag_world, 20,000 classes, the first 20,000 training examples, 8,455 labels seen,
d = 128) it gives 1,579 seen labels a zero vector and 5,614 a copy of another label's vector:
775 of the 1,000 most frequent labels, all of the top 10, and 88% of the training label
occurrences. Three causes:

* PMI is largest for the rarest labels (the diagonal ``log(N / n_i)``, and ``log(N / 4)``
  for two labels seen once, together), so the top singular directions go to rare labels and
  the frequent ones fall out of the rank-d subspace. Dropping the diagonal does not fix this
  (769 of the top 1,000 stay degenerate): the rare off-diagonal pairs have the largest PMI
  too.
* Labels that co-occur form clusters (topics). A rank-d factorisation spends about one
  direction per cluster, so every label of a cluster gets the same normalised vector: no
  rank-d factorisation keeps thousands of labels apart in 128 dimensions.
* The PMI matrix is indefinite, and an SVD reports a negative eigenvalue as a positive
  singular value with ``V = -U``: ``U sqrt(S)`` then counts an anti-similar direction as a
  similar one.

The construction here
---------------------
Each label seen in training gets the unit vector ``e_i = normalize(a s_i + b r_i)``, with
``a^2 = spectral_share`` (default 0.5) and ``b^2 = 1 - a^2``. Both parts are unit vectors
(``s_i`` is 0 only when label i's whole PPMI row is, e.g. for a label in nearly every example):

* ``s_i``, the **co-occurrence part**, from the top-d eigenpairs with positive eigenvalues of
  the frequency-weighted PMI ``W^1/2 M W^1/2 = V L V^T``, ``W = diag(n_i)`` (training
  counts), ``M`` the PMI (PPMI by default) without its diagonal:
  ``s_i = normalize(W^-1/2 V L^1/2)_i``, the paper's ``U sqrt(S)`` reweighted. Before the
  normalisation, ``S S^T`` is the rank-d PSD matrix minimising
  ``sum_ij n_i n_j (M_ij - s_i . s_j)^2`` (Eckart-Young with rank-one weights): errors on
  frequent pairs cost most, so the frequent labels own the subspace. A symmetric
  eigendecomposition has no U/V sign flips, and dropping the negative eigenvalues drops the
  anti-similar directions. Labels outside the subspace (clusters that got no direction,
  labels seen alone) get instead a random projection of their full PMI row,
  ``normalize(PMI_i G')`` with the paper's diagonal: labels of one left-out cluster still
  point the same way (Johnson-Lindenstrauss), and labels with identical training columns get
  identical rows.
* ``r_i``, the **label-specific part**, which does the diagonal's job (each label is most
  similar to itself): ``r = normalize((T + eps I) G)``, ``G`` a seeded Gaussian ``[C, d]`` code
  book, ``eps = 0.1`` and ``T_ij = n_ij^2 / (n_i n_j) = P(i | j) P(j | i)``: 1 on the diagonal
  and between labels that always appear together, small for a frequent label and the many
  labels seen with it. Random codes in d dimensions are nearly orthogonal (cosine about
  ``1 / sqrt(d)``), so thousands of labels stay apart, while labels that imply each other
  share codes.

So the labels of one cluster are at cosine about ``a^2`` (0.5) from each other, labels with
nothing in common at about 0, and two labels that always appear together (identical training
columns, which no data can tell apart) at about 0.995, each other's nearest neighbours;
``eps`` keeps them distinct. Measured on the main setting; quality over the 2,000 clean
validation examples:

==================================  =====  =====  ========  ======  =====  =====  =====
construction                        zero   dup.   top-1000  degen.  topic  set    pair
                                                  degen.    share   AUC    prec.  MRR
==================================  =====  =====  ========  ======  =====  =====  =====
paper: PMI with diagonal, SVD       1,579  5,614  775       0.88    0.66   0.14   0.019
PPMI, no diagonal, eigsh            1,511  5,679  769       0.88    0.70   0.14   0.021
co-occurrence part only (a^2 = 1)   0      5,563  570       0.65    0.99   0.32   0.050
label-specific part only (a^2 = 0)  0      0      0         0       0.80   0.97   0.134
i.i.d. random codes                 0      0      0         0       0.53   0.998  0.002
this module, a^2 = 0.3              0      0      0         0       0.985  0.96   0.213
this module, a^2 = 0.5 (default)    0      0      0         0       0.990  0.94   0.218
this module, a^2 = 0.7              0      0      0         0       0.991  0.90   0.221
==================================  =====  =====  ========  ======  =====  =====  =====

"topic AUC": how well the cosine separates pairs of labels of one hashtag_world topic from
pairs of different topics (pairs of the 3,000 most frequent labels, weighted by
``n_i n_j``); "set prec.": precision at ``|y|`` of decoding the target ``normalize(sum_{c in y}
e_c)`` itself, the ceiling of the objective; "pair MRR": mean reciprocal rank of a label
among all seen labels when querying with another label of the same validation example.
PPMI and PMI (``positive=False``) give the same numbers there (no observed pair is below
chance). 1,449 labels (4% of the occurrences) have a training column identical to another
label's and sit at cosine 0.995-0.998 from it; every other label's nearest neighbour is
below 0.94, and no two of the 1,000 most frequent labels are above 0.77. Building takes
about 1-3 s on the 2-core CPU (5-20 s when other jobs contend for its BLAS threads); the
paper's sparse SVD took 13-24 s. Above 2,048 seen labels nothing ``[C, C]`` is dense
(sparse ``eigsh``; 131,072 classes: 25-35 s for 20,000 or 100,000 examples on a loaded CPU).

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
_SUBSPACE_RTOL = 1e-11  # Eigenvector rows below this (relative) are solver noise: outside.


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

  ``e_i = normalize(a s_i + b r_i)`` with ``a^2 = spectral_share`` (the module docstring has
  the construction and its measurements): ``s_i`` from the top-``dim`` positive eigenpairs of
  ``W^1/2 M W^1/2`` (``M`` the PMI without diagonal, ``W`` the label counts: the paper's
  ``E = U sqrt(S)``, reweighted so that frequent labels own the subspace), or a random
  projection of the PMI row for labels outside it; ``r_i`` a seeded random code shared
  between labels in proportion to ``P(i | j) P(j | i)``. Runs on the host (numpy/scipy) once,
  before training, over the labels seen in training. ``method="auto"`` uses an exact dense
  ``eigh`` up to 2048 seen labels and ARPACK ``eigsh`` on the sparse matrix (deterministic
  start vector) beyond; ``"dense"`` or ``"arpack"`` force one (dense when ``dim`` is not below
  the number of seen labels). Eigenvector signs are fixed so that each vector's
  largest-magnitude entry is positive.

  Args:
    label_ids: training labels, ids ``[N, L]`` (-1 padded) or dense ``[N, C]``.
    num_classes: C.
    dim: embedding dimension d, ``1 <= d <= C``.
    smoothing: pseudo-count added to each label's count in the PMI marginals.
    positive: clip PMI at 0 (PPMI).
    method: "auto", "dense" or "arpack".
    seed: seeds the code books and the ARPACK start vector.
    spectral_share: ``a^2`` in [0, 1], the share of each vector's squared norm given to the
      co-occurrence part. 0: the label-specific codes only; 1: the co-occurrence part only
      (the labels of a cluster then collapse onto one vector, as in the paper's
      construction; an ablation).

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
    s = np.zeros((n_seen, dim))
    s[:, :len(lam)] = _normalize_rows(u * np.sqrt(lam), _SUBSPACE_RTOL)
    missed = ~s.any(axis=1)
    if missed.any():
      # Labels outside the subspace: a random projection of their PMI rows, diagonal
      # included (so labels with identical training columns get identical rows).
      full = _pmi_from_counts(cooc, counts, y.shape[0], smoothing=smoothing, positive=positive,
                              diagonal=True)
      g = np.random.default_rng([seed, 2]).standard_normal((n_seen, dim))
      s[missed] = _normalize_rows(full[missed] @ g)
    e += a * s
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
    window = atol * np.sqrt(e.shape[1]) + 1e-12
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
