r"""RESULTS.md's tables of the tuned protocol and its sixth claim, from the stored runs.

Reads the groups of :mod:`multilabel_jax.studies.tuning`: ``tuned_final`` (the chosen
setting of every objective, one run per seed) and ``tuned_check`` (the row's best objective
at twice the budget; the length check is :func:`tuning.section`'s). Per row:

* a table of every objective at its chosen setting (validation and test P@1, P@5, mAP, the
  micro-F1 of the decoder prediction uses, and on hashtag_world its fraction of the oracle's
  P@1), with the oracle (the simulator's Bayes-optimal marginals, same test rows; its mAP
  over the orders of its tied scores, :mod:`multilabel_jax.studies.oracle_ranking`) as a
  row of its own and, on debtags, the peers stored by :mod:`multilabel_jax.studies.peers`;
* the budget's verdict: the best objective at twice the budget moves validation P@1 by less
  than ``tuning.CHECK_TOLERANCE`` (relative): the budget stands; otherwise the row is
  *budget-limited*, still rising or falling (then the budget is not short, but the
  verdicts may depend on it);
* the sixth claim: for each objective, the decoder whose sets come closest to the
  Bayes-optimal sets (smallest samples-F1 regret against the oracle's expected-F1 sets;
  :func:`multilabel_jax.report.against_oracle`), against the runner-up, paired by seed.
"""

from __future__ import annotations

import copy
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from multilabel_jax.studies import stats as rs
from multilabel_jax.studies import tuning

CLAIM_6 = ("For each objective, one decoder's label sets come closest to the Bayes-optimal "
           "sets (highest expected samples-F1 under the oracle marginals).")


class Tuned:
  """The stored runs of the tuned protocol, by row and objective."""

  def __init__(self, reports: Sequence[dict], rows: Dict[str, tuning.Stages],
               objectives: Sequence[str]):
    self.rows_spec, self.objectives = rows, objectives
    self.finals = rs.by_key(reports, tuning.FINAL, ("row", "objective"))
    self.checks = {k[0]: v.get(0) for k, v in rs.by_key(reports, tuning.CHECK, ("row",)).items()}
    self.peers = [r for r in reports if "peer" in r]
    self.oracle_maps = {k[0]: v[0]["oracle_ranking"]
                        for k, v in rs.by_key(reports, "oracle", ("row",)).items()}
    self.doubles = rs.by_key(reports, tuning.DOUBLE, ("row", "objective"))
    self.budget = "final"  # Or "twice": see at_twice_the_budget().

  def runs(self, row: str, objective: str) -> Dict[int, dict]:
    return self.finals.get((row, objective), {})

  def objectives_of(self, row: str) -> List[str]:
    return [o for o in (self.rows_spec[row].objectives or self.objectives) if self.runs(row, o)]

  def rows(self) -> List[str]:
    return [row for row in self.rows_spec if self.objectives_of(row)]

  def oracle(self, row: str) -> Optional[dict]:
    """The oracle's test report (the same on every final run of a row: one world, one split)."""
    for objective in self.objectives_of(row):
      for report in self.runs(row, objective).values():
        if "oracle" in report:
          return report["oracle"]
    return None

  def peers_of(self, row: str) -> List[dict]:
    """The peers' reports stored for ``row``'s dataset (debtags' only, today)."""
    return [peer for peer in self.peers if peer["data"]["name"] == row]

  def progress(self, row: str) -> Tuple[int, int]:
    """``(objectives with every final seed stored, objectives of the row)``."""
    spec = self.rows_spec[row]
    objs = spec.objectives or self.objectives
    return sum(len(self.runs(row, o)) >= spec.final.seeds for o in objs), len(objs)

  def complete(self, row: str) -> bool:
    """Whether every objective of ``row`` has all its final seeds: only then is anything
    chosen or judged across objectives (a partial row would pick among those that ran)."""
    done, total = self.progress(row)
    return done == total

  def best(self, row: str) -> Optional[str]:
    """The objective of highest mean validation P@1 over its final seeds (None until the
    row is :meth:`complete`)."""
    if not self.complete(row):
      return None
    return max(self.objectives_of(row), key=lambda o: statistics.mean(
        tuning.val_p1(r) for r in self.runs(row, o).values()))


  def moved(self, row: str) -> Optional[float]:
    """:func:`tuning.check_moved` of the row's stored check run (None before it is stored)."""
    check = self.checks.get(row)
    runs = self.runs(row, check["sweep"]["objective"]) if check else {}
    return tuning.check_moved(runs[min(runs)], check) if runs else None

  def limited(self, row: str) -> bool:
    """Whether the row's check run marks it budget-limited."""
    moved = self.moved(row)
    return moved is not None and abs(moved) >= tuning.CHECK_TOLERANCE

  def finished(self) -> bool:
    """Whether every run the protocol asks for is stored: each row's final seeds and check,
    and each budget-limited row's runs at twice the budget."""
    twice = self.at_twice_the_budget()
    return all(self.complete(row) and self.checks.get(row) is not None
               and (not self.limited(row) or twice.complete(row)) for row in self.rows_spec)

  def at_twice_the_budget(self) -> "Tuned":
    """The same runs with each budget-limited row's ``tuned_double`` runs (every objective
    at twice the budget) in place of its final runs; the rows whose budget stands keep
    theirs. A limited row is :meth:`complete` again once all its doubled runs are stored."""
    t = copy.copy(self)
    t.finals = {k: self.doubles.get(k, {}) if self.limited(k[0]) else v
                for k, v in self.finals.items()}
    t.checks, t.budget = {}, "twice"
    return t


class Evidence:
  """The tuned final runs in the shape the five seed claims read
  (:mod:`multilabel_jax.studies.claims`): ``runs(row, objective)``, ``rows()``, the ambiguity
  levels ``amb`` (low and high from their rows; mid is the hw1k row, the simulator's
  default) and the OvR ``baseline``; the shrunk sweep's ``long`` and ``tune`` groups have no
  tuned counterpart (each objective is tuned and trained at its row's final length)."""

  def __init__(self, t: Tuned, rows: Sequence[str], baseline: Optional[dict] = None):
    self.tuned, self._rows, self.baseline = t, rows, baseline
    self.candidates = ("among the tuned final runs (each objective at its chosen setting)"
                       + (", the budget-limited rows' at twice the budget"
                          if t.budget == "twice" else ""))
    self.amb = {(level, objective): t.runs(row, objective)
                for level, row in (("low", "ambiguity_low"), ("mid", "hw1k"),
                                   ("high", "ambiguity_high"))
                for objective in ("softmax", "two_head") if t.runs(row, objective)}
    self.long, self.tune = {}, {}

  def runs(self, row: str, objective: str) -> Dict[int, dict]:
    return self.tuned.runs(row, objective)

  def rows(self) -> List[str]:
    """The complete rows (:meth:`Tuned.complete`): claims are judged on nothing less."""
    return [row for row in self._rows if row in self.tuned.rows() and self.tuned.complete(row)]


def _prediction_f1(report) -> float:
  return rs.decoder(report, report.get("predict", {}).get("decoder", ""), "f1_micro")


def row_table(t: Tuned, row: str) -> List[str]:
  """Every objective of ``row`` at its chosen setting, with the oracle and the peers."""
  oracle = t.oracle(row)
  header = ["objective", "setting", "val P@1", "test P@1", "P@5", "mAP",
            "micro-F1 (prediction decoder)"] + (["of oracle P@1"] if oracle else []) + ["seeds"]
  body = []
  for objective in t.objectives_of(row):
    runs = t.runs(row, objective)
    first = runs[min(runs)]
    cells = [objective, first["sweep"].get("setting") or "-",
             rs.stat(runs, tuning.val_p1).fmt(),
             rs.stat(runs, lambda r: rs.ranking(r, "precision_at_1")).fmt(),
             rs.stat(runs, lambda r: rs.ranking(r, "precision_at_5")).fmt(),
             rs.stat(runs, lambda r: rs.ranking(r, "map")).fmt(),
             rs.stat(runs, _prediction_f1).fmt()]
    if oracle:
      cells.append(rs.stat(runs, lambda r: r.get("against_oracle", {}).get(
          "fraction_of_oracle_p1", float("nan"))).fmt(2))
    body.append(cells + [str(len(runs))])
  if oracle:
    f1 = oracle["decoders"].get("expected_f1", {}).get("f1_micro", float("nan"))
    body.append(["**oracle** (Bayes-optimal marginals)", "-", "-",
                 f"{oracle['ranking']['precision_at_1']:.3f}",
                 f"{oracle['ranking']['precision_at_5']:.3f}",
                 _oracle_map_cell(oracle, t.oracle_maps.get(row)),
                 f"{f1:.3f} (expected_f1)", "1.00", "-"])
  for peer in t.peers_of(row):
    ranking = peer["test"]["ranking"]
    body.append([f"peer: {peer['peer']}", "-",
                 f"{peer['validation_ranking']['precision_at_1']:.3f}",
                 f"{ranking['precision_at_1']:.3f}", f"{ranking['precision_at_5']:.3f}",
                 f"{ranking.get('map', float('nan')):.3f}", "-", "1"])
  return rs.table(header, body)


def _oracle_map_cell(oracle: dict, both: Optional[dict]) -> str:
  """The oracle's mAP over the orders of its tied scores, once the ``oracle`` group has it
  (else its stored mAP, ties as one step, marked "(step)")."""
  if both is None:
    return f"{oracle['ranking'].get('map', float('nan')):.3f} (step)"
  return f"{both['map_over_tie_orders']:.3f}*"


def oracle_map_note(t: Tuned, row: str) -> str:
  """What the oracle row's mAP cell means (empty for a row without an oracle)."""
  oracle, both = t.oracle(row), t.oracle_maps.get(row)
  if oracle is None:
    return ""
  if both is None:
    return ("(step) The oracle's mAP with tied scores as one step (sklearn's convention, as "
            "the runs' mAP): its marginals can tie by design, and this reading can then "
            "misread them; the `oracle` group of the sweep stores the mAP over the "
            "orders of the ties.")
  return (f"(*) The oracle's mAP on average over the orders of its tied scores "
          f"(`multilabel_jax.studies.oracle_ranking`): {both['tied_positives']:.0%} of its "
          f"test positives share their score with another row of their class. With ties as "
          f"one step (sklearn's convention, as the runs' mAP) it is {both['map_step']:.3f}.")


def budget_verdict(t: Tuned, row: str) -> str:
  """The near-convergence check of ``row`` in one sentence."""
  best, check = t.best(row), t.checks.get(row)
  if best is None:
    done, total = t.progress(row)
    return (f"Best objective: chosen once every objective's final seeds are stored ({done} of "
            f"{total} objectives so far).")
  if check is None:
    return f"Best objective on validation: `{best}`; its run at twice the budget is not stored yet."
  runs = t.runs(row, best)
  base, moved = tuning.val_p1(runs[min(runs)]), t.moved(row)
  stands = not t.limited(row)
  return (f"Best objective on validation: `{best}`. At twice the budget "
          f"({check['train']['steps']} steps) its validation P@1 goes from {base:.3f} to "
          f"{tuning.val_p1(check):.3f} ({moved:+.1%}): "
          + ("the budget stands." if stands else
             f"**budget-limited** (more than {tuning.CHECK_TOLERANCE:.0%}, "
             + ("still rising: more training helps" if moved > 0 else
                "falling: longer training at this setting does not help, so the budget is not "
                "short, but the ranking may change with it")
             + "); the check run's test P@1 is "
             f"{rs.ranking(check, 'precision_at_1'):.3f}, and every objective runs at both "
             "budgets (below)."))


def oracle_target(t: Tuned, row: str) -> str:
  """Whether ``row``'s best objective reaches ``tuning.ORACLE_TARGETS[row]`` of the oracle's
  test P@1, in P@1 units (a rounded fraction could read as met when it is not), and where
  its seed 0 goes at twice the budget (empty for a row without a target, oracle or best
  objective)."""
  target, oracle, best = tuning.ORACLE_TARGETS.get(row), t.oracle(row), t.best(row)
  if target is None or oracle is None or best is None:
    return ""
  goal, runs = target * oracle["ranking"]["precision_at_1"], t.runs(row, best)
  p1 = rs.stat(runs, lambda r: rs.ranking(r, "precision_at_1"))
  text = (f"Target: {target:.0%} of the oracle's test P@1, i.e. {goal:.4f}. `{best}` reaches "
          f"{p1.fmt(4)} over {p1.n} seed{'s' if p1.n > 1 else ''}: "
          + ("met." if p1.mean >= goal else
             f"**not met** (the mean is short by {goal - p1.mean:.4f})."))
  check = t.checks.get(row)
  if check is not None:
    text += (f" At twice the budget ({check['train']['steps']} steps) seed 0's test P@1 goes "
             f"from {rs.ranking(runs[min(runs)], 'precision_at_1'):.4f} to "
             f"{rs.ranking(check, 'precision_at_1'):.4f}, its validation P@1 by "
             f"{t.moved(row):+.1%} (" + ("budget-limited" if t.limited(row) else
                                        "the budget stands") + ").")
  return text + " The learning curves (Plots) show each objective against the oracle's line."


def doubled_table(t: Tuned, row: str) -> List[str]:
  """A budget-limited row at twice the budget: every objective's ``tuned_double`` runs and
  the best objective there (empty for a row whose budget stands)."""
  if not t.limited(row):
    return []
  twice = t.at_twice_the_budget()
  steps = 2 * t.rows_spec[row].final.steps
  lines = [f"#### {row} at twice the budget ({steps} steps)", ""]
  if not twice.objectives_of(row):
    return lines + ["Not stored yet (sweep group `tuned_double`).", ""]
  lines += row_table(twice, row)
  best = twice.best(row)
  if best is None:
    done, total = twice.progress(row)
    return lines + [f"Best objective at twice the budget: chosen once every objective's "
                    f"seeds are stored ({done} of {total} objectives so far).", ""]
  return lines + [f"Best objective on validation at twice the budget: `{best}` (at the final "
                  f"budget: `{t.best(row)}`).", ""]


def _regret(decoder: str):
  return lambda r: r.get("against_oracle", {}).get("regret_f1_samples", {}).get(
      decoder, float("nan"))


def _by_regret(runs: Dict[int, dict]) -> Tuple[Dict[int, dict], List[str]]:
  """The runs compared with the oracle, and their decoders by mean regret against the
  Bayes-optimal sets, closest first (empty when none was)."""
  runs = {s: r for s, r in runs.items() if "against_oracle" in r}
  if not runs:
    return runs, []
  decoders = next(iter(runs.values()))["against_oracle"]["regret_f1_samples"]
  return runs, sorted(decoders, key=lambda d: rs.stat(runs, _regret(d)).mean)


def claim6(t: Tuned, shown: Optional[Sequence[str]] = None):
  """``(claim, evidence, verdict, body)`` of the sixth claim, in the shape of
  :data:`multilabel_jax.studies.claims.CLAIMS`; the verdict is over every complete row, the
  body shows the ``shown`` rows (all by default)."""
  evidence = ("tuned final runs of every hashtag_world row with an oracle; per objective, "
              "each decoder's samples-F1 regret against the oracle's expected-F1 sets "
              "(mean over seeds); the closest decoder against the runner-up, paired by seed.")
  body, verdicts = [], []
  for row in t.rows():
    if t.oracle(row) is None or not t.complete(row):
      continue
    lines = []
    for objective in t.objectives_of(row):
      runs, order = _by_regret(t.runs(row, objective))
      if not runs:
        continue
      first, second = order[0], order[1] if len(order) > 1 else order[0]
      diff = rs.stat(runs, lambda r: _regret(second)(r) - _regret(first)(r))  # Per seed.
      v = rs.verdict(diff)
      verdicts.append(v)
      natural = next(iter(runs.values()))["natural_decoder"]
      lines.append([objective, f"`{first}` {rs.stat(runs, _regret(first)).fmt()}",
                    f"`{second}` {rs.stat(runs, _regret(second)).fmt()}", diff.fmt(),
                    v, f"`{natural}` {rs.stat(runs, _regret(natural)).fmt()}"])
    if lines and (shown is None or row in shown):
      bayes = t.oracle(row)["decoders"].get("expected_f1", {}).get("f1_samples", float("nan"))
      body += [f"{row} (Bayes-optimal samples-F1 {bayes:.3f}):", ""]
      body += rs.table(["objective", "closest decoder (regret)", "runner-up (regret)",
                        "runner-up minus closest", "verdict", "natural decoder (regret)"],
                       lines)
  verdict = rs.combine(verdicts)
  if not body:
    return CLAIM_6, evidence, "not run", [
        "No hashtag_world row has every objective's final runs stored yet.", ""]
  return (CLAIM_6, evidence, verdict + " (the closest decoder is separated from the "
          "runner-up for each objective)" if verdict == "confirms" else verdict, body)


def advice(t: Tuned) -> List[str]:
  """The README's "which loss and decoder" bullets from the tuned runs (empty before any)."""
  out = []
  for row in t.rows():
    best = t.best(row)
    if best is None:  # Not complete: nothing is advised from part of a row.
      continue
    runs = t.runs(row, best)
    p1 = rs.stat(runs, lambda r: rs.ranking(r, "precision_at_1")).fmt()
    line = f"* **{row}** (tuned): for ranking, `{best}` (best validation P@1; test P@1 {p1}"
    fraction = rs.stat(runs, lambda r: r.get("against_oracle", {}).get(
        "fraction_of_oracle_p1", float("nan")))
    line += f", {fraction.mean:.0%} of the oracle's)" if fraction.n else ")"
    closest = {o: next(iter(_by_regret(t.runs(row, o))[1]), None) for o in t.objectives_of(row)}
    if closest.get(best):
      line += f"; its label sets come closest to Bayes-optimal with `{closest[best]}`"
    if closest.get("softmax") and best != "softmax":
      line += f"; trained with softmax, decode with `{closest['softmax']}`"
    if t.limited(row):
      doubled = t.at_twice_the_budget()
      twice = doubled.best(row)
      sets = next(iter(_by_regret(doubled.runs(row, twice))[1]), None) if twice else None
      line += (" (budget-limited" + (f"; at twice the budget, `{twice}` ranks best" if twice
                                     else "")
               + (f", its sets closest with `{sets}`" if sets else "") + ")")
    out.append(line + ".")
  return out


def section(t: Tuned) -> List[str]:
  """The tuned protocol's results (empty before its first final run is stored)."""
  if not t.rows():
    return []
  lines = ["## Tuned results", "",
           "Each objective at the setting chosen on validation (`tuned_tune`), one run per "
           "seed; test numbers read once. `of oracle P@1`: the run's test P@1 over the "
           "Bayes-optimal scores' on the same rows.", ""]
  for row in t.rows():
    note = t.rows_spec[row].note
    lines += [f"### {row}" + (f" ({note})" if note else ""), ""] + row_table(t, row)
    oracle_note = oracle_map_note(t, row)
    lines += ([oracle_note, ""] if oracle_note else []) + [budget_verdict(t, row), ""]
    target = oracle_target(t, row)
    lines += [target, ""] if target else []
    lines += doubled_table(t, row)
  claim, evidence, verdict, body = claim6(t)
  lines += ["### Claim 6", "", f"> {claim}", "", f"Evidence: {evidence}", ""] + body
  lines += [f"**Verdict: {verdict}.**", ""]
  limited = [row for row in t.rows() if t.limited(row)]
  if not limited:
    return lines
  _, _, verdict, body = claim6(t.at_twice_the_budget(), shown=limited)
  return lines + ["### Claim 6 (twice the budget)", "",
                  f"The budget-limited rows ({', '.join(limited)}) with every objective at "
                  "twice the budget (`tuned_double`); the verdict is over these and the other "
                  "rows as above.", ""] + body + [f"**Verdict: {verdict}.**", ""]
