"""Reading the sweep's stored reports: metric extraction, seed statistics and verdicts.

Used by :mod:`multilabel_jax.studies.report`. Definitions (also written into RESULTS.md):

* Ranking metrics (P@k, nDCG@5, PSP@5, mAP) are properties of the scores, the same under
  every decoder; set metrics (micro/macro-F1, mean set size) belong to a decoder.
* **Average-K error at K** = 1 - average-K accuracy of the sets chosen by the global
  threshold calibrated on validation so that sets hold K labels on average (decoder
  ``average_k_<K>``): the fraction of true test labels that such sets miss.
* **Steps to 90%**: the first periodic validation step whose validation mAP reaches 90%
  of the run's final value. When either side of a comparison has no validation mAP (the
  fused 100k head), both sides use validation P@1. Its resolution is the row's
  evaluation interval.
* **Verdict** of "A beats B": the per-seed differences ``d_s = A_s - B_s`` (same seed,
  same data order), mean ``d`` and sample standard deviation ``s`` (ddof=1). Confirms if
  ``d > 2 s``, refutes if ``d < -2 s``, otherwise inconclusive; with one seed,
  "inconclusive (1 seed)", and such rows are left out of a claim's verdict. Repeated
  measurements of one statement (the same comparison on several rows) combine as
  "confirms" when all confirm, "refutes" when all refute, else inconclusive. A claim made
  of several parts ("A and B") is a conjunction: "refutes" if any part refutes,
  "confirms" only if every part confirms, else inconclusive. Both sides of a paired
  comparison are shown over the seeds they share. Against a fixed number (a deterministic
  baseline or a published reference) ``s`` is the seed spread of A. For mAP, a difference
  no larger than the sum of the two sides' mean bracket half-widths (the guaranteed error
  of the streaming mAP) is "inconclusive (mAP bracket)" whatever the seeds say.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Dict, List, Optional, Sequence

import numpy as np

CONVERGENCE_FRACTION = 0.9
ONE_SEED = "inconclusive (1 seed)"
BRACKET = "inconclusive (mAP bracket)"


def load(results_dir) -> List[dict]:
  """Every stored run report under ``results_dir`` (``<group>/<name>.json`` with its sweep,
  peer or probes record), sorted by name. Other JSON there (a whole run's folder kept for its
  own figures, such as ``results/million``) is not a sweep run and is left out."""
  paths = sorted(pathlib.Path(results_dir).glob("*/*.json"))
  reports = [json.loads(p.read_text()) for p in paths]
  return [r for r in reports
          if isinstance(r, dict) and ("sweep" in r or "peer" in r or "probes" in r)]


def by_key(reports, group: str, key_fields: Sequence[str]) -> Dict[tuple, Dict[int, dict]]:
  """``{(field values...): {seed: report}}`` for the reports of one sweep group."""
  out = {}
  for r in reports:
    meta = r.get("sweep", {})
    if meta.get("group") != group:
      continue
    key = tuple(meta.get(f) for f in key_fields)
    out.setdefault(key, {})[meta.get("seed", 0)] = r
  return out


def ranking(report, name: str) -> float:
  return report["test"]["ranking"].get(name, float("nan"))


def decoder(report, dec: str, name: str) -> float:
  return report["test"]["decoders"].get(dec, {}).get(name, float("nan"))


def average_k_error(report, k: int) -> float:
  return 1.0 - decoder(report, f"average_k_{k}", "average_k_accuracy")


def top_k_error(report, k: int) -> float:
  prefix = "nearest" if report.get("objective") == "embedding" else "top"
  return 1.0 - decoder(report, f"{prefix}_{k}", "average_k_accuracy")


def final_validation(report, key: str = "val_precision_at_1") -> float:
  """The last periodic validation's ``key`` (NaN if the run has none)."""
  hist = report.get("validation_history") or [{}]
  return hist[-1].get(key, float("nan"))


def history_metric(report) -> str:
  hist = report.get("validation_history") or [{}]
  return "val_map" if "val_map" in hist[-1] else "val_precision_at_1"


def steps_to_fraction(report, fraction: float = CONVERGENCE_FRACTION,
                      key: Optional[str] = None) -> float:
  """First validation step reaching ``fraction`` of the final validation metric ``key``
  (default: :func:`history_metric`)."""
  hist = report.get("validation_history") or []
  if not hist:
    return float("nan")
  key = key or history_metric(report)
  final = hist[-1][key]
  for h in hist:
    if h[key] >= fraction * final:
      return float(h["step"])
  return float(hist[-1]["step"])


def best_decoder(report, metric: str = "f1_micro") -> str:
  decs = report["test"]["decoders"]
  return max(decs, key=lambda d: decs[d].get(metric, -1.0))


def bucket(report, name: str, dec: Optional[str] = None) -> List[float]:
  b = report["test"].get("buckets", {})
  if dec is None:
    return b.get(name, [])
  return b.get("decoders", {}).get(dec, {}).get(name, [])


class Stat:
  """Mean and sample spread (ddof=1) of per-seed values; NaNs are dropped."""

  def __init__(self, values: Sequence[float]):
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    self.values = v
    self.n = len(v)
    self.mean = float(v.mean()) if self.n else float("nan")
    self.sd = float(v.std(ddof=1)) if self.n > 1 else float("nan")

  def fmt(self, digits: int = 3) -> str:
    if not self.n:
      return "n/a"
    if self.n == 1:
      return f"{self.mean:.{digits}f}"
    return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def stat(runs: Dict[int, dict], fn) -> Stat:
  return Stat([fn(r) for _, r in sorted(runs.items())])


def paired(runs_a: Dict[int, dict], runs_b: Dict[int, dict], fn) -> Stat:
  """Per-seed differences ``fn(a_s) - fn(b_s)`` over the seeds both have."""
  seeds = sorted(set(runs_a) & set(runs_b))
  return Stat([fn(runs_a[s]) - fn(runs_b[s]) for s in seeds])


def verdict(diff: Stat, *, higher_is_better: bool = True, spread: Optional[float] = None) -> str:
  """confirms / refutes / inconclusive for "A beats B" from a difference statistic.

  ``spread``: the noise scale when ``diff`` is against a fixed number (else ``diff.sd``).
  """
  s = diff.sd if spread is None else spread
  if diff.n == 0:
    return "not run"
  if diff.n < 2 or math.isnan(s):
    return ONE_SEED
  d = diff.mean if higher_is_better else -diff.mean
  if d > 2 * s:
    return "confirms"
  if d < -2 * s:
    return "refutes"
  return "inconclusive"


def combine(verdicts: Sequence[str]) -> str:
  """All primary comparisons confirm -> confirms; all refute -> refutes; else
  inconclusive (mixed or noisy). Comparisons not run or with one seed are ignored."""
  v = [x for x in verdicts if x not in ("not run", ONE_SEED)]
  v = ["inconclusive" if x == BRACKET else x for x in v]
  if not v:
    return ONE_SEED if ONE_SEED in verdicts else "not run"
  if all(x == "confirms" for x in v):
    return "confirms"
  if all(x == "refutes" for x in v):
    return "refutes"
  return "inconclusive"


def conjunction(verdicts: Sequence[str]) -> str:
  """The verdict of "part 1 and part 2 and ...": any part refutes -> refutes; every part
  confirms -> confirms; else inconclusive. Parts not run or with one seed are ignored."""
  v = [x for x in verdicts if x not in ("not run", ONE_SEED)]
  if not v:
    return ONE_SEED if ONE_SEED in verdicts else "not run"
  if "refutes" in v:
    return "refutes"
  return "confirms" if all(x == "confirms" for x in v) else "inconclusive"


def shared_seeds(*runs: Dict[int, dict]) -> List[Dict[int, dict]]:
  """Each ``{seed: report}`` restricted to the seeds all of them have."""
  seeds = set.intersection(*(set(r) for r in runs)) if runs else set()
  return [{s: r[s] for s in sorted(seeds)} for r in runs]


def table(header: List[str], rows: List[List[str]]) -> List[str]:
  """A markdown table (lines, ending with a blank one)."""
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def map_bracket(report) -> float:
  """The guaranteed error of a run's mAP: its histogram bracket for runs stored before mAP
  became exact (``map_error``), 0 for exact runs, NaN for runs without mAP."""
  ranking_ = report["test"]["ranking"]
  if "map" not in ranking_:
    return float("nan")
  return ranking_.get("map_error", 0.0)
