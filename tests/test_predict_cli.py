"""``python -m experiments.predict``: one line out per line in, in order, with the id field;
bad lines counted and reported (``--strict``: the first one stops it, naming its line);
bad workdirs and decoders stop before any line; hashtag_world (feature arrays, a fused
head) as well as text; and (slow) a CLI run followed by the CLI predict gives what the run's
evaluation scored, and the exported model the same ids and scores."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import jsonl as jsonl_config
from experiments import predict
from multilabel_jax import inference, serving, train
from tests.train_util import fixture_test_records, tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("run")
  config = jsonl_config.get_config("runlocal")
  config.async_checkpoints = False
  train.train_and_evaluate(config, path)
  return path


def _run(capsys, *args):
  code = predict.main(list(args))
  captured = capsys.readouterr()
  return code, captured.err


def test_one_line_out_per_line_in_with_errors_counted(workdir, tmp_path, capsys):
  lines = ['{"id": "a", "title": "quick train ticket", "body": "the city"}',
           "not json", '["a list"]', '{"id": "b", "name": "no text field"}',
           '{"id": "c", "title": "zzqx"}', "", '{"title": "garden soil"}']
  (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
  code, err = _run(capsys, f"--workdir={workdir}", f"--input={tmp_path / 'in.jsonl'}",
                   f"--output={tmp_path / 'out.jsonl'}", "--top_k=2", "--batch_size=2")
  assert code == 0, err
  out = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [r["line"] for r in out] == [1, 2, 3, 4, 5, 7]  # The blank line 6 is no record.
  assert [r.get("id") for r in out] == ["a", None, None, "b", "c", None]
  assert out[1]["error"].startswith("invalid JSON (Expecting value at column 1)")
  assert out[2]["error"] == "expected a JSON object, got list"
  assert out[3]["error"].startswith("none of the text fields ['title', 'body'] or token "
                                    "fields [] is in the record (its keys: 'id', 'name')")
  assert out[4]["no_known_tokens"] is True and len(out[4]["top_k"]["labels"]) == 2
  predictor = inference.Predictor.from_workdir(workdir)
  want = predictor.predict([json.loads(lines[0]), json.loads(lines[4]), json.loads(lines[6])],
                           top_k=2)
  assert [{k: v for k, v in r.items() if k not in ("line", "id")}
          for r in (out[0], out[4], out[5])] == want
  assert f"{tmp_path / 'in.jsonl'}:2: skipped: invalid JSON" in err
  assert f"{tmp_path / 'in.jsonl'}:4: skipped: none of the text fields" in err
  assert ("experiments.predict: 6 records, 3 predicted, 3 skipped (1 not JSON, 1 not an "
          "object, 1 without any text field), 1 with no known token; wrote "
          f"{tmp_path / 'out.jsonl'}") in err
  assert "rec/s" in err  # The progress bar.
  code, err = _run(capsys, f"--workdir={workdir}", f"--input={tmp_path / 'in.jsonl'}",
                   f"--output={tmp_path / 'strict.jsonl'}", "--strict")
  assert code == predict.DATA_EXIT_CODE
  assert (f"experiments.predict: error: {tmp_path / 'in.jsonl'}:2: invalid JSON (Expecting "
          "value at column 1)") in err


def test_bad_workdirs_and_decoders_stop_before_any_line(workdir, tmp_path, capsys):
  (tmp_path / "in.jsonl").write_text('{"title": "x"}\n')
  common = [f"--input={tmp_path / 'in.jsonl'}", f"--output={tmp_path / 'out.jsonl'}"]
  code, err = _run(capsys, f"--workdir={workdir}", "--decoder=nope", *common)
  assert code == predict.USAGE_EXIT_CODE
  assert "experiments.predict: error: unknown decoder 'nope' for this run" in err
  (tmp_path / "empty").mkdir()
  code, err = _run(capsys, f"--workdir={tmp_path / 'empty'}", *common)
  assert code == predict.USAGE_EXIT_CODE
  assert f"error: {tmp_path / 'empty' / 'config.json'}: no such file" in err
  code, err = _run(capsys, f"--workdir={workdir}", f"--input={tmp_path / 'nope.jsonl'}",
                   f"--output={tmp_path / 'out.jsonl'}")
  assert code == predict.USAGE_EXIT_CODE and "--input" in err and "no such file" in err
  assert not (tmp_path / "out.jsonl").exists()


def test_hashtag_world_feature_records_through_a_fused_head(tmp_path, capsys):
  config = tiny_config("softmax")
  config.head.fused = "on"
  config.head.chunk_size = 24  # 64 classes in 3 chunks: the streaming top-k.
  report = train.train_and_evaluate(config, tmp_path / "run")
  predictor = inference.Predictor.from_workdir(tmp_path / "run")
  assert predictor.use_fused and isinstance(predictor.reader, inference.ArrayReader)
  x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
  dense = predictor.scores({"features": x})
  top = predictor.top_k({"features": x}, k=3)
  assert [r["labels"] for r in top] == [[str(c) for c in row]
                                        for row in np.argsort(-dense, 1, kind="stable")[:, :3]]
  np.testing.assert_allclose([r["scores"] for r in top], -np.sort(-dense, 1)[:, :3], rtol=1e-5)
  lines = [json.dumps({"id": i, "features": row.tolist()}) for i, row in enumerate(x)]
  lines.append(json.dumps({"id": 9, "features": [1.0, 2.0]}))
  (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
  code, err = _run(capsys, f"--workdir={tmp_path / 'run'}", f"--input={tmp_path / 'in.jsonl'}",
                   f"--output={tmp_path / 'out.jsonl'}", "--top_k=3")
  assert code == 0, err
  out = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [r["top_k"]["labels"] for r in out[:5]] == [r["labels"] for r in top]
  assert out[5] == {"line": 6, "id": 9, "error": "input 'features' has shape (2,), the model "
                                                  "reads (16,)"}
  assert out[0]["labels"] == predictor.predict({"features": x[:1]})[0]["labels"]
  assert report["predict"]["decoder"] == predictor.decoder


@pytest.mark.slow
def test_a_cli_run_then_cli_predict_gives_what_the_evaluation_scored(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  run = subprocess.run([sys.executable, "-m", "experiments.run", "--config=jsonl.py:runlocal",
                        f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  records = fixture_test_records()
  (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  out = subprocess.run([sys.executable, "-m", "experiments.predict",
                        f"--workdir={tmp_path / 'run'}", f"--input={tmp_path / 'test.jsonl'}",
                        f"--output={tmp_path / 'labels.jsonl'}", "--top_k=1",
                        "--decoder=top_1"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(l) for l in (tmp_path / "labels.jsonl").read_text().splitlines()]
  assert [r["id"] for r in rows] == [r["id"] for r in records]
  report = json.loads((tmp_path / "run" / "report.json").read_text())
  assert report["test"]["num_examples"] == len(records)
  # The report's P@1 and top-1 micro-F1 are those of the predicted top labels.
  names = set(inference.Predictor.from_workdir(tmp_path / "run").label_names)
  hits = [row["labels"][0] in set(r["tags"]) & names for row, r in zip(rows, records)]
  assert np.mean(hits) == pytest.approx(report["test"]["ranking"]["precision_at_1"], abs=1e-6)
  true = sum(len(set(r["tags"]) & names) for r in records)
  f1 = 2 * sum(hits) / (len(rows) + true)
  assert f1 == pytest.approx(report["test"]["decoders"]["top_1"]["f1_micro"], abs=1e-6)
  # The exported model: the same ids and scores as the Predictor, on the same records.
  predictor = inference.Predictor.from_workdir(tmp_path / "run")
  folder = predictor.export(tmp_path / "served", "top_1", top_k=1)
  batch = predictor.read(records).arrays
  got, want = serving.load(folder)(batch), predictor.decode(batch, "top_1", top_k=1)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])
  assert [row["top_k"]["labels"] for row in rows] == [
      [predictor.label_names[i] for i in ids] for ids in got["top_ids"]]


def test_an_xmc_run_reads_its_own_lines_as_its_loader_did(tmp_path, capsys):
  from experiments import xmc as xmc_config  # pylint: disable=g-import-not-at-top
  config = xmc_config.get_config("runlocal")
  config.async_checkpoints = False
  report = train.train_and_evaluate(config, tmp_path / "run")
  predictor = inference.Predictor.from_workdir(tmp_path / "run")
  assert isinstance(predictor.reader, inference.XmcReader)
  test_file = xmc_config.FIXTURE_DIR / "test.txt"
  header, *lines = test_file.read_text().splitlines()
  del header
  (tmp_path / "in.txt").write_text("\n".join(lines + ["0 7:x"]) + "\n")
  code, err = _run(capsys, f"--workdir={tmp_path / 'run'}", f"--input={tmp_path / 'in.txt'}",
                   f"--output={tmp_path / 'out.jsonl'}", "--decoder=top_1")
  assert code == 0, err
  out = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert out[-1] == {"line": len(lines) + 1, "error": "bad feature '7:x' (expected id:value)"}
  truth = [{int(l) for l in line.split()[0].split(",")} if ":" not in line.split()[0]
           else set() for line in lines]
  hits = [int(row["labels"][0]) in t for row, t in zip(out, truth)]
  assert report["test"]["num_examples"] == len(lines)
  assert np.mean(hits) == pytest.approx(report["test"]["ranking"]["precision_at_1"], abs=1e-6)
