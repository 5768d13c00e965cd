"""Run an exported predictor with jax, numpy and json alone (no training code).

:meth:`inference.Predictor.export` writes a folder; this module (also copied into it as
``serve.py``) loads and runs it. It imports nothing of ``multilabel_jax``::

  import serve                                     # or: from multilabel_jax import serving
  model = serve.load("served/")
  out = model({"token_ids": ids, "token_weights": weights})   # numpy, any number of rows
  out["ids"], out["scores"]                        # int32 [N, r] (-1 after the set), [N, r]
  model.predict(batch)                             # [{"labels": [...], "scores": [...]}]

The folder holds ``model.jax_export`` (the function, serialised StableHLO with a symbolic
batch size), ``variables.npz`` (its parameters by ``/``-joined path) and ``meta.json``
(``format``, the decoder and its rule with its thresholds, the label names, the inputs and
outputs, the batch size the predictor ran with). Inputs are cut into batches of that size,
the last padded with zeros, as the predictor does (:func:`batched`), so both give the same
ids and the same scores.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, Dict, List, Mapping

import jax
import numpy as np

FORMAT = "multilabel_jax.export/1"
MODEL_FILE = "model.jax_export"
VARIABLES_FILE = "variables.npz"
META_FILE = "meta.json"


def flatten(tree, prefix: str = "") -> Dict[str, object]:
  """``{"a": {"b": x}, "c": {}}`` -> ``{"a/b": x}``: the leaves of nested dicts by path."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = value
  return out


def unflatten(flat: Mapping[str, object]) -> dict:
  """Nested dicts from :func:`flatten`'s paths (empty dicts are not restored)."""
  out: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split("/")
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def batched(fn: Callable[[dict], Mapping], arrays: Mapping[str, np.ndarray],
            batch_size: int) -> Dict[str, np.ndarray]:
  """``fn`` over ``arrays`` (``[N, ...]`` each) in batches of ``batch_size`` rows, the
  last padded with zeros; the outputs' rows concatenated as numpy, padding cut."""
  n = len(next(iter(arrays.values())))
  parts: Dict[str, List[np.ndarray]] = {}
  for start in range(0, max(n, 1), batch_size):
    chunk = {k: np.asarray(v[start:start + batch_size]) for k, v in arrays.items()}
    rows = len(next(iter(chunk.values())))
    padded = {k: np.concatenate([v, np.zeros((batch_size - rows, *v.shape[1:]), v.dtype)])
              for k, v in chunk.items()}
    for k, v in fn(padded).items():
      parts.setdefault(k, []).append(np.asarray(v)[:rows])
  return {k: np.concatenate(v) for k, v in parts.items()}


class ExportedModel:
  """An exported predictor: call it on a batch dict of numpy arrays.

  Attributes:
    meta: ``meta.json``: ``decoder``, ``rule`` (its thresholds), ``labels``, ``inputs``,
      ``outputs``, ``batch_size``, ``r``, ``top_k``.
  """

  def __init__(self, path):
    path = pathlib.Path(path)
    self.meta = json.loads((path / META_FILE).read_text())
    if self.meta.get("format") != FORMAT:
      raise ValueError(f"{path / META_FILE}: format {self.meta.get('format')!r}, expected "
                       f"{FORMAT!r}.")
    self.exported = jax.export.deserialize(bytearray((path / MODEL_FILE).read_bytes()))
    with np.load(path / VARIABLES_FILE) as npz:  # On the device once, not at every call.
      self.variables = jax.device_put({k: npz[k] for k in npz.files})
    self._call = jax.jit(self.exported.call)
    self.labels = list(self.meta["labels"])

  def __call__(self, batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``{"ids" [N, r], "scores" [N, r], "num_truncated" [N]}`` (+ ``top_ids``,
    ``top_scores`` [N, k] when exported with ``top_k``)."""
    missing = sorted(set(self.meta["inputs"]) - set(batch))
    if missing:
      raise ValueError(f"the exported model reads inputs {sorted(self.meta['inputs'])}; "
                       f"missing {missing}.")
    arrays = {k: np.asarray(batch[k], dtype) for k, (_, dtype) in self.meta["inputs"].items()}
    return batched(lambda b: self._call(self.variables, b), arrays,
                   int(self.meta["batch_size"]))

  def predict(self, batch: Mapping[str, np.ndarray]) -> List[dict]:
    """``[{"labels": [names, best first], "scores": [floats]}]``, one per row."""
    out = self(batch)
    return [{"labels": [self.labels[i] for i in ids[ids >= 0]],
             "scores": [float(s) for s in scores[ids >= 0]]}
            for ids, scores in zip(out["ids"], out["scores"])]


def load(path) -> ExportedModel:
  """The :class:`ExportedModel` in the folder ``path``."""
  return ExportedModel(path)
