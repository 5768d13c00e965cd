"""A stand-in for ``experiments.run`` in the launcher's tests: no JAX, only exit codes.

``--plan=0:0,1:hang``: what process i does: exit with that code, ``lateN`` (exit with code N
after 2 s), ``hang`` (sleep), ``term75`` (sleep; exit 75 on SIGTERM, as a preempted run
does), or ``jaxabort`` (print what JAX prints when it stops a process because another failed,
and abort). It first prints its arguments and XLA_FLAGS.
"""

import os
import signal
import sys
import time

from experiments import launch


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
  if what == "jaxabort":
    print(f"F1205 client.h:80] {launch.JAX_STOPPED_MARK}. This most likely indicates that "
          "another task died", flush=True)
    os.abort()
  if what.startswith("late"):
    time.sleep(2)
    what = what[len("late"):]
  sys.exit(int(what))


if __name__ == "__main__":
  main()
