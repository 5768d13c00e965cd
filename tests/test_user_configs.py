"""The configs for users' own data, ``experiments/jsonl.py`` and ``experiments/xmc.py``: their
arguments, and their ``runlocal`` runs end to end on the fixtures they ship with.

Fixtures: ``tests/fixtures/tiny_posts.jsonl`` (80 posts with ``id``, ``title``, ``body`` and
``tags`` (7 tags; 67 train, 6 validation, 7 test by the MD5 of ``id``) and 2 malformed lines:
line 38 is cut off, line 62 has no ``tags``) and ``tests/fixtures/xmc_tiny/`` (``train.txt``
80 points, ``test.txt`` 20, 30 features, 5 labels).
"""

import json
import pathlib

import pytest

from experiments import debtags
from experiments import hashtag_pretrain
from experiments import jsonl as jsonl_config
from experiments import run
from experiments import xmc as xmc_config
from multilabel_jax import builders
from multilabel_jax import configs

REPO = pathlib.Path(__file__).resolve().parents[1]
POSTS = REPO / "tests" / "fixtures" / "tiny_posts.jsonl"
XMC_DIR = REPO / "tests" / "fixtures" / "xmc_tiny"
POST_TAGS = ["baking", "cooking", "garden", "jax", "music", "python", "travel"]


def _cli_config(*args):
  """The config ``experiments.run`` would train for these arguments."""
  _, config = run.build_config(["experiments.run", *args])
  return config


# --- jsonl.py


def test_jsonl_arguments_set_the_source_options():
  c = jsonl_config.get_config("path=data/posts.jsonl.gz,text=title+body,labels=hashtags,"
                              "tokens=lang+site,id=post_id,loss=sigmoid")
  assert c.data.name == "jsonl"
  assert c.data.options.to_dict() == dict(
      name="posts", path="data/posts.jsonl.gz", text_fields=("title", "body"),
      label_field="hashtags", token_fields=("lang", "site"), hash_field="post_id",
      text=jsonl_config.TEXT_OPTIONS)
  assert c.objective == "sigmoid"
  by_field = jsonl_config.get_config("path=a.jsonl,split=fold").data.options
  assert (by_field.split, by_field.split_field) == ("field", "fold")
  configs.validate(c)


def test_jsonl_real_use_defaults_are_the_generic_bag_of_words():
  c, ref = jsonl_config.get_config("path=a.jsonl"), debtags.get_config("loss=softmax")
  for key in ("objective", "objective_options", "model", "eval"):
    assert c[key] == ref[key], key
  assert c.model_options.to_dict() == dict(embed_dim=256, widths=(512,), pooling="sum",
                                           dropout=0.2)
  assert (c.head.wide, c.optimizer.lr, c.total_steps, c.batch_size) == (False, 1e-3, 4000, 128)
  x = xmc_config.get_config("train=E/tr.txt,test=E/ts.txt")
  assert (x.objective, x.head.wide, x.model_options, x.optimizer) == (
      "softmax", False, c.model_options, c.optimizer)
  assert c.model == "bow" and c.head.fused == "auto"
  assert "text_fields" not in c.data.options  # JsonlConfig's usual names.
  asl = jsonl_config.get_config("loss=asl,path=a.jsonl").objective_options.to_dict()
  assert asl == hashtag_pretrain.OBJECTIVE_OPTIONS["asl"]


def test_jsonl_runlocal_uses_the_fixture_unless_given_a_path():
  c = jsonl_config.get_config("runlocal")
  assert c.data.options.path == str(POSTS) and c.data.options.text_fields == ("title", "body")
  assert c.total_steps == 20 and c.model_options.embed_dim == 16
  mine = jsonl_config.get_config("runlocal,path=mine.jsonl").data.options
  assert mine.path == "mine.jsonl" and "text_fields" not in mine
  c = _cli_config("--config=jsonl.py:text=title+body", f"--config.data.options.path={POSTS}")
  assert c.data.options.path == str(POSTS) and c.total_steps == 4000
  source = builders.build_source(c)
  assert source.info.num_classes == 7 and source.info.stats.malformed_lines == 2


def test_jsonl_fixture_strict_names_the_first_bad_line():
  c = _cli_config("--config=jsonl.py:runlocal", "--config.data.strict=True")
  with pytest.raises(ValueError, match=rf"{POSTS}:38: malformed line: invalid JSON"):
    builders.build_source(c)


@pytest.mark.parametrize("arg, message", [
    ("txt=title", r"jsonl.py: unknown argument 'txt=title'; use path=FILE, text=FIELD\+FIELD"),
    ("path=a.jsonl,text=", r"jsonl.py: argument 'text=' needs a value: text=FIELD\+FIELD\."),
    ("text=title++body", r"argument 'text=title\+\+body' has an empty field name; separate "
                         r"the fields with '\+'"),
    ("text=title,body", r"unknown argument 'body'"),  # Fields are joined with +, not commas.
    ("runlocal=yes", r"argument 'runlocal=yes': runlocal takes no value"),
    ("path=a,path=b", r"argument 'path' given twice \(path=a, path=b\)"),
    ("labels", r"jsonl.py: argument 'labels' needs a value: labels=FIELD\."),
])
def test_jsonl_argument_errors_name_the_argument(arg, message):
  with pytest.raises(ValueError, match=message):
    jsonl_config.get_config(arg)


# --- xmc.py


def test_xmc_arguments_set_the_files():
  c = xmc_config.get_config(f"dir={XMC_DIR}")
  assert c.data.name == "xmc" and c.model == "bow" and c.head.fused == "auto"
  assert c.data.options.to_dict() == dict(  # No validation file: 10% of train held out.
      name="xmc_tiny", max_features=1024, normalize="l2", validation_fraction=0.1,
      files={"train": str(XMC_DIR / "train.txt"), "test": str(XMC_DIR / "test.txt")})
  c = xmc_config.get_config("train=E/tr.txt.gz,test=E/ts.txt,validation=E/va.txt,loss=zlpr")
  assert c.data.options.files.to_dict() == dict(train="E/tr.txt.gz", test="E/ts.txt",
                                                validation="E/va.txt")
  assert c.data.options.name == "tr" and c.objective == "zlpr"
  assert c.data.options.validation_fraction == 0.0
  configs.validate(c)
  assert xmc_config.get_config("runlocal").data.options.files.train == str(XMC_DIR / "train.txt")
  c = _cli_config("--config=xmc.py:runlocal", "--config.data.options.max_features=4")
  assert builders.build_source(c).info.stats.truncated_tokens > 0


@pytest.mark.parametrize("arg, message", [
    ("", r"xmc.py: which data\? Give dir=DIR .* or train=FILE,test=FILE, or runlocal"),
    ("folder=x", r"xmc.py: unknown argument 'folder=x'; use dir=DIR, train=FILE, test=FILE"),
    ("dir=/no/such/dir", r"xmc.py: dir=/no/such/dir has no /no/such/dir/train.txt and no "
                         r"/no/such/dir/test.txt"),
    (f"dir={XMC_DIR},train=t.txt", r"give dir=DIR or train=FILE,test=FILE, not both"),
    ("train=t.txt", r"xmc.py: test=FILE is needed too"),
    ("validation=v.txt", r"xmc.py: which data\?"),
    ("runlocal,dir=", r"xmc.py: argument 'dir=' needs a value: dir=DIR\."),
])
def test_xmc_argument_errors_name_the_argument(arg, message):
  with pytest.raises(ValueError, match=message):
    xmc_config.get_config(arg)


def test_argument_errors_stop_the_command_line_with_the_config_name():
  with pytest.raises(ValueError, match=r"^--config: xmc.py: unknown argument 'dri=x'"):
    _cli_config("--config=xmc.py:dri=x")


# --- End to end: runlocal on the fixtures.


def _train(config, workdir):
  from multilabel_jax import train  # pylint: disable=g-import-not-at-top
  report = train.train_and_evaluate(config, workdir)
  stored = json.loads((workdir / "report.json").read_text())
  assert stored["data"] == report["data"] and stored["natural_decoder"] == "top_1"
  assert report["natural_decoder"] in report["test"]["decoders"]  # softmax: top_1.
  assert "**top_1** (natural)" in (workdir / "report.md").read_text()
  return report


@pytest.mark.slow
def test_jsonl_runlocal_trains_and_evaluates_the_fixture(tmp_path):
  report = _train(jsonl_config.get_config("runlocal"), tmp_path)
  data = report["data"]
  assert (data["name"], data["num_classes"], data["num_train_examples"]) == ("tiny_posts", 7, 67)
  assert report["validation"]["num_examples"] == 6 and report["test"]["num_examples"] == 7
  assert data["stats"]["load"]["malformed_lines"] == 2  # Lines 38 and 62, counted.
  labels = json.loads((tmp_path / "vocab" / "label_map.json").read_text())
  assert labels["names"] == POST_TAGS


@pytest.mark.slow
def test_xmc_runlocal_trains_and_evaluates_the_fixture(tmp_path):
  report = _train(xmc_config.get_config("runlocal"), tmp_path)
  data = report["data"]
  assert (data["name"], data["num_classes"], data["num_train_examples"]) == ("xmc_tiny", 5, 72)
  assert report["validation"]["num_examples"] == 8 and report["test"]["num_examples"] == 20
  assert data["stats"]["load"]["malformed_lines"] == 0


def test_wide_path_trains_its_table_and_refuses_what_it_cannot_do(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from multilabel_jax import inference, train  # pylint: disable=g-import-not-at-top
  c = jsonl_config.get_config("runlocal")
  c.head.wide, c.total_steps, c.eval_every = True, 6, 0
  report = train.train_and_evaluate(c, tmp_path / "wide")
  assert report["train"]["fused_head"] is False and report["train"]["wide_heads"] == ["logits"]
  predictor = inference.Predictor.from_workdir(tmp_path / "wide")  # Restores the table too.
  table = np.asarray(predictor.variables["params"]["wide_logits"]["table"])
  assert table.shape == (predictor.model.wide_vocab_size, 7) and np.abs(table).sum() > 0
  c = jsonl_config.get_config("runlocal")
  c.head.wide, c.head.fused = True, "on"
  with pytest.raises(ValueError, match="`config.head.fused='on'` cannot train "
                                       "`config.head.wide=True`"):
    train.train_and_evaluate(c, tmp_path / "a")
  from multilabel_jax import builders, losses  # pylint: disable=g-import-not-at-top
  c = jsonl_config.get_config("runlocal")
  c.head.wide, c.model, c.model_options = True, "mlp", {}
  with pytest.raises(ValueError, match=r"`config.head.wide=True` needs a bag-of-words model "
                                       r"\(`config.model='bow'`\), got 'mlp'"):
    builders.build_model(c, losses.get_objective("sigmoid", 7), None, num_classes=7)
  import types  # pylint: disable=g-import-not-at-top
  c = jsonl_config.get_config("runlocal")
  c.head.wide, c.head.wide_max_params = True, 10 * 7
  small = types.SimpleNamespace(num_embeddings=10)
  model = builders.build_model(c, losses.get_objective("sigmoid", 7), small, num_classes=7)
  assert model.wide_heads == ("logits",) and model.wide_vocab_size == 10
  c.head.wide_max_params = 10 * 7 - 1  # Too big: no wide path (logged), the MLP alone.
  assert builders.build_model(c, losses.get_objective("sigmoid", 7), small,
                              num_classes=7).wide_heads == ()


def test_a_wide_path_too_large_reads_the_most_frequent_words_that_fit(tmp_path, monkeypatch):
  import types  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from multilabel_jax import builders, inference, losses, train  # pylint: disable=g-import-not-at-top
  c = jsonl_config.get_config("runlocal")
  c.head.wide, c.head.wide_max_params = True, 2000 * 7
  ordered = types.SimpleNamespace(num_embeddings=5000, ids_by_frequency=True)
  assert builders.build_model(c, losses.get_objective("sigmoid", 7), ordered,
                              num_classes=7).wide_heads == ()  # Only when asked for.
  c.head.wide_top_words = True
  model = builders.build_model(c, losses.get_objective("sigmoid", 7), ordered, num_classes=7)
  assert model.wide_heads == ("logits",) and model.wide_vocab_size == 2000
  hashed = types.SimpleNamespace(num_embeddings=5000)  # Ids not by frequency: none.
  assert builders.build_model(c, losses.get_objective("sigmoid", 7), hashed,
                              num_classes=7).wide_heads == ()
  c.head.wide_max_params = (builders.MIN_WIDE_WORDS - 1) * 7  # Too few words: none.
  assert builders.build_model(c, losses.get_objective("sigmoid", 7), ordered,
                              num_classes=7).wide_heads == ()

  monkeypatch.setattr(builders, "MIN_WIDE_WORDS", 4)  # The fixture's vocabulary is small.
  c = jsonl_config.get_config("runlocal")
  c.head.wide, c.head.wide_top_words, c.total_steps, c.eval_every = True, True, 6, 0
  num_classes = 7  # The fixture's tags.
  c.head.wide_max_params = 9 * num_classes  # Words 1..8 (and the padding row).
  report = train.train_and_evaluate(c, tmp_path / "top")
  assert report["data"]["num_classes"] == num_classes and report["train"]["wide_heads"]
  predictor = inference.Predictor.from_workdir(tmp_path / "top")  # Rebuilds the same cut.
  assert predictor.model.wide_vocab_size == 9
  table = np.asarray(predictor.variables["params"]["wide_logits"]["table"])
  assert table.shape == (9, num_classes) and np.abs(table[1:]).sum() > 0
  batch = {"token_ids": np.array([[1, 2, 40, 0]], np.int32),
           "token_weights": np.array([[1.0, 0.5, 2.0, 0.0]], np.float32)}
  params = predictor.variables["params"]
  no_wide = dict(predictor.variables, params=dict(params, wide_logits={"table": 0 * table}))
  apply = lambda v: np.asarray(predictor.model.apply(v, batch)["logits"])
  wide = apply(predictor.variables) - apply(no_wide)  # Word 40 is past the cut: not read.
  np.testing.assert_allclose(wide[0], table[1] + 0.5 * table[2], rtol=1e-5, atol=1e-6)
