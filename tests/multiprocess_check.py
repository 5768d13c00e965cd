"""Checks of the multi-process helpers, run as each process of a 2-process job (2 CPU devices
each) by tests/test_multiprocess.py through ``experiments.launch --module=...``.

Takes experiments.run's process flags; prints ``OK <checks>`` when every check passed.
"""

import sys

import jax
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P

from multilabel_jax import evaluate, multihost, scoring

flags.DEFINE_string("coordinator", None, "")
flags.DEFINE_integer("num_processes", None, "")
flags.DEFINE_integer("process_id", None, "")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  multihost.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                       heartbeat_timeout_s=10)
  p, n = jax.process_index(), jax.process_count()
  assert (n, jax.device_count(), jax.local_device_count()) == (2, 4, 2), jax.devices()
  checks = 0

  # Counts add up over processes.
  assert multihost.sum_over_processes({"a": p + 1, "b": 7}) == {"a": 3, "b": 14}
  checks += 1

  # A global batch: rows [4p, 4p + 4) on process p.
  mesh = jax.make_mesh((4,), ("data",))
  data = NamedSharding(mesh, P("data"))
  local = {"label_ids": np.arange(8, dtype=np.int32).reshape(4, 2) + 8 * p,
           "mask": np.array([True, True, True, p == 0])}

  def to_global(batch):
    return {k: jax.make_array_from_process_local_data(data, np.asarray(v))
            for k, v in batch.items()}

  # gather: sharded -> whole; replicated -> the value; process-local -> rows in process order.
  glob = to_global(local)
  want = np.arange(16, dtype=np.int32).reshape(8, 2)
  np.testing.assert_array_equal(scoring.gather(glob)["label_ids"], want)
  total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(glob["label_ids"])
  assert int(scoring.gather(total)) == want.sum()
  np.testing.assert_array_equal(scoring.gather(np.full((2,), p)), [0, 0, 1, 1])
  checks += 3

  # Scorer.rows: the labels and mask of the whole batch, in the order of the outputs.
  def one(state, batch, thresholds, class_thresholds=None):
    del state, thresholds, class_thresholds
    return batch["label_ids"] * 10

  scorer = scoring.Scorer(jax.jit(one, out_shardings=NamedSharding(mesh, P())), None,
                          to_device=to_global)
  labels, mask = scorer.rows(local)
  np.testing.assert_array_equal(labels, want)
  np.testing.assert_array_equal(mask, [True] * 7 + [False])
  np.testing.assert_array_equal(scorer.pass_one(local, None), want * 10)
  checks += 2

  # iterate: counts the global batch; a cut inside it must come from the pipeline.
  got = list(evaluate.iterate([local, local], 0, scorer.rows))
  assert [int(m.sum()) for _, _, m in got] == [7, 7]
  assert len(list(evaluate.iterate([local, local], 7, scorer.rows))) == 1
  try:
    list(evaluate.iterate([local], 5, scorer.rows))
    raise AssertionError("a cut inside a global batch did not raise")
  except ValueError as e:
    assert "eval_iter(split, max_examples)" in str(e)
  checks += 3
  print(f"OK {checks}", flush=True)


if __name__ == "__main__":
  sys.exit(app.run(main))
