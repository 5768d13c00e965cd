"""The shared train loop end to end on tiny settings."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from multilabel_jax import checkpointing, configs, losses, train
from tests.train_util import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def final_params(workdir):
  step, state = checkpointing.load_state(workdir)
  return step, state["params"]


def test_softmax_run_writes_report_and_checkpoints(tmp_path):
  report = train.train_and_evaluate(tiny_config("softmax"), tmp_path)
  data = json.loads((tmp_path / "report.json").read_text())
  assert data["natural_decoder"] == "top_1"
  decoders = set(data["test"]["decoders"])
  assert {"top_1", "top_3", "top_5", "threshold_0.5", "average_k", "class_thresholds"} <= decoders
  assert data["test"]["num_examples"] == 96 and "oracle" in data
  for m in data["test"]["decoders"].values():
    assert 0 <= m["f1_micro"] <= 1
  assert "| decoder |" in (tmp_path / "report.md").read_text()
  assert report["train"]["final_loss"] > 0
  assert (tmp_path / "config.json").exists()
  assert list(tmp_path.glob("events.out.tfevents*"))
  step, params = final_params(tmp_path)
  assert step == 12 and np.isfinite(params["head_logits"]["kernel"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(set(losses.OBJECTIVES) - {"softmax"}))
def test_every_objective_runs_end_to_end(tmp_path, loss):
  report = train.train_and_evaluate(tiny_config(loss), tmp_path)
  assert report["natural_decoder"] in report["test"]["decoders"]
  assert np.isfinite(report["train"]["final_loss"])
  if loss in ("count_distribution", "abs_kl"):
    assert "by_count" in report["test"]["decoders"]
  if loss == "embedding":
    assert "nearest_1" in report["test"]["decoders"]
    diag = report["train"]["objective_summary"]["embeddings"]
    assert diag["num_zero"] == 0 and diag["num_seen"] > 0  # Every seen label has a vector.


@pytest.mark.parametrize("loss", ["sigmoid", "two_head"])
def test_fused_head_matches_dense_head(tmp_path, loss):
  dense = tiny_config(loss)
  fused = tiny_config(loss)
  fused.head.fused = "on"
  fused.head.chunk_size = 24  # Does not divide 64 classes.
  r1 = train.train_and_evaluate(dense, tmp_path / "dense")
  r2 = train.train_and_evaluate(fused, tmp_path / "fused")
  assert r2["train"]["fused_head"] and not r1["train"]["fused_head"]
  assert r1["evaluation_path"] == r2["evaluation_path"] == "top_64"  # One path for both.
  for key in ("precision_at_1", "ndcg_at_5", "psp_at_3"):  # Same model up to rounding.
    assert r2["test"]["ranking"][key] == pytest.approx(r1["test"]["ranking"][key], abs=0.03)
  assert r2["oracle"]["ranking"]["precision_at_5"] == pytest.approx(
      r1["oracle"]["ranking"]["precision_at_5"], rel=1e-6)
  assert {"top_1", "threshold_0.5", "average_k"} <= set(r2["test"]["decoders"])
  np.testing.assert_allclose(r2["train"]["final_loss"], r1["train"]["final_loss"], rtol=1e-4)
  _, p1 = final_params(tmp_path / "dense")
  _, p2 = final_params(tmp_path / "fused")
  heads = ["head_logits"] + (["head_multilabel_logits"] if loss == "two_head" else [])
  for head in heads:
    np.testing.assert_allclose(p2[head]["kernel"], p1[head]["kernel"], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["softmax", "count_distribution"])
def test_fused_objectives_evaluate_on_the_top_r_path(tmp_path, loss):
  c = tiny_config(loss)
  c.head.fused = "on"
  c.head.chunk_size = 24
  report = train.train_and_evaluate(c, tmp_path)
  assert report["evaluation_path"] == "top_64" and report["train"]["fused_head"]
  assert report["natural_decoder"] in report["test"]["decoders"]
  assert 0 < report["test"]["ranking"]["precision_at_1"] <= 1


def test_resume_after_crash_gives_identical_params(tmp_path):
  config = tiny_config("two_head")
  train.train_and_evaluate(config, tmp_path / "straight")
  with pytest.raises(train.SimulatedCrash):
    train.train_and_evaluate(config, tmp_path / "crashed", crash_after_step=6)
  assert final_params(tmp_path / "crashed")[0] == 4  # Latest checkpoint before the crash.
  report = train.train_and_evaluate(config, tmp_path / "crashed")
  assert report["train"]["start_step"] == 4
  _, a = final_params(tmp_path / "straight")
  _, b = final_params(tmp_path / "crashed")
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_config_errors_come_before_compute(tmp_path):
  c = tiny_config()
  with pytest.raises(ValueError, match="unknown config key `config.optimizer.learning_rate`"):
    c.optimizer.unlock()
    c.optimizer.learning_rate = 1.0
    configs.validate(c)
  c = tiny_config()
  c.model = "bow"
  with pytest.raises(ValueError, match="model 'bow' reads the input 'token_ids'"):
    train.train_and_evaluate(c, tmp_path / "a")
  c = tiny_config("focal")
  c.objective_options = dict(gama=1.0)
  with pytest.raises(ValueError, match=r"does not take option\(s\) \['gama'\]"):
    train.train_and_evaluate(c, tmp_path / "b")
  c = tiny_config("zlpr")
  c.head.fused = "on"
  with pytest.raises(ValueError, match="objective 'zlpr' has no fused head"):
    train.train_and_evaluate(c, tmp_path / "d")
  c = tiny_config("two_head")
  c.head.fused = "on"
  c.mesh.classes = 2
  c.mesh.data = 1
  with pytest.raises(ValueError, match="no class-sharded fused head"):
    train.train_and_evaluate(c, tmp_path / "e")
  c = tiny_config()
  c.total_steps = 0
  with pytest.raises(ValueError, match="`config.total_steps` must be >= 1"):
    configs.validate(c)
  c = tiny_config()
  c.optimizer.ema_decay = 1.0
  with pytest.raises(ValueError, match=r"`config.optimizer.ema_decay` must be in \[0, 1\) \(0: "
                     r"no moving average\), got 1.0\."):
    configs.validate(c)
  c = tiny_config()
  c.data.options.update(num_clases=3)
  with pytest.raises(ValueError, match=r"does not take option\(s\) \['num_clases'\]"):
    train.train_and_evaluate(c, tmp_path / "c")


def test_workdir_with_another_config_is_refused(tmp_path):
  configs.check_workdir(tiny_config(), tmp_path)
  other = tiny_config()
  other.optimizer.lr *= 1 + 1e-12  # Round-off only: the same config.
  configs.check_workdir(other, tmp_path)
  other.optimizer.lr *= 1 + 1e-6
  with pytest.raises(ValueError, match="differing keys: optimizer.lr"):
    configs.check_workdir(other, tmp_path)
  other.optimizer.lr = 0.5
  with pytest.raises(ValueError, match="holds another run's config.*optimizer.lr"):
    configs.check_workdir(other, tmp_path)
  other.allow_config_change = True
  configs.check_workdir(other, tmp_path)  # Explicitly allowed.


def _run_in_subprocess(code, devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600, cwd=REPO)
  assert out.returncode == 0, out.stderr[-4000:]
  return out.stdout


SHARDED_RUN = """
import json, sys, numpy as np, jax
from multilabel_jax import train
from tests.train_util import tiny_config
c = tiny_config("softmax")
c.mesh.data, c.mesh.classes = {data}, {classes}
c.head.fused = "{fused}"
r = train.train_and_evaluate(c, sys.argv[0] if False else "{workdir}")
from tests.test_train import final_params
_, p = final_params("{workdir}")
k = np.asarray(p["head_logits"]["kernel"])
print(json.dumps({{"loss": r["train"]["final_loss"], "kernel": k.tolist(),
                  "p1": r["test"]["ranking"]["precision_at_1"]}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fused", ["off", "on"])
def test_sharded_run_matches_single_device(tmp_path, fused):
  single = json.loads(_run_in_subprocess(SHARDED_RUN.format(
      data=1, classes=1, fused=fused, workdir=tmp_path / "one"), 1).splitlines()[-1])
  sharded = json.loads(_run_in_subprocess(SHARDED_RUN.format(
      data=4, classes=2, fused=fused, workdir=tmp_path / "eight"), 8).splitlines()[-1])
  np.testing.assert_allclose(sharded["loss"], single["loss"], rtol=1e-4)
  np.testing.assert_allclose(sharded["kernel"], single["kernel"], rtol=1e-3, atol=1e-5)
  assert sharded["p1"] == pytest.approx(single["p1"], abs=0.02)


@pytest.mark.slow
def test_debtags_runlocal_trains_text_model_and_saves_vocab(tmp_path):
  from experiments import debtags  # pylint: disable=g-import-not-at-top
  c = debtags.get_config("runlocal")
  c.total_steps = 5
  report = train.train_and_evaluate(c, tmp_path)
  assert report["data"]["num_classes"] == 594
  assert (tmp_path / "vocab" / "label_map.json").exists()
  assert report["test"]["num_examples"] == 256
  assert report["data"]["stats"]["load"]["unknown_labels"] == 4  # Tags seen only outside train.


@pytest.mark.slow
def test_cli_bare_name_path_arg_and_overrides(tmp_path):
  cmd = [sys.executable, "-m", "experiments.run", "--config=hashtag_pretrain.py:runlocal",
         "--config.total_steps=3", "--config.eval.validation_examples=64",
         f"--workdir={tmp_path / 'w'}"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"workdir: {tmp_path / 'w'}" in out.stdout
  assert json.loads((tmp_path / "w" / "config.json").read_text())["total_steps"] == 3
  bad = subprocess.run(cmd[:3] + ["--config.no_such_key=1"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert bad.returncode == 2 and "error: unknown config key `config.no_such_key`.\n" in bad.stderr


def test_config_path_resolution():
  from experiments import run
  assert run.resolve_config_path("hashtag_pretrain.py:runlocal") == str(
      REPO / "experiments" / "hashtag_pretrain.py") + ":runlocal"
  path = str(REPO / "experiments" / "hashtag_pretrain.py")
  assert run.resolve_config_path(path) == path
  assert run.default_workdir("hashtag_pretrain.py:loss=sigmoid").startswith(
      "runs/hashtag_pretrain-loss-sigmoid-")


def test_tfds_image_path_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  c = tiny_config()
  c.data.name = "tfds"
  c.data.options = dict(dataset="celeb_a", image_size=(16, 16), max_labels=12)
  c.model = "resnet18"
  c.model_options = dict(width=4, stem="cifar")
  c.eval.oracle = False
  c.total_steps = 4
  with tfds.testing.mock_data(num_examples=48):
    report = train.train_and_evaluate(c, tmp_path)
  assert report["data"]["num_classes"] == 40
  assert report["test"]["num_examples"] == 48
  assert np.isfinite(report["train"]["final_loss"])


def _exploding(config):
  config.optimizer.name = "sgd"
  config.optimizer.lr = 1e30  # A real fault: parameters overflow to inf within a few steps.
  config.optimizer.warmup_steps = 0
  config.optimizer.clip_norm = 0.0
  return config


def test_nonfinite_update_stops_with_step_and_diagnostics(tmp_path):
  with pytest.raises(train.NonFiniteError, match=r"step \d+: non-finite"):
    train.train_and_evaluate(_exploding(tiny_config("sigmoid")), tmp_path)
  diag = json.loads((tmp_path / "nonfinite.json").read_text())
  assert diag["step"] >= 1 and "loss" in diag


def test_nonfinite_updates_can_be_skipped_and_counted(tmp_path):
  config = _exploding(tiny_config("sigmoid"))
  config.nonfinite = "skip"
  report = train.train_and_evaluate(config, tmp_path)
  assert report["train"]["skipped_updates"] > 0
  _, params = final_params(tmp_path)
  assert all(np.isfinite(p).all() for p in jax.tree_util.tree_leaves(params))
