"""Every ``python -m experiments...`` command that README.md, docs/*.md and the docstrings of
experiments/*.py print works.

``experiments.run`` commands run in their ``runlocal`` form (``:runlocal`` added to the
config argument, ``,runlocal`` after an argument that has one), with a fresh ``--workdir``
and a few overrides that keep them to seconds (:data:`SMALL`; :data:`FULL_SMALL` too for
``full``, which also shrinks the 131k-class simulator but keeps its fused head).
``experiments.sweep`` commands run as documented plus ``--dry_run``: they list the runs
still to do against the stored results and train nothing. ``experiments.predict`` commands
run as documented on a fresh ``jsonl.py:runlocal`` run (their ``--workdir``), with the
fixture's readable records as ``--input`` and a fresh ``--output``. ``experiments.launch``
commands run as documented, with the ``experiments.run`` arguments after ``--`` in their
runlocal form as above. Synopses with placeholders
(``--config=FILE[:ARG]``, ``<config>.py``, ``...``) are not commands and are skipped.
"""

import ast
import dataclasses
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python -m (experiments\.\w+)([^`\n]*)")
END = re.compile(r"\s(?:&&|\|\|?|;|#)")  # Where a command ends on its line.
PLACEHOLDER = re.compile(r"[<\[]|\.\.\.")
SMALL = ("--config.total_steps=3", "--config.eval.validation_examples=64",
         "--config.eval.test_examples=64")
FULL_SMALL = ("--config.data.options.num_classes=1000", "--config.data.options.num_validation=256",
              "--config.data.options.num_test=256", "--config.model_options.widths=(64,)",
              "--config.batch_size=64", "--config.eval.batch_size=128",
              "--config.head.fused_min_classes=1000")


@dataclasses.dataclass(frozen=True)
class Documented:
  module: str              # "experiments.run"
  args: Tuple[str, ...]
  where: Tuple[str, ...]   # "README.md:151", ...

  def __str__(self):
    return " ".join((self.module,) + self.args)


def _texts():
  """``(file, first line, text)`` of README.md, docs/*.md and every docstring in
  experiments/*.py."""
  for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
    yield str(path.relative_to(REPO)), 1, path.read_text()
  for path in sorted((REPO / "experiments").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=False)
        if doc:
          yield str(path.relative_to(REPO)), node.body[0].lineno, doc


def find_commands():
  """``(commands, synopses)``: the commands (deduplicated, with where each appears) and the
  forms with placeholders."""
  found, synopses = {}, []
  for name, first, text in _texts():
    lines = text.splitlines()
    i = 0
    while i < len(lines):
      start, line = i, lines[i]
      while line.endswith("\\") and i + 1 < len(lines):  # A backslash continuation.
        i += 1
        line = line[:-1] + " " + lines[i].strip()
      i += 1
      for match in COMMAND.finditer(line):
        args = END.split(match[2] + " ", maxsplit=1)[0].strip()
        if PLACEHOLDER.search(args):
          synopses.append(f"python -m {match[1]} {args}")
          continue
        key = (match[1], tuple(shlex.split(args)))
        found.setdefault(key, []).append(f"{name}:{first + start}")
  commands = [Documented(m, a, tuple(w)) for (m, a), w in found.items()]
  return commands, synopses


COMMANDS, SYNOPSES = find_commands()


def runnable(command: Documented, workdir) -> Tuple[str, ...]:
  """The arguments the test runs ``command`` with."""
  if command.module == "experiments.sweep":
    return command.args + (() if "--dry_run" in command.args else ("--dry_run",))
  if command.module == "experiments.predict":
    kept = tuple(a for a in command.args
                 if a.split("=", 1)[0] not in ("--workdir", "--input", "--output"))
    return (f"--workdir={workdir}", f"--input={workdir.parent / 'records.jsonl'}",
            f"--output={workdir.parent / 'labels.jsonl'}") + kept
  if command.module == "experiments.launch":  # Its own flags, then experiments.run's.
    split = command.args.index("--") + 1
    run_args = Documented("experiments.run", command.args[split:], command.where)
    return command.args[:split] + runnable(run_args, workdir)
  assert command.module == "experiments.run", f"no rule to run {command} cheaply"
  out, full = [], False
  for arg in command.args:
    if arg.startswith("--config="):
      path, _, spec = arg.split("=", 1)[1].partition(":")
      parts = [p for p in spec.split(",") if p]  # hashtag_pretrain.parse_arg's format.
      full = "full" in parts
      arg = f"--config={path}:{','.join(parts + ['runlocal'] * ('runlocal' not in parts))}"
    out.append(arg)
  return tuple(out) + SMALL + (FULL_SMALL if full else ()) + (f"--workdir={workdir}",)


def test_the_documented_commands_are_found():
  names = {str(c) for c in COMMANDS}
  assert "experiments.run --config=hashtag_pretrain.py" in names
  assert "experiments.run --config=debtags.py:runlocal" in names
  assert "experiments.sweep --out=results --dry_run" in names
  assert ("experiments.run --config=debtags.py --config.seed=1 --workdir=runs/debtags_s1"
          in names)  # README: a seed of the shipped config, stored for RESULTS.md.
  assert "experiments.predict --workdir=W --input=records.jsonl --output=labels.jsonl" in names
  assert ("experiments.launch --num_processes=2 --devices_per_process=4 -- "
          "--config=hashtag_pretrain.py:runlocal --config.mesh.classes=2") in names
  assert {c.module for c in COMMANDS} == {"experiments.run", "experiments.sweep",
                                          "experiments.predict", "experiments.launch"}
  # README (2: training, one process of a multi-process run), ARCHITECTURE.
  assert len(SYNOPSES) == 3 and all("--config=" in s for s in SYNOPSES)


def _is_json(line: str) -> bool:
  try:
    json.loads(line)
  except ValueError:
    return False
  return True


def _needs_debtags(args) -> bool:
  return any("debtags.py" in a for a in args) and not any(
      a.startswith("--config.data.options.path=") for a in args)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command_runs(command, tmp_path):
  if _needs_debtags(command.args):
    from multilabel_jax.data import debtags  # pylint: disable=g-import-not-at-top
    try:
      debtags.resolve_path()
    except FileNotFoundError as e:
      pytest.skip(f"debtags data not available: {e}")
  for arg in command.args:  # A data file beside the repository (../shared/data), as debtags.
    if arg.startswith("--config.data.options.path=") and not (
        REPO / arg.split("=", 1)[1]).exists():
      pytest.skip(f"data not available: {arg.split('=', 1)[1]} (from {REPO})")
  args = runnable(command, tmp_path / "workdir")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  if command.module == "experiments.predict":  # A run to predict with, and its records.
    subprocess.run([sys.executable, "-m", "experiments.run", "--config=jsonl.py:runlocal",
                    f"--workdir={tmp_path / 'workdir'}"], cwd=REPO, capture_output=True,
                   timeout=900, env=env, check=True)
    lines = (REPO / "tests" / "fixtures" / "tiny_posts.jsonl").read_text().splitlines()
    (tmp_path / "records.jsonl").write_text("".join(l + "\n" for l in lines if _is_json(l)))
  out = subprocess.run([sys.executable, "-m", command.module, *args], cwd=REPO,
                       capture_output=True, text=True, timeout=900, env=env)
  assert out.returncode == 0, (f"{command} (in {', '.join(command.where)}), run as "
                               f"{shlex.join(args)}:\n{out.stderr[-4000:]}{out.stdout[-3000:]}")
  if command.module in ("experiments.run", "experiments.launch"):
    assert (tmp_path / "workdir" / "report.json").exists()
  elif command.module == "experiments.predict":
    written = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert len(written) == len((tmp_path / "records.jsonl").read_text().splitlines())
    assert "experiments.predict: " in out.stderr and " 0 skipped" in out.stderr
  else:
    assert "sweep: 0 runs done" in out.stdout
