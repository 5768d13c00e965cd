"""``experiments.run`` as one process of a test job, recording what the process does.

Started by tests/test_multiprocess.py, through ``experiments.launch --module=
tests.multiprocess_worker`` or alone (one process); it takes experiments.run's arguments.
Set by the environment:

* ``MLJ_TEST_RECORD=DIR``: at exit, ``DIR/process-<i>.json`` holds the files under the
  workdir that the process opened for writing from Python (``sys.addaudithook``: every
  ``open``), and the example indices its input pipeline read: ``train`` ``{step: [...]}``,
  ``eval`` ``{split: [...]}`` (the rows its masks keep).
* ``MLJ_TEST_STEP_SLEEP=S``: sleep S seconds before each training step, so that a test can
  signal a run in the middle of its steps.
* ``MLJ_TEST_CRASH_AFTER=N``: ``train_and_evaluate(..., crash_after_step=N)``; with
  ``MLJ_TEST_CRASH_PROCESS=I``, in process I only.
"""

import functools
import json
import os
import pathlib
import sys
import time


def _flag(name, default=None):
  return next((a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")), default)


def main():
  from experiments import run  # pylint: disable=g-import-not-at-top
  from multilabel_jax import train  # pylint: disable=g-import-not-at-top
  from multilabel_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  process = int(_flag("process_id", 0))
  root = os.path.abspath(_flag("workdir"))
  writes, train_rows, eval_rows = set(), {}, {}

  def audit(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
      return
    path, mode, flags = args
    writing = any(c in mode for c in "wax+") if mode else bool(
        (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    path = os.path.abspath(os.fsdecode(path))
    if writing and path.startswith(root + os.sep):
      writes.add(os.path.relpath(path, root))

  record = os.environ.get("MLJ_TEST_RECORD")
  if record:
    sys.addaudithook(audit)
    train_indices, eval_indices = (pipeline.InputPipeline.train_indices,
                                   pipeline.InputPipeline.eval_indices)

    def recorded_train(self, step):
      out = train_indices(self, step)
      train_rows[int(step)] = out.tolist()
      return out

    def recorded_eval(self, split, batch, max_examples=0):
      idx, mask = eval_indices(self, split, batch, max_examples)
      eval_rows.setdefault(split, {})[int(batch)] = idx[mask].tolist()
      return idx, mask

    pipeline.InputPipeline.train_indices = recorded_train
    pipeline.InputPipeline.eval_indices = recorded_eval

  sleep = float(os.environ.get("MLJ_TEST_STEP_SLEEP", 0))
  if sleep:
    train_iter = pipeline.InputPipeline.train_iter

    def slow_iter(self, *args, **kwargs):
      for batch in train_iter(self, *args, **kwargs):
        time.sleep(sleep)
        yield batch

    pipeline.InputPipeline.train_iter = slow_iter
  if os.environ.get("MLJ_TEST_CRASH_AFTER") and int(
      os.environ.get("MLJ_TEST_CRASH_PROCESS", process)) == process:
    train.train_and_evaluate = functools.partial(
        train.train_and_evaluate, crash_after_step=int(os.environ["MLJ_TEST_CRASH_AFTER"]))
  try:
    run.run()
  finally:
    if record:
      out = {"process": process, "writes": sorted(writes), "train": train_rows,
             "eval": {s: [i for b in sorted(r) for i in r[b]] for s, r in eval_rows.items()}}
      pathlib.Path(record, f"process-{process}.json").write_text(json.dumps(out))


if __name__ == "__main__":
  main()
