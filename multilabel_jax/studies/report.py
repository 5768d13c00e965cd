r"""Writes docs/RESULTS.md, its PNG plots and the README's results sections from the sweep.

  python -m multilabel_jax.studies.report --results=results --docs=docs --readme=README.md

Every number in RESULTS.md comes from the JSON reports that ``python -m experiments.sweep``
stored; nothing is typed by hand. The README's text between ``<!-- results:start -->`` and
``<!-- results:end -->`` is replaced. Definitions and the verdict rule are in
:mod:`multilabel_jax.studies.stats` and are written into the document.
"""

from __future__ import annotations

import collections
import pathlib
from typing import Dict, List

from absl import app, flags

from experiments import sweep
from multilabel_jax.studies import claims as claims_lib
from multilabel_jax.studies import plots as plots_lib
from multilabel_jax.studies import shipped
from multilabel_jax.studies import stats as rs
from multilabel_jax.studies import sweep_runner
from multilabel_jax.studies import tuned_results
from multilabel_jax.studies import tuning

ROWS = ("debtags", "hw1k", "hw20k", "hw100k")
ROW_TITLES = {"debtags": "debtags (598 tags, real)", "hw1k": "hashtag_world 1k",
              "hw20k": "hashtag_world 20k", "hw100k": "hashtag_world 100k"}
RANKING = (("P@1", "precision_at_1"), ("P@3", "precision_at_3"), ("P@5", "precision_at_5"),
           ("nDCG@5", "ndcg_at_5"), ("PSP@5", "psp_at_5"), ("mAP", "map"))
SETS = (("micro-F1", "f1_micro"), ("macro-F1", "f1_macro"), ("set size", "mean_set_size"))
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
COMMAND = ("python -m experiments.sweep --out=results && "
           "python -m multilabel_jax.studies.report --results=results --docs=docs "
           "--readme=README.md")


class Report:
  """Builds the document from the stored reports."""

  candidates = "among the shrunk sweep runs and the full-schedule runs (group `long`)"

  def __init__(self, reports: List[dict]):
    self.reports = reports
    self.main = rs.by_key(reports, "main", ("dataset", "objective"))
    self.amb = rs.by_key(reports, "ambiguity", ("level", "objective"))
    self.long = rs.by_key(reports, "long", ("dataset", "objective"))
    self.tune = rs.by_key(reports, "tune", ("dataset", "variant"))
    self.baseline = next((r for r in reports if r.get("sweep", {}).get("group") == "baseline"),
                         None)
    self.tuned = tuned_results.Tuned(reports, sweep.TUNED_PRESETS["tuned"], sweep.OBJECTIVES)
    self.evidence = tuned_results.Evidence(self.tuned, ROWS, self.baseline)
    self.twice = tuned_results.Evidence(self.tuned.at_twice_the_budget(), ROWS, self.baseline)
    self.limited = [row for row in self.tuned.rows() if self.tuned.limited(row)]
    self.verdicts, self.tuned_verdicts, self.twice_verdicts = {}, {}, {}
    # Claim 6 (new with the tuned protocol) at the final budget and at twice the budget.
    self.sixth = (tuned_results.claim6(self.tuned)[2], tuned_results.claim6(self.twice.tuned)[2])

  def runs(self, row, objective) -> Dict[int, dict]:
    return self.main.get((row, objective), {})

  def rows(self):
    return [r for r in ROWS if any(k[0] == r for k in self.main)]

  # ------------------------------------------------------------------ set-up and tables

  def setup(self) -> List[str]:
    groups = collections.Counter(r["sweep"].get("group") if "sweep" in r else
                                 "probes" if "probes" in r else "peers"
                                 for r in self.reports)
    lines = ["## Set-up", "",
             f"Runs stored: {len(self.reports)} ("
             + ", ".join(f"group {g}: {n}" for g, n in sorted(groups.items())) + ").", ""]
    rows = []
    for row in self.rows():
      any_run = next(iter(next(v for k, v in self.main.items() if k[0] == row).values()))
      c = any_run["config"]
      seeds = sorted({s for k, v in self.main.items() if k[0] == row for s in v})
      secs = [r["train"]["seconds_this_run"] for k, v in self.main.items() if k[0] == row
              for r in v.values()]
      rows.append([ROW_TITLES[row], str(any_run["data"]["num_classes"]), str(c["total_steps"]),
                   str(c["batch_size"]), str(c["eval_every"]), str(len(seeds)),
                   str(any_run["test"]["num_examples"]),
                   str(c["model"]) + " " + str(c["model_options"].get("widths", "")),
                   f"{sum(secs) / max(len(secs), 1):.0f}"])
    lines += rs.table(["row", "classes", "steps", "batch", "eval every", "seeds",
                       "test examples", "model", "mean train s"], rows)
    presets = {r.get("sweep", {}).get("preset") for r in self.reports}
    stored = {r["sweep"]["name"] for r in self.reports if "sweep" in r}
    for preset in sorted(p for p in presets if p in sweep.PRESETS):
      missing = [r.name for r in sweep.plan(preset) if r.name not in stored]
      if missing:
        lines += [f"**Not run yet** ({len(missing)} of the {len(sweep.plan(preset))} runs of "
                  f"preset `{preset}`, for lack of time on the shared machine): "
                  + ", ".join(f"`{m}`" for m in missing) + f". `python -m experiments.sweep "
                  f"--out=results --preset={preset}` runs exactly these (stored runs are "
                  "skipped); then rerun the report.", ""]
    lines += [f"Preset(s): {', '.join(sorted(p for p in presets if p in sweep.PRESETS))}. "
              "These are "
              "**shrunk runs**: the class counts are the issue's, but the step counts are "
              "cut to fit the shared 2-core CPU machine (the configs' own defaults train "
              "longer, see `experiments/sweep.py` preset `accelerator`), so absolute numbers "
              "are below converged values and the comparisons are between equally short "
              "runs. Claim 5 also uses the `tune` group (a validation search at 1000 "
              "steps) and the `long` group (debtags at its config's full 4000 steps).", ""]
    return lines

  def dataset_tables(self) -> List[str]:
    lines = ["## Tables", "",
             "Mean ± sample standard deviation over seeds (a single number: one seed). "
             "Ranking metrics are properties of the scores, identical under every decoder. "
             "`best decoder` is the decoder with the highest mean micro-F1. mAP is the "
             "midpoint of the streaming histogram bracket (`multilabel_jax."
             "streaming_average_precision`); `mAP bracket ±` is its mean half-width, a "
             "guaranteed bound on the distance to the exact mAP. "
             "On the fused 100k head mAP is not computed (top-r evaluation path).", ""]
    for row in self.rows():
      lines += [f"### {ROW_TITLES[row]}", ""]
      body = []
      for obj in sweep.OBJECTIVES:
        runs = self.runs(row, obj)
        if not runs:
          continue
        best = max(next(iter(runs.values()))["test"]["decoders"], key=lambda d: rs.stat(
            runs, lambda r: rs.decoder(r, d, "f1_micro")).mean)
        body.append([obj] + [rs.stat(runs, lambda r, m=m: rs.ranking(r, m)).fmt()
                             for _, m in RANKING]
                    + [f"{best}: " + rs.stat(runs, lambda r: rs.decoder(r, best, "f1_micro")).fmt()]
                    + [rs.stat(runs, rs.map_bracket).fmt(3).split(" ±")[0]]
                    + [rs.stat(runs, lambda r: rs.steps_to_fraction(r)).fmt(0),
                       rs.stat(runs, lambda r: r["train"]["seconds_this_run"]).fmt(0)])
      lines += rs.table(["objective"] + [n for n, _ in RANKING]
                        + ["best decoder: micro-F1", "mAP bracket ±", "steps to 90%", "train s"],
                        body)
      lines += ["Average-K error at K (1 - recall of sets of K labels on average, threshold "
                "calibrated on validation) and, for the same budget, the top-K error:", ""]
      body = []
      for obj in sweep.OBJECTIVES:
        runs = self.runs(row, obj)
        if runs:
          body.append([obj] + [rs.stat(runs, lambda r, k=k: f(r, k)).fmt()
                               for k in (1, 3, 5)
                               for f in (rs.average_k_error, rs.top_k_error)])
      lines += rs.table(["objective"] + [f"{n}@{k}" for k in (1, 3, 5)
                                          for n in ("avg-K err", "top-K err")], body)
      lines += self.decoder_table(row)
    return lines

  def decoder_table(self, row) -> List[str]:
    """Every decoder's set metrics, per objective (seed means)."""
    body = []
    for obj in sweep.OBJECTIVES:
      runs = self.runs(row, obj)
      if not runs:
        continue
      for dec in next(iter(runs.values()))["test"]["decoders"]:
        body.append([obj, dec] + [rs.stat(runs, lambda r, m=m: rs.decoder(r, dec, m)).fmt()
                                  for _, m in SETS])
    return (["<details><summary>Every decoder (set metrics)</summary>", ""]
            + rs.table(["objective", "decoder"] + [n for n, _ in SETS], body) + ["</details>", ""])

  def claims(self) -> List[str]:
    """The seed claims from the tuned runs (once any row has them), with the verdicts that
    changed, then from the earlier shrunk runs."""
    lines = []
    if self.evidence.rows():
      rows = ", ".join(self.evidence.rows())
      lines += ["## The seed claims, from the tuned runs", "",
                f"Judged on the tuned protocol's final runs only, of the rows whose every "
                f"objective has all its final seeds (so far: {rows}); a comparison that needs "
                "another row reads *not run*.", ""]
      lines += self._claims(self.evidence, self.tuned_verdicts, "Claim {} (tuned)")
    if self.limited:
      lines += ["## The seed claims at twice the budget", "",
                f"The budget-limited rows ({', '.join(self.limited)}) with every objective "
                "at twice the budget (`tuned_double`), the other rows as above; complete "
                f"rows at this budget: {', '.join(self.twice.rows()) or 'none yet'}.", ""]
      lines += self._claims(self.twice, self.twice_verdicts, "Claim {} (tuned, twice the budget)")
    lines += ["## The seed claims" + (" (earlier shrunk runs: one shared learning rate)"
                                      if self.tuned_verdicts else ""), ""]
    lines += self._claims(self, self.verdicts, "Claim {}")
    if self.tuned_verdicts:
      body = [[str(i), self.verdicts[i], self.tuned_verdicts[i],
               "not judged yet" if self.tuned_verdicts[i] == "not run" else
               "same" if self.verdicts[i] == self.tuned_verdicts[i] else "**changed**"]
              + ([self.twice_verdicts[i]] if self.twice_verdicts else [])
              for i in self.verdicts]
      body.append(["6", "(new)", self.sixth[0], "-"]
                  + ([self.sixth[1]] if self.twice_verdicts else []))
      lines += ["### Verdicts: shrunk runs against tuned runs", ""]
      lines += rs.table(["claim", "shrunk runs", "tuned runs", "shrunk to tuned"]
                        + (["tuned, twice the budget"] if self.twice_verdicts else []), body)
    return lines

  @staticmethod
  def _claims(source, verdicts: Dict[int, str], title: str) -> List[str]:
    lines = []
    for i, fn in enumerate(claims_lib.CLAIMS, 1):
      claim, evidence, v, body = fn(source)
      verdicts[i] = v
      lines += [f"### {title.format(i)}", "", f"> {claim}", "", f"Evidence: {evidence}", ""]
      lines += body + [f"**Verdict: {v}.**", ""]
    return lines

  # ------------------------------------------------------------------ document

  def machine_line(self) -> str:
    recorded = sorted({r["sweep"]["machine"] for r in self.reports
                       if r.get("sweep", {}).get("machine")})
    unrecorded = sum("sweep" in r and not r["sweep"].get("machine") for r in self.reports)
    line = "Machine: " + ("; ".join(recorded) + " (recorded by the runs)" if recorded else "")
    if unrecorded:
      line += ("; " if recorded else "") + (
          f"{unrecorded} runs predate the sweep's machine record; this report was generated "
          f"on {sweep_runner.machine()}")
    return line + ". Wall-clock times are from a CPU shared with other jobs: compare them "\
        "only within a row."

  def markdown(self, plots: Dict[str, str]) -> str:
    head = ["# Results", "",
            "<!-- Generated by multilabel_jax/studies/report.py from results/*/*.json. "
            "Do not edit by hand. -->", "",
            "Regenerate every number and plot (the sweep skips runs whose JSON is stored; "
            "delete `results/` to retrain all):", "", "```bash", COMMAND, "```", "",
            self.machine_line(), "",
            "## Definitions and the verdict rule", "",
            rs.__doc__.split("Definitions (also written into RESULTS.md):")[1].strip(), ""]
    body = (self.setup() + shipped.section(self.reports)
            + tuning.section(self.reports, sweep.TUNED_PRESETS["tuned"],
                             objectives=sweep.OBJECTIVES, learning_rates=sweep.LEARNING_RATES,
                             hyperparameters=sweep.OBJECTIVE_HYPERPARAMETERS,
                             finished=self.tuned.finished())
            + tuned_results.section(self.tuned)
            + self.claims() + self.dataset_tables())
    figs = ["## Plots", ""] + [f"![{k}]({v})" + "\n" for k, v in plots.items()]
    return "\n".join(head + body + figs) + "\n"

  def _glance_tuned(self) -> List[str]:
    """The README's table from the tuned final runs of the complete rows, with the oracle
    and debtags' peers (empty before any row is complete)."""
    t, rows = self.tuned, self.evidence.rows()
    if not rows:
      return []

    def cell(p1, mean_ap):
      return f"{p1:.3f} / {mean_ap:.3f}"

    body = []
    for obj in sweep.OBJECTIVES:
      cells = [obj]
      for row in rows:
        runs = t.runs(row, obj)
        cells.append(cell(rs.stat(runs, lambda r: rs.ranking(r, "precision_at_1")).mean,
                          rs.stat(runs, lambda r: rs.ranking(r, "map")).mean) if runs else "-")
      body.append(cells)
    oracle = ["oracle (Bayes-optimal marginals)"]
    for row in rows:
      o, both = t.oracle(row), t.oracle_maps.get(row)
      oracle.append("-" if o is None else cell(
          o["ranking"]["precision_at_1"],
          both["map_over_tie_orders"] if both else o["ranking"]["map"]))
    body.append(oracle)
    if self.baseline and "debtags" in rows:
      body.append(["peer: sklearn one-vs-rest logistic regression (untuned)"] + [
          cell(rs.ranking(self.baseline, "precision_at_1"), rs.ranking(self.baseline, "map"))
          if row == "debtags" else "-" for row in rows])
    for peer in t.peers_of("debtags") if "debtags" in rows else []:
      ranking = peer["test"]["ranking"]
      body.append([f"peer: {peer['peer']} (untuned)"] + [
          cell(ranking["precision_at_1"], ranking["map"]) if row == "debtags" else "-"
          for row in rows])
    seeds = "/".join(sorted({str(t.rows_spec[row].final.seeds) for row in rows}))
    return (["Measured by `python -m experiments.sweep --preset=tuned` (each objective at the "
             f"learning rate and own hyperparameter chosen on validation, {seeds} seeds; "
             "budget-limited rows at their final budget; details, spreads, twice-the-budget "
             "runs and plots in [docs/RESULTS.md](docs/RESULTS.md)). Test P@1 / mAP, mean "
             "over seeds; `-`: not run in that row:", ""]
            + rs.table(["objective"] + [ROW_TITLES[r] for r in rows], body))

  def readme_section(self) -> str:
    lines = ["## Results at a glance", ""]
    tuned = self._glance_tuned()
    if tuned:
      lines += tuned
    else:
      lines += ["Measured by `python -m experiments.sweep` (shrunk CPU runs; details, spreads "
                "and plots in [docs/RESULTS.md](docs/RESULTS.md)). Test P@1 and mAP, mean "
                "over seeds:", ""] + self._glance_shrunk()
    lines += self._verdict_lines()
    return "\n".join(lines)

  def _glance_shrunk(self) -> List[str]:
    body = []
    for obj in sweep.OBJECTIVES:
      cells = [obj]
      for row in self.rows():
        runs = self.runs(row, obj)
        cells.append(rs.stat(runs, lambda r: rs.ranking(r, "precision_at_1")).fmt()
                     .split(" ±")[0] + " / " + rs.stat(runs, lambda r: rs.ranking(
                         r, "map")).fmt().split(" ±")[0])
      body.append(cells)
    if self.baseline:
      body.append(["OvR logistic regression (sklearn)"]
                  + [f"{rs.ranking(self.baseline, 'precision_at_1'):.3f} / "
                     f"{rs.ranking(self.baseline, 'map'):.3f}" if row == "debtags" else "-"
                     for row in self.rows()])
    return rs.table(["objective"] + [ROW_TITLES[r] for r in self.rows()], body)

  def _verdict_lines(self) -> List[str]:
    lines = []
    if self.tuned_verdicts:
      lines += ["Seed claims from the tuned runs (complete rows so far: "
                f"{', '.join(self.evidence.rows())}): " + "; ".join(
                    f"{i}: **{v}**" for i, v in self.tuned_verdicts.items())
                + f"; 6: **{self.sixth[0]}**."]
    if self.twice_verdicts:
      lines += [f"At twice the budget of the budget-limited rows ({', '.join(self.limited)}): "
                + "; ".join(f"{i}: **{v}**" for i, v in self.twice_verdicts.items())
                + f"; 6: **{self.sixth[1]}**."]
    lines += [("Seed claims from the earlier shrunk runs: " if self.tuned_verdicts else
               "Seed claims: ") + "; ".join(f"{i}: **{v}**" for i, v in self.verdicts.items())
              + " (see RESULTS.md).", "", "## Which loss and decoder should I use?", ""]
    tuned = tuned_results.advice(self.tuned)
    if tuned:
      lines += ["From the tuned protocol (each objective's learning rate and own "
                "hyperparameter chosen on validation; RESULTS.md, \"Tuned results\"):", ""]
      lines += tuned + ["", "From the earlier shrunk runs (one shared learning rate; "
                        "superseded where the tuned rows above exist):", ""]
    return lines + self.advice()

  def advice(self) -> List[str]:
    out = []
    for row in self.rows():
      objs = {o: self.runs(row, o) for o in sweep.OBJECTIVES if self.runs(row, o)}
      if not objs:
        continue
      top = max(objs, key=lambda o: rs.stat(objs[o], lambda r: rs.ranking(r, "precision_at_1"))
                .mean)
      pairs = [(o, d) for o in objs for d in next(iter(objs[o].values()))["test"]["decoders"]]
      o_best, d_best = max(pairs, key=lambda p: rs.stat(
          objs[p[0]], lambda r: rs.decoder(r, p[1], "f1_micro")).mean)
      f1 = rs.stat(objs[o_best], lambda r: rs.decoder(r, d_best, "f1_micro")).fmt()
      p1 = rs.stat(objs[top], lambda r: rs.ranking(r, "precision_at_1")).fmt()
      out.append(f"* **{ROW_TITLES[row]}**: for ranking, `{top}` (P@1 {p1}); for label "
                 f"sets, `{o_best}` decoded with `{d_best}` (micro-F1 {f1}).")
    sm_rows = [r for r in self.rows() if self.runs(r, "softmax")]
    if sm_rows:
      dec_wins = {}
      for row in sm_rows:
        runs = self.runs(row, "softmax")
        decs = next(iter(runs.values()))["test"]["decoders"]
        best = max(decs, key=lambda d: rs.stat(runs, lambda r: rs.decoder(
            r, d, "f1_micro")).mean)
        dec_wins.setdefault(best, []).append(row)
      out.append("* Trained with softmax and need label sets? The best decoder by micro-F1 "
                 "was " + "; ".join(f"`{d}` on {', '.join(rows)}" for d, rows in
                                   dec_wins.items()) + ".")
    long = {o: v for (d, o), v in self.long.items() if d == "debtags"}
    if long:
      best = max(long, key=lambda o: rs.stat(long[o], rs.final_validation).mean)
      steps = next(iter(long[best].values()))["config"]["total_steps"]
      p1 = rs.stat(long[best], lambda r: rs.ranking(r, "precision_at_1"))
      refs = [("the reference", claims_lib.REFERENCE_P1)]
      if self.baseline:
        refs.insert(0, ("the OvR baseline", rs.ranking(self.baseline, "precision_at_1")))
      versus = ", ".join(f"{'above' if p1.mean > x else 'below'} {name} ({x:.3f})"
                         for name, x in refs)
      out.append(f"* At the full debtags schedule ({steps} steps, claim 5), the best on "
                 f"validation was `{best}`: test P@1 {p1.fmt()}, {versus}.")
    out.append("* These come from shrunk CPU runs; see the verdicts and spreads in "
               "docs/RESULTS.md before generalising.")
    return out + [""]


def write(results_dir, docs_dir, readme=None) -> str:
  """Writes RESULTS.md and the plots (and the README section); returns the markdown."""
  reports = rs.load(results_dir)
  if not reports:
    raise ValueError(f"no stored reports under {results_dir}; run experiments.sweep first.")
  docs = pathlib.Path(docs_dir)
  docs.mkdir(parents=True, exist_ok=True)
  rep = Report(reports)
  plots = plots_lib.draw_all(rep, docs, rep.tuned)
  text = rep.markdown({k: pathlib.Path(v).name for k, v in plots.items()})
  (docs / "RESULTS.md").write_text(text)
  if readme:
    path = pathlib.Path(readme)
    old = path.read_text()
    section = f"{README_START}\n{rep.readme_section()}\n{README_END}"
    if README_START in old:
      start, rest = old.split(README_START, 1)
      new = start + section + rest.split(README_END, 1)[1]
    else:
      new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new)
  return text


_RESULTS = flags.DEFINE_string("results", "results", "Folder of the sweep's JSON reports.")
_DOCS = flags.DEFINE_string("docs", "docs", "Where RESULTS.md and the plots go.")
_README = flags.DEFINE_string("readme", "README.md", "README to update ('' to skip).")


def main(argv):
  del argv
  write(_RESULTS.value, _DOCS.value, _README.value or None)
  print(f"wrote {_DOCS.value}/RESULTS.md")


if __name__ == "__main__":
  app.run(main)
