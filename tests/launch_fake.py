"""A stand-in for ``experiments.run`` in the launcher's tests: no JAX, only exit codes.

``--plan=0:0,1:hang``: what process i does: exit with that code, ``hang`` (sleep), or
``term75`` (sleep; exit 75 on SIGTERM, as a preempted run does). It first prints its
arguments and XLA_FLAGS.
"""

import os
import signal
import sys
import time


def main():
  args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
  index = int(args["process_id"])
  what = dict(p.split(":") for p in args["plan"].split(",")).get(str(index), "0")
  if what == "term75":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
  print(f"process {index} of {args['num_processes']} at {args['coordinator']} "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS')}", flush=True)
  if what in ("hang", "term75"):
    time.sleep(600)
  sys.exit(int(what))


if __name__ == "__main__":
  main()
