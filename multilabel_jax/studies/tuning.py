r"""The tuned protocol of the results sweep: each objective gets its best shot (issue 11).

Three stages per dataset row, each a group of stored runs (``<out>/<group>/<name>.json``):

* ``tuned_tune``: seed 0 of every setting of the objective's grid (:func:`grid`: the
  learning rates times the objective's own hyperparameter, if it has one) at the row's
  tuning length. The setting of highest validation P@1 is the objective's choice
  (:func:`choose`); test numbers are not looked at.
* ``tuned_length``: one objective's grid (``Stages.length_check``) again at the final
  length, seed 0: tuning at the shorter length is sound where both lengths choose the same
  setting (:func:`length_check`).
* ``tuned_final``: the chosen setting at the final length, one run per seed. A row that
  takes another row's choices (``Stages.choices_from``, e.g. hashtag_world 1k and 100k from
  20k) has no tune stage.
* ``tuned_check``: the row's best objective (highest mean validation P@1 over the final
  seeds) once more at twice the final length, seed 0: if its validation P@1 moves by less
  than 3% (relative), the row's budget stands; otherwise the row is budget-limited.

A run whose inputs are not stored yet is planned as *waiting* (``Run.waits_for`` says for
what) and becomes runnable once they are: the sweep re-plans after each pass. The expected
CPU seconds of each run come from :func:`estimate_seconds` (a per-row cost model, replaced
by the stored runs' own times as they come in), so ``--dry_run`` prints the whole bill
(:func:`sweep_runner.format_plan`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

TUNE, LENGTH, FINAL, CHECK = "tuned_tune", "tuned_length", "tuned_final", "tuned_check"
CHECK_TOLERANCE = 0.03  # Relative change of validation P@1 at twice the budget.


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of an objective's grid: a learning rate and objective options."""
  lr: float
  options: Tuple[Tuple[str, Union[int, float]], ...] = ()

  @property
  def name(self) -> str:
    return "_".join([f"lr{self.lr:g}"] + [f"{k}{v:g}" for k, v in self.options])


def grid(objective: str, learning_rates: Sequence[float],
         hyperparameters: Dict[str, Tuple[str, Sequence[float]]]) -> List[Setting]:
  """Every setting of ``objective``: each learning rate, times each value of its own
  hyperparameter (``hyperparameters[objective] = (option name, values)``) if it has one."""
  option = hyperparameters.get(objective)
  values = [((option[0], v),) for v in option[1]] if option else [()]  # Its own type.
  return [Setting(float(lr), v) for lr in learning_rates for v in values]


def _load(path: pathlib.Path) -> Optional[dict]:
  return json.loads(path.read_text()) if path.exists() else None


def val_p1(report: dict) -> float:
  return float(report["validation"]["ranking"]["precision_at_1"])


def tune_name(row: str, objective: str, setting: Setting, group: str = TUNE) -> str:
  return f"{row}_{objective}_{setting.name}{'_long' if group == LENGTH else ''}_s0"


def choose(out, row: str, objective: str, settings: Sequence[Setting], group: str = TUNE
           ) -> Tuple[Optional[Setting], List[str]]:
  """``(best setting, [])`` once every tune run of ``row``/``objective`` is stored (ties:
  the first in grid order), else ``(None, names of the missing runs)``."""
  scored, missing = [], []
  for s in settings:
    name = tune_name(row, objective, s, group)
    report = _load(pathlib.Path(out) / group / f"{name}.json")
    if report is None:
      missing.append(name)
    else:
      scored.append((val_p1(report), -len(scored), s))
  if missing:
    return None, missing
  return max(scored, key=lambda t: t[:2])[2], []


def length_check(out, row: str, objective: str, settings: Sequence[Setting]) -> Optional[dict]:
  """``{"short", "long", "same"}``: the settings chosen at the tuning and at the final
  length, once both grids are stored; else None."""
  short, long = choose(out, row, objective, settings)[0], choose(out, row, objective,
                                                                 settings, LENGTH)[0]
  if short is None or long is None:
    return None
  return {"short": short.name, "long": long.name, "same": short == long}


def best_objective(out, row: str, objectives: Sequence[str], seeds: int
                   ) -> Tuple[Optional[str], List[str]]:
  """The objective of highest mean validation P@1 over the final seeds of ``row``, once all
  are stored; else ``(None, missing run names)``."""
  means, missing = {}, []
  for objective in objectives:
    values = []
    for seed in range(seeds):
      name = f"{row}_{objective}_s{seed}"
      report = _load(pathlib.Path(out) / FINAL / f"{name}.json")
      if report is None:
        missing.append(name)
      else:
        values.append(val_p1(report))
    if values:
      means[objective] = statistics.mean(values)
  if missing:
    return None, missing
  return max(means, key=means.get), []


def estimate_seconds(out, group: str, row: str, steps: int,
                     cost_model: Dict[str, Tuple[float, float]]) -> float:
  """Expected wall seconds of one run: the median seconds per step of the stored runs of the
  same row and group (their own steps) once there are any, else ``a + b * steps`` from
  ``cost_model[row] = (a, b)`` (fixed seconds, seconds per step)."""
  per_step = []
  for path in (pathlib.Path(out) / group).glob(f"{row}_*.json"):
    report = _load(path)
    sweep, train = report.get("sweep", {}), report.get("train", {})
    if sweep.get("wall_seconds") and train.get("steps"):
      per_step.append(sweep["wall_seconds"] / train["steps"])
  if per_step:
    return statistics.median(per_step) * steps
  a, b = cost_model[row]
  return a + b * steps


@dataclasses.dataclass(frozen=True)
class Stages:
  """A dataset row of the tuned protocol: its tuning and final scales (``sweep.Scale``),
  where its choices come from, and its objectives (None: all)."""
  final: object
  tune: object = None
  choices_from: str = ""      # Another row whose tune stage chooses for this one.
  objectives: Optional[Tuple[str, ...]] = None
  learning_rates: Optional[Tuple[float, ...]] = None  # Else the protocol's.
  length_check: str = ""      # The objective whose grid also runs at the final length.
  note: str = ""              # Why a row is cut (shown by the report).


def plan(rows: Dict[str, Stages], out, *, objectives: Sequence[str], learning_rates,
         hyperparameters, make_config: Callable, cost_model, run_type) -> list:
  """The runs of the tuned protocol (``run_type``: ``sweep_runner.Run``).
  ``make_config(row, objective, seed, scale, setting, stage)`` builds a run's config
  (``stage``: :data:`TUNE`, :data:`FINAL` or :data:`CHECK`)."""
  runs = []

  def lrs(row):
    return rows[row].learning_rates or learning_rates

  def add(group, name, make, meta, steps, row, waits_for=""):
    runs.append(run_type(group, name, make, dict(meta, row=row), waits_for=waits_for,
                         estimate_s=estimate_seconds(out, group, row, steps, cost_model)))

  for row, st in rows.items():  # Stage 1: every tune run can start at once.
    if st.tune is None:
      continue
    for objective in st.objectives or objectives:
      for s in grid(objective, lrs(row), hyperparameters):
        add(TUNE, tune_name(row, objective, s),
            _maker(make_config, row, objective, 0, st.tune, s, TUNE),
            {"dataset": row, "objective": objective, "setting": s.name, "seed": 0},
            st.tune.steps, row)
    if st.length_check:
      once = dataclasses.replace(st.final, seeds=1)
      for s in grid(st.length_check, lrs(row), hyperparameters):
        add(LENGTH, tune_name(row, st.length_check, s, LENGTH),
            _maker(make_config, row, st.length_check, 0, once, s, LENGTH),
            {"dataset": row, "objective": st.length_check, "setting": s.name, "seed": 0},
            once.steps, row)
  for row, st in rows.items():  # Stage 2: the chosen settings, every seed.
    source = st.choices_from or row
    for objective in st.objectives or objectives:
      settings = grid(objective, lrs(source), hyperparameters)
      chosen, missing = choose(out, source, objective, settings)
      for seed in range(st.final.seeds):
        add(FINAL, f"{row}_{objective}_s{seed}",
            _maker(make_config, row, objective, seed, st.final, chosen or settings[0], FINAL),
            {"dataset": row, "objective": objective, "seed": seed,
             "setting": chosen.name if chosen else None, "chosen_on": source},
            st.final.steps, row, waits_for=f"{len(missing)} tune runs of {source}" if missing
            else "")
  for row, st in rows.items():  # Stage 3: the near-convergence check of the best.
    objs = st.objectives or objectives
    best, missing = best_objective(out, row, objs, st.final.seeds)
    source = st.choices_from or row
    chosen = choose(out, source, best, grid(best, lrs(source), hyperparameters))[0] \
        if best else None
    double = dataclasses.replace(st.final, steps=2 * st.final.steps, seeds=1)
    add(CHECK, f"{row}_best_2x_s0",
        _maker(make_config, row, best or objs[0], 0, double,
               chosen or grid(objs[0], lrs(source), hyperparameters)[0], CHECK),
        {"dataset": row, "objective": best, "seed": 0, "setting": chosen.name if chosen else None},
        double.steps, row, waits_for=f"{len(missing)} final runs of {row}" if missing else "")
  return runs


def _maker(make_config, row, objective, seed, scale, setting, stage):
  return lambda: make_config(row, objective, seed, scale, setting, stage)


def section(reports: Sequence[dict], rows: Dict[str, Stages], *, objectives: Sequence[str],
            learning_rates, hyperparameters) -> List[str]:
  """RESULTS.md's account of the tuned protocol so far (empty before its first stored run):
  per row and objective, the tune runs stored out of the grid, the setting chosen once the
  grid is complete (validation P@1), and the final seeds stored."""
  by = {}
  for r in reports:
    meta = r.get("sweep", {})
    if meta.get("group") in (TUNE, LENGTH, FINAL, CHECK):
      by.setdefault((meta["group"], meta.get("row"), meta.get("objective")), []).append(r)
  if not by:
    return []
  lines = ["## The tuned protocol (in progress)", "",
           "`python -m experiments.sweep --preset=tuned` (`multilabel_jax/studies/tuning.py`): "
           "each objective's learning rate and own hyperparameter chosen on seed 0's "
           "validation P@1, then seeds at the chosen setting, then the best objective at twice "
           "the budget. Its verdicts replace the tables below once its rows are complete; "
           "until then nothing here is compared. `--dry_run` lists what is left and its "
           "expected time. A learning rate chosen at the edge of its grid says that the grid "
           "should be extended before the row's verdicts are read.", "",
           "| row | objective | tune runs | chosen (val P@1) | final seeds |",
           "|---|---|---|---|---|"]
  for row, st in rows.items():
    source = st.choices_from or row
    for objective in st.objectives or objectives:
      settings = grid(objective, rows[source].learning_rates or learning_rates,
                      hyperparameters)
      tuned = {r["sweep"]["setting"]: val_p1(r) for r in by.get((TUNE, source, objective), [])}
      finals = len(by.get((FINAL, row, objective), []))
      if not finals and (st.choices_from or not tuned):  # Shown under its source row.
        continue
      chosen = "-"
      if len(tuned) == len(settings):
        best = max(settings, key=lambda s: tuned[s.name])  # First in grid order on ties.
        edge = best.lr in (min(s.lr for s in settings), max(s.lr for s in settings))
        chosen = f"{best.name} ({tuned[best.name]:.3f}){', lr at the edge' if edge else ''}"
      lines.append(f"| {row} | {objective} | {len(tuned)} of {len(settings)}"
                   f"{' (from ' + source + ')' if st.choices_from else ''} | {chosen} | "
                   f"{finals} of {st.final.seeds} |")
  return lines + [""]
