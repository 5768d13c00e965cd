"""The tuned protocol's tables, budget verdict and sixth claim (RESULTS.md), and its plots."""

import json

import pytest

from experiments import sweep
from multilabel_jax.studies import report as report_lib
from multilabel_jax.studies import tuned_results, tuning

ROWS = sweep.TUNED_PRESETS["tuned"]


def _final(row, objective, seed, *, val, test, regrets, oracle_p1=0.5, group=tuning.FINAL,
           steps=2400):
  return {"sweep": {"group": group, "row": row, "dataset": row, "objective": objective,
                    "seed": seed, "setting": "lr0.003"},
          "objective": objective, "natural_decoder": "top_1",
          "validation": {"ranking": {"precision_at_1": val}},
          "validation_history": [{"step": s, "val_precision_at_1": val * s / 10}
                                 for s in range(1, 11)],
          "test": {"ranking": {"precision_at_1": test, "precision_at_5": test / 3, "map": 0.2},
                   "decoders": {d: {"f1_micro": 0.4, "f1_samples": 0.6 - g}
                                for d, g in regrets.items()}},
          "predict": {"decoder": "top_1"}, "train": {"steps": steps},
          "config": {"eval_every": steps // 10, "total_steps": steps},
          "oracle": {"ranking": {"precision_at_1": oracle_p1, "precision_at_5": 0.2,
                                 "map": 0.4},
                     "decoders": {"expected_f1": {"f1_micro": 0.55, "f1_samples": 0.6}}},
          "against_oracle": {"fraction_of_oracle_p1": test / oracle_p1,
                             "bayes_f1_samples": 0.6, "regret_f1_samples": regrets}}


def _reports():
  reports = []
  for seed in range(3):
    # softmax: top_3 closer than average_k by 0.02 on every seed; top_1 far behind.
    reports.append(_final("hw20k", "softmax", seed, val=0.40 + seed / 100, test=0.45,
                          regrets={"top_1": 0.2, "top_3": 0.05 + seed / 1000,
                                   "average_k": 0.07 + seed / 1000}))
    # sigmoid: two decoders within noise of each other.
    reports.append(_final("hw20k", "sigmoid", seed, val=0.42, test=0.47,
                          regrets={"top_1": 0.2, "expected_f1": 0.01 + (seed - 1) / 100,
                                   "threshold_0.5": 0.012 - (seed - 1) / 100}))
    for objective in sweep.OBJECTIVES:  # The row's other objectives: behind on validation.
      if objective not in ("softmax", "sigmoid"):
        reports.append(_final("hw20k", objective, seed, val=0.3, test=0.3,
                              regrets={"top_1": 0.3 - seed / 100, "top_3": 0.2}))
  return reports


def test_nothing_is_chosen_or_judged_across_objectives_until_the_row_is_complete():
  reports = [r for r in _reports() if (r["objective"], r["sweep"]["seed"]) != ("zlpr", 2)]
  t = tuned_results.Tuned(reports, ROWS, sweep.OBJECTIVES)
  assert t.rows() == ["hw20k"] and not t.complete("hw20k") and t.best("hw20k") is None
  assert t.progress("hw20k") == (len(sweep.OBJECTIVES) - 1, len(sweep.OBJECTIVES))
  assert tuned_results.budget_verdict(t, "hw20k") == (
      "Best objective: chosen once every objective's final seeds are stored (9 of 10 "
      "objectives so far).")
  assert tuned_results.advice(t) == [] and tuned_results.claim6(t)[2] == "not run"
  assert "| softmax | lr0.003 |" in "\n".join(tuned_results.section(t))  # Shown, not judged.
  assert tuned_results.Evidence(t, report_lib.ROWS).rows() == []
  rep = report_lib.Report(reports)
  assert "from the tuned runs" not in "\n".join(rep.claims())
  assert "From the tuned protocol" not in rep.readme_section()


def test_row_table_has_the_oracle_and_each_objectives_fraction_of_it():
  t = tuned_results.Tuned(_reports(), ROWS, sweep.OBJECTIVES)
  assert t.rows() == ["hw20k"] and t.best("hw20k") == "sigmoid"
  text = "\n".join(tuned_results.row_table(t, "hw20k"))
  assert "| softmax | lr0.003 | 0.410 ± 0.010 | 0.450 ± 0.000 |" in text
  assert "| 0.90 ± 0.00 | 3 |" in text  # 0.45 / 0.5 of the oracle's P@1.
  assert "| **oracle** (Bayes-optimal marginals) | - | - | 0.500 | 0.200 | 0.400 (step) | " \
         "0.550 (expected_f1) | 1.00 | - |" in text
  assert tuned_results.oracle_map_note(t, "hw20k").startswith(
      "(step) The oracle's mAP with tied scores as one step")


def test_the_oracle_row_takes_its_map_over_tie_orders_from_the_oracle_group():
  both = {"sweep": {"group": "oracle", "row": "hw20k", "name": "hw20k_oracle"},
          "oracle_ranking": {"map_step": 0.4, "map_over_tie_orders": 0.45,
                             "tied_positives": 0.85}}
  t = tuned_results.Tuned(_reports() + [both], ROWS, sweep.OBJECTIVES)
  text = "\n".join(tuned_results.row_table(t, "hw20k"))
  assert "| 0.500 | 0.200 | 0.450* | 0.550 (expected_f1) |" in text
  assert tuned_results.oracle_map_note(t, "hw20k") == (
      "(*) The oracle's mAP on average over the orders of its tied scores "
      "(`multilabel_jax.studies.oracle_ranking`): 85% of its test positives share their "
      "score with another row of their class. With ties as one step (sklearn's convention, "
      "as the runs' mAP) it is 0.400.")


def test_budget_verdict_stands_under_three_percent_and_is_marked_otherwise():
  reports = _reports()
  t = tuned_results.Tuned(reports, ROWS, sweep.OBJECTIVES)
  assert "not stored yet" in tuned_results.budget_verdict(t, "hw20k")
  check = _final("hw20k", "sigmoid", 0, val=0.43, test=0.48, regrets={}, group=tuning.CHECK,
                 steps=4800)
  t = tuned_results.Tuned(reports + [check], ROWS, sweep.OBJECTIVES)
  text = tuned_results.budget_verdict(t, "hw20k")
  assert "from 0.420 to 0.430 (+2.4%): the budget stands." in text
  check["validation"]["ranking"]["precision_at_1"] = 0.45
  t = tuned_results.Tuned(reports + [check], ROWS, sweep.OBJECTIVES)
  text = tuned_results.budget_verdict(t, "hw20k")
  assert "(+7.1%): **budget-limited** (more than 3%, still rising: more training helps)" in text
  assert "test P@1 is 0.480" in text
  check["validation"]["ranking"]["precision_at_1"] = 0.40
  t = tuned_results.Tuned(reports + [check], ROWS, sweep.OBJECTIVES)
  assert "(-4.8%): **budget-limited** (more than 3%, falling: longer training at this " \
         "setting does not help" in tuned_results.budget_verdict(t, "hw20k")


def test_a_budget_limited_row_is_shown_and_judged_at_both_budgets():
  from multilabel_jax.studies import claims  # pylint: disable=g-import-not-at-top
  check = _final("hw20k", "sigmoid", 0, val=0.45, test=0.48, regrets={}, group=tuning.CHECK,
                 steps=4800)  # +7.1% on sigmoid, the best at the final budget.
  doubled = [_final("hw20k", o, seed, val=0.46 if o == "softmax" else 0.44,
                    test=0.5 if o == "softmax" else 0.45, regrets={"top_1": 0.1},
                    group=tuning.DOUBLE, steps=4800)
             for o in sweep.OBJECTIVES for seed in range(3)]
  t = tuned_results.Tuned(_reports() + [check] + doubled[:6], ROWS, sweep.OBJECTIVES)
  assert t.limited("hw20k") and t.best("hw20k") == "sigmoid"
  text = "\n".join(tuned_results.doubled_table(t, "hw20k"))
  assert text.startswith("#### hw20k at twice the budget (4800 steps)")
  assert "(2 of 10 objectives so far)" in text  # sigmoid and softmax, 3 seeds each.
  t = tuned_results.Tuned(_reports() + [check] + doubled, ROWS, sweep.OBJECTIVES)
  twice = t.at_twice_the_budget()
  assert twice.runs("hw20k", "softmax")[0] is doubled[3] and t.runs("hw20k", "softmax")[0] \
      is not doubled[3]
  text = "\n".join(tuned_results.doubled_table(t, "hw20k"))
  assert "| softmax | lr0.003 | 0.460 ± 0.000 | 0.500 ± 0.000 |" in text
  assert text.endswith("Best objective on validation at twice the budget: `softmax` (at the "
                       "final budget: `sigmoid`).\n")
  assert ("(budget-limited; at twice the budget, `softmax` ranks best, its sets closest with "
          "`top_1`).") in tuned_results.advice(t)[0]
  # The claims at twice the budget read the doubled runs: softmax now beats sigmoid on P@1.
  assert "| hw20k P@1 | 0.4500 ± 0.0000 | 0.4700 ± 0.0000 |" in "\n".join(claims.claim1(
      tuned_results.Evidence(t, report_lib.ROWS))[3])
  assert "| hw20k P@1 | 0.5000 ± 0.0000 | 0.4500 ± 0.0000 |" in "\n".join(claims.claim1(
      tuned_results.Evidence(twice, report_lib.ROWS))[3])
  rep = report_lib.Report(_reports() + [check] + doubled)
  text = "\n".join(rep.claims())
  assert "## The seed claims at twice the budget" in text and (
      "The budget-limited rows (hw20k) with every objective at twice the budget" in text)
  assert "### Claim 1 (tuned, twice the budget)" in text
  assert "| claim | shrunk runs | tuned runs | shrunk to tuned | tuned, twice the budget |" in text
  twice_claim1 = text[text.index("### Claim 1 (tuned, twice the budget)"):]
  assert "| hw20k P@1 | 0.5000 ± 0.0000 | 0.4500 ± 0.0000 | 0.0500 ± 0.0000 | 3 | confirms |" \
      in twice_claim1  # P@1 flips at twice the budget; mAP still ties: inconclusive.
  assert "| 1 | not run | inconclusive | **changed** | inconclusive |" in text
  # Claim 6 has no shrunk verdict; sigmoid's two closest decoders tie: inconclusive.
  assert "| 6 | (new) | inconclusive | - | inconclusive |" in text
  assert "At twice the budget of the budget-limited rows (hw20k): 1: **inconclusive**" in (
      rep.readme_section())
  # Claim 6 at both budgets: the doubled runs' only decoder, top_1, has regret 0.1.
  sixth = "\n".join(tuned_results.section(t))
  assert "| softmax | `top_3` 0.051 ± 0.001 |" in sixth[:sixth.index("### Claim 6 (twice")]
  sixth = sixth[sixth.index("### Claim 6 (twice the budget)"):]
  assert sixth.startswith("### Claim 6 (twice the budget)\n\nThe budget-limited rows (hw20k) "
                          "with every objective at twice the budget (`tuned_double`)")
  assert "| softmax | `top_1` 0.100 ± 0.000 | `top_1` 0.100 ± 0.000 |" in sixth
  assert sixth.rstrip().endswith("**Verdict: inconclusive.**")
  check["validation"]["ranking"]["precision_at_1"] = 0.43  # +2.4%: the budget stands.
  t = tuned_results.Tuned(_reports() + [check] + doubled, ROWS, sweep.OBJECTIVES)
  assert tuned_results.doubled_table(t, "hw20k") == []
  assert "Claim 6 (twice the budget)" not in "\n".join(tuned_results.section(t))
  assert t.at_twice_the_budget().runs("hw20k", "softmax") == t.runs("hw20k", "softmax")


def test_the_seed_claims_are_judged_on_the_tuned_runs_alone_with_the_changed_verdicts():
  from multilabel_jax.studies import claims  # pylint: disable=g-import-not-at-top
  reports = _reports() + [_final("ambiguity_low", "softmax", 0, val=0.5, test=0.5, regrets={})]
  evidence = tuned_results.Evidence(tuned_results.Tuned(reports, ROWS, sweep.OBJECTIVES),
                                    report_lib.ROWS)
  assert evidence.rows() == ["hw20k"]  # Ambiguity rows feed claim 3's levels only.
  assert list(evidence.amb) == [("low", "softmax")]
  _, _, verdict, body = claims.claim1(evidence)
  text = "\n".join(body)
  assert "| hw20k P@1 | 0.4500 ± 0.0000 | 0.4700 ± 0.0000 |" in text and "debtags" not in text
  assert "refutes" in text  # P@1: softmax below sigmoid on all 3 seeds.
  assert verdict == "inconclusive"  # mAP ties.
  body = "\n".join(claims.claim2(evidence)[3])
  assert "Relative mAP change at 20k classes: +0.0%, over 3 shared seeds" in body
  assert "Both sides' mAP is exact, so no bracket applies." in body  # No map_error stored.
  rep = report_lib.Report(reports)  # No shrunk runs: their claims are not run.
  text = "\n".join(rep.claims())
  assert text.index("## The seed claims, from the tuned runs") < text.index(
      "## The seed claims (earlier shrunk runs")
  assert "### Claim 1 (tuned)" in text and "(so far: hw20k)" in text
  assert "| 1 | not run | inconclusive | **changed** |" in text
  assert "| 5 | not run | not run | not judged yet |" in text
  readme = rep.readme_section()
  assert "Seed claims from the tuned runs (complete rows so far: hw20k): 1: **inconclusive**" in (
      readme)
  assert "5: **not run**; 6: **inconclusive**." in readme  # Sigmoid's two decoders tie.
  # The glance table: the tuned finals of the complete rows, the oracle, no shrunk numbers.
  assert "Measured by `python -m experiments.sweep --preset=tuned`" in readme
  assert "| objective | hashtag_world 20k |" in readme and "debtags (598" not in readme
  assert "| softmax | 0.450 / 0.200 |" in readme and "| sigmoid | 0.470 / 0.200 |" in readme
  assert "| oracle (Bayes-optimal marginals) | 0.500 / 0.400 |" in readme


def test_claim6_names_the_closest_decoder_per_objective_with_a_paired_verdict():
  t = tuned_results.Tuned(_reports(), ROWS, sweep.OBJECTIVES)
  claim, _, verdict, body = tuned_results.claim6(t)
  text = "\n".join(body)
  assert claim == tuned_results.CLAIM_6
  assert "| softmax | `top_3` 0.051 ± 0.001 | `average_k` 0.071 ± 0.001 | 0.020 ± 0.000 | " \
         "confirms | `top_1` 0.200 ± 0.000 |" in text
  assert "| sigmoid | `expected_f1` 0.010 ± 0.010 | `threshold_0.5` 0.012 ± 0.010 |" in text
  assert "inconclusive" in text and verdict == "inconclusive"  # Mixed: one is noise.
  section = "\n".join(tuned_results.section(t))
  assert "## Tuned results" in section and "### Claim 6" in section
  advice = "\n".join(tuned_results.advice(t))
  assert ("* **hw20k** (tuned): for ranking, `sigmoid` (best validation P@1; test P@1 "
          "0.470 ± 0.000, 94% of the oracle's); its label sets come closest to Bayes-optimal "
          "with `expected_f1`; trained with softmax, decode with `top_3`.") in advice
  empty = tuned_results.Tuned([], ROWS, sweep.OBJECTIVES)
  assert tuned_results.advice(empty) == []
  assert tuned_results.section(empty) == [] and tuned_results.claim6(empty)[2] == "not run"


@pytest.mark.slow  # Tiny tuned runs with the oracle, then the report and its plots.
def test_tiny_tuned_runs_reach_the_report_with_the_oracle_and_the_plots(tmp_path, monkeypatch):
  scores = {3e-4: 0.1, 1e-3: 0.3, 3e-3: 0.2}  # A middle choice: no grid extension.
  for objective in ("softmax", "asl"):
    for setting in tuning.grid(objective, sweep.LEARNING_RATES, sweep.OBJECTIVE_HYPERPARAMETERS):
      name = tuning.tune_name("hw1k", objective, setting)
      path = tmp_path / tuning.TUNE / f"{name}.json"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({
          "validation": {"ranking": {"precision_at_1": scores[setting.lr]}},
          "train": {"steps": 2}, "sweep": {"wall_seconds": 1.0, "group": tuning.TUNE,
                                           "name": name, "row": "hw1k", "objective": objective, "seed": 0,
                                           "setting": setting.name}}))
  ran = sweep.run_sweep(tmp_path, preset="tuned_tiny", only="hw1k_")
  assert [n for n in ran if "_lr" not in n] == ["hw1k_softmax_s0", "hw1k_softmax_s1",
                                                "hw1k_asl_s0", "hw1k_asl_s1", "hw1k_oracle"]
  assert sweep.run_sweep(tmp_path, preset="tuned_tiny", only="hw1k_") == ["hw1k_best_2x_s0"]
  monkeypatch.setitem(sweep.TUNED_PRESETS, "tuned", sweep.TUNED_PRESETS["tuned_tiny"])
  (tmp_path / "README.md").write_text("# readme\n")
  text = report_lib.write(tmp_path, tmp_path / "docs", tmp_path / "README.md")
  assert "### hw1k" in text and "**oracle** (Bayes-optimal marginals)" in text
  assert "### Claim 6" in text and "At twice the budget (4 steps)" in text
  assert "* **hw1k** (tuned): for ranking," in (tmp_path / "README.md").read_text()
  for name in ("learning_curves", "decoder_regret", "reliability", "bucket_gain"):
    assert (tmp_path / "docs" / f"results_tuned_{name}.png").stat().st_size > 1000
  stored = json.loads((tmp_path / tuning.FINAL / "hw1k_softmax_s0.json").read_text())
  assert stored["reliability"]["reads_as"] == "distribution"
  # The oracle group reads the runs' test rows: its step mAP is the one every run stored.
  both = json.loads((tmp_path / "oracle" / "hw1k_oracle.json").read_text())["oracle_ranking"]
  assert both["map_step"] == pytest.approx(stored["oracle"]["ranking"]["map"], abs=1e-5)
  assert both["num_examples"] == stored["test"]["num_examples"]
  assert (f"| {both['map_over_tie_orders']:.3f}* |" in text
          and f"one step (sklearn's convention, as the runs' mAP) it is {both['map_step']:.3f}."
          in text)


def test_oracle_target_is_judged_in_p1_units_with_the_check_run():
  reports = _reports()  # Best: sigmoid, test P@1 0.47 on every seed; oracle 0.5, goal 0.45.
  t = tuned_results.Tuned(reports, ROWS, sweep.OBJECTIVES)
  assert tuned_results.oracle_target(t, "hw20k") == (
      "Target: 90% of the oracle's test P@1, i.e. 0.4500. `sigmoid` reaches 0.4700 ± 0.0000 "
      "over 3 seeds: met. The learning curves (Plots) show each objective against the "
      "oracle's line.")
  assert tuned_results.oracle_target(t, "hw1k") == ""  # No target for this row.
  for r in reports:
    r["oracle"]["ranking"]["precision_at_1"] = 0.5229  # Goal 0.4706: 0.47 rounds to 0.90.
  check = _final("hw20k", "sigmoid", 0, val=0.41, test=0.4704, regrets={},
                 group=tuning.CHECK, steps=4800)
  t = tuned_results.Tuned(reports + [check], ROWS, sweep.OBJECTIVES)
  text = tuned_results.oracle_target(t, "hw20k")
  assert text.startswith("Target: 90% of the oracle's test P@1, i.e. 0.4706. `sigmoid` reaches "
                         "0.4700 ± 0.0000 over 3 seeds: **not met** (the mean is short by "
                         "0.0006). At twice the budget (4800 steps) seed 0's test P@1 goes "
                         "from 0.4700 to 0.4704, its validation P@1 by -2.4% (the budget "
                         "stands).")
  assert text in "\n".join(tuned_results.section(t))


def test_the_protocol_is_finished_once_checks_and_the_limited_rows_doubled_runs_are_stored():
  rows = {"hw20k": ROWS["hw20k"]}
  reports = _reports()  # Every final seed; best sigmoid, val 0.42 on seed 0.
  assert not tuned_results.Tuned(reports, rows, sweep.OBJECTIVES).finished()  # No check.
  check = _final("hw20k", "sigmoid", 0, val=0.43, test=0.48, regrets={}, group=tuning.CHECK,
                 steps=4800)  # +2.4%: the budget stands.
  assert tuned_results.Tuned(reports + [check], rows, sweep.OBJECTIVES).finished()
  assert not tuned_results.Tuned(reports + [check], ROWS, sweep.OBJECTIVES).finished()
  check["validation"]["ranking"]["precision_at_1"] = 0.45  # +7.1%: limited.
  t = tuned_results.Tuned(reports + [check], rows, sweep.OBJECTIVES)
  assert t.limited("hw20k") and not t.finished()
  doubled = [_final("hw20k", o, seed, val=0.44, test=0.45, regrets={"top_1": 0.1},
                    group=tuning.DOUBLE, steps=4800)
             for o in sweep.OBJECTIVES for seed in range(3)]
  assert not tuned_results.Tuned(reports + [check] + doubled[:-1], rows,
                                 sweep.OBJECTIVES).finished()
  assert tuned_results.Tuned(reports + [check] + doubled, rows, sweep.OBJECTIVES).finished()
