"""Predictor: every objective decodes as the dense decoders do (dense and fused heads), a
trained run's workdir predicts what its evaluation scored, raw records are featurised as
the loader does, the export gives the same ids and scores, and bad workdirs, decoders and
records are errors that name them."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import jsonl as jsonl_config
from multilabel_jax import builders, calibration, checkpointing, configs, inference, losses
from multilabel_jax import models
from multilabel_jax import scoring, serving, train
from multilabel_jax.data import jsonl
from tests.train_util import fixture_test_records, tiny_config

C, D = 40, 8


def _objective(name):
  if name == "embedding":
    table = np.random.default_rng(1).normal(size=(C, 6)).astype(np.float32)
    return losses.get_objective(name, C, embeddings=table)
  return losses.get_objective(name, C)


def _random_predictor(name, use_fused):
  """A predictor of random params on ``features [D]`` and calibrated thresholds."""
  objective = _objective(name)
  model = models.get_model("mlp", objective.head_outputs, widths=(16,))
  x = np.random.default_rng(0).normal(size=(12, D)).astype(np.float32)
  params = model.init(jax.random.key(0), {"features": x[:1]})["params"]
  params = jax.tree_util.tree_map(
      lambda p: 0.5 * np.random.default_rng(p.size).normal(size=p.shape).astype(np.float32),
      params)
  dense = np.asarray(objective.scores(model.apply({"params": params}, {"features": x})))
  cal = {"average_k": {"k": 2.0, "threshold": float(np.quantile(dense, 0.9))},
         "average_k_at": {}, "class_thresholds": np.quantile(dense, 0.8, axis=0)}
  predictor = inference.Predictor(
      model, objective, {"params": params}, label_names=[f"c{i}" for i in range(C)],
      reader=inference.ArrayReader({"features": ((D,), "float32")}), calibration=cal, r=10,
      top_ks=(1, 3), use_fused=use_fused, chunk_size=16, batch_size=8)
  return predictor, x, dense, cal


def _dense_sets(rule, dense, cal, counts, r):
  """The dense decoders of losses.decoders for a decoder rule."""
  if rule["rule"] == "top_k":
    return losses.top_k(dense, rule["k"])
  if rule["rule"] == "threshold":
    return losses.threshold(dense, rule["threshold"], max_labels=r)
  if rule["rule"] == "class_thresholds":
    return losses.threshold(dense, cal["class_thresholds"], max_labels=r)
  return losses.by_count(dense, counts, max_labels=r)


CASES = [(n, False) for n in losses.OBJECTIVES] + [
    (n, True) for n in losses.OBJECTIVES if n != "embedding" and _objective(n).fused]


@pytest.mark.parametrize("name,use_fused", CASES)
def test_every_objective_predicts_the_dense_decoders_sets(name, use_fused):
  predictor, x, dense, cal = _random_predictor(name, use_fused)
  objective = predictor.objective
  counts = None
  if objective.counts_fn is not None:
    out = predictor.model.apply({"params": predictor.variables["params"]}, {"features": x})
    counts = np.asarray(objective.counts_fn(out))
  decoders = [objective.natural_decoder, "class_thresholds", "average_k"]
  decoders += [d for d in predictor.decoders if predictor.decoders[d]["rule"] == "by_count"]
  for decoder in dict.fromkeys(d for d in decoders if d in predictor.decoders):
    got = predictor.decode({"features": x}, decoder)
    want = _dense_sets(predictor.decoders[decoder], dense, cal, counts, predictor.r)
    ids = np.where(np.asarray(want.mask), np.asarray(want.ids), -1)
    width = ids.shape[1]
    np.testing.assert_array_equal(got["ids"][:, :width], ids, err_msg=decoder)
    assert (got["ids"][:, width:] == -1).all()
    np.testing.assert_array_equal(got["num_truncated"], np.asarray(want.num_truncated))
    at = np.take_along_axis(dense, np.maximum(ids, 0), 1)
    np.testing.assert_allclose(np.where(ids >= 0, got["scores"][:, :width], 0),
                               np.where(ids >= 0, at, 0), rtol=1e-5, atol=1e-6)
  top = predictor.top_k({"features": x}, k=4)
  assert [r["labels"] for r in top] == [
      [f"c{i}" for i in row] for row in np.argsort(-dense, axis=1, kind="stable")[:, :4]]


@pytest.mark.parametrize("name,use_fused", [("sigmoid", False), ("sigmoid", True),
                                            ("two_head", False), ("two_head", True)])
def test_expected_f1_predicts_the_host_choice_and_exports(name, use_fused, tmp_path):
  """The compiled decoder (jax.numpy, fused or dense) chooses the sets that the numpy
  expected_f1_sets chooses from the dense marginals (top r, the rest of the row's sum as the
  tail), and the exported model gives the same."""
  predictor, x, dense, _ = _random_predictor(name, use_fused)
  assert predictor.decoders["expected_f1"] == {"rule": "expected_f1"}
  got = predictor.decode({"features": x}, "expected_f1")
  order = np.argsort(-dense, axis=1, kind="stable")[:, :predictor.r]
  top = np.take_along_axis(dense, order, axis=1).astype(np.float64)
  k, _ = losses.expected_f1_sets(top, np.maximum(dense.sum(1) - top.sum(1), 0), min_k=1)
  want = np.where(np.arange(predictor.r)[None, :] < k[:, None], order, -1)
  np.testing.assert_array_equal(got["ids"], want)
  exported = serving.load(predictor.export(tmp_path / "served", "expected_f1"))
  np.testing.assert_array_equal(exported({"features": x})["ids"], got["ids"])


# ------------------------------------------------------------------ a trained JSONL run


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
  """A trained run on tests/fixtures/tiny_posts.jsonl (jsonl.py:runlocal)."""
  workdir = tmp_path_factory.mktemp("jsonl_run")
  config = jsonl_config.get_config("runlocal")
  config.async_checkpoints = False
  report = train.train_and_evaluate(config, workdir)
  return workdir, config, report


def _test_split(config):
  source = builders.build_source(config)
  return source, source.splits["test"]


def test_the_workdir_predicts_what_its_evaluation_scored(jsonl_run):
  workdir, config, report = jsonl_run
  predictor = inference.Predictor.from_workdir(workdir)
  assert predictor.decoder == report["predict"]["decoder"]
  source, test = _test_split(config)
  arrays = {k: test[k] for k in ("token_ids", "token_weights")}
  labels = test["label_ids"]
  # The evaluation's own pass one on the restored state gives the same top labels.
  _, state = checkpointing.load_state(workdir)
  pass_one, _ = scoring.eval_fns(predictor.model, predictor.objective, r=predictor.r,
                                 use_fused=False, chunk_size=8192)
  one = pass_one(state, dict(arrays, label_ids=labels), np.zeros(0, np.float32))
  got = predictor.decode(arrays, "top_5", top_k=predictor.r)
  np.testing.assert_array_equal(got["top_ids"], np.asarray(one.ids))
  np.testing.assert_array_equal(got["top_scores"], np.asarray(one.values))
  # Precision@1 and each decoder's micro-F1 from the predictions are the report's numbers.
  truth = [set(row[row >= 0].tolist()) for row in labels]
  top1 = predictor.decode(arrays, "top_1")["ids"][:, 0]
  p_at_1 = np.mean([t in s for t, s in zip(top1, truth)])
  assert p_at_1 == pytest.approx(report["test"]["ranking"]["precision_at_1"], abs=1e-6)
  for name in predictor.decoders:
    ids = predictor.decode(arrays, name)["ids"]
    sets = [set(row[row >= 0].tolist()) for row in ids]
    tp = sum(len(s & t) for s, t in zip(sets, truth))
    f1 = 2 * tp / max(sum(map(len, sets)) + sum(map(len, truth)), 1)
    assert f1 == pytest.approx(report["test"]["decoders"][name]["f1_micro"], abs=1e-6), name


def test_a_run_with_a_moving_average_evaluates_and_predicts_with_it(tmp_path):
  """``optimizer.ema_decay`` > 0: the checkpoint holds the params and their moving average;
  the report's test P@1 and the predictor (through ``load_variables``) use the average."""
  config = jsonl_config.get_config("runlocal")
  config.async_checkpoints = False
  config.optimizer.ema_decay = 0.9
  report = train.train_and_evaluate(config, tmp_path)
  _, state = checkpointing.load_state(tmp_path)
  predictor = inference.Predictor.from_workdir(tmp_path)
  for got, ema in zip(jax.tree_util.tree_leaves(predictor.variables["params"]),
                      jax.tree_util.tree_leaves(state["ema_params"])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ema))
  assert any(not np.array_equal(e, r) for e, r in zip(
      jax.tree_util.tree_leaves(state["ema_params"]), jax.tree_util.tree_leaves(state["params"])))
  _, test = _test_split(config)
  top1 = predictor.decode({k: test[k] for k in ("token_ids", "token_weights")}, "top_1")["ids"]
  truth = [set(row[row >= 0].tolist()) for row in test["label_ids"]]
  p_at_1 = np.mean([t in s for t, s in zip(top1[:, 0], truth)])
  assert p_at_1 == pytest.approx(report["test"]["ranking"]["precision_at_1"], abs=1e-6)


def test_the_ensemble_probe_scores_a_run_in_its_sources_class_order(jsonl_run):
  from multilabel_jax.studies import ensembles  # pylint: disable=g-import-not-at-top
  workdir, config, _ = jsonl_run
  source, test = _test_split(config)
  names = list(source.info.class_names)
  got = ensembles.run_scores(workdir, dict(test), names)
  want = inference.Predictor.from_workdir(workdir).scores(
      {k: test[k] for k in ("token_ids", "token_weights")})
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=f"{workdir}: the run's {len(names)} classes are not "
                                       "the source's, in order"):
    ensembles.run_scores(workdir, dict(test), names[::-1])


def test_records_are_featurised_by_the_loaders_function(jsonl_run):
  workdir, config, _ = jsonl_run
  predictor = inference.Predictor.from_workdir(workdir)
  _, test = _test_split(config)
  records = fixture_test_records()
  batch = predictor.read(records)
  np.testing.assert_array_equal(batch.arrays["token_ids"], test["token_ids"])
  np.testing.assert_array_equal(batch.arrays["token_weights"], test["token_weights"])
  by_record = predictor.predict(records)
  by_arrays = predictor.predict({k: test[k] for k in ("token_ids", "token_weights")})
  assert by_record == by_arrays and len(by_record) == len(records)


def test_the_reader_takes_every_field_rule_the_loader_stored(tmp_path):
  source = jsonl.load_jsonl(jsonl.JsonlConfig(
      path=str(jsonl_config.FIXTURE), text_fields=("title",), token_fields=("body",),
      ngram_fields=("id",), ngram_range=(2, 3)))
  source.save_vocab(tmp_path)
  featurizer, _ = jsonl.load_vocab(tmp_path)
  reader = inference.TextReader(featurizer, jsonl.load_record_fields(tmp_path))
  batch = reader.batch([reader.document(r) for r in fixture_test_records()])
  for key in ("token_ids", "token_weights"):
    np.testing.assert_array_equal(batch.arrays[key], source.splits["test"][key])


def test_an_uncalibrated_step_predicts_with_the_uncalibrated_decoders(jsonl_run):
  predictor = inference.Predictor.from_workdir(jsonl_run[0], step=1)
  assert list(predictor.decoders) == ["top_1", "top_3", "top_5", "threshold_0.5"]
  assert predictor.decoder == "top_1"  # The natural one: the stored choice is calibrated.
  with pytest.raises(ValueError, match=r"unknown decoder 'average_k' for this run"):
    predictor.predict([{"title": "quick"}], decoder="average_k")


def test_a_record_without_a_known_token_gets_a_prediction_from_the_biases(jsonl_run):
  predictor = inference.Predictor.from_workdir(jsonl_run[0])
  out = predictor.predict([{"title": "zzqx vvkw"}], decoder="top_3")
  assert out[0]["no_known_tokens"] is True
  assert len(out[0]["labels"]) == 3 and all(np.isfinite(out[0]["scores"]))
  assert "no_known_tokens" not in predictor.predict([{"title": "quick train"}])[0]


def test_export_round_trips_with_the_same_ids_and_scores(jsonl_run, tmp_path):
  predictor = inference.Predictor.from_workdir(jsonl_run[0], batch_size=4)
  _, test = _test_split(jsonl_run[1])
  arrays = {k: test[k] for k in ("token_ids", "token_weights")}
  for decoder in ("class_thresholds", predictor.decoder):
    folder = predictor.export(tmp_path / decoder, decoder, top_k=3)
    exported = serving.load(folder)
    want, got = predictor.decode(arrays, decoder, top_k=3), exported(arrays)
    assert sorted(got) == sorted(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert exported.predict(arrays) == [
        {k: r[k] for k in ("labels", "scores")} for r in predictor.predict(arrays, decoder)]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["decoder"] == decoder and meta["labels"] == predictor.label_names
    if decoder == "class_thresholds":  # The thresholds travel with the export.
      np.testing.assert_array_equal(meta["rule"]["thresholds"],
                                    predictor.calibration["class_thresholds"])
  assert meta["rule"] == predictor.decoders[predictor.decoder]


def test_the_exported_folder_runs_with_jax_and_numpy_only(jsonl_run, tmp_path):
  predictor = inference.Predictor.from_workdir(jsonl_run[0])
  folder = predictor.export(tmp_path / "served", top_k=2)
  batch = predictor.read([{"title": "quick train ticket"}]).arrays
  np.savez(tmp_path / "batch.npz", **batch)
  script = (
      "import sys, json, numpy as np; sys.path.insert(0, sys.argv[1]); import serve; "
      "out = serve.load(sys.argv[1])(dict(np.load(sys.argv[2]))); "
      "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
      "('multilabel_jax', 'flax', 'optax', 'orbax', 'tensorflow')); "
      "print(json.dumps({'bad': bad, 'ids': out['top_ids'].tolist()}))")
  run = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "batch.npz")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["bad"] == []
  assert result["ids"] == predictor.decode(batch, top_k=2)["top_ids"].tolist()


# ------------------------------------------------------------------ bad workdirs and inputs


def _copy(workdir, tmp_path, *, checkpoints=True):
  dest = tmp_path / "copy"
  shutil.copytree(workdir, dest, ignore=None if checkpoints else shutil.ignore_patterns(
      "checkpoints"))
  return dest


def test_a_workdir_without_a_checkpoint_is_an_error_naming_it(jsonl_run, tmp_path):
  dest = _copy(jsonl_run[0], tmp_path, checkpoints=False)
  with pytest.raises(FileNotFoundError, match=rf"no checkpoint in {dest}/checkpoints: "
                     r".* is not a trained run"):
    inference.Predictor.from_workdir(dest)
  with pytest.raises(FileNotFoundError, match=r"config.json: no such file; .* is not the "
                     r"workdir of a run"):
    inference.Predictor.from_workdir(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 7 in .*; it has steps "
                     r"\[1, 20\]"):
    inference.Predictor.from_workdir(jsonl_run[0], step=7)
  (dest / "calibration.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"calibration.json: no calibration file"):
    inference.Predictor.from_workdir(dest)


def test_a_changed_config_or_vocabulary_is_an_error_naming_it(jsonl_run, tmp_path):
  dest = _copy(jsonl_run[0], tmp_path)
  config = json.loads((dest / "config.json").read_text())
  config["model_options"]["embed_dim"] = 8
  (dest / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"config.json is not the one the checkpoint was "
                     r"trained and calibrated with"):
    inference.Predictor.from_workdir(dest)
  # Past the fingerprint (rewritten), the parameters' shapes say what does not match.
  state = json.loads((dest / "calibration.json").read_text())
  state["fingerprint"] = calibration.fingerprint(dest)
  (dest / "calibration.json").write_text(json.dumps(state))
  with pytest.raises(ValueError, match=r"checkpoint step 20 of .* does not match the model "
                     r"that its config and vocabulary build: params/encoder/embedding is "
                     r"\(52, 16\) in the checkpoint, \(52, 8\) from the config"):
    inference.Predictor.from_workdir(dest)
  for name in ("config.json", "calibration.json"):
    shutil.copy(jsonl_run[0] / name, dest / name)
  labels = json.loads((dest / "vocab" / "label_map.json").read_text())
  labels["names"] = labels["names"][:-1]
  (dest / "vocab" / "label_map.json").write_text(json.dumps(labels))
  with pytest.raises(ValueError, match=r"vocab is not the one the checkpoint was trained"):
    inference.Predictor.from_workdir(dest)


def test_an_unknown_decoder_and_bad_records_are_errors_naming_them(jsonl_run):
  predictor = inference.Predictor.from_workdir(jsonl_run[0])
  with pytest.raises(ValueError, match=r"unknown decoder 'top_9' for this run \(objective "
                     r"'softmax'\); choose one of \['top_1', 'top_3', 'top_5', 'threshold_0.5'"):
    predictor.predict([{"title": "x"}], decoder="top_9")
  with pytest.raises(inference.RecordError, match=r"record 1: none of the text fields "
                     r"\['title', 'body'\] or token fields \[\] is in the record \(its keys: "
                     r"'name'\)"):
    predictor.read([{"title": "x"}, {"name": "y"}])
  with pytest.raises(inference.RecordError, match="record 0: expected a JSON object, got list"):
    predictor.read([[1, 2]])
  with pytest.raises(inference.RecordError, match=r"record 0: field 'title' must be a string "
                     "or a list of strings, got dict"):
    predictor.read([{"title": {"a": 1}}])


# ------------------------------------------------------------------ the calibration artifact


def test_the_run_stores_its_calibration_and_the_decoder_chosen_on_validation(jsonl_run):
  workdir, _, report = jsonl_run
  state = json.loads((workdir / "calibration.json").read_text())
  assert state["format"] == "multilabel_jax.calibration/1" and state["step"] == 20
  f1 = report["predict"]["validation_f1_micro"]
  assert state["decoder"] == {"name": max(f1, key=f1.get), "chosen_by": "best validation "
                              "f1_micro", "validation_f1_micro": f1}
  assert state["decoders"]["average_k"] == {
      "rule": "threshold", "threshold": report["calibration"]["average_k"]["threshold"]}
  assert state["decoders"]["average_k_3"]["threshold"] == report["calibration"][
      "average_k_at"][3]
  assert state["decoders"]["top_5"] == {"rule": "top_k", "k": 5}
  assert state["decoders"]["threshold_0.5"] == {"rule": "threshold", "threshold": 0.5}
  assert state["decoders"]["class_thresholds"] == {
      "rule": "class_thresholds", "thresholds": "calibration.npz:class_thresholds"}
  assert np.load(workdir / "calibration.npz")["class_thresholds"].shape == (7,)
  assert state["data"]["inputs"] == {"token_ids": [[256], "int32"],
                                     "token_weights": [[256], "float32"]}
  assert state["fingerprint"] == calibration.fingerprint(workdir)
  assert sorted(report["test"]["decoders"]) == sorted(state["decoders"])
  assert (f"Prediction decoder: **{state['decoder']['name']}** (best validation f1_micro); "
          "thresholds in calibration.json.") in (workdir / "report.md").read_text()


def test_choose_decoder_takes_the_config_or_the_best_validation_f1():
  f1 = {"top_1": {"f1_micro": 0.4}, "average_k": {"f1_micro": 0.6},
        "class_thresholds": {"f1_micro": 0.6}}
  assert calibration.choose_decoder("", "top_1", f1) == ("average_k",
                                                         "best validation f1_micro")
  assert calibration.choose_decoder("natural", "top_1", f1)[0] == "top_1"
  assert calibration.choose_decoder("class_thresholds", "top_1", f1) == (
      "class_thresholds", "config.predict.decoder")
  with pytest.raises(ValueError, match=r"`config.predict.decoder` 'by_count' does not apply "
                     r"to this run; its decoders are \['average_k', 'class_thresholds', "
                     r"'top_1'\]"):
    calibration.choose_decoder("by_count", "top_1", f1)


def test_a_predict_decoder_that_does_not_apply_stops_before_any_compute(tmp_path):
  config = jsonl_config.get_config("runlocal")
  config.predict.decoder = "top_2"
  with pytest.raises(ValueError, match=r"`config.predict.decoder` 'top_2' does not apply to "
                     r"objective 'softmax'; choose '', 'natural' or one of \['top_1', 'top_3', "
                     r"'top_5', 'threshold_0.5', 'average_k', 'average_k_1', 'average_k_3', "
                     r"'average_k_5', 'class_thresholds'\]"):
    train.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / "checkpoints").exists()
  config.predict.decoder = "best"
  with pytest.raises(ValueError, match=r"`config.predict.decoder` 'best' is not a decoder name"):
    configs.validate(config)


def test_a_workdir_written_before_the_predict_keys_resumes(tmp_path):
  config = jsonl_config.get_config("runlocal")
  configs.check_workdir(config, tmp_path)
  stored = json.loads((tmp_path / "config.json").read_text())
  del stored["predict"]  # As written before config.predict existed.
  (tmp_path / "config.json").write_text(json.dumps(stored))
  configs.check_workdir(config, tmp_path)  # At its default: no difference.
  config.predict.decoder = "top_1"
  with pytest.raises(ValueError, match=r"differing keys: predict\. Use a fresh --workdir"):
    configs.check_workdir(config, tmp_path)


def test_an_embedding_run_predicts_with_its_stored_label_embeddings(tmp_path):
  config = tiny_config("embedding")
  report = train.train_and_evaluate(config, tmp_path)
  stored = np.load(tmp_path / "calibration.npz")["objective/embeddings"]
  assert stored.shape == (64, 8)  # Built from the training labels, not rebuildable without.
  predictor = inference.Predictor.from_workdir(tmp_path)
  np.testing.assert_array_equal(predictor.objective.rebuild_options["embeddings"], stored)
  assert predictor.decoder == report["predict"]["decoder"]
  test = builders.build_source(config).read("test", np.arange(96))
  top = predictor.decode({"features": test["features"]}, "nearest_1")["ids"][:, 0]
  p_at_1 = np.mean([t in row for t, row in zip(top, test["label_ids"])])
  assert p_at_1 == pytest.approx(report["test"]["ranking"]["precision_at_1"], abs=1e-6)
