"""Class-sharded heads on 8 simulated CPU devices.

The checks run in a subprocess (tests/sharded_head_check.py) so that
``--xla_force_host_platform_device_count=8`` never affects the other test modules.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_head_matches_single_device():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_head_check.py")],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  # 4 losses x 2 meshes (value, grads, sharding, no all-gather) + 4 top-k x 2 meshes.
  assert "OK 16" in proc.stdout, proc.stdout
