r"""Reruns stored runs at their stored config and compares every number with the stored one.

  python -m multilabel_jax.tools.rerun_stored results/main/hw1k_sigmoid_s1.json [...] \
      --out=rerun.json

A check that behaviour did not change: every ranking and set metric of the test split is
compared with the stored report (stored numbers are rounded to 5 decimals, so differences
up to 5e-6 are rounding). mAP is compared as well, with the stored histogram bracket
(``map_error``) when the stored run had one: the exact value must lie inside it.
"""

from __future__ import annotations

import json
import pathlib
import tempfile

import ml_collections
from absl import app, flags

from multilabel_jax import configs, train

_OUT = flags.DEFINE_string("out", None, "Where to write the comparison (JSON).")


def config_from_report(stored: dict) -> ml_collections.ConfigDict:
  """The stored ``report["config"]`` as a config (JSON lists back to tuples)."""
  def convert(value):
    if isinstance(value, dict):
      return {k: convert(v) for k, v in value.items()}
    return tuple(value) if isinstance(value, list) else value

  config = ml_collections.ConfigDict(convert(stored["config"]))
  configs.validate(config)
  return config


def compare(stored: dict, new: dict) -> dict:
  """``{"max_abs_diff", "rows": [(section, metric, stored, new)], "map": {...}}``."""
  rows = []
  for key, value in stored["test"]["ranking"].items():
    if key.startswith("map"):
      continue
    rows.append(("ranking", key, value, new["test"]["ranking"].get(key)))
  for name, m in stored["test"]["decoders"].items():
    for key, value in m.items():
      got = new["test"]["decoders"].get(name, {}).get(key)
      rows.append((name, key, value, got))
  diffs = [abs(a - b) for _, _, a, b in rows if a is not None and b is not None]
  missing = [(s, k) for s, k, a, b in rows if b is None]
  ranking = stored["test"]["ranking"]
  maps = {}
  for key in ("map", "map_micro"):
    if key in ranking:
      err = ranking.get(f"{key}_error")
      exact = new["test"]["ranking"][key]
      maps[key] = {"stored_midpoint": ranking[key], "stored_bracket": err, "exact": exact,
                   "moved": exact - ranking[key],
                   "inside_bracket": None if err is None else abs(exact - ranking[key]) <= err + 1e-5}
    else:
      maps[key] = {"stored_midpoint": None, "exact": new["test"]["ranking"][key]}
  return {"max_abs_diff": max(diffs) if diffs else None, "num_compared": len(diffs),
          "missing": missing, "rows": rows, "map": maps}


def main(argv):
  results = {}
  for path in argv[1:]:
    stored = json.loads(pathlib.Path(path).read_text())
    with tempfile.TemporaryDirectory() as workdir:
      new = train.train_and_evaluate(config_from_report(stored), workdir)
    results[path] = compare(stored, new)
    r = results[path]
    print(f"{path}: {r['num_compared']} numbers, max |diff| {r['max_abs_diff']}, missing "
          f"{r['missing']}; mAP {json.dumps(r['map'])}", flush=True)
    if _OUT.value:
      pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
