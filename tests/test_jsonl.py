"""Tests for multilabel_jax.data.jsonl (generic JSONL loader) and label_map."""

import gzip
import json
import pathlib

import numpy as np
import pytest

from multilabel_jax.data import base
from multilabel_jax.data import jsonl
from multilabel_jax.data import label_map
from multilabel_jax.data import text

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_debtags.jsonl"
# Sorted train labels of the fixture (pkg1, pkg4, pkg6, pkg7).
NAMES = ["game::strategy", "implemented-in::python", "role::program", "role::shared-lib",
         "uitoolkit::gtk"]


def _config(path=FIXTURE, **kw):
  fields = dict(name="tiny", path=str(path), split="hash", hash_field="package",
                text_fields=("package", "section", "synopsis", "description"),
                token_fields=("depends",), label_field="tags",
                text=text.TextConfig(weighting="count", norm=None))
  fields.update(kw)
  return jsonl.JsonlConfig(**fields)


def _write(tmp_path, lines, name="data.jsonl"):
  path = tmp_path / name
  path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
  return path


def test_md5_bucket_hand_values():
  # md5("pkg0") % 10 == 0 (test), md5("pkg3") % 10 == 1 (validation), md5("pkg1") % 10 == 8.
  assert [jsonl.md5_bucket(k, 10) for k in ("pkg0", "pkg3", "pkg1")] == [0, 1, 8]


def test_fixture_splits_labels_and_stats():
  src = jsonl.load_jsonl(_config())
  info = src.info
  assert info.name == "tiny" and info.class_names == NAMES
  assert info.num_classes == 5 and info.max_labels == 3
  assert {s: src.num_examples(s) for s in ("train", "validation", "test")} == {
      "train": 4, "validation": 1, "test": 1}
  assert src.keys["train"] == ["pkg1", "pkg4", "pkg6", "pkg7"]
  assert src.keys["validation"] == ["pkg3"] and src.keys["test"] == ["pkg0"]
  np.testing.assert_array_equal(info.train_label_counts, [1, 2, 2, 1, 1])
  assert info.num_train_examples == 4
  np.testing.assert_array_equal(src.read("train", np.arange(4))["label_ids"],
                                [[1, 2, 4], [0, 2, -1], [1, 3, -1], [-1, -1, -1]])
  # interface::x11 is unknown (not in train): dropped and counted.
  np.testing.assert_array_equal(src.read("validation", [0])["label_ids"], [[0, 1, -1]])
  # 4 labels > max_labels=3: the first three in record order are kept.
  np.testing.assert_array_equal(src.read("test", [0])["label_ids"], [[2, 0, 1]])
  assert info.stats == base.DataStats(malformed_lines=5, empty_label_sets=1, unknown_labels=1,
                                      truncated_labels=1)
  assert src.split_stats["read"].malformed_lines == 5
  assert src.split_stats["validation"].unknown_labels == 1
  assert src.split_stats["test"].truncated_labels == 1


def test_fixture_tokens_fit_on_train_only():
  src = jsonl.load_jsonl(_config())
  vocab = src.featurizer.vocabulary
  assert "depends=python3" in vocab and "depends=libgtk-3-0" in vocab  # Whole tokens.
  assert "libgtk" not in vocab
  assert "zebra" not in vocab and "fun" not in vocab  # Test / validation only.
  assert src.num_embeddings == len(vocab) + 1
  batch = src.read("train", [0])
  words = {vocab[i - 1]: w for i, w in zip(batch["token_ids"][0], batch["token_weights"][0])
           if i}
  # pkg1: "pkg1 python Python GUI toolkit A toolkit for graphical programs. Written in
  # Python." + depends. Counts (weighting="count"), single-letter "A" is not a token.
  assert words == {"pkg1": 1, "python": 3, "gui": 1, "toolkit": 2, "for": 1, "graphical": 1,
                   "programs": 1, "written": 1, "in": 1, "depends=python3": 1,
                   "depends=libgtk-3-0": 1}
  assert batch["token_ids"].shape == (1, src.info.inputs["token_ids"].shape[0])
  assert batch["token_ids"].dtype == np.int32 and batch["token_weights"].dtype == np.float32


def test_gzip_and_read_contract(tmp_path):
  gz = tmp_path / "tiny.jsonl.gz"
  gz.write_bytes(gzip.compress(FIXTURE.read_bytes()))
  a, b = jsonl.load_jsonl(_config()), jsonl.load_jsonl(_config(gz))
  for split in ("train", "validation", "test"):
    ra = a.read(split, np.arange(a.num_examples(split)))
    rb = b.read(split, np.arange(b.num_examples(split)))
    for k in ra:
      np.testing.assert_array_equal(ra[k], rb[k])
  out = a.read("train", np.array([3, 0, 3]))
  assert set(out) == {"token_ids", "token_weights", "label_ids"}
  assert out["label_ids"].shape == (3, 3) and out["label_ids"].dtype == np.int32
  with pytest.raises(KeyError, match="no split 'dev'"):
    a.read("dev", [0])
  with pytest.raises(IndexError):
    a.read("train", [4])


def test_save_and_reuse_vocab(tmp_path):
  src = jsonl.load_jsonl(_config(text=text.TextConfig()))
  src.save_vocab(tmp_path / "run")
  featurizer, labels = jsonl.load_vocab(tmp_path / "run")
  assert labels.names == NAMES
  again = jsonl.load_jsonl(_config(), featurizer=featurizer, label_map=labels)
  for split in ("train", "validation", "test"):
    idx = np.arange(src.num_examples(split))
    for k, v in src.read(split, idx).items():
      np.testing.assert_array_equal(v, again.read(split, idx)[k])


def test_other_schema_by_config_only_field_split(tmp_path):
  path = _write(tmp_path, [
      {"id": 1, "body": "red apples", "hashtags": ["#fruit", "#red"], "split": "train"},
      {"id": 2, "body": "green pears", "hashtags": ["#fruit"], "split": "train"},
      {"id": 3, "body": "red car", "hashtags": ["#red", "#car"], "split": "dev"},
      {"id": 4, "body": "blue", "hashtags": ["#blue"], "split": "holdout"},  # Unknown split.
  ])
  src = jsonl.load_jsonl(jsonl.JsonlConfig(
      path=str(path), split="field", split_field="split", text_fields=("body",),
      label_field="hashtags", text={"weighting": "binary"}))  # Nested config as a dict.
  assert src.info.class_names == ["#fruit", "#red"]
  assert src.num_examples("train") == 2 and src.num_examples("validation") == 1
  np.testing.assert_array_equal(src.read("validation", [0])["label_ids"], [[1, -1]])
  assert src.info.stats.unknown_labels == 1 and src.info.stats.malformed_lines == 1


def test_separate_files_split(tmp_path):
  train = _write(tmp_path, [{"text": "alpha beta", "labels": [3, 1]},
                            {"text": "beta gamma", "labels": [1]}], "train.jsonl")
  test = _write(tmp_path, [{"text": "alpha", "labels": [3, 7]}], "test.jsonl")
  src = jsonl.load_jsonl(jsonl.JsonlConfig(
      split="files", files={"train": str(train), "test": str(test)}, label_field="labels"))
  assert src.info.class_names == ["1", "3"]  # Integer labels are used as names.
  np.testing.assert_array_equal(src.read("test", [0])["label_ids"], [[1, -1]])
  assert src.info.stats.unknown_labels == 1
  np.testing.assert_array_equal(src.info.train_label_counts, [2, 1])


def test_no_text_fields_is_an_error(tmp_path):
  path = _write(tmp_path, [{"id": "x", "body": "hello world", "tags": ["a"]}])
  with pytest.raises(ValueError, match="text_fields"):
    jsonl.load_jsonl(jsonl.JsonlConfig(path=str(path)))


def test_config_errors():
  with pytest.raises(ValueError, match="split"):
    jsonl.JsonlConfig(path="x", split="random")
  with pytest.raises(ValueError, match="files"):
    jsonl.JsonlConfig(split="files")
  with pytest.raises(ValueError, match="path"):
    jsonl.JsonlConfig(split="hash")


_GOOD = {"package": "pkg1", "synopsis": "ok", "tags": ["a", "b"]}


@pytest.mark.parametrize("bad_line,problem", [
    ('{"package": "pkg4", ', "invalid JSON"),
    ('["not", "an object"]', "expected a JSON object"),
    ({"package": "pkg4", "synopsis": "x"}, "no label field 'tags'"),
    ({"package": "pkg4", "synopsis": "x", "tags": "a"}, "must be a list"),
    ({"package": "pkg4", "synopsis": {"nested": 1}, "tags": ["a"]}, "'synopsis' must be"),
    ({"synopsis": "x", "tags": ["a"]}, "no hash field 'package'"),
    ({"package": "pkg3", "synopsis": "x", "tags": ["a", "zzz"]}, "not in the training"),
    ({"package": "pkg4", "synopsis": "x", "tags": []}, "empty label set"),
    ({"package": "pkg4", "synopsis": "x", "tags": ["a", "b", "a"]}, None),  # Dupes: fine.
])
def test_strict_names_file_line_and_problem(tmp_path, bad_line, problem):
  path = _write(tmp_path, [_GOOD, bad_line])
  config = _config(path, strict=True, max_labels=2)
  if problem is None:
    src = jsonl.load_jsonl(config)
    np.testing.assert_array_equal(src.read("train", [1])["label_ids"], [[0, 1]])
    return
  with pytest.raises(ValueError, match=rf"{path}:2: .*{problem}"):
    jsonl.load_jsonl(config)


def test_strict_too_many_labels(tmp_path):
  path = _write(tmp_path, [_GOOD, {"package": "pkg4", "synopsis": "x",
                                   "tags": ["a", "b", "c"]}])
  with pytest.raises(ValueError, match=rf"{path}:2: 3 labels, more than max_labels=2"):
    jsonl.load_jsonl(_config(path, strict=True, max_labels=2))


def test_pack_label_ids_rules():
  stats = base.DataStats()
  ids = label_map.pack_label_ids([[2, 2, 0], [], [5, -3, 1], [0, 1, 2]], 2, 3, stats=stats)
  np.testing.assert_array_equal(ids, [[2, 0], [-1, -1], [1, -1], [0, 1]])
  assert stats == base.DataStats(empty_label_sets=1, out_of_range_ids=2, truncated_labels=1)
  with pytest.raises(ValueError, match=r"f.txt:9: label id\(s\) \[5, -3\] outside \[0, 3\)"):
    label_map.pack_label_ids([[5, -3, 1]], 2, 3, strict=True, origins=["f.txt:9"])


def test_label_map_round_trip(tmp_path):
  lm = label_map.LabelMap.fit([["b", "a"], ["a", "c"], ["a"]], min_count=2)
  assert lm.names == ["a"]
  lm = label_map.LabelMap.fit([["b", "a"], ["a", "c"]])
  assert lm.names == ["a", "b", "c"] and lm.decode([2, 0, -1]) == ["c", "a"]
  lm.save(tmp_path / "labels.json")
  assert label_map.LabelMap.load(tmp_path / "labels.json").names == lm.names
  with pytest.raises(ValueError, match="unique"):
    label_map.LabelMap(["a", "a"])


def test_read_labels_fast_path_and_ml_collections_config():
  import ml_collections  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(
      name="tiny", path=str(FIXTURE), split="hash", hash_field="package",
      text_fields=["synopsis"], token_fields=["depends"], label_field="tags",
      text=dict(vocab="hashing", num_buckets=64)))
  src = jsonl.load_jsonl(jsonl.JsonlConfig(**cfg))
  assert src.featurizer.config.vocab == "hashing" and src.num_embeddings == 65
  idx = np.array([2, 0])
  np.testing.assert_array_equal(src.read_labels("train", idx),
                                src.read("train", idx)["label_ids"])
  np.testing.assert_array_equal(src.read_labels("train", idx), [[1, 3, -1], [1, 2, 4]])
