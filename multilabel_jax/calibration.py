"""Calibration on validation: the thresholds of the calibrated decoders.

* average-K (Garcin et al.): the global threshold that gives sets of K labels on average,
  by the midpoint rule of :func:`losses.decoders.calibrate_average_k`. It comes from the
  rows' top-r candidates when they hold the threshold (the usual case), and otherwise from
  an exact search over the pooled scores, by counting passes (:func:`pooled_order_statistic`):
  never a wrong number, at any C.
* per-class F1 thresholds, from the counts of exact mAP
  (:meth:`metrics.ExactAveragePrecision.class_thresholds`), equal to
  :func:`losses.decoders.calibrate_class_thresholds` on the full validation scores.

The thresholds are an artifact of the run: :func:`save_artifact` writes them at the end of
training, with every decoder's rule, the decoder chosen on validation
(:func:`choose_decoder`), what the objective built from the training data and a fingerprint
of the config and vocabulary, to ``workdir/calibration.json`` (``format``
:data:`ARTIFACT_FORMAT`) and ``calibration.npz``; :func:`load_artifact` reads them back for
:class:`inference.Predictor`.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Callable, Iterable, Mapping, Optional

import jax
import numpy as np

from multilabel_jax import evaluate
from multilabel_jax.losses import decoders as decoders_lib
from multilabel_jax.metrics import average_precision as ap_lib

_SPLITS = 15  # Thresholds per target and pass: 4 bits of the float32 key a pass.


def _key(x):
  """Order-preserving map of float32 to uint32 (``-inf`` -> smallest, ``+inf`` -> largest)."""
  bits = np.asarray(x, np.float32).view(np.uint32)
  return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31)).astype(np.uint32)


def _value(key):
  key = np.asarray(key, np.uint32)
  bits = np.where(key >> 31, key & np.uint32(0x7FFFFFFF), ~key).astype(np.uint32)
  return bits.view(np.float32)


def pooled_order_statistic(count_at_least: Callable[[np.ndarray], np.ndarray], qs) -> list:
  """The q-th largest pooled score for each ``q`` in ``qs`` (1-based), exactly.

  ``count_at_least(thresholds [m]) -> int [m]`` counts the pooled scores ``>= t`` (one
  pass over the data). A k-ary search over the float32 order: 8 passes of 15 thresholds
  per target.
  """
  qs = [int(q) for q in qs]
  lo = [np.uint32(_key(-np.inf))] * len(qs)  # count(>= value(lo)) >= q
  hi = [np.uint64(_key(np.inf)) + 1] * len(qs)  # count(>= value(hi)) < q (hi may be 2^32)
  while any(int(h) - int(l) > 1 for l, h in zip(lo, hi)):
    cands = []
    for l, h in zip(lo, hi):
      width = int(h) - int(l)
      steps = sorted({int(l) + max(1, (width * i) // (_SPLITS + 1)) for i in range(1, _SPLITS + 1)
                      if int(l) + max(1, (width * i) // (_SPLITS + 1)) < int(h)})
      cands.append(steps)
    flat = np.array([c for cs in cands for c in cs], np.uint32)
    counts = np.asarray(count_at_least(_value(flat)), np.int64)
    i = 0
    for j, cs in enumerate(cands):
      for c in cs:
        if counts[i] >= qs[j]:
          lo[j] = max(lo[j], np.uint32(c))
        else:
          hi[j] = min(hi[j], np.uint64(c))
        i += 1
  return [float(_value(l)) for l in lo]


def average_k_threshold(values, k: float, *, num_classes: int, num_rows: int,
                        count_at_least: Optional[Callable] = None) -> float:
  """The average-K threshold of :func:`decoders.calibrate_average_k` over all ``num_rows x
  num_classes`` validation scores, from the rows' top-r ``values`` when they hold it, else
  by :func:`pooled_order_statistic` with ``count_at_least``."""
  try:
    return decoders_lib.calibrate_average_k(values, k, num_classes=num_classes)
  except ValueError:
    if count_at_least is None:
      raise
  m = int(round(num_rows * k))  # calibrate_average_k returned for m == 0 and m >= n * C.
  upper, lower = pooled_order_statistic(count_at_least, [m, m + 1])
  return float(ap_lib.midpoint_between(upper, lower, np.dtype(np.float32)))


def calibrate(inputs: Mapping, *, num_classes: int, k: Optional[float], average_ks=(),
              min_positives: int = 5, count_at_least: Optional[Callable] = None) -> dict:
  """Thresholds from a validation :func:`evaluate.evaluate` run with ``keep_values=True``.

  Args:
    inputs: its ``"_calibration_inputs"`` (top-r values, labels, the exact-AP state).
    num_classes: C.
    k: K of ``average_k`` (None: the validation mean label count).
    average_ks: further K: ``average_k_at`` maps each (K <= C) to its threshold.
    min_positives: validation positives a class needs for its own F1 threshold (others
      use the micro-F1-optimal global threshold).
    count_at_least: ``thresholds [m] -> int [m]`` pooled counts over the same validation
      rows (:func:`counter`), for K whose threshold lies beyond some row's top-r.

  Returns:
    ``{"average_k": {"k", "threshold"}, "average_k_at": {K: t}, "class_thresholds": [C]}``.
  """
  values = inputs["values"]
  k = mean_labels(inputs["labels"]) if k is None else k

  def threshold(kk):
    return average_k_threshold(values, kk, num_classes=num_classes, num_rows=len(values),
                               count_at_least=count_at_least)

  return {"average_k": {"k": k, "threshold": threshold(k)},
          "average_k_at": {int(kk): threshold(kk) for kk in average_ks if kk <= num_classes},
          "class_thresholds": inputs["ap"].class_thresholds(min_positives=min_positives,
                                                            fallback="global")}


def counter(scorer, batches: Callable[[], Iterable[dict]], max_examples: int = 0):
  """``thresholds -> counts`` of pooled scores ``>= t`` over the rows that
  :func:`evaluate.evaluate` sees, one pass of ``scorer.pass_one`` per call."""
  def count_at_least(thresholds):
    thresholds = np.asarray(thresholds, np.float32)
    total = np.zeros(len(thresholds), np.int64)
    for batch, _, mask in evaluate.iterate(batches(), max_examples,
                                           getattr(scorer, "rows", None)):
      total += np.asarray(scorer.pass_one(batch, thresholds).above, np.int64)[mask].sum(0)
    return total
  return count_at_least


def mean_labels(label_ids: np.ndarray) -> float:
  """Mean number of distinct labels per row of padded ids."""
  ids = np.asarray(label_ids)
  return float(np.mean([len(set(r[r >= 0].tolist())) for r in ids])) if len(ids) else 0.0


# ------------------------------------------------------------------ the run's artifact
#
# What prediction needs besides the parameters, written next to the checkpoint at the end
# of training (:func:`save_artifact`) and read by :mod:`multilabel_jax.inference`:
# ``calibration.json`` (versioned by ``format``) and ``calibration.npz`` (its arrays).

ARTIFACT_FORMAT = "multilabel_jax.calibration/1"
ARTIFACT_FILE = "calibration.json"
ARRAYS_FILE = "calibration.npz"


def choose_decoder(requested: str, natural: str, validation_decoders: Mapping) -> tuple:
  """``(name, rule)``: the decoder prediction uses by default.

  Args:
    requested: ``config.predict.decoder``: "" for the best validation micro-F1 (ties: the
      first in report order), "natural" for the objective's own, else a decoder name.
    natural: the objective's natural decoder name.
    validation_decoders: ``{name: {"f1_micro": ...}}`` of the calibrated decoders on
      validation.

  Raises:
    ValueError: ``requested`` names a decoder that does not apply (the message lists those
      that do).
  """
  if requested == "natural":
    return natural, "config.predict.decoder='natural'"
  if requested:
    if requested not in validation_decoders:
      raise ValueError(f"`config.predict.decoder` {requested!r} does not apply to this run; "
                       f"its decoders are {sorted(validation_decoders)}.")
    return requested, "config.predict.decoder"
  best = max(validation_decoders, key=lambda n: validation_decoders[n]["f1_micro"])
  return best, "best validation f1_micro"


def fingerprint(workdir) -> dict:
  """``{"config_sha256", "vocab_sha256"}`` of a workdir's ``config.json`` and ``vocab/``
  files (None where absent): what the calibrated checkpoint was trained with."""
  workdir = pathlib.Path(workdir)
  config = workdir / "config.json"
  vocab = sorted(p for p in (workdir / "vocab").glob("*") if p.is_file())
  digest = hashlib.sha256()
  for path in vocab:
    digest.update(path.name.encode() + b"\0" + path.read_bytes())
  return {"config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()
                           if config.exists() else None,
          "vocab_sha256": digest.hexdigest() if vocab else None}


def save_artifact(workdir, *, step: int, objective, calibration: Mapping, r: int, top_ks,
                  predict: Mapping, data: Mapping) -> pathlib.Path:
  """Writes ``calibration.json`` and ``calibration.npz`` into ``workdir``.

  Args:
    step: the checkpoint step the thresholds were calibrated on.
    objective: the run's :class:`losses.Objective` (its ``rebuild_options`` are stored).
    calibration: :func:`calibrate`'s thresholds.
    r: candidates per row of the evaluation (the slots of a variable-size set).
    top_ks: the evaluation's k.
    predict: ``{"decoder", "chosen_by", "validation_f1_micro": {name: value}}``: the
      decoder of :func:`choose_decoder`, its rule, and every decoder's validation micro-F1
      (the report's ``"predict"``).
    data: ``{"num_classes", "inputs": {name: [shape, dtype]}, "num_embeddings",
      "class_names"}`` of the data source.

  Returns:
    The path of ``calibration.json``.

  Example:
    >>> save_artifact(workdir, step=1000, objective=objective, calibration=cal, r=64,
    ...               top_ks=(1, 5), predict=report["predict"],
    ...               data={"num_classes": 600, "inputs": {...}, ...})
  """
  workdir = pathlib.Path(workdir)
  arrays = {"class_thresholds": np.asarray(calibration["class_thresholds"], np.float32)}
  scalars = {}
  for key, value in objective.rebuild_options.items():
    if isinstance(value, (np.ndarray, jax.Array)) or hasattr(value, "__array__"):
      arrays[f"objective/{key}"] = np.asarray(value)
    else:
      scalars[key] = value
  rules = evaluate.decoder_rules(objective, calibration, top_ks=top_ks, r=r)
  for rule in rules.values():
    if rule["rule"] == "class_thresholds":
      rule["thresholds"] = f"{ARRAYS_FILE}:class_thresholds"
  state = {
      "format": ARTIFACT_FORMAT, "step": int(step), "objective": objective.name,
      "objective_rebuild_options": scalars, "r": int(r), "top_ks": [int(k) for k in top_ks],
      "natural_decoder": objective.natural_decoder,
      "decoder": {"name": predict["decoder"], "chosen_by": predict["chosen_by"],
                  "validation_f1_micro": {n: float(v) for n, v
                                          in predict["validation_f1_micro"].items()}},
      "decoders": rules,
      "calibration": {"average_k": dict(calibration["average_k"]),
                      "average_k_at": {str(k): float(t)
                                       for k, t in calibration["average_k_at"].items()}},
      "arrays": sorted(arrays), "data": dict(data), "fingerprint": fingerprint(workdir)}
  np.savez(workdir / ARRAYS_FILE, **arrays)
  path = workdir / ARTIFACT_FILE
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(state, indent=2, default=float))
  tmp.replace(path)
  return path


def load_artifact(workdir) -> dict:
  """The state :func:`save_artifact` wrote, with ``"calibration"`` ready for
  :func:`evaluate.make_decoders` (``class_thresholds`` ``[C]`` included) and
  ``"objective_rebuild_options"`` holding its arrays again.

  Raises:
    FileNotFoundError: no ``calibration.json`` in ``workdir``.
    ValueError: a file of another format or version.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / ARTIFACT_FILE
  if not path.exists():
    raise FileNotFoundError(
        f"{path}: no calibration file: the run has not finished its final evaluation (or "
        "was trained before calibration files existed). Run the same experiments.run "
        f"command with --workdir={workdir} again: a finished run only re-evaluates.")
  state = json.loads(path.read_text())
  if state.get("format") != ARTIFACT_FORMAT:
    raise ValueError(f"{path}: format {state.get('format')!r}, expected {ARTIFACT_FORMAT!r} "
                     "(written by another version of multilabel_jax).")
  with np.load(workdir / ARRAYS_FILE) as arrays:
    loaded = {k: arrays[k] for k in arrays.files}
  state["calibration"]["average_k_at"] = {
      int(k): t for k, t in state["calibration"]["average_k_at"].items()}
  state["calibration"]["class_thresholds"] = loaded["class_thresholds"]
  state["objective_rebuild_options"].update(
      {k.split("/", 1)[1]: v for k, v in loaded.items() if k.startswith("objective/")})
  return state
