"""Tests for multilabel_jax.data.xmc against hand-computed fixtures."""

import dataclasses
import pathlib

import numpy as np
import pytest

from multilabel_jax.data import base
from multilabel_jax.data import xmc

FIX = pathlib.Path(__file__).parent / "fixtures"
TRAIN, TEST = str(FIX / "xmc_train.txt"), str(FIX / "xmc_test.txt")


def _load(**kw):
  return xmc.load_xmc(xmc.XmcConfig(files={"train": TRAIN, "test": TEST}, **kw))


@pytest.mark.parametrize("line,expected", [
    ("0,2 0:0.5 3:1", ([0, 2], [0, 3], [0.5, 1.0])),
    (" 2:1.0 4:3", ([], [2, 4], [1.0, 3.0])),  # Leading space: no labels.
    ("2:1.0", ([], [2], [1.0])),  # First item is a feature: no labels.
    ("7", ([7], [], [])),  # Labels, no features.
])
def test_parse_line(line, expected):
  assert xmc.parse_line(line) == expected


@pytest.mark.parametrize("line,problem", [
    ("x,1 0:1", "bad label list"),
    ("1,,2 0:1", "bad label list"),
    ("1 0:1 3", "bad feature '3'"),
    ("1 a:1", "bad feature"),
    ("1 0:inf", "non-finite"),
])
def test_parse_line_malformed(line, problem):
  with pytest.raises(ValueError, match=problem):
    xmc.parse_line(line)


def test_fixture_arrays_and_stats():
  src = _load()
  info = src.info
  assert info.num_classes == 4 and info.max_labels == 2
  assert info.inputs["token_ids"] == base.InputSpec((5,), "int32")
  assert src.num_embeddings == 6 and info.num_train_examples == 5
  assert src.num_examples("test") == 2
  train = src.read("train", np.arange(5))
  np.testing.assert_array_equal(train["label_ids"],
                                [[0, 2], [1, -1], [-1, -1], [3, 1], [2, -1]])
  np.testing.assert_array_equal(train["token_ids"], [  # Feature id + 1, 0 padded.
      [1, 4, 0, 0, 0], [2, 5, 0, 0, 0], [3, 5, 0, 0, 0], [1, 2, 3, 4, 5], [1, 0, 0, 0, 0]])
  np.testing.assert_allclose(train["token_weights"], [  # Repeated feature 1 summed.
      [0.5, 1, 0, 0, 0], [3, 0.25, 0, 0, 0], [1, 3, 0, 0, 0], [1, 1, 1, 1, 1],
      [0.1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(info.train_label_counts, [1, 2, 2, 1])
  test = src.read("test", np.arange(2))
  np.testing.assert_array_equal(test["label_ids"], [[0, 1], [-1, -1]])
  np.testing.assert_array_equal(test["token_ids"][0], [1, 2, 3, 4, 5])
  np.testing.assert_allclose(test["token_weights"][0], [2, 2, 3, 4, 5])
  # Train: malformed "x,1", feature 7 out of range, one point without labels.
  assert src.split_stats["train"] == base.DataStats(malformed_lines=1, empty_label_sets=1,
                                                    out_of_range_ids=1)
  # Test: "0:nan" malformed, 3 labels > 2 truncated, label 9 out of range.
  assert src.split_stats["test"] == base.DataStats(malformed_lines=1, truncated_labels=1,
                                                   out_of_range_ids=1)
  assert info.stats == base.DataStats(malformed_lines=2, empty_label_sets=1,
                                      truncated_labels=1, out_of_range_ids=2)


def test_feature_truncation_and_l2():
  src = _load(max_features=3, normalize="l2", max_labels=3)
  test = src.read("test", [0])
  # Values {0: 2, 1: 2, 2: 3, 3: 4, 4: 5}: keep the 3 largest, ids in increasing order.
  np.testing.assert_array_equal(test["token_ids"], [[3, 4, 5]])
  np.testing.assert_allclose(test["token_weights"], [np.array([3, 4, 5]) / np.sqrt(50)],
                             rtol=1e-6)
  np.testing.assert_array_equal(test["label_ids"], [[0, 1, 2]])
  train = src.read("train", [3])  # Five equal values: ties keep the lower ids.
  np.testing.assert_array_equal(train["token_ids"], [[1, 2, 3]])
  assert src.split_stats["train"].truncated_tokens == 2
  assert src.split_stats["test"].truncated_tokens == 2


@pytest.mark.parametrize("lines,problem", [
    (["2 5 4", "0 0:1", "x 1:1"], r"f.txt:3: malformed line: bad label list"),
    (["2 5 4", "0 0:1", "1 9:1"], r"f.txt:3: feature id\(s\) \[9\] outside \[0, 5\)"),
    (["2 5 4", "0 0:1", " 1:1"], r"f.txt:3: empty label set"),
    (["2 5 4", "0 0:1", "7 1:1"], r"f.txt:3: label id\(s\) \[7\] outside \[0, 4\)"),
    (["3 5 4", "0 0:1", "1 1:1"], r"header says 3 points"),
])
def test_strict_raises_with_file_and_line(tmp_path, lines, problem):
  path = tmp_path / "f.txt"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=problem):
    xmc.load_xmc(xmc.XmcConfig(files={"train": str(path)}, strict=True))


def test_strict_too_many_features(tmp_path):
  path = tmp_path / "f.txt"
  path.write_text("2 5 4\n0 0:1\n1 1:1 2:1\n")
  with pytest.raises(ValueError, match="f.txt:3: 2 features, more than max_features=1"):
    xmc.load_xmc(xmc.XmcConfig(files={"train": str(path)}, strict=True, max_features=1))


def test_header_errors(tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_text("0,1 0:1\n")
  with pytest.raises(ValueError, match="bad.txt:1: expected a header"):
    xmc.read_xmc(str(bad))
  other = tmp_path / "other.txt"
  other.write_text("1 6 4\n0 0:1\n")
  with pytest.raises(ValueError, match="6 features and 4 labels"):
    xmc.load_xmc(xmc.XmcConfig(files={"train": TRAIN, "test": str(other)}))
  with pytest.raises(ValueError, match="'train'"):
    xmc.load_xmc(xmc.XmcConfig(files={"test": TEST}))


def test_gzip_round_trip(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  gz = tmp_path / "train.txt.gz"
  gz.write_bytes(gzip.compress(pathlib.Path(TRAIN).read_bytes()))
  a = xmc.load_xmc(xmc.XmcConfig(files={"train": TRAIN}))
  b = xmc.load_xmc(xmc.XmcConfig(files={"train": str(gz)}))
  for k, v in a.read("train", np.arange(5)).items():
    np.testing.assert_array_equal(v, b.read("train", np.arange(5))[k])


def test_bibtex_style_split_files(tmp_path):
  # Points 1..6 of the train fixture (point 6 is the malformed "x,1" line).
  (tmp_path / "tr.txt").write_text("1 4\n3 2\n4 1\n6 3\n")  # Column 0: points 1, 3, 4, 6.
  (tmp_path / "ts.txt").write_text("2 5\n5 6\n")
  config = xmc.XmcConfig(files={"data": TRAIN}, split_files={
      "train": str(tmp_path / "tr.txt"), "test": str(tmp_path / "ts.txt")})
  src = xmc.load_xmc(config)
  assert src.num_examples("train") == 3 and src.num_examples("test") == 2  # 6 is malformed.
  np.testing.assert_array_equal(src.read("train", np.arange(3))["label_ids"],
                                [[0, 2], [-1, -1], [3, 1]])
  np.testing.assert_array_equal(src.read("test", np.arange(2))["label_ids"],
                                [[1, -1], [2, -1]])
  np.testing.assert_array_equal(src.info.train_label_counts, [1, 1, 1, 1])
  assert src.info.stats.malformed_lines == 1
  column1 = xmc.load_xmc(dataclasses.replace(config, split_column=1))
  np.testing.assert_array_equal(column1.read("test", [0])["label_ids"], [[2, -1]])  # Point 5.
  (tmp_path / "bad.txt").write_text("9\n")
  with pytest.raises(ValueError, match=r"bad.txt:1: point 9 outside \[1, 6\]"):
    xmc.load_xmc(dataclasses.replace(config, split_files={"train": str(tmp_path / "bad.txt")}))


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("lines,problem", [
    (["2 5 4", "x 0:1", "1 a:1"], r"f.txt:2: malformed line: bad label list 'x'"),
    (["0 5 4"], r"^\S*f.txt: no points after the header \(it says 0\); nothing to load"),
    (["3 5 4", "", ""], r"^\S*f.txt: no points after the header \(it says 3\)"),
])
def test_no_readable_point_is_an_error_strict_or_not(tmp_path, lines, problem, strict):
  path = tmp_path / "f.txt"
  path.write_text("\n".join(lines) + "\n")
  if not strict and "malformed" in problem:
    problem += r"; every point line of \S*f.txt is malformed, so there is nothing to load"
  with pytest.raises(ValueError, match=problem):
    xmc.load_xmc(xmc.XmcConfig(files={"train": str(path)}, strict=strict))


def test_empty_file_names_the_file(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("")
  with pytest.raises(ValueError, match=r"empty.txt:1: expected a header .*, got ''"):
    xmc.load_xmc(xmc.XmcConfig(files={"train": str(path)}))


def test_validation_is_held_out_of_train_not_taken_from_test():
  fixture = pathlib.Path(__file__).parent / "fixtures" / "xmc_tiny"
  files = {"train": str(fixture / "train.txt"), "test": str(fixture / "test.txt")}
  source = xmc.load_xmc(xmc.XmcConfig(files=files, validation_fraction=0.1))
  assert [source.num_examples(s) for s in ("train", "validation", "test")] == [72, 8, 20]
  again = xmc.load_xmc(xmc.XmcConfig(files=files, validation_fraction=0.1))
  np.testing.assert_array_equal(source.read("validation", np.arange(8))["label_ids"],
                                again.read("validation", np.arange(8))["label_ids"])
  with pytest.raises(ValueError, match="validation_fraction"):
    xmc.load_xmc(xmc.XmcConfig(files=files, validation_fraction=1.5))
