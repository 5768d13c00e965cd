"""The results sweep, its statistics, the report generator and the OvR baseline."""

import json
import pathlib
import re

import numpy as np
import pytest

from experiments import sweep
import multilabel_jax
from multilabel_jax import losses
from multilabel_jax.data import debtags
from multilabel_jax.studies import claims, ovr_baseline
from multilabel_jax.studies import report as report_lib
from multilabel_jax.studies import stats as rs


def test_plan_covers_every_objective_row_and_ambiguity_level():
  runs = sweep.plan("cpu")
  names = [r.name for r in runs]
  assert len(names) == len(set(names))
  main = [r for r in runs if r.group == "main"]
  for row in ("debtags", "hw1k", "hw20k", "hw100k"):
    objectives = {r.meta["objective"] for r in main if r.meta["dataset"] == row}
    assert objectives == set(losses.OBJECTIVES), row
  for row in ("debtags", "hw1k", "hw20k"):
    assert {r.meta["seed"] for r in main if r.meta["dataset"] == row} == {0, 1, 2}
  levels = {(r.meta["level"], r.meta["objective"]) for r in runs if r.group == "ambiguity"}
  assert levels == {(lvl, o) for lvl in sweep.AMBIGUITY for o in ("softmax", "two_head")}
  assert sum(r.group == "baseline" for r in runs) == 1
  long = [r for r in runs if r.group == "long"]
  tuned = f"sigmoid ({sweep.DEBTAGS_TUNED})"
  assert {r.meta["objective"] for r in long} == set(sweep.LONG_OBJECTIVES) | {tuned}
  assert all(r.make_config().total_steps == 4000 for r in long)  # debtags.py's own schedule.
  assert {r.meta["variant"] for r in runs if r.group == "tune"} == set(sweep.DEBTAGS_TUNING)
  config = next(r for r in long if r.meta["objective"] == tuned).make_config()
  assert config.optimizer.lr == sweep.DEBTAGS_TUNING[sweep.DEBTAGS_TUNED]["lr"]
  config = runs[names.index("hw100k_softmax_s0")].make_config()
  assert config.data.options.num_classes == 100_000 and config.head.fused == "auto"
  with pytest.raises(ValueError, match="preset"):
    sweep.plan("nope")


def test_core_library_does_not_import_the_studies():
  """multilabel_jax.studies needs the `results` extra: only the studies import it."""
  root = pathlib.Path(multilabel_jax.__file__).parent
  pattern = re.compile(r"^\s*(from|import)\s[^#]*\bstudies\b", re.M)
  for path in root.rglob("*.py"):
    if path.relative_to(root).parts[0] != "studies":
      assert not pattern.search(path.read_text()), path


def test_verdict_rule():
  assert rs.verdict(rs.Stat([0.05, 0.06, 0.04])) == "confirms"          # d = 0.05, s = 0.01
  assert rs.verdict(rs.Stat([-0.05, -0.06, -0.04])) == "refutes"
  assert rs.verdict(rs.Stat([0.01, -0.02, 0.03])) == "inconclusive"
  assert rs.verdict(rs.Stat([-0.05, -0.06, -0.04]), higher_is_better=False) == "confirms"
  assert rs.verdict(rs.Stat([0.2])) == rs.ONE_SEED
  assert rs.verdict(rs.Stat([])) == "not run"
  assert rs.verdict(rs.Stat([0.05, 0.06]), spread=0.03) == "inconclusive"  # 0.055 < 0.06.
  assert rs.combine(["confirms", rs.ONE_SEED, "not run"]) == "confirms"
  assert rs.combine(["confirms", "inconclusive"]) == "inconclusive"
  assert rs.combine([rs.ONE_SEED]) == rs.ONE_SEED
  assert rs.conjunction(["confirms", "refutes"]) == "refutes"  # "A and B": one part fails.
  assert rs.conjunction(["confirms", "inconclusive"]) == "inconclusive"
  assert rs.conjunction(["confirms", rs.ONE_SEED]) == "confirms"
  assert rs.conjunction([rs.ONE_SEED]) == rs.ONE_SEED
  a, b = rs.shared_seeds({0: "a0", 1: "a1", 2: "a2"}, {1: "b1", 2: "b2", 3: "b3"})
  assert a == {1: "a1", 2: "a2"} and b == {1: "b1", 2: "b2"}
  s = rs.Stat([1.0, 2.0, float("nan"), 3.0])
  assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0) and s.fmt(1) == "2.0 ± 1.0"


def test_steps_to_fraction_and_average_k_error():
  report = {"validation_history": [{"step": 10, "val_map": 0.2}, {"step": 20, "val_map": 0.5},
                                   {"step": 30, "val_map": 0.6}],
            "test": {"decoders": {"average_k_3": {"average_k_accuracy": 0.7},
                                  "top_3": {"average_k_accuracy": 0.6}}}}
  assert rs.steps_to_fraction(report) == 30.0          # 0.5 < 0.9 * 0.6 = 0.54.
  assert rs.steps_to_fraction(report, 0.8) == 20.0
  assert rs.average_k_error(report, 3) == pytest.approx(0.3)
  assert rs.top_k_error(report, 3) == pytest.approx(0.4)
  hist = [{"step": 5, "val_precision_at_1": 0.5}, {"step": 9, "val_precision_at_1": 0.5}]
  assert rs.steps_to_fraction({"validation_history": hist}) == 5.0  # No mAP: P@1.
  assert rs.steps_to_fraction(report, key="val_map") == 30.0


@pytest.mark.slow  # Two tiny training runs: about 20 s alone, minutes on a busy machine.
def test_tiny_sweep_stores_resumes_and_writes_the_report(tmp_path):
  out, docs = tmp_path / "results", tmp_path / "docs"
  assert sweep.run_sweep(out, preset="tiny", only="no such run") == []
  ran = sweep.run_sweep(out, preset="tiny", only="hw1k_softmax_s0")
  ran += sweep.run_sweep(out, preset="tiny", only="hw1k_two_head_s0")
  assert ran == ["hw1k_softmax_s0", "hw1k_two_head_s0"]
  stored = json.loads((out / "main" / "hw1k_softmax_s0.json").read_text())
  assert stored["sweep"]["preset"] == "tiny" and stored["config"]["total_steps"] == 2
  assert {"average_k_1", "average_k_3", "top_5"} <= set(stored["test"]["decoders"])
  assert len(stored["test"]["buckets"]["map"]) == 3 and "pr_curve" in stored["test"]
  assert [h["step"] for h in stored["validation_history"]] == [1, 2]
  assert not list(tmp_path.glob("**/checkpoints"))  # Scratch workdirs are deleted.
  assert sweep.run_sweep(out, preset="tiny", only="hw1k_softmax_s0") == []  # Resumed.

  readme = tmp_path / "README.md"
  readme.write_text("# Project\n\nintro\n")
  text = report_lib.write(out, docs, readme)
  report_lib.write(out, docs, readme)  # Idempotent: the section is replaced.
  assert readme.read_text().count(report_lib.README_START) == 1
  assert "Which loss and decoder should I use?" in readme.read_text()
  assert "Measured by `python -m experiments.sweep` (shrunk CPU runs" in readme.read_text()
  assert (docs / "RESULTS.md").read_text() == text
  assert report_lib.COMMAND in text
  for i in range(1, 6):
    assert f"### Claim {i}" in text
  p1 = stored["test"]["ranking"]["precision_at_1"]
  assert f"{p1:.3f}" in text  # Numbers come from the stored reports.
  for png in ("convergence", "precision_recall", "set_sizes", "bucket_gain"):
    assert (docs / f"results_{png}.png").stat().st_size > 1000
  with pytest.raises(ValueError, match="no stored reports"):
    report_lib.write(tmp_path / "empty", docs)


def _synthetic_debtags(path, n=240, seed=0):
  """JSONL records whose words predict their tags (with noise)."""
  rng = np.random.default_rng(seed)
  tags = [f"facet::t{i}" for i in range(6)]
  words = [f"word{i}" for i in range(6)]
  with open(path, "w") as f:
    for i in range(n):
      chosen = sorted(set(rng.choice(6, size=rng.integers(1, 4), replace=True).tolist()))
      text = " ".join(words[c] for c in chosen if rng.uniform() < 0.85)
      text += " " + " ".join(f"noise{rng.integers(20)}" for _ in range(3))
      f.write(json.dumps({"package": f"pkg{i}", "section": "misc", "synopsis": "tool",
                          "description": text, "depends": [],
                          "tags": [tags[c] for c in chosen]}) + "\n")


def test_ovr_baseline_matches_sklearn_directly(tmp_path):
  sk_metrics = pytest.importorskip("sklearn.metrics")
  from sklearn.linear_model import LogisticRegression
  from sklearn.multiclass import OneVsRestClassifier
  path = tmp_path / "d.jsonl"
  _synthetic_debtags(path)
  source = debtags.load_debtags(str(path))
  report = ovr_baseline.run(source=source)
  c = source.info.num_classes

  def arrays(split):
    d = source.read(split, np.arange(source.num_examples(split)))
    x = ovr_baseline.bag_to_csr(d["token_ids"], d["token_weights"], source.num_embeddings)
    y = np.zeros((len(d["label_ids"]), c), int)
    for r, ids in enumerate(d["label_ids"]):
      y[r, ids[ids >= 0]] = 1
    return x, y, d

  x_tr, y_tr, _ = arrays("train")
  x_te, y_te, d_te = arrays("test")
  # The CSR holds the featurizer's weights: each row is the L2-normalised TF-IDF bag.
  norms = np.asarray(x_te.multiply(x_te).sum(1)).ravel()
  assert np.allclose(norms[d_te["token_weights"].any(1)], 1.0, atol=1e-5)
  model = OneVsRestClassifier(LogisticRegression(C=report["model"]["C"], solver="liblinear"))
  proba = model.fit(x_tr, y_tr).predict_proba(x_te)
  test = report["test"]
  assert test["num_examples"] == len(y_te)
  top = np.argsort(-proba, axis=1, kind="stable")
  for k in (1, 3, 5):
    expected = np.mean(np.take_along_axis(y_te, top[:, :k], 1).sum(1) / k)
    assert test["ranking"][f"precision_at_{k}"] == pytest.approx(expected, abs=1e-5)
  keep = y_te.any(0)
  exact_map = np.mean([sk_metrics.average_precision_score(y_te[:, j], proba[:, j])
                       for j in np.flatnonzero(keep)])
  assert test["ranking"]["map"] == pytest.approx(exact_map, abs=1e-6)  # Exact mAP.
  for average in ("micro", "macro"):
    expected = sk_metrics.f1_score(y_te, (proba >= 0.5).astype(int), average=average,
                                   zero_division=0, labels=np.arange(c))
    got = test["decoders"]["threshold_0.5"][f"f1_{average}"]
    assert got == pytest.approx(expected, abs=1e-5), average
  assert test["ranking"]["precision_at_1"] > 0.5  # The words carry the tags.


def test_ambiguity_gain_change_sign():
  """two_head gains 0.01 at low ambiguity and 0.04 at high: the change is +0.03."""
  err = {("low", "softmax"): 0.40, ("low", "two_head"): 0.39,
         ("high", "softmax"): 0.60, ("high", "two_head"): 0.56}
  reports = [{"sweep": {"group": "ambiguity", "level": lvl, "objective": o, "seed": s},
              "test": {"decoders": {"average_k_3": {"average_k_accuracy": 1 - e + s / 100}}}}
             for (lvl, o), e in err.items() for s in range(3)]
  change = claims.ambiguity_gain_change(report_lib.Report(reports))
  assert change.n == 3 and change.values == pytest.approx([0.03] * 3)



def _fake_run(group, objective, seed, val_p1, test_p1, steps, **meta):
  return {"sweep": {"group": group, "dataset": "debtags", "objective": objective,
                    "seed": seed, **meta},
          "config": {"total_steps": steps},
          "train": {"seconds_this_run": 10.0},
          "validation_history": [{"step": steps, "val_precision_at_1": val_p1,
                                  "val_map": val_p1 / 2}],
          "test": {"ranking": {"precision_at_1": test_p1, "precision_at_3": 0.6,
                               "precision_at_5": 0.4, "map": 0.3, "map_error": 0.01},
                   "decoders": {"top_1": {"f1_micro": 0.5, "f1_macro": 0.2}}}}


def test_claim5_picks_the_best_configuration_on_validation():
  """The best *test* P@1 (main softmax) is not chosen: validation picks the tuned run."""
  tuned = f"sigmoid ({sweep.DEBTAGS_TUNED})"
  reports = [_fake_run("main", "softmax", s, 0.80, 0.99, 300) for s in (0, 1)]
  reports += [_fake_run("long", tuned, s, 0.93 + s / 1000, 0.955 + s / 1000, 4000)
              for s in (0, 1)]
  reports += [_fake_run("tune", "sigmoid", 0, p, p, 1000, variant=v)
              for v, p in (("lr1e-3", 0.90), (sweep.DEBTAGS_TUNED, 0.92))]
  reports.append({"sweep": {"group": "baseline"}, "model": {"estimator": "OvR", "C": 8.0,
                                                            "C_grid": [8.0]},
                  "train": {"seconds_this_run": 5.0},
                  "test": {"ranking": {"precision_at_1": 0.94, "precision_at_3": 0.65,
                                       "precision_at_5": 0.5, "map": 0.5, "map_error": 0.0},
                           "decoders": {"top_1": {"f1_micro": 0.6, "f1_macro": 0.3}}}})
  _, _, verdict, lines = claims.claim5(report_lib.Report(reports))
  text = "\n".join(lines)
  assert f"**{tuned} (4000 steps)**" in text
  assert "the best on validation" in text and "is not the best variant" not in text
  # Test P@1 0.9555 ± 0.0007 beats the baseline (0.94) and the reference (0.947): d > 2 s.
  assert verdict == "confirms"
  reports[-3]["validation_history"][-1]["val_precision_at_1"] = 0.99  # lr1e-3 now leads.
  text = "\n".join(claims.claim5(report_lib.Report(reports))[3])
  assert "is not the best variant on validation" in text


def test_load_keeps_only_stored_runs(tmp_path):
  """A whole run's folder kept under results/ (results/million) is not a sweep run."""
  (tmp_path / "million").mkdir()
  (tmp_path / "million" / "validation_history.json").write_text("[]")
  (tmp_path / "million" / "report.json").write_text('{"test": {}}')
  (tmp_path / "main").mkdir()
  (tmp_path / "main" / "hw1k_softmax_s0.json").write_text('{"sweep": {"group": "main"}}')
  (tmp_path / "peers").mkdir()
  (tmp_path / "peers" / "debtags_omikuji.json").write_text('{"peer": "omikuji"}')
  assert rs.load(tmp_path) == [{"sweep": {"group": "main"}}, {"peer": "omikuji"}]
