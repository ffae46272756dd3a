#!/usr/bin/env bash
# Builds medprob's CUDA binaries on a machine without a GPU, for one prepared run on a GPU
# machine that has no Rust (docs/PERFORMANCE.md, "GPU").
#
# usage: scripts/gpu_check.sh build   # here: toolchain, release build, gpu-bundle/
#        scripts/gpu_check.sh env     # print the toolchain exports (eval "$(... env)")
#        then, on the GPU machine, from the repository root:  bash gpu-bundle/run.sh
#
# The toolchain comes from PyPI's NVIDIA wheels, installed into their own venv outside the
# repository ($MEDPROB_CUDA_VENV, default ~/.cache/medprob/cuda-venv), pinned to CUDA 13.0:
#
# * The GPU machines run driver 580 (CUDA 13.0). candle's kernels and medprob's MLS kernel
#   are embedded as PTX, which the driver compiles when a module is loaded, and a driver
#   rejects PTX whose ISA version is newer than its own (CUDA_ERROR_UNSUPPORTED_PTX_VERSION):
#   nvcc 13.0 writes `.version 9.0`, which driver 13.0 accepts; nvcc 13.4 would not do.
#   The build checks every embedded PTX file's `.version` against MAX_PTX_ISA below.
# * cudarc (candle's CUDA bindings) takes its API version from `nvcc --version`
#   (CUDARC_CUDA_VERSION pins it to 13.0 here), so it calls no driver function that 13.0
#   lacks.
# * candle links dynamically (cudarc's `dynamic-linking`): -lcuda -lcublas -lcublasLt
#   -lcurand -lnvrtc -lcudart. The wheels ship only versioned names (libcublas.so.13), so
#   unversioned links are made beside them, and no wheel ships libcuda (it comes with the
#   driver), so a stub libcuda.so with soname libcuda.so.1 is generated from the function
#   names in cudarc's driver bindings. It is used at link time only; on the GPU machine the
#   binaries load the driver's libcuda.so.1 and PyTorch's CUDA 13 libraries (run.sh sets
#   LD_LIBRARY_PATH to them). No CUDA library goes into the bundle.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MEDPROB_CUDA_VENV:-$HOME/.cache/medprob/cuda-venv}
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
# PTX ISA of CUDA 13.0, the newest the GPU machines' driver loads.
MAX_PTX_ISA=9.0
BUNDLE=gpu-bundle
MAX_BUNDLE_MIB=60

say() { echo "gpu_check: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# CUDA_HOME inside the venv (the wheels' shared nvidia/cu13 prefix).
cuda_home() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import os, nvidia
print(os.path.join(list(nvidia.__path__)[0], "cu13"))
PY
}

# Installs the wheels if missing, makes the link-time names and the libcuda stub, and
# exports what cudarc, candle-kernels and medprob-core's build script read.
setup_toolchain() {
  local home
  home=$(cuda_home || true)
  if [ -z "$home" ] || [ ! -x "$home/bin/nvcc" ]; then
    say "installing the CUDA 13.0 toolchain wheels into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${WHEELS[@]}" >&2
    home=$(cuda_home) || die "the nvidia wheels installed into $VENV but 'import nvidia' fails"
  fi
  [ -x "$home/bin/nvcc" ] || die "no nvcc in $home/bin after installing ${WHEELS[*]}"

  local lib target
  for lib in cublas cublasLt cudart curand nvrtc; do
    target=$(cd "$home/lib" && ls "lib$lib.so."[0-9]* 2>/dev/null | head -n 1)
    [ -n "$target" ] || die "no lib$lib.so.* in $home/lib: is a wheel of ${WHEELS[*]} missing?"
    ln -sfn "$target" "$home/lib/lib$lib.so"
  done

  if [ ! -e "$home/lib/stubs/libcuda.so" ]; then
    cargo fetch >&2
    local version src
    version=$(awk '/^name = "cudarc"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$version" 2>/dev/null | head -n 1)
    [ -f "$src/src/driver/sys/mod.rs" ] || die "cudarc $version's sources not found after cargo fetch"
    mkdir -p "$home/lib/stubs"
    # Every driver function cudarc can call, as a symbol that returns CUDA_ERROR_UNKNOWN.
    grep -oP '^\s+fn \Kcu\w+(?=\()' "$src/src/driver/sys/mod.rs" | sort -u |
      awk '{ print "int " $1 "(void) { return 999; }" }' >"$home/lib/stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib/stubs/libcuda.so" \
      "$home/lib/stubs/libcuda_stub.c"
    say "link-time stub $home/lib/stubs/libcuda.so ($(wc -l <"$home/lib/stubs/libcuda_stub.c") symbols)"
  fi

  export CUDA_HOME=$home
  export PATH="$home/bin:$PATH"
  export CUDARC_CUDA_VERSION=13000
  # H100 and H200 are both sm_90 (candle-kernels compiles its static MoE kernels for it).
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
}

# Checks the `.version` of every PTX file in the build-script output folders listed in
# cargo's JSON messages on stdin (those of the build that made the binaries).
check_ptx_isa() {
  local dirs newest
  dirs=$(python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "build-script-executed" and m.get("out_dir"):
        print(m["out_dir"])' | sort -u)
  newest=$(for d in $dirs; do find "$d" -maxdepth 1 -name '*.ptx'; done |
    xargs -r grep -h -m1 '^\.version' | awk '{ print $2 }' | sort -V | tail -n 1)
  [ -n "$newest" ] || die "no PTX files found in the build's output folders"
  if [ "$(printf '%s\n%s\n' "$newest" "$MAX_PTX_ISA" | sort -V | tail -n 1)" != "$MAX_PTX_ISA" ]; then
    die "embedded PTX has ISA $newest, newer than $MAX_PTX_ISA (driver 580 / CUDA 13.0 would reject it)"
  fi
  say "embedded PTX ISA: newest .version $newest (driver limit $MAX_PTX_ISA)"
}

build() {
  setup_toolchain
  say "nvcc: $(nvcc --version | tail -n 2 | head -n 1)"

  say "building the release examples bench_gpu and bench_train with --features cuda"
  cargo build --release --features cuda --example bench_gpu --example bench_train >&2

  say "building the GPU parity tests (medprob-core, --features cuda)"
  local json test_exe
  json=$(cargo test --release --features cuda -p medprob-core --test gpu_parity --no-run \
    --message-format=json)
  test_exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_parity":
        print(m["executable"])')
  [ -x "$test_exe" ] || die "could not find the gpu_parity test executable in cargo's JSON output"

  printf '%s\n' "$json" | check_ptx_isa

  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin"
  cp "$test_exe" "$BUNDLE/bin/gpu_parity"
  cp target/release/examples/bench_gpu target/release/examples/bench_train "$BUNDLE/bin/"
  strip "$BUNDLE"/bin/*
  cp scripts/gpu_bench.py scripts/bench_train.py "$BUNDLE/"
  write_run_sh >"$BUNDLE/run.sh"
  chmod +x "$BUNDLE/run.sh"
  {
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "nvcc: $(nvcc --version | tail -n 2 | head -n 1)"
    echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION"
    echo "needed libraries (bench_gpu):"
    readelf -d "$BUNDLE/bin/bench_gpu" | awk '/NEEDED/ { print "  " $NF }'
    echo "newest symbol versions needed (all binaries):"
    objdump -T "$BUNDLE"/bin/* | grep -oE '(GLIBC|GLIBCXX|CXXABI)_[0-9.]+' | sort -u -V |
      awk -F_ '{ v[$1] = $0 } END { for (k in v) print "  " v[k] }'
  } >"$BUNDLE/BUILD_INFO"
  # ~50 MB each, mostly candle's embedded PTX and SASS; xz brings each to ~6 MB. run.sh
  # unpacks them with Python's lzma (the GPU machine may have no xz).
  say "compressing the binaries (xz)"
  xz -6 -T0 "$BUNDLE"/bin/*

  local mib
  mib=$(du -sm "$BUNDLE" | awk '{ print $1 }')
  ((mib < MAX_BUNDLE_MIB)) || die "$BUNDLE is $mib MiB, over the $MAX_BUNDLE_MIB MiB limit"
  say "$BUNDLE is $mib MiB:"
  ls -l "$BUNDLE" "$BUNDLE/bin" >&2
  echo
  echo "On the GPU machine, with $BUNDLE/ carried (it is git-ignored), run from the repository root:"
  echo "  bash $BUNDLE/run.sh"
}

# The script run on the GPU machine: parity tests, then the benchmarks, under 8 minutes.
write_run_sh() {
  cat <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there): the CUDA parity tests, medprob's GPU
# benchmarks, the same with PyTorch, and the training-step comparison. Everything goes to
# $OUT/gpu_check.log, the JSON result lines also to $OUT/gpu_results.jsonl. Made by
# scripts/gpu_check.sh build; see docs/PERFORMANCE.md, "GPU".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
log=$OUT/gpu_check.log
results=$OUT/gpu_results.jsonl
: >"$log"
: >"$results"
exec > >(tee -a "$log") 2>&1

# PyTorch's interpreter: $MEDPROB_PYTHON, else the GPU machines' /opt/torch venv, else python3.
py=${MEDPROB_PYTHON:-python3}
[ -z "${MEDPROB_PYTHON:-}" ] && [ -x /opt/torch/.venv/bin/python ] && py=/opt/torch/.venv/bin/python
echo "== $(date -u +%H:%M:%S) machine"
cat "$here/BUILD_INFO"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' || true

# PyTorch's CUDA 13 libraries (cuBLAS, cuRAND, NVRTC, the runtime) serve the Rust binaries.
nvroot=$("$py" -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [ -n "$nvroot" ]; then
  libs=$(ls -d "$nvroot"/*/lib "$nvroot"/cu13/lib 2>/dev/null | sort -u | paste -sd: -)
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

# The binaries travel xz-compressed; unpack them into local scratch space.
bin=${TMPDIR:-/tmp}/medprob-gpu-bin
mkdir -p "$bin"
"$py" - "$here/bin" "$bin" <<'PY' || { echo "run.sh: could not unpack the binaries"; exit 1; }
import lzma, os, shutil, sys
src, dst = sys.argv[1:3]
for name in sorted(os.listdir(src)):
    if name.endswith(".xz"):
        out = os.path.join(dst, name[:-3])
        with lzma.open(os.path.join(src, name)) as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g)
        os.chmod(out, 0o755)
        print("unpacked", out, os.path.getsize(out), "bytes")
PY

if ldd "$bin/bench_gpu" | grep 'not found'; then
  echo "run.sh: the libraries above were not found; the Rust binaries cannot start"
fi

passed=0
failed=0
step() { # step NAME SECONDS COMMAND... : runs it, JSON lines on stdout go to $results
  local name=$1 limit=$2 start status
  shift 2
  echo "== $(date -u +%H:%M:%S) $name"
  start=$(date +%s)
  timeout "$limit" "$@" | tee >(grep '^{' >>"$results")
  status=${PIPESTATUS[0]}
  echo "-- $name: exit $status after $(($(date +%s) - start)) s"
  if [ "$status" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

step "parity tests (CUDA against CPU)" 120 "$bin/gpu_parity" --test-threads=1 --nocapture
step "bench_gpu (medprob, candle CUDA)" 100 "$bin/bench_gpu" --device cuda
step "gpu_bench.py (PyTorch, same sizes)" 100 "$py" "$here/gpu_bench.py"
train=(--device cuda --steps 50 --warmup 10 --batch 128 --breakdown --encode 8192)
step "bench_train (medprob, CUDA)" 60 "$bin/bench_train" "${train[@]}"
step "bench_train.py (PyTorch, CUDA)" 60 "$py" "$here/bench_train.py" "${train[@]}"
echo "gpu_check: $passed passed, $failed failed"
RUN
}

case "${1:-}" in
build) build ;;
env)
  setup_toolchain
  echo "export CUDA_HOME='$CUDA_HOME' PATH='$PATH' CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
  ;;
*)
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
