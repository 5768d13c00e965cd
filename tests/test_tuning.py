"""The tuned protocol of the results sweep: grids, the validation choice, waiting stages."""

import dataclasses
import json

import pytest

from experiments import sweep
from multilabel_jax.studies import sweep_runner, tuning


def _store(out, group, name, val_p1, steps=2, wall=10.0):
  path = out / group / f"{name}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"validation": {"ranking": {"precision_at_1": val_p1}},
                              "train": {"steps": steps}, "sweep": {"wall_seconds": wall}}))


def _by_name(runs):
  return {r.name: r for r in runs}


def test_grid_is_learning_rates_times_the_objectives_own_hyperparameter():
  lrs, hps = sweep.LEARNING_RATES, sweep.OBJECTIVE_HYPERPARAMETERS
  assert max(lrs) / min(lrs) == pytest.approx(10.0)
  assert [s.name for s in tuning.grid("softmax", lrs, hps)] == ["lr0.0003", "lr0.001", "lr0.003"]
  asl = tuning.grid("asl", lrs, hps)
  assert len(asl) == 6 and asl[1].name == "lr0.0003_gamma_neg4"
  assert dict(asl[1].options) == {"gamma_neg": 4.0}
  for objective, (option, values) in hps.items():  # Each option is one the objective takes.
    from multilabel_jax import losses  # pylint: disable=g-import-not-at-top
    assert option in losses.accepted_options(objective), objective
    assert 2 <= len(values) <= 3


def test_finals_wait_for_the_tune_runs_then_take_the_best_validation_setting(tmp_path):
  runs = _by_name(sweep.plan("tuned_tiny", tmp_path))
  tune = [n for n, r in runs.items() if r.group == tuning.TUNE]
  assert len(tune) == 3 + 6  # softmax: 3 learning rates; asl: 3 x 2 gamma_neg.
  assert all(not runs[n].waits_for for n in tune)
  assert runs["hw1k_softmax_s0"].waits_for == "3 tune runs of hw1k"
  assert runs["ambiguity_low_softmax_s0"].waits_for == "3 tune runs of hw1k"
  assert runs["hw1k_best_2x_s0"].waits_for == "4 final runs of hw1k"
  long = [r for r in runs.values() if r.group == tuning.LENGTH]  # softmax's grid, final length.
  assert [r.name for r in long] == [f"hw1k_softmax_lr{lr}_long_s0" for lr in ("0.0003", "0.001",
                                                                              "0.003")]
  assert all(not r.waits_for for r in long)
  assert tuning.length_check(tmp_path, "hw1k", "softmax", sweep.LEARNING_RATES, {}) is None

  for lr, p1 in (("0.0003", 0.1), ("0.001", 0.3), ("0.003", 0.2)):
    _store(tmp_path, tuning.TUNE, f"hw1k_softmax_lr{lr}_s0", p1)
  runs = _by_name(sweep.plan("tuned_tiny", tmp_path))
  for name in ("hw1k_softmax_s0", "hw1k_softmax_s1", "ambiguity_low_softmax_s0"):
    assert not runs[name].waits_for and runs[name].meta["setting"] == "lr0.001"
    config = runs[name].make_config()
    assert config.optimizer.lr == 1e-3 and config.eval.oracle
  assert config.data.options.group_size == sweep.AMBIGUITY["low"][0]
  assert runs["hw1k_asl_s0"].waits_for == "6 tune runs of hw1k"
  assert runs["hw1k_softmax_lr0.001_s0"].make_config().eval.oracle  # As the final runs do.
  for lr, p1 in (("0.0003", 0.1), ("0.001", 0.2), ("0.003", 0.4)):  # Longer: a larger lr wins.
    _store(tmp_path, tuning.LENGTH, f"hw1k_softmax_lr{lr}_long_s0", p1)
  assert tuning.length_check(tmp_path, "hw1k", "softmax", sweep.LEARNING_RATES, {}) == {
      "short": "lr0.001", "long": "lr0.003", "same": False}

  for gamma in (2, 4):
    for lr, p1 in (("0.0003", 0.5), ("0.001", 0.6), ("0.003", 0.6)):
      _store(tmp_path, tuning.TUNE, f"hw1k_asl_lr{lr}_gamma_neg{gamma}_s0", p1 + gamma / 100)
  runs = _by_name(sweep.plan("tuned_tiny", tmp_path))
  chosen = runs["hw1k_asl_s0"]  # 0.64 at lr 1e-3 and 3e-3: the first in grid order wins.
  assert chosen.meta["setting"] == "lr0.001_gamma_neg4"
  assert chosen.make_config().objective_options.gamma_neg == 4.0

  for objective, p1 in (("softmax", 0.3), ("asl", 0.4)):
    for seed in range(2):
      _store(tmp_path, tuning.FINAL, f"hw1k_{objective}_s{seed}", p1 + seed / 100)
  check = _by_name(sweep.plan("tuned_tiny", tmp_path))["hw1k_best_2x_s0"]
  assert not check.waits_for and check.meta["objective"] == "asl"
  config = check.make_config()
  assert config.total_steps == 4 and config.objective_options.gamma_neg == 4.0


def test_a_choice_at_the_edge_grows_the_grid_one_step_of_its_pattern_at_a_time(tmp_path):
  scores = {}
  kw = dict(objective="two_head", learning_rates=(3e-4, 1e-3, 3e-3),
            hyperparameters={"two_head": ("weight", (0.5, 1.0))})
  settings, best, missing = tuning.tuned_grid(lambda s: scores.get(s.name), **kw)
  assert best is None and missing == settings and len(settings) == 6
  scores.update({s.name: s.lr + s.options[0][1] / 100 for s in settings})  # Best: the top lr.
  settings, best, missing = tuning.tuned_grid(lambda s: scores.get(s.name), **kw)
  assert [s.name for s in missing] == ["lr0.01_weight0.5", "lr0.01_weight1"] and best is None
  scores.update({"lr0.01_weight0.5": 0.0, "lr0.01_weight1": 0.0})  # Past the peak: it stops.
  settings, best, missing = tuning.tuned_grid(lambda s: scores.get(s.name), **kw)
  assert best.name == "lr0.003_weight1" and not missing and len(settings) == 8
  bottom = {"lr0.0003": 0.5, "lr0.001": 0.4, "lr0.003": 0.3, "lr0.0001": 0.6, "lr3e-05": 0.7,
            "lr1e-05": 0.8}  # Always better lower: two steps, then it is left at the edge.
  settings, best, missing = tuning.tuned_grid(lambda s: bottom.get(s.name), "softmax",
                                              (3e-4, 1e-3, 3e-3), {})
  assert best.name == "lr3e-05" and not missing
  assert [s.lr for s in settings] == [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
  two = {"lr0.001": 0.5, "lr0.01": 0.4, "lr0.0001": 0.3}  # A 2-value grid steps by its ratio.
  settings, best, _ = tuning.tuned_grid(lambda s: two.get(s.name), "softmax", (1e-3, 1e-2), {})
  assert best.lr == 1e-3 and [s.lr for s in settings] == [1e-4, 1e-3, 1e-2]

  for lr, p1 in (("0.0003", 0.1), ("0.001", 0.2), ("0.003", 0.3)):  # The sweep plans it.
    _store(tmp_path, tuning.TUNE, f"hw1k_softmax_lr{lr}_s0", p1)
  runs = _by_name(sweep.plan("tuned_tiny", tmp_path))
  assert not runs["hw1k_softmax_lr0.01_s0"].waits_for
  assert runs["hw1k_softmax_lr0.01_s0"].make_config().optimizer.lr == 0.01
  assert runs["hw1k_softmax_lr0.01_long_s0"].group == tuning.LENGTH
  assert runs["hw1k_softmax_s0"].waits_for == "1 tune runs of hw1k"


def test_a_row_tuned_at_its_final_length_takes_the_chosen_tune_run_as_seed_0(tmp_path):
  runs = _by_name(sweep.plan("tuned_tiny", tmp_path))  # hw1k: tune and final lengths agree.
  waiting = runs["hw1k_softmax_s0"]
  assert waiting.fit is not None and waiting.estimate_s == 0.0 and waiting.waits_for
  assert runs["hw1k_softmax_s1"].fit is None and runs["hw1k_softmax_s1"].estimate_s > 0
  assert runs["ambiguity_low_softmax_s0"].fit is None  # Another row's choices: trained.
  for lr, p1 in (("0.0003", 0.1), ("0.001", 0.3), ("0.003", 0.2)):
    run = runs[f"hw1k_softmax_lr{lr}_s0"]
    config = json.loads(run.make_config().to_json_best_effort())
    config["data"]["prefetch"] = 0  # Read another way, the same batches: still the same run.
    if lr == "0.001":  # Stored before optimizer.ema_decay existed (its default: no EMA).
      del config["optimizer"]["ema_decay"]
    _store(tmp_path, tuning.TUNE, run.name, p1)
    path = run.path(tmp_path)
    path.write_text(json.dumps(dict(json.loads(path.read_text()), config=config,
                                    test={"p1": p1})))
  runs = _by_name(sweep.plan("tuned_tiny", tmp_path))
  reused = runs["hw1k_softmax_s0"]
  assert reused.meta["reused"] == "tuned_tune/hw1k_softmax_lr0.001_s0" and not reused.waits_for
  report = sweep_runner.run_one(reused, tmp_path, preset="tuned_tiny")
  stored = json.loads(reused.path(tmp_path).read_text())
  assert stored == report and stored["test"] == {"p1": 0.3}
  assert stored["sweep"]["name"] == "hw1k_softmax_s0" and stored["sweep"]["seed"] == 0
  assert stored["sweep"]["reused"] == "tuned_tune/hw1k_softmax_lr0.001_s0"
  _store(tmp_path, tuning.FINAL, "hw1k_softmax_s1", 0.3, steps=2, wall=8.0)
  model = {"hw1k": (0.0, 1.0)}  # The reused run is no evidence of a final run's time.
  assert tuning.estimate_seconds(tmp_path, tuning.FINAL, "hw1k", 2, model, "softmax") == 8.0

  _store(tmp_path, tuning.TUNE, "hw1k_softmax_lr0.001_s0", 0.3)  # Another config (older
  trained = _by_name(sweep.plan("tuned_tiny", tmp_path))["hw1k_softmax_s0"]  # code): trained.
  assert trained.fit is None and trained.make_config().optimizer.lr == 1e-3


def test_estimates_use_the_stored_runs_once_there_are_any(tmp_path, capsys):
  model = {"hw1k": (30.0, 0.5), "ambiguity_low": (30.0, 0.5)}
  assert tuning.estimate_seconds(tmp_path, tuning.TUNE, "hw1k", 100, model) == 80.0
  _store(tmp_path, tuning.TUNE, "hw1k_softmax_lr0.001_s0", 0.3, steps=10, wall=50.0)
  assert tuning.estimate_seconds(tmp_path, tuning.TUNE, "hw1k", 100, model) == 500.0
  _store(tmp_path, tuning.TUNE, "hw1k_asl_lr0.001_s0", 0.3, steps=10, wall=20.0)
  assert tuning.estimate_seconds(tmp_path, tuning.TUNE, "hw1k", 100, model, "asl") == 200.0
  assert tuning.estimate_seconds(tmp_path, tuning.TUNE, "hw1k", 100, model, "zlpr") == 350.0
  assert sweep.run_sweep(tmp_path, preset="tuned_tiny", dry_run=True) == []
  printed = capsys.readouterr().out
  assert "tuned_tune/hw1k_softmax_lr0.001_s0: stored" in printed
  assert "tuned_final/hw1k_softmax_s0: waits for 2 tune runs of hw1k" in printed
  assert "runnable now: ~" in printed and "CPU hours" in printed


def test_final_scale_groups_stand_in_for_each_others_time(tmp_path):
  model = {"hw1k": (30.0, 0.5)}
  assert tuning.estimate_seconds(tmp_path, tuning.DOUBLE, "hw1k", 100, model, "asl") == 80.0
  _store(tmp_path, tuning.FINAL, "hw1k_softmax_s1", 0.3, steps=10, wall=30.0)
  assert tuning.estimate_seconds(tmp_path, tuning.DOUBLE, "hw1k", 100, model, "asl") == 300.0
  _store(tmp_path, tuning.FINAL, "hw1k_asl_s1", 0.3, steps=10, wall=20.0)
  assert tuning.estimate_seconds(tmp_path, tuning.DOUBLE, "hw1k", 100, model, "asl") == 200.0
  check = tmp_path / tuning.CHECK / "hw1k_best_2x_s0.json"  # Named without its objective.
  check.parent.mkdir()
  check.write_text(json.dumps({"train": {"steps": 20},
                               "sweep": {"wall_seconds": 30.0, "objective": "asl"}}))
  assert tuning.estimate_seconds(tmp_path, tuning.DOUBLE, "hw1k", 100, model, "asl") == 150.0
  assert tuning.estimate_seconds(tmp_path, tuning.DOUBLE, "hw1k", 100, model, "zlpr") == 150.0
  assert tuning.estimate_seconds(tmp_path, tuning.FINAL, "hw1k", 100, model, "asl") == 200.0
  assert tuning.estimate_seconds(tmp_path, tuning.TUNE, "hw1k", 100, model, "asl") == 80.0


@pytest.mark.slow  # One tiny training run.
def test_a_tuned_run_trains_and_is_stored(tmp_path, capsys):
  scratch = tmp_path / "not_yet" / "scratch"  # Made when missing.
  ran = sweep.run_sweep(tmp_path, preset="tuned_tiny", only="hw1k_softmax_lr0.001_s0",
                        scratch=scratch)
  assert ran == ["hw1k_softmax_lr0.001_s0"] and scratch.is_dir()
  assert not list(scratch.iterdir())  # The run's workdir is removed after it.
  stored = json.loads((tmp_path / tuning.TUNE / "hw1k_softmax_lr0.001_s0.json").read_text())
  printed = capsys.readouterr().out  # The log shows validation, never test, numbers.
  p1 = stored["validation"]["ranking"]["precision_at_1"]
  assert "tuned_tune/hw1k_softmax_lr0.001_s0: " in printed and "test" not in printed
  assert f"validation P@1 {p1:.4f}" in printed
  assert stored["config"]["optimizer"]["lr"] == 1e-3
  assert stored["sweep"]["setting"] == "lr0.001" and stored["sweep"]["row"] == "hw1k"


def test_debtags_tunes_the_wide_paths_rate_and_the_mlps_in_proportion(tmp_path):
  runs = _by_name(sweep.plan("tuned", tmp_path))
  names = [n for n in runs if n.startswith("debtags_sigmoid_") and runs[n].group == tuning.TUNE]
  assert names == ["debtags_sigmoid_lr0.3_s0", "debtags_sigmoid_lr1_s0", "debtags_sigmoid_lr3_s0"]
  shipped = sweep.debtags.get_config("loss=sigmoid").optimizer
  for name, factor in (("debtags_sigmoid_lr0.3_s0", 0.3), ("debtags_sigmoid_lr3_s0", 3.0)):
    config = runs[name].make_config()
    assert config.optimizer.wide_lr == pytest.approx(shipped.wide_lr * factor)
    assert config.optimizer.deep_lr_with_wide == pytest.approx(shipped.deep_lr_with_wide * factor)
    assert config.optimizer.lr == pytest.approx(shipped.lr * factor)
  assert config.head.wide and config.total_steps == 940 and not config.eval.oracle
  hw = runs["hw20k_softmax_lr0.003_s0"].make_config()
  assert hw.optimizer.lr == 3e-3 and hw.data.options.num_classes == 20_000
  for name, run in runs.items():  # Every tune config builds: options keep their own type.
    if run.group == tuning.TUNE and name.startswith("hw20k_"):
      config = run.make_config()
      for option, value in dict(tuning.grid(run.meta["objective"], sweep.LEARNING_RATES,
                                            sweep.OBJECTIVE_HYPERPARAMETERS)[0].options).items():
        assert type(config.objective_options[option]) is type(value)
  assert runs["hw20k_embedding_lr0.001_dim64_s0"].make_config().objective_options.dim == 64


def test_a_chosen_tune_run_stored_with_rounded_floats_is_still_seed_0(tmp_path):
  # debtags' rate 3 scales the MLP's 1e-4 to 3.0000000000000003e-4; the report rounds it.
  stored = {}
  for lr, p1 in (("0.3", 0.1), ("1", 0.2), ("3", 0.5), ("10", 0.4)):
    run = _by_name(sweep.plan("tuned", tmp_path))[f"debtags_abs_kl_lr{lr}_s0"]
    stored[lr] = sweep_runner.compact(json.loads(run.make_config().to_json_best_effort()))
    _store(tmp_path, tuning.TUNE, run.name, p1)
    path = run.path(tmp_path)
    path.write_text(json.dumps(dict(json.loads(path.read_text()), config=stored[lr])))
  exact = _by_name(sweep.plan("tuned", tmp_path))["debtags_abs_kl_lr3_s0"].make_config()
  assert stored["3"]["optimizer"]["deep_lr_with_wide"] != exact.optimizer.deep_lr_with_wide
  seed0 = _by_name(sweep.plan("tuned", tmp_path))["debtags_abs_kl_s0"]
  assert seed0.meta["reused"] == "tuned_tune/debtags_abs_kl_lr3_s0" and seed0.fit is not None


def test_the_results_section_counts_tune_runs_and_shows_a_choice_once_the_grid_is_complete():
  def stored(row, objective, setting, p1, group=tuning.TUNE):
    return {"sweep": {"group": group, "row": row, "objective": objective, "setting": setting},
            "validation": {"ranking": {"precision_at_1": p1}}}

  rows = sweep.TUNED_PRESETS["tuned"]
  kw = dict(objectives=sweep.OBJECTIVES, learning_rates=sweep.LEARNING_RATES,
            hyperparameters=sweep.OBJECTIVE_HYPERPARAMETERS)
  assert tuning.section([], rows, **kw) == []
  reports = [stored("hw20k", "sigmoid", "lr0.0003", 0.2), stored("hw20k", "sigmoid", "lr0.001", 0.4),
             stored("hw20k", "softmax", "lr0.0003", 0.3)]
  text = "\n".join(tuning.section(reports, rows, **kw))
  assert "| hw20k | sigmoid | 2 of 3 | - | 0 of 3 |" in text
  reports.append(stored("hw20k", "sigmoid", "lr0.003", 0.1))
  text = "\n".join(tuning.section(reports, rows, **kw))
  assert "| hw20k | sigmoid | 3 of 3 | lr0.001 (0.400) | 0 of 3 |" in text
  reports.append(stored("hw20k", "sigmoid", "lr0.003", 0.5))  # A rerun: the last one counts.
  text = "\n".join(tuning.section(reports, rows, **kw))  # The edge grows the grid to 1e-2.
  assert "| hw20k | sigmoid | 3 of 4 | - | 0 of 3 |" in text
  reports.append(stored("hw20k", "sigmoid", "lr0.01", 0.45))
  assert "| hw20k | sigmoid | 4 of 4 | lr0.003 (0.500) | 0 of 3 |" in "\n".join(
      tuning.section(reports, rows, **kw))
  for lr, p1 in (("0.01", 0.6), ("0.03", 0.7)):  # At the edge after both steps: marked.
    reports.append(stored("hw20k", "sigmoid", f"lr{lr}", p1))
  reports.append(stored("hw20k", "sigmoid", "lr0.1", 0.8))  # Past the last step: not shown.
  assert ("| hw20k | sigmoid | 5 of 5 | lr0.03 (0.700), lr at the edge (+16.7% over lr0.01) |"
          " 0 of 3 |") in "\n".join(
      tuning.section(reports, rows, **kw))
  assert "| hw1k | sigmoid |" not in text  # Nothing of hw1k is stored yet.
  assert "hw20k tuned at 2400 steps, final 2400 steps x 3 seeds (tuned at the final" in text
  assert "hw1k hw20k's choices, final 2000 steps x 3 seeds" in text
  for lr, p1 in (("0.0003", 0.1), ("0.001", 0.2), ("0.003", 0.3), ("0.01", 0.2)):
    reports.append(stored("hw20k", "softmax", f"lr{lr}", p1))
  hw20k = rows["hw20k"]  # As if it tuned at 600 steps, checked on softmax at 2400.
  rows = dict(rows, hw20k=dataclasses.replace(
      hw20k, tune=dataclasses.replace(hw20k.final, steps=600), length_check="softmax"))
  reports.append(stored("hw20k", "softmax", "lr0.01", 0.5, group=tuning.LENGTH))
  text = "\n".join(tuning.section(reports, rows, **kw))
  assert ("Length check, hw20k softmax at 2400 steps (validation P@1): lr0.01 0.500 "
          "(1 of 4 stored).") in text
  for lr in ("0.0003", "0.001", "0.003"):
    reports.append(stored("hw20k", "softmax", f"lr{lr}", 0.4, group=tuning.LENGTH))
  text = "\n".join(tuning.section(reports, rows, **kw))
  assert ("600 steps chose lr0.003, 2400 steps choose lr0.01: **the choice changes with "
          "length**") in text


def test_the_tuned_debtags_row_runs_its_peers_through_the_sweep(tmp_path):
  runs = _by_name(sweep.plan("tuned", tmp_path))
  peers = [r for r in runs.values() if r.group == "peers"]
  assert sorted(r.name for r in peers) == ["debtags_libmultilabel_1vsrest",
                                           "debtags_libmultilabel_tree", "debtags_omikuji"]
  assert all(r.fit is not None and r.estimate_s > 0 for r in peers)
  assert not [r for r in sweep.plan("tuned_tiny", tmp_path) if r.group == "peers"]
  fake = sweep.Run("peers", "debtags_fake", meta={"peer": "fake"}, fit=lambda: {
      "peer": "fake", "test": {"ranking": {"precision_at_1": 0.5}}})
  assert sweep_runner.run_sweep([fake], tmp_path, preset="tuned") == ["debtags_fake"]
  stored = json.loads((tmp_path / "peers" / "debtags_fake.json").read_text())
  assert stored["peer"] == "fake" and stored["sweep"]["group"] == "peers"


def test_a_budget_limited_row_runs_every_objective_at_twice_the_budget(tmp_path):
  for lr, p1 in (("0.0003", 0.1), ("0.001", 0.3), ("0.003", 0.2)):
    _store(tmp_path, tuning.TUNE, f"hw1k_softmax_lr{lr}_s0", p1)
    for gamma in (2, 4):
      _store(tmp_path, tuning.TUNE, f"hw1k_asl_lr{lr}_gamma_neg{gamma}_s0", p1 + gamma / 100)
  for objective, p1 in (("softmax", 0.5), ("asl", 0.4)):
    for seed in range(2):
      _store(tmp_path, tuning.FINAL, f"hw1k_{objective}_s{seed}", p1)
  check = _by_name(sweep.plan("tuned_tiny", tmp_path))["hw1k_best_2x_s0"]
  assert check.meta["objective"] == "softmax"

  def store_check(p1):
    check.path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    check.path(tmp_path).write_text(json.dumps({
        "validation": {"ranking": {"precision_at_1": p1}}, "train": {"steps": 4},
        "sweep": {"wall_seconds": 1.0, "objective": "softmax"},
        "config": json.loads(check.make_config().to_json_best_effort())}))

  def doubled():
    return {r.name: r for r in sweep.plan("tuned_tiny", tmp_path) if r.group == tuning.DOUBLE}

  store_check(0.51)  # +2%: the budget stands, nothing more runs.
  assert tuning.limited_check(tmp_path, "hw1k") is None and doubled() == {}
  store_check(0.45)  # -10%: budget-limited (falling), every objective at twice the budget.
  assert tuning.limited_check(tmp_path, "hw1k")["validation"]["ranking"]["precision_at_1"] == 0.45
  runs = doubled()
  assert sorted(runs) == ["hw1k_asl_s0", "hw1k_asl_s1", "hw1k_softmax_s0", "hw1k_softmax_s1"]
  asl = runs["hw1k_asl_s1"]
  assert asl.meta["setting"] == "lr0.001_gamma_neg4" and not asl.waits_for and asl.fit is None
  config = asl.make_config()
  assert (config.total_steps, config.seed, config.objective_options.gamma_neg) == (4, 1, 4.0)
  reused = runs["hw1k_softmax_s0"]  # The check run is the best objective's doubled seed 0.
  assert reused.meta["reused"] == "tuned_check/hw1k_best_2x_s0"
  report = sweep_runner.run_one(reused, tmp_path, preset="tuned_tiny")
  assert report["validation"]["ranking"]["precision_at_1"] == 0.45
  assert report["sweep"]["group"] == tuning.DOUBLE and report["sweep"]["seed"] == 0


def test_a_finished_protocol_states_its_cost_against_the_planned_hours():
  reports = [{"sweep": {"group": tuning.TUNE, "row": "hw20k", "objective": "sigmoid",
                        "setting": "lr0.001", "preset": "tuned", "wall_seconds": 7200.0},
              "validation": {"ranking": {"precision_at_1": 0.4}}},
             {"sweep": {"group": tuning.FINAL, "row": "hw20k", "objective": "sigmoid",
                        "setting": "lr0.001", "preset": "tuned", "wall_seconds": 0.001,
                        "reused": "tuned_tune/x"},
              "validation": {"ranking": {"precision_at_1": 0.4}}},
             {"sweep": {"group": "main", "preset": "cpu", "wall_seconds": 9e9}},  # Not tuned.
             {"peer": "omikuji", "data": {"name": "debtags"},
              "train": {"seconds_this_run": 3600.0}}]
  assert tuning.run_hours(reports) == (3, pytest.approx(3.0, abs=1e-6))
  kw = dict(objectives=sweep.OBJECTIVES, learning_rates=sweep.LEARNING_RATES,
            hyperparameters=sweep.OBJECTIVE_HYPERPARAMETERS)
  rows = sweep.TUNED_PRESETS["tuned"]
  text = "\n".join(tuning.section(reports, rows, **kw))
  assert text.startswith("## The tuned protocol (in progress)")
  assert "nothing here is compared" in text and "h of run time" not in text
  text = "\n".join(tuning.section(reports, rows, finished=True, **kw))
  assert text.startswith("## The tuned protocol\n")
  assert ("Every run it asks for is stored: 3 runs, 3 h of run time (the sum of each run's "
          "own wall-clock;") in text
  assert ("of which tuning took 2 h (hw20k, debtags tune at their final length, below). "
          "That is within") in text
  assert "That is within the 10 h planned for this machine." in text
  assert "nothing here is compared" not in text
  reports[0]["sweep"]["wall_seconds"] = 40 * 3600.0
  text = "\n".join(tuning.section(reports, rows, finished=True, **kw))
  assert "3 runs, 41 h of run time" in text
  assert "of which tuning took 40 h" in text
  assert "That is over the 10 h planned for this machine; nothing was cut." in text
