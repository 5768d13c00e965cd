"""debtags: Debian packages and their human-curated facet tags (a real multi-label dataset).

Source: every binary package of Debian 12 "bookworm" (main, amd64) that carries debtags, as
JSON lines in ``debtags.jsonl.gz`` (schema and figures in ``/work/shared/data/README.md``
and ``docs/DATA.md``). 30,300 records, 598 tags, 1 to 62 tags per package.

Loading is a configuration of the generic JSONL loader (:mod:`multilabel_jax.data.jsonl`):

* text: ``package``, ``section``, ``synopsis``, ``description`` (bag of words) and each
  ``depends`` entry as a whole token ``"depends=<package>"``;
* labels: ``tags`` (``facet::value`` strings);
* the fixed split: ``int(md5(package).hexdigest(), 16) % 10`` is 0 -> test, 1 ->
  validation, else train.

The file is found by :func:`resolve_path`: an explicit path (absolute, or relative to the
working directory or to the repository root), else ``$MULTILABEL_JAX_DEBTAGS``, else
``<repo root>/../shared/data/debtags.jsonl.gz``.

Rebuilding the file from Debian's apt index files (RFC 822 stanzas)::

    apt-get -o Acquire::Languages=en update
    python -m multilabel_jax.data.debtags rebuild --lists-dir /var/lib/apt/lists \\
        --out debtags.jsonl.gz

Index files may be plain, ``.gz``, ``.xz`` or ``.lz4`` (the ``lz4`` Python package if
installed, else the ``lz4`` command).
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from multilabel_jax.data import jsonl
from multilabel_jax.data import text as text_lib

ENV_VAR = "MULTILABEL_JAX_DEBTAGS"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_PATH = "../shared/data/debtags.jsonl.gz"  # Relative to the repository root.
NUM_RECORDS = 30_300

_HOW_TO_GET = (
    "Pass the path (config field `path`), or set ${env} to it. The file ships in the "
    "project's shared/ folder (shared/data/debtags.jsonl.gz beside the repository); on a "
    "Debian machine it can be rebuilt with `python -m multilabel_jax.data.debtags rebuild "
    "--lists-dir /var/lib/apt/lists --out debtags.jsonl.gz` after `apt-get -o "
    "Acquire::Languages=en update` (see docs/DATA.md).").replace("{env}", ENV_VAR)


def resolve_path(path: Optional[str] = None) -> pathlib.Path:
  """The debtags file: ``path``, else ``$MULTILABEL_JAX_DEBTAGS``, else the default.

  A relative path is tried against the working directory, then the repository root.

  Raises:
    FileNotFoundError: naming the path(s) tried and how to get the file.
  """
  path = path or os.environ.get(ENV_VAR) or DEFAULT_PATH
  p = pathlib.Path(path).expanduser()
  tried = [p] if p.is_absolute() else [pathlib.Path.cwd() / p, REPO_ROOT / p]
  for candidate in tried:
    if candidate.is_file():
      return candidate.resolve()
  raise FileNotFoundError(
      f"debtags file not found: {path!r} (tried {', '.join(str(t) for t in tried)}). "
      + _HOW_TO_GET)


def split_of(package: str) -> str:
  """The fixed split of a package: md5 bucket 0 -> test, 1 -> validation, else train."""
  bucket = jsonl.md5_bucket(package, 10)
  return {0: "test", 1: "validation"}.get(bucket, "train")


def debtags_config(path: Optional[str] = None, **overrides) -> jsonl.JsonlConfig:
  """The JSONL configuration of debtags; ``overrides`` replace any field (e.g. ``text``)."""
  fields = dict(
      name="debtags", path=str(resolve_path(path)), split="hash", hash_field="package",
      hash_modulus=10, hash_test=(0,), hash_validation=(1,),
      text_fields=("package", "section", "synopsis", "description"),
      token_fields=("depends",), label_field="tags",
      text=text_lib.TextConfig(min_count=2, sublinear_tf=True, max_tokens=256))
  fields.update(overrides)
  return jsonl.JsonlConfig(**fields)


def load_debtags(path: Optional[str] = None, **overrides) -> jsonl.JsonlSource:
  """Loads debtags into memory (about 10 s). See :func:`debtags_config`."""
  return jsonl.load_jsonl(debtags_config(path, **overrides))


# Rebuilding from Debian index files.


def read_index_lines(path) -> Iterator[str]:
  """Lines (without newline) of an apt index file: plain, .gz, .xz or .lz4."""
  path = pathlib.Path(path)
  if path.suffix == ".lz4":
    data = _lz4_decompress(path)
  elif path.suffix == ".gz":
    data = gzip.decompress(path.read_bytes())
  elif path.suffix == ".xz":
    data = lzma.decompress(path.read_bytes())
  else:
    data = path.read_bytes()
  yield from data.decode("utf-8", errors="replace").splitlines()


def _lz4_decompress(path: pathlib.Path) -> bytes:
  try:
    import lz4.frame  # pylint: disable=g-import-not-at-top
    return lz4.frame.decompress(path.read_bytes())
  except ImportError:
    pass
  exe = shutil.which("lz4")
  if exe is None:
    raise RuntimeError(f"Cannot read {path}: install the `lz4` Python package or the `lz4` "
                       "command, or decompress it first (lz4 -dc).")
  return subprocess.run([exe, "-dc", str(path)], check=True, capture_output=True).stdout


def parse_stanzas(lines: Iterable[str]) -> Iterator[Dict[str, str]]:
  """RFC 822 stanzas (blank-line separated ``Field: value``) as dicts.

  Continuation lines (starting with a space or tab) are appended to the field's value after
  a newline, with the one leading space removed; a continuation line of only ``.`` stands
  for an empty line.
  """
  stanza: Dict[str, str] = {}
  field = None
  for line in lines:
    if not line.strip():
      if stanza:
        yield stanza
      stanza, field = {}, None
    elif line[0] in " \t":
      if field is None:
        continue  # Continuation without a field: ignore.
      body = line[1:]
      stanza[field] += "\n" + ("" if body.strip() == "." else body)
    else:
      name, _, value = line.partition(":")
      field = name.strip()
      stanza[field] = value.strip()
  if stanza:
    yield stanza


def parse_depends(value: str) -> List[str]:
  """``"a (>= 1) | b, c:any"`` -> ``["a", "c"]``: the first alternative of each clause,
  without version constraints, architecture qualifiers or restrictions."""
  out = []
  for clause in value.replace("\n", " ").split(","):
    first = clause.split("|")[0]
    name = re.split(r"[\s(\[<]", first.strip(), maxsplit=1)[0].split(":")[0]
    if name:
      out.append(name)
  return out


def _tags(value: str) -> List[str]:
  return sorted({t.strip() for t in value.replace("\n", " ").split(",") if t.strip()})


def build_records(packages_files: Sequence, translation_files: Sequence) -> List[dict]:
  """Joins ``Packages`` stanzas that have a ``Tag`` with ``Translation-en`` long
  descriptions on (package, ``Description-md5``). Packages keep index order; a package
  listed twice keeps its first stanza."""
  long_desc: Dict[tuple, str] = {}
  for path in translation_files:
    for st in parse_stanzas(read_index_lines(path)):
      if "Package" in st and "Description-en" in st:
        _, _, body = st["Description-en"].partition("\n")
        long_desc[(st["Package"], st.get("Description-md5", ""))] = body
  records, seen = [], set()
  for path in packages_files:
    for st in parse_stanzas(read_index_lines(path)):
      name = st.get("Package")
      if not name or "Tag" not in st or name in seen:
        continue
      seen.add(name)
      synopsis, _, inline_long = st.get("Description", "").partition("\n")
      description = long_desc.get((name, st.get("Description-md5", "")), inline_long)
      records.append({
          "package": name, "section": st.get("Section", ""), "synopsis": synopsis,
          "description": description,
          "depends": parse_depends(st.get("Depends", "")) + parse_depends(
              st.get("Pre-Depends", "")),
          "tags": _tags(st["Tag"])})
  return records


def find_index_files(lists_dir, suite: str = "bookworm", component: str = "main",
                     arch: str = "amd64"):
  """``(packages_files, translation_files)`` under an apt lists directory."""
  d = pathlib.Path(lists_dir)
  packages = sorted(d.glob(f"*_dists_{suite}_{component}_binary-{arch}_Packages*"))
  translations = sorted(d.glob(f"*_dists_{suite}_{component}_i18n_Translation-en*"))
  packages = [p for p in packages if p.is_file() and not p.name.endswith(".diff")]
  translations = [p for p in translations if p.is_file()]
  if not packages:
    raise FileNotFoundError(f"No *_dists_{suite}_{component}_binary-{arch}_Packages* file in "
                            f"{d}; run `apt-get -o Acquire::Languages=en update` first.")
  return packages, translations


def write_jsonl(records: Iterable[dict], out) -> int:
  """Writes records as (gzipped if ``*.gz``) JSON lines; returns how many."""
  out = pathlib.Path(out)
  opener = gzip.open if out.suffix == ".gz" else open
  n = 0
  with opener(out, "wt", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
      n += 1
  return n


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m multilabel_jax.data.debtags",
                                   description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  rebuild = sub.add_parser("rebuild", help="rebuild debtags.jsonl.gz from apt index files")
  rebuild.add_argument("--lists-dir", default="/var/lib/apt/lists")
  rebuild.add_argument("--suite", default="bookworm")
  rebuild.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  packages, translations = find_index_files(args.lists_dir, args.suite)
  if not translations:
    print(f"warning: no Translation-en index in {args.lists_dir}; long descriptions will be "
          "empty (run `apt-get -o Acquire::Languages=en update`).", file=sys.stderr)
  records = build_records(packages, translations)
  n = write_jsonl(records, args.out)
  tags = {t for r in records for t in r["tags"]}
  print(f"wrote {n} records, {len(tags)} distinct tags to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
