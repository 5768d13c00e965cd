"""PMI/SVD label embeddings with a cosine loss (Chollet 2016, "Information-theoretical label
embeddings for large-scale image classification").

The network regresses a d-dimensional vector instead of C logits. Targets are the normalised
sum of the example's label embeddings; label embeddings come from a truncated SVD of the
label co-occurrence PMI matrix, so labels that co-occur point the same way. Decoding ranks
classes by cosine similarity, ``normalize(pred) @ E.T`` (:func:`embedding_scores`): nearest
label embeddings first.

What happens to labels with little data:

* Pairs that never co-occur get PMI 0 (independence) rather than -inf: with the default
  ``positive=True`` the matrix is positive PMI (PPMI), which is sparse and well defined.
* ``smoothing`` adds pseudo-counts to the marginals, damping PMI's known bias towards rare
  labels.
* A label that never appears in the training labels has an all-zero PMI row, so its
  embedding is the zero vector (not normalisable): it scores exactly 0 against every
  prediction and cannot be a target. The same holds for a label with (numerically)
  nothing in the top-d singular subspace: choose d large enough for the labels you need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from multilabel_jax import labels as labels_lib
from multilabel_jax.losses import _common

_DENSE_SVD_MAX_CLASSES = 2048


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


def pmi_matrix(label_ids, num_classes: int, *, smoothing: float = 1.0,
               positive: bool = True) -> scipy.sparse.csr_matrix:
  """Sparse PMI matrix ``[C, C]`` of label co-occurrence.

  ``PMI_ij = log(n_ij * N / ((n_i + s) (n_j + s)))`` over pairs with ``n_ij > 0`` (the
  diagonal uses ``n_ii = n_i``); absent pairs are 0, and ``positive=True`` clips at 0.
  """
  if smoothing < 0:
    raise ValueError(f"`smoothing` must be >= 0, got {smoothing}.")
  y = _label_matrix(label_ids, num_classes)
  n = max(y.shape[0], 1)
  cooc = (y.T @ y).tocoo()
  counts = np.asarray(y.sum(axis=0)).ravel()
  marg = counts + smoothing
  pmi = np.log(cooc.data * n / (marg[cooc.row] * marg[cooc.col]))
  if positive:
    pmi = np.maximum(pmi, 0.0)
  m = scipy.sparse.csr_matrix((pmi, (cooc.row, cooc.col)), shape=(num_classes, num_classes))
  m.eliminate_zeros()
  return m


def pmi_label_embeddings(label_ids, num_classes: int, dim: int, *, smoothing: float = 1.0,
                         positive: bool = True, method: str = "auto",
                         seed: int = 0) -> np.ndarray:
  """Label embeddings ``E = U sqrt(S)`` from the top-``dim`` SVD of the PMI matrix.

  Runs on the host (numpy/scipy) once, before training. ``method="auto"`` uses an exact
  dense SVD up to 2048 classes and an ARPACK truncated SVD of the sparse matrix
  (deterministic start vector) beyond; ``"dense"`` or ``"arpack"`` force one. Singular vector signs
  are fixed so that each vector's largest-magnitude entry is positive.

  Args:
    label_ids: training labels, ids ``[N, L]`` (-1 padded) or dense ``[N, C]``.
    num_classes: C.
    dim: embedding dimension d, ``1 <= d <= C`` (``d < C`` above 2048 classes).
    smoothing: pseudo-count added to each label's count in the PMI marginals.
    positive: clip PMI at 0 (PPMI).
    method: "auto", "dense" or "arpack".
    seed: seeds the ARPACK start vector.

  Returns:
    float32 ``[C, dim]`` with L2-normalised rows; all-zero rows for labels never seen.

  Example:
    >>> E = pmi_label_embeddings(np.array([[0, 1], [1, 2], [0, -1]]), 3, 2)
    >>> E.shape
    (3, 2)
  """
  if not 1 <= dim <= num_classes:
    raise ValueError(f"`dim` must be in [1, num_classes={num_classes}], got {dim}.")
  if method not in ("auto", "dense", "arpack"):
    raise ValueError(f"`method` must be 'auto', 'dense' or 'arpack', got {method!r}.")
  if method == "arpack" and dim >= num_classes:
    raise ValueError(f"method='arpack' needs dim < num_classes, got dim={dim}.")
  if method == "auto":
    dense = num_classes <= _DENSE_SVD_MAX_CLASSES or dim >= num_classes - 1
    method = "dense" if dense else "arpack"
  m = pmi_matrix(label_ids, num_classes, smoothing=smoothing, positive=positive)
  if method == "dense":
    u, s, _ = np.linalg.svd(m.toarray())
    u, s = u[:, :dim], s[:dim]
  else:
    v0 = np.random.default_rng(seed).standard_normal(num_classes)
    u, s, _ = scipy.sparse.linalg.svds(m, k=dim, v0=v0)
    order = np.argsort(-s)
    u, s = u[:, order], s[order]
  sign = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
  e = u * np.where(sign == 0, 1.0, sign) * np.sqrt(np.maximum(s, 0.0))
  norm = np.linalg.norm(e, axis=1, keepdims=True)
  # Rows with (numerically) nothing in the top-d subspace stay zero instead of
  # normalising rounding noise.
  nonzero = norm > 1e-6 * max(float(norm.max()), 1e-30)
  e = np.where(nonzero, e / np.where(nonzero, norm, 1.0), 0.0)
  return e.astype(np.float32)


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
