#!/bin/bash
# The accelerator benchmarks in one go (issue 14, item 7): the main job's train step against
# the device's GEMM peak (train_step.py), then the head losses (head_losses.py) at sizes that
# fill a GPU. Writes JSON and logs into $OUT (default benchmarks/results/gpu).
#
#   bash benchmarks/gpu.sh            # on a machine with a GPU and jax[cuda]: about 6 minutes
#
# The device image this was run on has JAX, flax, optax, orbax and PyTorch but no TensorFlow,
# ml_collections or clu. Wheels of the last two can be put in .whl/ (pure Python). clu's
# metric writers import TensorFlow at import time, and neither benchmark uses them or
# tf.data (batches come from the source directly), so without TensorFlow they are stubbed
# out for these processes only.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import tensorflow" 2>/dev/null; then
  mkdir -p /tmp/no_tf
  cat > /tmp/no_tf/sitecustomize.py <<'PYEOF'
import sys, types
for name in ("clu.metric_writers", "clu.periodic_actions"):  # Import TensorFlow; unused here.
  sys.modules[name] = types.ModuleType(name)
PYEOF
  export PYTHONPATH=/tmp/no_tf:$PYTHONPATH
fi
export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia_smi.txt"
$PY -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$OUT/jax.txt"
timeout 180 $PY benchmarks/train_step.py --batch_sizes 256,4096 --out "$OUT/train_step.json" 2>&1 \
  | grep -v -i "warning" | tee "$OUT/train_step.log"
timeout 270 $PY benchmarks/head_losses.py --sizes 1024:512:131072,4096:1024:131072 \
  --losses bce,softmax --out "$OUT/head_losses.json" 2>&1 | tee "$OUT/head_losses.log"
