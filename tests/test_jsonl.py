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


# Input that would leave nothing to train on: an error naming the file, the line and the
# field, strict or not.

_ROWS = [{"id": f"r{i}", "title": f"word{i % 3} text", "tags": ["a", "b"][:1 + i % 2]}
         for i in range(12)]


def _plain(path, **kw):
  return jsonl.JsonlConfig(path=str(path), text_fields=("title",), **kw)


@pytest.mark.parametrize("strict", [False, True])
def test_label_field_absent_on_every_line_names_file_line_and_field(tmp_path, strict):
  path = _write(tmp_path, [{k: v for k, v in r.items() if k != "tags"} for r in _ROWS])
  message = (rf"{path}:1: label field 'tags' is absent on every line of {path} \(12 lines; "
             r"this one has keys 'id', 'title'\); set `label_field`" if not strict else
             rf"{path}:1: malformed line: no label field 'tags' \(the line has keys 'id', "
             r"'title'\)\.")
  with pytest.raises(ValueError, match=message):
    jsonl.load_jsonl(_plain(path, strict=strict))


@pytest.mark.parametrize("strict", [False, True])
def test_text_field_absent_on_every_line_names_file_line_and_field(tmp_path, strict):
  path = _write(tmp_path, ["", *[{"id": r["id"], "body": r["title"], "tags": r["tags"]}
                                 for r in _ROWS]])
  with pytest.raises(ValueError, match=(
      rf"{path}:2: no line of {path} has any of text_fields \['title'\] or token_fields "
      r"\[\] \(this line has keys 'body', 'id', 'tags'\); set them")):
    jsonl.load_jsonl(_plain(path, strict=strict))


def test_one_named_field_absent_on_every_line_is_a_warning(tmp_path, caplog):
  path = _write(tmp_path, _ROWS)
  with caplog.at_level("WARNING"):
    src = jsonl.load_jsonl(jsonl.JsonlConfig(path=str(path), text_fields=("title", "bdy"),
                                             token_fields=("lang",)))
  assert src.info.num_classes == 2
  warned = [r.getMessage() for r in caplog.records]
  assert f"{path}:1: text field 'bdy' is absent on every line of {path}" in warned[0]
  assert f"{path}:1: token field 'lang' is absent on every line" in warned[1]
  caplog.clear()
  jsonl.load_jsonl(jsonl.JsonlConfig(path=str(path)))  # Default text_fields: no warning.
  assert not caplog.records


@pytest.mark.parametrize("bad, shown", [
    ([1.5, "a"], r"item 0 is 1.5 \(float\)"),
    (["a", ["b", "c"]], r"item 1 is \['b', 'c'\] \(list\)"),
    ([{"name": "a"}], r"item 0 is \{'name': 'a'\} \(dict\)"),
    ([True], r"item 0 is True \(bool\)"),
    ([None], r"item 0 is None \(NoneType\)"),
])
def test_labels_that_are_not_strings(tmp_path, bad, shown):
  field = r"label field 'tags' must be a list of strings \(or integers\), but "
  rows = [dict(r, tags=bad) if i in (3, 7) else r for i, r in enumerate(_ROWS)]
  path = _write(tmp_path, rows)
  with pytest.raises(ValueError, match=rf"{path}:4: malformed line: {field}{shown}\.$"):
    jsonl.load_jsonl(_plain(path, strict=True))
  src = jsonl.load_jsonl(_plain(path))  # A few bad lines among good ones: counted.
  assert src.info.stats.malformed_lines == 2
  assert sum(src.num_examples(s) for s in src.splits) == 10
  every = _write(tmp_path, [dict(r, tags=bad) for r in _ROWS], "every.jsonl")
  with pytest.raises(ValueError, match=(rf"{every}:1: malformed line: {field}.*; all 12 lines "
                                        rf"of {every} are malformed, so there is nothing")):
    jsonl.load_jsonl(_plain(every))


def test_integer_labels_are_names_not_errors(tmp_path):
  path = _write(tmp_path, [dict(r, tags=[7, 3][:1 + i % 2]) for i, r in enumerate(_ROWS)])
  assert jsonl.load_jsonl(_plain(path, strict=True)).info.class_names == ["3", "7"]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file_names_the_file(tmp_path, strict, content):
  path = tmp_path / "empty.jsonl"
  path.write_text(content)
  with pytest.raises(ValueError, match=rf"^{path}: the file is empty \(no JSON lines\)"):
    jsonl.load_jsonl(_plain(path, strict=strict))
  gz = tmp_path / "empty.jsonl.gz"
  gz.write_bytes(gzip.compress(content.encode()))
  with pytest.raises(ValueError, match=rf"^{gz}: the file is empty"):
    jsonl.load_jsonl(_plain(gz, strict=strict))


def test_empty_split_file_names_that_file(tmp_path):
  train = _write(tmp_path, _ROWS, "train.jsonl")
  test = tmp_path / "test.jsonl"
  test.write_text("")
  with pytest.raises(ValueError, match=rf"^{test}: the file is empty"):
    jsonl.load_jsonl(jsonl.JsonlConfig(split="files", files={"train": str(train),
                                                             "test": str(test)},
                                       text_fields=("title",)))


def test_every_line_malformed_for_other_reasons_names_the_first(tmp_path):
  no_id = _write(tmp_path, [{k: v for k, v in r.items() if k != "id"} for r in _ROWS])
  with pytest.raises(ValueError, match=(rf"{no_id}:1: malformed line: no hash field 'id' "
                                        r"\(the line has keys 'tags', 'title'\); all 12")):
    jsonl.load_jsonl(_plain(no_id))
  one = _write(tmp_path, ['{"id": "r0", "title": "cut'], "one.jsonl")
  with pytest.raises(ValueError, match=rf"{one}:1: malformed line: invalid JSON .*; the only "
                                       rf"line of {one} is malformed"):
    jsonl.load_jsonl(_plain(one))


def test_no_label_in_the_train_split_names_the_line_and_field(tmp_path):
  path = _write(tmp_path, [dict(r, tags=[]) for r in _ROWS])
  assert jsonl.md5_bucket("r0", 10) == 4  # Line 1 is a train record.
  with pytest.raises(ValueError, match=(rf"{path}:1: no label to learn in label field "
                                        r"'tags': every train record's list is empty")):
    jsonl.load_jsonl(_plain(path))
  with pytest.raises(ValueError, match=r"no label is in min_label_count=99 train records"):
    jsonl.load_jsonl(_plain(_write(tmp_path, _ROWS, "min.jsonl"), min_label_count=99))


def test_empty_train_split_names_the_file(tmp_path):
  path = _write(tmp_path, [_ROWS[4]])
  assert jsonl.md5_bucket("r4", 10) == 1  # Validation.
  with pytest.raises(ValueError, match=(rf"^jsonl \({path}\): the train split is empty \(1 "
                                        r"validation\); cannot fit")):
    jsonl.load_jsonl(_plain(path))


def test_char_ngrams_brute_force():
  assert jsonl.char_ngrams("vim", (3, 4)) == ["^vi", "vim", "im$", "^vim", "vim$"]
  for value in ("a", "python3-numpy", "libc6"):
    for lo, hi in ((1, 1), (2, 4), (3, 5)):
      s = "^" + value + "$"
      want = sorted(s[i:j] for i in range(len(s)) for j in range(i + 1, len(s) + 1)
                    if lo <= j - i <= hi)
      assert sorted(jsonl.char_ngrams(value, (lo, hi))) == want


def test_ngram_fields_add_tokens_in_training_and_in_document(tmp_path):
  path = _write(tmp_path, [
      {"id": 1, "name": "vim", "body": "editor", "tags": ["a"], "split": "train"},
      {"id": 2, "name": "vim-gtk", "body": "editor", "tags": ["a", "b"], "split": "train"},
  ])
  config = jsonl.JsonlConfig(path=str(path), split="field",
                             text_fields=("body",),
                             ngram_fields=("name",), ngram_range=(3, 3),
                             text={"weighting": "binary", "norm": None})
  src = jsonl.load_jsonl(config)
  # Every 3-gram of ^vim$ and ^vim-gtk$ is in the vocabulary, prefixed by its field.
  want = {"name#" + g for v in ("vim", "vim-gtk") for g in jsonl.char_ngrams(v, (3, 3))}
  assert want | {"editor"} == set(src.featurizer.vocabulary)
  tokens = jsonl.document({"name": "vim", "body": "editor"}, src.featurizer,
                          **{k: v for k, v in jsonl.record_fields(config).items()
                             if k not in ("id_field", "label_field")})
  assert tokens == ["editor", "name#^vi", "name#vim", "name#im$"]
  assert jsonl.record_fields(config)["ngram_fields"] == ["name"]
  with pytest.raises(ValueError, match=r"ngram_range must be \(min_n, max_n\)"):
    jsonl.JsonlConfig(path=str(path), ngram_range=(4, 2))
