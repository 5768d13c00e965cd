"""Failure behaviour of the train loop: damaged checkpoints, half-written ones, kill -9, SIGTERM."""

import json
import logging
import pathlib
import random
import shutil
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from multilabel_jax.tools import soak
from multilabel_jax import checkpointing, configs, train
from tests.train_util import tiny_config

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_debtags.jsonl"


def _assert_same_params(workdir_a, workdir_b):
  step_a, a = soak.final_params(workdir_a)
  step_b, b = soak.final_params(workdir_b)
  assert step_a == step_b
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def _damage(step_dir: pathlib.Path, how: str) -> None:
  """Truncates every file of a checkpoint's train state to half, or overwrites it with zeros.

  Every file, not one: OCDBT leaves data files in the step folder that the final manifest no
  longer references, and damaging only one of those leaves the checkpoint fully readable.
  """
  for target in (p for p in (step_dir / "state").rglob("*") if p.is_file()):
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if how == "truncate" else bytes(len(data)))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """An uninterrupted 12-step run (checkpoints at 4, 8, 12)."""
  workdir = tmp_path_factory.mktemp("straight")
  train.train_and_evaluate(tiny_config("softmax"), workdir)
  return workdir


@pytest.mark.parametrize("how", ["truncate", pytest.param("garbage", marks=pytest.mark.slow)])
def test_damaged_latest_checkpoint_falls_back_to_previous(straight_run, tmp_path, how, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  shutil.rmtree(workdir / "checkpoints" / "12")
  _damage(workdir / "checkpoints" / "8", how)  # Newest is now a damaged step 8.
  with caplog.at_level(logging.WARNING):
    report = train.train_and_evaluate(tiny_config("softmax"), workdir)
  warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
  assert "checkpoint step 8" in warning and "unreadable" in warning
  assert "resumed from the previous good checkpoint, step 4" in warning
  assert report["train"]["start_step"] == 4
  assert [p.name.split("-")[0] for p in (workdir / "checkpoints_unreadable").iterdir()] == ["8"]
  _assert_same_params(straight_run, workdir)  # Steps 5..12 retrained from step 4, exactly.
  straight = json.loads((straight_run / "report.json").read_text())["data"]["stats"]
  assert straight["train_batches"]["empty_label_sets"] > 0  # Missing-label noise.
  assert report["data"]["stats"]["train_batches"] == straight["train_batches"]  # All 12 steps.


def test_no_usable_checkpoint_stops_with_an_error(straight_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  for step in (4, 8, 12):
    _damage(workdir / "checkpoints" / str(step), "truncate")
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"no usable checkpoint in .*checkpoints: all 3 failed.*step 12.*"
                           r"Not starting from scratch"):
    train.train_and_evaluate(tiny_config("softmax"), workdir)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == \
      ["12", "4", "8"]  # Left in place for inspection; nothing new was written.


def test_half_written_checkpoint_is_never_latest(straight_run, tmp_path):
  """Orbax writes ``<step>.orbax-checkpoint-tmp-*`` and renames it only when complete."""
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  ckpt = workdir / "checkpoints"
  shutil.rmtree(ckpt / "12")
  half = ckpt / "12.orbax-checkpoint-tmp-1700000000000000"  # As a kill mid-save leaves it.
  shutil.copytree(ckpt / "8", half)
  _damage(half, "truncate")
  # A read-only look: a second writing manager would race the run's own tmp cleanup.
  manager = ocp.CheckpointManager(ckpt, options=ocp.CheckpointManagerOptions(read_only=True))
  assert manager.latest_step() == 8 and manager.all_steps() == [4, 8]
  manager.close()
  report = train.train_and_evaluate(tiny_config("softmax"), workdir)
  assert report["train"]["start_step"] == 8
  assert not half.exists()  # Removed before the first save (cleanup_tmp_directories).
  _assert_same_params(straight_run, workdir)


@pytest.mark.slow
def test_skipped_update_count_survives_a_resume(tmp_path):
  config = tiny_config("sigmoid")
  config.nonfinite = "skip"
  config.optimizer.update(name="sgd", lr=1e30, warmup_steps=0, clip_norm=0.0)
  straight = train.train_and_evaluate(config, tmp_path / "straight")
  with pytest.raises(train.SimulatedCrash):
    train.train_and_evaluate(config, tmp_path / "crashed", crash_after_step=6)
  resumed = train.train_and_evaluate(config, tmp_path / "crashed")
  assert resumed["train"]["start_step"] == 4
  assert straight["train"]["skipped_updates"] > 0
  assert resumed["train"]["skipped_updates"] == straight["train"]["skipped_updates"]


@pytest.mark.slow
def test_validation_history_survives_a_resume(tmp_path):
  config = tiny_config("softmax")
  config.eval_every = 4
  straight = train.train_and_evaluate(config, tmp_path / "straight")
  with pytest.raises(train.SimulatedCrash):
    train.train_and_evaluate(config, tmp_path / "crashed", crash_after_step=9)
  resumed = train.train_and_evaluate(config, tmp_path / "crashed")
  assert resumed["train"]["start_step"] == 8
  assert [h["step"] for h in resumed["validation_history"]] == [4, 8, 12]
  assert resumed["validation_history"] == straight["validation_history"]


def test_preemption_watcher_turns_sigterm_into_a_request():
  with checkpointing.PreemptionWatcher() as watcher:
    assert not watcher.requested(1)
    signal.raise_signal(signal.SIGTERM)
    assert watcher.requested(2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # A second one terminates.
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _messy_jsonl_config():
  """The fixture holds 5 malformed lines, 1 empty label set, 1 unknown label, 1 truncation."""
  c = tiny_config()
  c.data.name = "jsonl"
  c.data.options = dict(name="tiny", path=str(FIXTURE), hash_field="package",
                        text_fields=("package", "section", "synopsis", "description"),
                        token_fields=("depends",), label_field="tags")
  c.model = "bow"
  c.model_options = dict(embed_dim=8, widths=(8,))
  c.update(total_steps=2, batch_size=2, checkpoint_every=2)
  c.eval.update(batch_size=2, validation_examples=0, oracle=False)
  return c


def test_messy_jsonl_trains_and_the_report_counts_what_was_skipped(tmp_path):
  report = train.train_and_evaluate(_messy_jsonl_config(), tmp_path)
  load = json.loads((tmp_path / "report.json").read_text())["data"]["stats"]["load"]
  assert load == report["data"]["stats"]["load"]
  assert (load["malformed_lines"], load["empty_label_sets"], load["unknown_labels"],
          load["truncated_labels"]) == (5, 1, 1, 1)


def test_strict_data_flag_raises_on_the_first_bad_line_naming_it(tmp_path):
  c = _messy_jsonl_config()
  c.data.strict = True
  with pytest.raises(ValueError, match=rf"{FIXTURE}:3: "):
    train.train_and_evaluate(c, tmp_path)
  assert not (tmp_path / "checkpoints").exists()  # Before any compute.


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", "64", r"`config.batch_size` must be of type int, got '64' \(str\)"),
    ("async_checkpoints", 1, r"`config.async_checkpoints` must be of type bool"),
    ("nonfinite", "ignore", r"`config.nonfinite` must be one of \('raise', 'skip'\)"),
])
def test_wrong_config_types_and_values_are_named(field, value, message):
  c = tiny_config()
  with c.ignore_type():
    setattr(c, field, value)
  with pytest.raises(ValueError, match=message):
    configs.validate(c)


def test_missing_dataset_file_names_the_path_and_how_to_get_it(tmp_path):
  c = _messy_jsonl_config()
  c.data.name = "debtags"
  c.data.options = dict(path=str(tmp_path / "nowhere.jsonl.gz"))
  with pytest.raises(FileNotFoundError, match=r"nowhere.jsonl.gz.*apt-get"):
    train.train_and_evaluate(c, tmp_path / "w")


# --- Real processes: the CLI killed with SIGKILL and SIGTERM, then run again.

CLI_CONFIG = "tests/train_util.py:softmax"
CLI_STEPS = 40
CLI_OVERRIDES = (f"--config.total_steps={CLI_STEPS}", "--config.checkpoint_every=2",
                 "--config.async_checkpoints=True", "--config.keep_checkpoints=2")


@pytest.fixture(scope="module")
def clean_cli_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cli") / "clean"
  soak.run_clean(CLI_CONFIG, workdir, CLI_OVERRIDES, timeout=600)
  return workdir


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_rerun_is_bit_identical(clean_cli_run, tmp_path):
  seed = random.randrange(1 << 30)
  result = soak.run_with_interruptions(CLI_CONFIG, tmp_path / "killed", total_steps=CLI_STEPS,
                                       overrides=CLI_OVERRIDES, seed=seed, max_interruptions=1,
                                       sigterm_fraction=0.0, timeout=600)
  assert [e["signal"] for e in result["interruptions"]] == ["SIGKILL"], (seed, result)
  assert result["interruptions"][0]["exit_code"] == -signal.SIGKILL
  comparison = soak.compare_runs(clean_cli_run, tmp_path / "killed")
  assert all(comparison[k] for k in ("params_bit_identical", "test_reports_equal",
                                     "train_data_counts_equal")), (seed, comparison)


@pytest.mark.slow
def test_sigterm_checkpoints_flushes_and_exits_with_distinct_code(clean_cli_run, tmp_path):
  workdir = tmp_path / "preempted"
  proc = soak.start(CLI_CONFIG, workdir, CLI_OVERRIDES, log=tmp_path / "log.txt")
  deadline = time.time() + 600
  while (soak.finished_steps(workdir) or [0])[-1] < 6 and proc.poll() is None:
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=600) == checkpointing.PREEMPTED_EXIT_CODE == 75
  log = (tmp_path / "log.txt").read_text()
  assert "preempted (SIGTERM): saved a checkpoint at step" in log
  stopped_at = int(log.split("saved a checkpoint at step ")[1].split()[0])
  assert stopped_at in soak.finished_steps(workdir) and 6 <= stopped_at < CLI_STEPS
  events = list(workdir.glob("events.out.tfevents*"))
  assert events and events[0].stat().st_size > 0  # Metric writers were flushed.
  assert not (workdir / "report.json").exists()
  soak.run_clean(CLI_CONFIG, workdir, CLI_OVERRIDES, timeout=600)  # The same command resumes.
  report = json.loads((workdir / "report.json").read_text())
  assert report["train"]["start_step"] == stopped_at
  comparison = soak.compare_runs(clean_cli_run, workdir)
  assert all(comparison[k] for k in ("params_bit_identical", "test_reports_equal",
                                     "train_data_counts_equal")), comparison
