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
  20k) has no tune stage. Where a row tunes at its final length and its tune runs evaluate
  what the final ones do (the same config), seed 0 is the chosen tune run itself, stored
  again under its final name with ``sweep.reused`` naming it, not trained twice.
* ``tuned_check``: the row's best objective (highest mean validation P@1 over the final
  seeds) once more at twice the final length, seed 0: if its validation P@1 moves by less
  than 3% (relative), the row's budget stands; otherwise the row is budget-limited.
* ``tuned_double``: a budget-limited row's every objective and seed at twice the final
  length, at the same chosen settings, so its verdicts are given at both budgets; the
  check run is the best objective's seed 0 there (stored again, as above).

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

from multilabel_jax import configs

TUNE, LENGTH, FINAL, CHECK, DOUBLE = ("tuned_tune", "tuned_length", "tuned_final",
                                      "tuned_check", "tuned_double")
CHECK_TOLERANCE = 0.03  # Relative change of validation P@1 at twice the budget.
# The best objective's test P@1 over the oracle's that a row should reach (issue 11: hw20k).
ORACLE_TARGETS = {"hw20k": 0.90}
PLANNED_HOURS = 10  # The preset's planned run time on the 2-core CPU machine (issue 11).


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


MAX_EXTENSIONS = 2  # Steps a learning-rate grid may grow past an edge that validation picks.


def _one_step_past(lrs: List[float], up: bool) -> float:
  """The next learning rate of the grid's own pattern past its top (``up``) or bottom edge:
  (3e-4, 1e-3, 3e-3) continues with 1e-2 and 1e-4."""
  if len(lrs) >= 3:
    value = lrs[-2] * lrs[-1] / lrs[-3] if up else lrs[1] * lrs[0] / lrs[2]
  else:
    value = lrs[-1] ** 2 / lrs[0] if up else lrs[0] ** 2 / lrs[-1]
  return float(f"{value:.3g}")


def tuned_grid(score: Callable[[Setting], Optional[float]], objective: str,
               learning_rates: Sequence[float], hyperparameters,
               max_extensions: int = MAX_EXTENSIONS
               ) -> Tuple[List[Setting], Optional[Setting], List[Setting]]:
  """``(settings, best, missing)``: the objective's :func:`grid`, grown by one step of its
  pattern past whichever edge holds the best validation P@1 (``score(setting)``, None while
  not stored), at most ``max_extensions`` times: a choice at the edge of the grid says the
  optimum may lie beyond it. ``best`` (ties: the first in grid order) is None while any
  setting of the grid is ``missing``."""
  lrs = sorted(float(lr) for lr in learning_rates)
  for extension in range(max_extensions + 1):
    settings = grid(objective, lrs, hyperparameters)
    scores = [score(s) for s in settings]
    missing = [s for s, v in zip(settings, scores) if v is None]
    if missing:
      return settings, None, missing
    best = max(zip(scores, range(0, -len(settings), -1), settings), key=lambda t: t[:2])[2]
    up, down = best.lr == lrs[-1], best.lr == lrs[0]
    if len(lrs) < 2 or extension == max_extensions or not (up or down):
      return settings, best, []
    lrs = lrs + [_one_step_past(lrs, True)] if up else [_one_step_past(lrs, False)] + lrs
  raise AssertionError("unreachable")


def _stored_score(out, row: str, objective: str, group: str):
  def score(setting):
    report = _load(pathlib.Path(out) / group / f"{tune_name(row, objective, setting, group)}.json")
    return None if report is None else val_p1(report)
  return score


def choose(out, row: str, objective: str, learning_rates, hyperparameters, group: str = TUNE
           ) -> Tuple[List[Setting], Optional[Setting], List[str]]:
  """``(settings, best, missing run names)`` of ``row``/``objective`` from its stored tune runs
  (:func:`tuned_grid`)."""
  settings, best, missing = tuned_grid(_stored_score(out, row, objective, group), objective,
                                       learning_rates, hyperparameters)
  return settings, best, [tune_name(row, objective, s, group) for s in missing]


def compare_lengths(short_score, long_score, objective: str, learning_rates, hyperparameters
                    ) -> Tuple[List[Setting], Optional[Setting], Optional[Setting]]:
  """``(settings, short best, long best)``: the choice of the tuning length (its grid grown
  as :func:`tuned_grid` grows it) and, over the same settings, the choice at the final
  length; each None while its runs are missing. ``*_score(setting)`` -> val P@1 or None."""
  settings, short, _ = tuned_grid(short_score, objective, learning_rates, hyperparameters)
  long = tuned_grid(long_score, objective, sorted({s.lr for s in settings}), hyperparameters,
                    max_extensions=0)[1]
  return settings, short, long


def length_check(out, row: str, objective: str, learning_rates, hyperparameters
                 ) -> Optional[dict]:
  """``{"short", "long", "same"}``: the settings chosen at the tuning and at the final
  length (over the tuning grid, extensions included), once both are stored; else None."""
  _, short, long = compare_lengths(_stored_score(out, row, objective, TUNE),
                                   _stored_score(out, row, objective, LENGTH), objective,
                                   learning_rates, hyperparameters)
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


def check_moved(final_seed0: dict, check: dict) -> float:
  """Relative change of validation P@1 from the best objective's final seed 0 to its run at
  twice the budget; the row is budget-limited where ``abs(...) >= CHECK_TOLERANCE``."""
  base = val_p1(final_seed0)
  return (val_p1(check) - base) / max(base, 1e-12)


def limited_check(out, row: str) -> Optional[dict]:
  """The stored check run of ``row`` if it marks the row budget-limited, else None."""
  check = _load(pathlib.Path(out) / CHECK / f"{row}_best_2x_s0.json")
  if check is None:
    return None
  final = _load(pathlib.Path(out) / FINAL / f"{row}_{check['sweep']['objective']}_s0.json")
  if final is None or abs(check_moved(final, check)) < CHECK_TOLERANCE:
    return None
  return check


# Groups trained at a row's final scale, differing only in length: when a group has no stored
# run yet, the runs of these stand in for its seconds per step (nearest length first).
_STAND_INS = {FINAL: (CHECK, DOUBLE), CHECK: (DOUBLE, FINAL), DOUBLE: (CHECK, FINAL)}


def estimate_seconds(out, group: str, row: str, steps: int,
                     cost_model: Dict[str, Tuple[float, float]], objective: str = "") -> float:
  """Expected wall seconds of one run here: the median seconds per step of the stored runs of
  the same row and objective (else of the row) made on this hardware
  (``sweep_runner.hardware``) once there are any, else ``a + b * steps`` from
  ``cost_model[row] = (a, b)`` (fixed seconds, seconds per step). Runs of ``group`` come
  first, then those of its stand-ins (:data:`_STAND_INS`)."""
  from multilabel_jax.studies import sweep_runner  # pylint: disable=g-import-not-at-top
  here = sweep_runner.hardware() + ","
  groups = (group,) + _STAND_INS.get(group, ())
  timed = {g: [] for g in groups}  # Per group: (same objective?, seconds per step) of each run.
  for g in groups:
    for path in (pathlib.Path(out) / g).glob(f"{row}_*.json"):
      report = _load(path)
      sweep, train = report.get("sweep", {}), report.get("train", {})
      if not sweep.get("machine", here).startswith(here) or sweep.get("reused"):
        continue  # Another machine's speed, or a run stored once and not trained again.
      if sweep.get("wall_seconds") and train.get("steps"):
        # A check run's name does not hold its objective; its report does.
        same = bool(objective) and (path.name.startswith(f"{row}_{objective}_")
                                    or sweep.get("objective") == objective)
        timed[g].append((same, sweep["wall_seconds"] / train["steps"]))
  for same_objective in ([True] if objective else []) + [False]:
    for g in groups:
      per_step = [t for same, t in timed[g] if same or not same_objective]
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
  note: str = ""              # Why a row is cut or tuned as it is (shown by the report).


def plan(rows: Dict[str, Stages], out, *, objectives: Sequence[str], learning_rates,
         hyperparameters, make_config: Callable, cost_model, run_type) -> list:
  """The runs of the tuned protocol (``run_type``: ``sweep_runner.Run``).
  ``make_config(row, objective, seed, scale, setting, stage)`` builds a run's config
  (``stage``: :data:`TUNE`, :data:`LENGTH`, :data:`FINAL`, :data:`CHECK` or
  :data:`DOUBLE`)."""
  runs = []

  def lrs(row):
    return rows[row].learning_rates or learning_rates

  def add(group, name, make, meta, steps, row, objective, waits_for=""):
    runs.append(run_type(group, name, make, dict(meta, row=row), waits_for=waits_for,
                         estimate_s=estimate_seconds(out, group, row, steps, cost_model,
                                                     objective)))

  for row, st in rows.items():  # Stage 1: the tune grids (grown past an edge choice).
    if st.tune is None:
      continue
    for objective in st.objectives or objectives:
      for s in choose(out, row, objective, lrs(row), hyperparameters)[0]:
        add(TUNE, tune_name(row, objective, s),
            _maker(make_config, row, objective, 0, st.tune, s, TUNE),
            {"dataset": row, "objective": objective, "setting": s.name, "seed": 0},
            st.tune.steps, row, objective)
    if st.length_check:
      once = dataclasses.replace(st.final, seeds=1)
      for s in choose(out, row, st.length_check, lrs(row), hyperparameters)[0]:
        add(LENGTH, tune_name(row, st.length_check, s, LENGTH),
            _maker(make_config, row, st.length_check, 0, once, s, LENGTH),
            {"dataset": row, "objective": st.length_check, "setting": s.name, "seed": 0},
            once.steps, row, st.length_check)
  for row, st in rows.items():  # Stage 2: the chosen settings, every seed.
    source = st.choices_from or row
    for objective in st.objectives or objectives:
      settings, chosen, missing = choose(out, source, objective, lrs(source), hyperparameters)
      for seed in range(st.final.seeds):
        setting = chosen or settings[0]
        make = _maker(make_config, row, objective, seed, st.final, setting, FINAL)
        meta = {"dataset": row, "objective": objective, "seed": seed,
                "setting": chosen.name if chosen else None, "chosen_on": source}
        waits_for = f"{len(missing)} tune runs of {source}" if missing else ""
        tuned = tune_name(row, objective, setting)
        if seed == 0 and source == row and st.tune is not None and _same_config(
            _tune_config(out, tuned) if chosen else  # Else as the tune stage builds it.
            make_config(row, objective, 0, st.tune, setting, TUNE), make()):
          # The chosen tune run is this run (same config, same seed): stored once, not twice.
          runs.append(run_type(FINAL, f"{row}_{objective}_s0", fit=_reuse(out, tuned),
                               meta=dict(meta, row=row, reused=f"{TUNE}/{tuned}"),
                               waits_for=waits_for))
          continue
        add(FINAL, f"{row}_{objective}_s{seed}", make, meta, st.final.steps, row, objective,
            waits_for=waits_for)
  for row, st in rows.items():  # Stage 3: the near-convergence check of the best.
    objs = st.objectives or objectives
    best, missing = best_objective(out, row, objs, st.final.seeds)
    source = st.choices_from or row
    settings, chosen, _ = choose(out, source, best or objs[0], lrs(source), hyperparameters)
    double = dataclasses.replace(st.final, steps=2 * st.final.steps, seeds=1)
    add(CHECK, f"{row}_best_2x_s0",
        _maker(make_config, row, best or objs[0], 0, double, chosen or settings[0], CHECK),
        {"dataset": row, "objective": best, "seed": 0,
         "setting": chosen.name if best and chosen else None},
        double.steps, row, best or "", waits_for=f"{len(missing)} final runs of {row}"
        if missing else "")
  for row, st in rows.items():  # Stage 4: a budget-limited row, all of it at twice the budget.
    check = limited_check(out, row)
    if check is None:
      continue
    double = dataclasses.replace(st.final, steps=2 * st.final.steps)
    source = st.choices_from or row
    for objective in st.objectives or objectives:
      setting = choose(out, source, objective, lrs(source), hyperparameters)[1]
      if setting is None:  # Its grid grew since its final runs (not in a sweep's order).
        continue
      for seed in range(st.final.seeds):
        make = _maker(make_config, row, objective, seed, double, setting, DOUBLE)
        meta = {"dataset": row, "objective": objective, "seed": seed, "setting": setting.name,
                "chosen_on": source}
        if (seed == 0 and objective == check["sweep"]["objective"]
            and _same_config(check.get("config"), make())):
          runs.append(run_type(DOUBLE, f"{row}_{objective}_s0",
                               fit=_reuse(out, f"{row}_best_2x_s0", CHECK),
                               meta=dict(meta, row=row, reused=f"{CHECK}/{row}_best_2x_s0")))
          continue
        add(DOUBLE, f"{row}_{objective}_s{seed}", make, meta, double.steps, row, objective)
  return runs


def _maker(make_config, row, objective, seed, scale, setting, stage):
  return lambda: make_config(row, objective, seed, scale, setting, stage)


def _config_json(config) -> dict:
  """A config as its run report stores it (``train.train_and_evaluate``), without the keys
  that cannot change the numbers (``data.prefetch``: the same batches, read another way)."""
  stored = json.loads(json.dumps(config) if isinstance(config, dict)
                      else config.to_json_best_effort())  # A copy either way.
  stored.get("data", {}).pop("prefetch", None)
  return stored


def _same_config(stored, current) -> bool:
  """Whether a stored run's config is ``current`` (keys added since it was stored count at
  their defaults, as when a workdir resumes: ``configs.differing_keys``)."""
  return stored is not None and current is not None and not configs.differing_keys(
      _config_json(stored), _config_json(current))


def _tune_config(out, name: str) -> Optional[dict]:
  report = _load(pathlib.Path(out) / TUNE / f"{name}.json")
  return None if report is None else report.get("config")


def _reuse(out, name: str, group: str = TUNE) -> Callable[[], dict]:
  """The stored run ``group/name`` as the report of a later stage's run (its own sweep
  record goes: the new run's replaces it, and says where the run came from)."""
  def fit():
    report = dict(_load(pathlib.Path(out) / group / f"{name}.json"))
    report.pop("sweep", None)
    return report
  return fit


def _lengths(row: str, st: Stages) -> str:
  tuned = (f"tuned at {st.tune.steps} steps" if st.tune else
           f"{st.choices_from}'s choices")
  return (f"{row} {tuned}, final {st.final.steps} steps x {st.final.seeds} seeds"
          + (f" ({st.note})" if st.note else ""))


def run_hours(reports: Sequence[dict]) -> Tuple[int, float]:
  """``(runs, hours)``: the tuned preset's stored runs and the sum of their own wall-clock
  times (``sweep.wall_seconds``; a run reused from another stage counts once; the peers'
  ``train.seconds_this_run``)."""
  seconds = [r["sweep"].get("wall_seconds", 0.0) for r in reports
             if r.get("sweep", {}).get("preset") == "tuned"]
  seconds += [r["train"]["seconds_this_run"] for r in reports
              if "peer" in r and r.get("data", {}).get("name") == "debtags"]
  return len(seconds), sum(seconds) / 3600


def section(reports: Sequence[dict], rows: Dict[str, Stages], *, objectives: Sequence[str],
            learning_rates, hyperparameters, finished: bool = False) -> List[str]:
  """RESULTS.md's account of the tuned protocol (empty before its first stored run): per
  row and objective, the tune runs stored out of the grid, the setting chosen once the grid
  is complete (validation P@1), and the final seeds stored; ``finished``: every run the
  protocol asks for is stored, and its cost against ``PLANNED_HOURS``."""
  by = {}
  for r in reports:
    meta = r.get("sweep", {})
    if meta.get("group") in (TUNE, LENGTH, FINAL, CHECK):
      by.setdefault((meta["group"], meta.get("row"), meta.get("objective")), []).append(r)
  if not by:
    return []

  def scores(group, row, objective):  # Setting name -> val P@1 (the last stored wins).
    return {r["sweep"]["setting"]: val_p1(r) for r in by.get((group, row, objective), [])}

  runs, hours = run_hours(reports)
  _, tune_hours = run_hours([r for r in reports if r.get("sweep", {}).get("group") == TUNE])
  at_length = [row for row, st in rows.items() if st.tune and st.tune.steps == st.final.steps]
  cost = (f"Every run it asks for is stored: {runs} runs, {hours:.0f} h of run time (the sum "
          "of each run's own wall-clock; most ran two at a time on the 2 cores, so one run "
          f"alone is faster), of which tuning took {tune_hours:.0f} h"
          + (f" ({', '.join(at_length)} tune at their final length, below)" if at_length
             else "") + ". "
          + (f"That is within the {PLANNED_HOURS} h planned for this machine."
             if hours <= PLANNED_HOURS else
             f"That is over the {PLANNED_HOURS} h planned for this machine; nothing was cut.")
          if finished else
          "Its verdicts replace the tables below once its rows are complete; until then "
          "nothing here is compared. `--dry_run` lists what is left and its expected time.")
  lines = ["## The tuned protocol" + ("" if finished else " (in progress)"), "",
           "`python -m experiments.sweep --preset=tuned` (`multilabel_jax/studies/tuning.py`): "
           "each objective's learning rate and own hyperparameter chosen on seed 0's "
           "validation P@1, then seeds at the chosen setting, then the best objective at twice "
           "the budget and, where that moves it by 3% or more, every objective there. "
           + cost + " A learning rate chosen at the edge of its grid grows the grid by one "
           f"step past that edge (at most {MAX_EXTENSIONS} steps); a choice still at the edge "
           "after that is marked, with its gain over the next learning rate in (a small gain: "
           "the curve has flattened there). Where a row tunes at its final length, the chosen "
           "tune run (same config, seed 0) is also its final seed 0, stored once.", "",
           "Lengths: " + "; ".join(_lengths(row, st) for row, st in rows.items()) + ".", "",
           "| row | objective | tune runs | chosen (val P@1) | final seeds |",
           "|---|---|---|---|---|"]
  for row, st in rows.items():
    source = st.choices_from or row
    for objective in st.objectives or objectives:
      tuned = scores(TUNE, source, objective)
      settings, best, _ = tuned_grid(lambda setting: tuned.get(setting.name), objective,
                                     rows[source].learning_rates or learning_rates,
                                     hyperparameters)
      finals = len(by.get((FINAL, row, objective), []))
      if not finals and (st.choices_from or not tuned):  # Shown under its source row.
        continue
      chosen = "-"
      if best is not None:
        lrs = sorted({s.lr for s in settings})
        chosen = f"{best.name} ({tuned[best.name]:.3f})"
        # Still at the edge after the extensions: marked, with its gain over the next lr in.
        if len(lrs) > 1 and best.lr in (lrs[0], lrs[-1]):
          chosen += ", lr at the edge"
          inner = Setting(lrs[-2] if best.lr == lrs[-1] else lrs[1], best.options)
          if tuned.get(inner.name):
            gain = tuned[best.name] / tuned[inner.name] - 1
            chosen += f" ({gain:+.1%} over lr{inner.lr:g})"
      in_grid = {s.name for s in settings} & set(tuned)
      lines.append(f"| {row} | {objective} | {len(in_grid)} of {len(settings)}"
                   f"{' (from ' + source + ')' if st.choices_from else ''} | {chosen} | "
                   f"{finals} of {st.final.seeds} |")
  lines.append("")
  for row, st in rows.items():  # The length check: the same choice at the final length?
    if not st.length_check:
      continue
    objective = st.length_check
    short, long = scores(TUNE, row, objective), scores(LENGTH, row, objective)
    if not long:
      continue
    settings, best, at_length = compare_lengths(
        lambda setting: short.get(setting.name), lambda setting: long.get(setting.name),
        objective, st.learning_rates or learning_rates, hyperparameters)
    stored = ", ".join(f"{s.name} {long[s.name]:.3f}" for s in settings if s.name in long)
    line = (f"Length check, {row} {objective} at {st.final.steps} steps (validation P@1): "
            f"{stored}")
    if best is not None and at_length is not None:
      line += (f". {st.tune.steps} steps chose {best.name}, {st.final.steps} steps choose "
               f"{at_length.name}: " + ("the shorter tuning stands." if at_length == best
                                        else "**the choice changes with length**; the "
                                        "row's tuning length is not sound."))
    else:
      line += f" ({len([s for s in settings if s.name in long])} of {len(settings)} stored)."
    lines += [line, ""]
  return lines
