#!/usr/bin/env bash
# Run every fuzz target for a bounded time and report how many inputs each executed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default: 60 s, all targets)
#
# Corpora live in fuzz/corpus/<target>/ (new interesting inputs are added there; commit
# them), seeds in fuzz/seeds/<target>/. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script fail: turn it into a regression test.
# Summary lines ("<target> <executions> <seconds> <corpus size>") go to
# fuzz/last_run.txt, which docs/RELIABILITY.md quotes.
#
# cargo-fuzz drives libFuzzer with nightly-only `-Z` flags (sanitizer, coverage); this
# machine has only the stable toolchain, which accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(study_csv report_sections iu_xml image_decode train_config)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/logs
: > fuzz/last_run.txt
cd fuzz
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log="logs/$t.log"
  if ! cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=4096 -malloc_limit_mb=2048 \
      -max_len=65536 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    echo "FUZZ FAILURE in $t — see fuzz/$log and fuzz/artifacts/$t/" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(find "corpus/$t" -type f | wc -l)
  echo "$t ${execs:-0} $seconds $corpus" | tee -a last_run.txt
done
