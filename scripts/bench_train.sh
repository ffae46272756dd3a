#!/usr/bin/env bash
# CPU training throughput, medprob against PyTorch: the quickstart's MedProbCLIP model, loss,
# optimiser and batch (16 studies: two 64-pixel views, two 48-token sections) trained for the
# same number of steps on the same synthetic batch with the same number of threads, by
# examples/bench_train.rs and by scripts/bench_train.py. Prints both JSON lines (with the mean
# milliseconds of forward, backward and optimiser per step) and the ratio of steps per second.
#
# usage: scripts/bench_train.sh [THREADS] [STEPS] [EXTRA FLAGS FOR BOTH, e.g. --batch 32]
#        (defaults: 2 threads, 100 timed steps after WARMUP=10 untimed ones)
#
# PyTorch comes from scripts/.venv, the venv of scripts/perf_core.py; it is created here from
# scripts/requirements-perf.txt if it cannot import torch (about 2.4 GB from PyPI, see
# perf_core.py's docstring). cargo's output goes to stderr; stdout has only the results.
set -euo pipefail
threads=${1:-2}
steps=${2:-100}
shift $(( $# < 2 ? $# : 2 ))
warmup=${WARMUP:-10}
cd "$(dirname "$0")/.."

py=scripts/.venv/bin/python
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "bench_train.sh: installing PyTorch into scripts/.venv (see scripts/perf_core.py)" >&2
  python3 -m venv scripts/.venv
  scripts/.venv/bin/pip install --no-deps -r scripts/requirements-perf.txt >&2
fi
cargo build --release --example bench_train >&2

# Both run with the same glibc allocator settings: medprob's binaries set them with mallopt
# (medprob::train::allocator::keep_freed_memory), PyTorch reads them from these variables.
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
# Every thread pool the two use, pinned to the same count.
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
common=(--threads "$threads" --steps "$steps" --warmup "$warmup" --breakdown "$@")
medprob=$(./target/release/examples/bench_train "${common[@]}")
echo "$medprob"
pytorch=$("$py" scripts/bench_train.py "${common[@]}")
echo "$pytorch"
"$py" - "$medprob" "$pytorch" <<'PY'
import json, sys
m, p = (json.loads(a) for a in sys.argv[1:3])
print(f"medprob/pytorch steps/s ratio: {m['steps_per_s'] / p['steps_per_s']:.2f}")
PY
