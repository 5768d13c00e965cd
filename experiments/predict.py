r"""Tags records with a trained run: one JSON line out per JSON line in, in order.

  python -m experiments.predict --workdir=W --input=records.jsonl --output=labels.jsonl
  python -m experiments.predict --workdir=W --input=new.jsonl --output=out.jsonl \
    --decoder=average_k --top_k=5 --batch_size=512 --strict

Each input line is a record with the data source's own fields (debtags: ``package``,
``section``, ``synopsis``, ``description``, ``depends``; a JSONL run: its text fields;
hashtag_world: ``{"features": [...]}``; an XMC run reads its format's lines, ``f:v f:v``).
Each output line holds the input's id field when
it has one (``package``, ``id``), its 1-based ``line``, the ``labels`` and ``scores`` of
the decoder (default: the one the run chose on validation, ``calibration.json``), with
``--top_k=K`` the K best labels (``top_k``), ``"no_known_tokens": true`` for a text with no
word of the vocabulary (its labels come from the biases), and ``num_truncated`` when more
labels qualified than a set holds.

A line that is not JSON, not an object, or lacks every text field (or an input array) gets
``{"line": n, "error": "..."}``, is reported on stderr and counted in the summary; with
``--strict`` the first one stops the run (exit 1) naming its line. A workdir without a
checkpoint or calibration, a config or vocabulary that does not match the checkpoint, and
an unknown decoder stop before any line is read (exit 2). Progress (records/s, ETA) goes
to stderr.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import pathlib
import sys
from typing import Iterator, List, Optional, Tuple

USAGE_EXIT_CODE = 2
DATA_EXIT_CODE = 1


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m experiments.predict",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the run's workdir")
  parser.add_argument("--input", required=True, help="JSON lines (.jsonl or .jsonl.gz)")
  parser.add_argument("--output", required=True, help="where the JSON lines go ('-': stdout)")
  parser.add_argument("--decoder", default=None, help="a decoder of the run's report")
  parser.add_argument("--top_k", type=int, default=None, help="also the K best labels")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: last)")
  parser.add_argument("--strict", action="store_true", help="stop at the first bad line")
  args = parser.parse_args(argv)
  if args.batch_size < 1 or (args.top_k is not None and args.top_k < 1):
    parser.error("--batch_size and --top_k must be >= 1")
  return args


def _quiet_orbax(record) -> bool:
  """Drops orbax's notes on reading a checkpoint read-only; its errors still show."""
  return record.levelno >= logging.ERROR or "orbax" not in record.pathname


def _lines(path: str) -> Iterator[Tuple[int, str]]:
  from multilabel_jax.data import jsonl  # pylint: disable=g-import-not-at-top
  with jsonl.open_text(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        yield number, line


def _count_lines(path: str) -> int:
  return sum(1 for _ in _lines(path))


class Summary:
  """Counts of the run, printed to stderr at the end."""

  def __init__(self):
    self.records = self.predicted = self.no_known_tokens = 0
    self.skipped = collections.Counter()

  def line(self, args) -> str:
    skipped = sum(self.skipped.values())
    why = (" (" + ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items())) + ")"
           if skipped else "")
    return (f"experiments.predict: {self.records} records, {self.predicted} predicted, "
            f"{skipped} skipped{why}, {self.no_known_tokens} with no known token; wrote "
            f"{args.output}")


def _kind(problem: str) -> str:
  if problem.startswith("invalid JSON"):
    return "not JSON"
  if problem.startswith("expected a JSON object"):
    return "not an object"
  if problem.startswith("none of the text fields"):
    return "without any text field"
  return "unreadable"


def predict_file(predictor, args, out, progress) -> Summary:
  """Streams ``args.input`` through ``predictor`` in batches, writing one line per line."""
  from multilabel_jax import inference  # pylint: disable=g-import-not-at-top
  from multilabel_jax.data import jsonl  # pylint: disable=g-import-not-at-top
  summary = Summary()
  id_field = predictor.reader.id_field
  pending: List[Tuple[int, Optional[dict], object, Optional[str]]] = []

  def flush():
    docs = [doc for _, _, doc, error in pending if error is None]
    results = iter(predictor.predict(predictor.reader.batch(docs), args.decoder, args.top_k)
                   if docs else [])
    for number, record, _, error in pending:
      row = {"line": number}
      if isinstance(record, dict) and id_field and id_field in record:
        row[id_field] = record[id_field]
      if error is None:
        row.update(next(results))
        summary.predicted += 1
        summary.no_known_tokens += bool(row.get("no_known_tokens"))
      else:
        row["error"] = error
      out.write(json.dumps(row, ensure_ascii=False) + "\n")
    progress.update(len(pending))
    pending.clear()

  for number, line in _lines(args.input):
    summary.records += 1
    record, doc, error = None, None, None
    try:
      raw = getattr(predictor.reader, "reads_lines", False)  # XMC: its own line format.
      record = line if raw else jsonl.decode_line(line)
      doc = predictor.reader.document(record)
    except ValueError as e:  # inference.RecordError is one.
      error = str(e)
    if error is not None:
      where = f"{args.input}:{number}"
      if args.strict:
        raise inference.RecordError(f"{where}: {error}")
      summary.skipped[_kind(error)] += 1
      progress.write(f"experiments.predict: {where}: skipped: {error}", file=sys.stderr)
    pending.append((number, record, doc, error))
    if len(pending) >= args.batch_size:
      flush()
  flush()
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  if not pathlib.Path(args.input).is_file():
    print(f"experiments.predict: error: --input {args.input}: no such file", file=sys.stderr)
    return USAGE_EXIT_CODE
  # Imported here: jax and orbax take seconds, and a bad command line fails before.
  import tqdm  # pylint: disable=g-import-not-at-top
  from multilabel_jax import inference  # pylint: disable=g-import-not-at-top
  logging.getLogger("absl").addFilter(_quiet_orbax)
  try:
    predictor = inference.Predictor.from_workdir(args.workdir, args.step,
                                                 batch_size=args.batch_size)
    if args.decoder is not None:
      predictor.check_decoder(args.decoder)
  except (FileNotFoundError, ValueError) as e:
    print(f"experiments.predict: error: {e}", file=sys.stderr)
    return USAGE_EXIT_CODE
  out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
  try:
    with tqdm.tqdm(total=_count_lines(args.input), unit="rec", file=sys.stderr,
                   desc="predict", dynamic_ncols=True) as progress:
      summary = predict_file(predictor, args, out, progress)
  except inference.RecordError as e:
    print(f"experiments.predict: error: {e}", file=sys.stderr)
    return DATA_EXIT_CODE
  finally:
    if out is not sys.stdout:
      out.close()
  print(summary.line(args), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
