#!/bin/bash
# The tuned sweep's runs on a machine with one GPU (issue 11): N sweep processes share the
# device and the runs (`--claims`: each takes the next unclaimed run), each storing its runs
# as they finish, as on the CPU.
#
#   OUT=/tmp/gpu_results bash experiments/sweep_on_gpu.sh hw,ambiguity 8
#
# Arguments: the sweep's --only filter (default: hw,ambiguity, the hashtag_world rows) and
# the number of processes (default 8). Runs already stored in results/ are copied to
# $OUT/results first and skipped (RESULTS: another folder of them); new runs land in
# $OUT/results/<group>/ (copy them back into results/). PRESET (default tuned) picks the
# sweep's preset. ARCHIVE=path.tgz also keeps a tarball of $OUT's results and logs there,
# rewritten every minute and at the end, for machines that return one file more easily than
# hundreds (it is complete up to the last minute if the job is killed).
#
# The device image this was written for has JAX (CUDA), flax, optax and orbax but no
# TensorFlow, ml_collections or clu: wheels of the last two (pure Python) and of wrapt (clu's
# writers need it) are installed from .whl/ if it exists. Without TensorFlow the runs read
# their batches without tf.data (`--prefetch=0`, the same batches) and clu's TensorBoard
# writer is replaced by a no-op for these processes only; the metrics still go to the log and
# the stored report. Matrix products run in true float32 (`JAX_DEFAULT_MATMUL_PRECISION=
# highest`), as on the CPU, not in TF32. Measured on an H200 with 12 processes, before each
# had its share of BLAS threads: 5.2-6.6 steps/s each at hashtag_world 20k
# (docs/PERFORMANCE.md), host-bound.
set -u -o pipefail
cd "$(dirname "$0")/.."
ONLY=${1:-hw,ambiguity}
PRESET=${PRESET:-tuned}
PROCS=${2:-8}
OUT=${OUT:-/tmp/gpu_sweep}
mkdir -p "$OUT/results" "$OUT/logs"
CLAIMS=$(mktemp -d /tmp/sweep_claims.XXXXXX)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_DEFAULT_MATMUL_PRECISION=highest
# Each process's NumPy BLAS (the simulator's batches, the oracle) gets its share of the host's
# cores: N processes with a thread per core each would oversubscribe it N times.
THREADS=$(( $(nproc) / PROCS > 0 ? $(nproc) / PROCS : 1 ))
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
PY=${PYTHON:-python3}
if [ -d .whl ] && ! $PY -c "import ml_collections, clu, wrapt" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PREFETCH=()
if ! $PY -c "import tensorflow" 2>/dev/null; then
  PREFETCH=(--prefetch=0)
  mkdir -p /tmp/no_tf
  cat > /tmp/no_tf/sitecustomize.py <<'PYEOF'
import sys, types
class SummaryWriter:  # clu's imports TensorFlow: every method a no-op here.
  def __init__(self, *args, **kwargs):
    pass
  def __getattr__(self, name):
    return lambda *args, **kwargs: None
module = types.ModuleType("clu.metric_writers.summary_writer")
module.SummaryWriter = SummaryWriter
sys.modules[module.__name__] = module  # Before clu.metric_writers imports its own.
PYEOF
  export PYTHONPATH=/tmp/no_tf:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$OUT/logs/jax.txt"
for group in "${RESULTS:-results}"/tuned_*; do
  [ -d "$group" ] && mkdir -p "$OUT/results/${group##*/}" \
    && cp -n "$group"/*.json "$OUT/results/${group##*/}/" 2>/dev/null
done
archive() {
  [ -n "${ARCHIVE:-}" ] && tar czf "$ARCHIVE.tmp" -C "$OUT" results logs \
    && mv "$ARCHIVE.tmp" "$ARCHIVE"
}
if [ -n "${ARCHIVE:-}" ]; then
  (while sleep 60; do archive; done) &
  ARCHIVER=$!
fi
PIDS=()
for ((i = 0; i < PROCS; i++)); do
  $PY -m experiments.sweep --preset="$PRESET" --out="$OUT/results" --only="$ONLY" \
    --claims="$CLAIMS" --scratch=/tmp "${PREFETCH[@]}" > "$OUT/logs/worker$i.log" 2>&1 &
  PIDS+=($!)
  sleep 2  # Staggered: the first claims are taken in order.
done
wait "${PIDS[@]}"
[ -n "${ARCHIVER:-}" ] && kill "$ARCHIVER"
archive
grep -h "test P@1" "$OUT"/logs/worker*.log | sort || true
