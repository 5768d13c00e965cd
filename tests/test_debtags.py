"""Tests for multilabel_jax.data.debtags: path resolution, split rule, rebuild, real file."""

import collections
import gzip
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from multilabel_jax.data import debtags

LISTS = pathlib.Path(__file__).parent / "fixtures" / "apt_lists"
PACKAGES = LISTS / "deb.example.org_debian_dists_bookworm_main_binary-amd64_Packages"
TRANSLATIONS = LISTS / "deb.example.org_debian_dists_bookworm_main_i18n_Translation-en"
EXPECTED = [json.loads(l) for l in (LISTS / "expected.jsonl").read_text().splitlines()]


def _real_path():
  try:
    return debtags.resolve_path()
  except FileNotFoundError:
    return None


REAL = _real_path()
needs_real = pytest.mark.skipif(REAL is None, reason="debtags.jsonl.gz not available")


def test_split_rule_hand_values():
  # md5 % 10 of these names, computed by hand once: 0 -> test, 1 -> validation.
  assert debtags.split_of("9menu") == "test"          # md5 % 10 == 0
  assert debtags.split_of("2vcard") == "validation"   # md5 % 10 == 1
  assert debtags.split_of("0ad") == "train"           # md5 % 10 == 8


def test_resolve_path_env_relative_and_missing(tmp_path, monkeypatch):
  f = tmp_path / "d.jsonl.gz"
  f.write_bytes(b"")
  monkeypatch.setenv(debtags.ENV_VAR, str(f))
  assert debtags.resolve_path() == f.resolve()
  assert debtags.resolve_path(str(f)) == f.resolve()
  monkeypatch.chdir(tmp_path)
  assert debtags.resolve_path("d.jsonl.gz") == f.resolve()  # Relative to the cwd.
  monkeypatch.delenv(debtags.ENV_VAR)
  # Relative to the repository root, whatever the cwd.
  rel = "tests/fixtures/tiny_debtags.jsonl"
  assert debtags.resolve_path(rel) == (debtags.REPO_ROOT / rel).resolve()
  with pytest.raises(FileNotFoundError) as e:
    debtags.resolve_path("no/such/debtags.jsonl.gz")
  msg = str(e.value)
  assert "no/such/debtags.jsonl.gz" in msg and debtags.ENV_VAR in msg and "rebuild" in msg


def test_parse_stanzas_continuations_and_empty_lines():
  lines = ["Package: a", "Description: syn", " line one", " .", " line two", "",
           "", "Package: b", "Tag: x::y,", " z::w"]
  assert list(debtags.parse_stanzas(lines)) == [
      {"Package": "a", "Description": "syn\nline one\n\nline two"},
      {"Package": "b", "Tag": "x::y,\nz::w"}]


@pytest.mark.parametrize("value,expected", [
    ("", []),
    ("libc6 (>= 2.34), python3:any", ["libc6", "python3"]),
    ("a | b (>= 1), c", ["a", "c"]),
    ("libfoo [amd64] <!nocheck>, bar:amd64 (= 1)", ["libfoo", "bar"]),
    ("x (>= 1),\n y", ["x", "y"]),
])
def test_parse_depends(value, expected):
  assert debtags.parse_depends(value) == expected


def test_build_records_from_fixture():
  assert debtags.build_records([PACKAGES], [TRANSLATIONS]) == EXPECTED


def test_build_records_without_translations_uses_inline_description():
  records = {r["package"]: r for r in debtags.build_records([PACKAGES], [])}
  assert records["gamma"]["description"] == "Inline long description.\n\nIts second paragraph."
  assert records["alpha"]["description"] == ""


def _compress(src, dst, kind):
  if kind == "gz":
    dst.write_bytes(gzip.compress(src.read_bytes()))
  elif kind == "lz4":
    try:
      import lz4.frame  # pylint: disable=g-import-not-at-top
      dst.write_bytes(lz4.frame.compress(src.read_bytes()))
    except ImportError:
      exe = shutil.which("lz4")
      if exe is None:
        pytest.skip("neither the lz4 Python package nor the lz4 command is available")
      subprocess.run([exe, "-q", "-z", str(src), str(dst)], check=True)
  else:
    shutil.copy(src, dst)


@pytest.mark.parametrize("kind", ["plain", "gz", "lz4"])
def test_rebuild_cli(tmp_path, kind, capsys):
  lists = tmp_path / "lists"
  lists.mkdir()
  suffix = "" if kind == "plain" else "." + kind
  for src in (PACKAGES, TRANSLATIONS):
    _compress(src, lists / (src.name + suffix), kind)
  out = tmp_path / "debtags.jsonl.gz"
  assert debtags.main(["rebuild", "--lists-dir", str(lists), "--out", str(out)]) == 0
  assert "wrote 3 records, 7 distinct tags" in capsys.readouterr().out
  with gzip.open(out, "rt", encoding="utf-8") as f:
    assert [json.loads(l) for l in f] == EXPECTED


def test_rebuilt_file_loads_as_debtags(tmp_path):
  out = tmp_path / "d.jsonl"
  debtags.write_jsonl(debtags.build_records([PACKAGES], [TRANSLATIONS]), out)
  # alpha, gamma, delta all hash to train (md5 % 10 not in {0, 1}).
  src = debtags.load_debtags(str(out), text=debtags.text_lib.TextConfig())
  assert src.info.num_train_examples == 3 and src.keys["train"] == ["alpha", "gamma", "delta"]
  assert src.info.num_classes == 7 and src.info.max_labels == 4
  vocab = set(src.featurizer.vocabulary)
  assert {"depends=python3", "depends=dpkg", "alpha", "python", "paragraph"} <= vocab


def test_rebuild_missing_lists(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get"):
    debtags.main(["rebuild", "--lists-dir", str(tmp_path), "--out", str(tmp_path / "o")])


@needs_real
def test_real_file_figures():
  with gzip.open(REAL, "rt", encoding="utf-8") as f:
    records = [json.loads(l) for l in f]
  assert len(records) == debtags.NUM_RECORDS == 30_300
  assert len({t for r in records for t in r["tags"]}) == 598
  sizes = [len(r["tags"]) for r in records]
  assert min(sizes) == 1 and max(sizes) == 62
  splits = collections.Counter(debtags.split_of(r["package"]) for r in records)
  assert splits == {"train": 24_231, "validation": 3_026, "test": 3_043}


@needs_real
def test_load_real_debtags():
  src = debtags.load_debtags()
  info = src.info
  assert info.name == "debtags" and info.num_train_examples == 24_231
  assert src.num_examples("validation") == 3_026 and src.num_examples("test") == 3_043
  assert info.num_classes == 594  # Tags seen in train (4 occur only in validation).
  assert info.max_labels == 62
  assert info.train_label_counts.shape == (594,) and info.train_label_counts.min() >= 1
  assert info.stats.malformed_lines == 0 and info.stats.empty_label_sets == 0
  assert info.stats.unknown_labels == 4
  assert info.inputs["token_ids"].shape == (256,)
  batch = src.read("test", np.arange(8))
  assert batch["label_ids"].shape == (8, 62) and (batch["label_ids"][:, 0] >= 0).all()
  assert (batch["token_weights"] > 0).sum(1).min() > 0


@pytest.mark.slow
@pytest.mark.skipif(REAL is None or not list(pathlib.Path("/var/lib/apt/lists").glob(
    "*_dists_bookworm_main_binary-amd64_Packages*")), reason="no real apt lists")
def test_rebuild_matches_real_file_except_descriptions():
  packages, _ = debtags.find_index_files("/var/lib/apt/lists")
  rebuilt = debtags.build_records(packages, [])
  with gzip.open(REAL, "rt", encoding="utf-8") as f:
    real = [json.loads(l) for l in f]
  assert [r["package"] for r in rebuilt] == [r["package"] for r in real]
  for a, b in zip(rebuilt, real):
    for key in ("section", "synopsis", "depends", "tags"):
      assert a[key] == b[key], (a["package"], key)
