"""The command line of ``experiments.run``: config overrides, free-form option dicts, and the
messages (exit code 2, no traceback) for unknown keys and wrong values."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import run
from multilabel_jax import configs
from tests.train_util import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_debtags.jsonl"
PREFIX = "experiments.run: error: "


def _cli(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _config(*args):
  """The config ``experiments.run`` would train for these arguments (in this process)."""
  _, config = run.build_config(["experiments.run", *args])
  return config


def _error(*args) -> str:
  with pytest.raises(ValueError) as e:
    _config(*args)
  return str(e.value)


@pytest.mark.parametrize("args, message", [
    (("--config=hashtag_pretrain.py:runlocal", "--config.no_such_key=1"),
     "unknown config key `config.no_such_key`."),
    (("--config=hashtag_pretrain.py:runlocal", "--config.optimizer.learning_rate=1"),
     "unknown config key `config.optimizer.learning_rate`; did you mean `config.optimizer.lr`?"),
    (("--config=debtags.py:runlocal", "--config.data.options.pth=x"),
     "unknown config key `config.data.options.pth`; did you mean `config.data.options.path`? "
     "data source 'debtags' does not take option(s) ['pth']; `config.data.options` accepts "
     "['name', 'path', "),
    (("--config=hashtag_pretrain.py:loss=focal", "--config.objective_options.gama=1"),
     "unknown config key `config.objective_options.gama`; did you mean "
     "`config.objective_options.gamma`? objective 'focal' does not take option(s) ['gama']; "
     "`config.objective_options` accepts ['gamma', "),
    (("--config=debtags.py:runlocal", "--config.model_options.dropot=0.5"),
     "unknown config key `config.model_options.dropot`; did you mean "
     "`config.model_options.dropout`? model 'bow' does not take option(s) ['dropot']; "
     "`config.model_options` accepts ['vocab_size', "),
], ids=["no_such_key", "learning_rate", "data_options_pth", "objective_options_gama",
        "model_options_dropot"])
def test_unknown_keys_exit_2_with_the_message_and_no_traceback(args, message):
  out = _cli(*args, timeout=120)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(PREFIX + message), last
  assert "workdir:" not in out.stdout  # Nothing ran.


def test_help_and_usage_errors_without_a_traceback(capsys):
  out = _cli("--helpfull", "--config.data.options.path=x", timeout=120)
  assert "--workdir" in out.stdout and "--config" in out.stdout, out.stderr[-3000:]
  assert out.returncode == 1 and "Traceback" not in out.stderr  # absl's help exits 1.
  for args, message in [
      (["--config=debtags.py:runlocal", "--config.batch_size=abc"],
       "`config.batch_size` must be of type int, got 'abc'."),
      (["--config=hashtag_pretrain.py:runlocal", "--config.nonfinite=ignore"],
       "`config.nonfinite` must be one of ('raise', 'skip'), got 'ignore'."),
      (["--config=hashtag_pretrain.py:nope"],
       "--config: hashtag_pretrain.py: unknown argument 'nope'; use loss=<objective>, "
       "runlocal, full or million."),
      (["--config=no_such_config.py"], "--config: no config file 'no_such_config.py'"),
      (["--workdir=x", "--config.batch_size=8"], "--config=FILE[:ARG] is required"),
      (["--config.no_such_key=1"], "unknown config key `config.no_such_key`."),  # No config.
  ]:
    with pytest.raises(SystemExit) as e:
      run.run(["experiments.run", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(PREFIX + message) and "Traceback" not in err, err


def test_values_are_parsed_as_their_keys_type():
  c = _config("--config=debtags.py:runlocal", "--config.batch_size=64",
              "--config.optimizer.lr=1", "--config.eval.oracle=true",
              "--noconfig.async_checkpoints", "--config.eval.top_ks=(1, 10)",
              "--config.head.fused", "off",  # A space for '=', as absl reads it.
              "--config.mesh.data", "-1",
              "--config.data.options.path=/some/file.jsonl.gz",
              "--config.data.options.max_labels=8", "--config.data.options.token_fields=depends",
              "--config.model_options.dropout=0.5", "--config.model_options.widths=(1024,)",
              "--config.model_options.layer_norm=True", "--config.model_options.embed_dim=512")
  assert (c.batch_size, c.optimizer.lr, c.eval.oracle, c.async_checkpoints) == (64, 1.0, True,
                                                                                 False)
  assert isinstance(c.optimizer.lr, float) and c.eval.top_ks == (1, 10)
  assert (c.head.fused, c.mesh.data) == ("off", -1)
  assert c.data.options.to_dict() == dict(path="/some/file.jsonl.gz", max_labels=8,
                                          token_fields=("depends",), ngram_fields=("package",),
                                          ngram_range=(3, 5))
  assert c.model_options.to_dict() == dict(embed_dim=512, widths=(1024,), pooling="sum",
                                           dropout=0.5, layer_norm=True)
  c = _config("--config=hashtag_pretrain.py:loss=asl", "--config.objective_options.gamma_neg=2",
              "--config.objective_options.gamma_pos=1", "--config.data.options.noise=0.3",
              "--config.eval.top_ks=1", "--config.eval.top_ks=5")  # Repeated: concatenated.
  assert c.objective_options.to_dict() == dict(gamma_neg=2.0, clip=0.05, gamma_pos=1)
  assert c.data.options.noise == 0.3 and c.eval.top_ks == (1, 5)
  # The fields come first: the objective named on the command line checks its options.
  c = _config("--config.objective_options.gamma=1", "--config=hashtag_pretrain.py:runlocal",
              "--config.objective=focal")
  assert c.objective == "focal" and c.objective_options.gamma == 1
  c = _config("--config=hashtag_pretrain.py:runlocal",
              "--config.model_options={'widths': (8,), 'dropout': 0.1}")
  assert c.model_options.to_dict() == dict(widths=(8,), dropout=0.1)
  assert c.is_locked and c.model_options.is_locked  # lock_config: typos stay errors.


def test_wrong_values_and_keys_are_named():
  base = "--config=hashtag_pretrain.py:runlocal"
  assert _error(base, "--config.total_steps=1.5") == (
      "`config.total_steps` must be of type int, got '1.5'.")
  assert _error(base, "--config.eval.oracle=maybe") == (
      "`config.eval.oracle` must be a bool (True or False), got 'maybe'.")
  assert _error(base, "--config.data.options.noise=high") == (
      "`config.data.options.noise` must be of type float, got 'high'.")
  assert _error(base, "--noconfig.batch_size") == (
      "`--noconfig.batch_size` needs a value: `--config.batch_size=VALUE` "
      "(`config.batch_size` is of type int, not bool).")
  assert _error(base, "--config.optimizer=1").startswith(
      "`config.optimizer` is a group of keys, not a value")
  assert _error(base, "--config.data.option.num_classes=5") == (
      "unknown config key `config.data.option.num_classes`; did you mean "
      "`config.data.options.num_classes`?")
  assert _error(base, "--config.data.options.num_clases=5").startswith(
      "unknown config key `config.data.options.num_clases`; did you mean "
      "`config.data.options.num_classes`? data source 'hashtag_world' does not take")
  # An objective switched on the command line rejects the options of the file's objective.
  message = _error("--config=hashtag_pretrain.py:loss=asl", "--config.objective=focal")
  assert message.startswith("unknown config key `config.objective_options.clip`")
  assert message.endswith(
      "objective 'focal' does not take option(s) ['clip', 'gamma_neg']; "
      "`config.objective_options` accepts "
      f"{list(configs.accepted_options(tiny_config('focal'), 'objective_options'))}.")


def test_validate_names_unknown_keys_with_a_suggestion():
  """The Python API: the same messages from configs.validate."""
  c = tiny_config()
  c.optimizer.unlock()
  c.optimizer.learning_rate = 1.0
  with pytest.raises(ValueError) as e:
    configs.validate(c)
  assert str(e.value) == ("unknown config key `config.optimizer.learning_rate`; did you mean "
                          "`config.optimizer.lr`?")
  c = tiny_config("focal")
  c.objective_options = dict(gama=1.0)
  with pytest.raises(ValueError) as e:
    configs.validate(c)
  assert str(e.value).startswith(
      "unknown config key `config.objective_options.gama`; did you mean "
      "`config.objective_options.gamma`? objective 'focal' does not take option(s) ['gama']; "
      "`config.objective_options` accepts ['gamma', ")
  c = tiny_config()
  c.model_options = dict(widths=(16,), dropot=0.5)
  with pytest.raises(ValueError, match=r"did you mean `config.model_options.dropout`\? model "
                     r"'mlp' does not take option\(s\) \['dropot'\]"):
    configs.validate(c)


@pytest.mark.slow
def test_data_path_override_trains_on_that_file(tmp_path):
  out = _cli("--config=debtags.py:runlocal", f"--config.data.options.path={FIXTURE}",
             f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  # The override sets the path and keeps the config's other data options.
  assert json.loads((tmp_path / "config.json").read_text())["data"]["options"] == {
      "path": str(FIXTURE), "ngram_fields": ["package"], "ngram_range": [3, 5]}
  data = json.loads((tmp_path / "report.json").read_text())["data"]
  # The fixture's 4 usable training records and 5 tags, not debtags' 30,300 and 594.
  assert (data["name"], data["num_classes"], data["num_train_examples"]) == ("debtags", 5, 4)
  assert data["stats"]["load"]["malformed_lines"] == 5
