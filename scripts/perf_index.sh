#!/usr/bin/env bash
# Regenerate docs/perf_index.jsonl: the on-disk gallery index at 100k and 1M items,
# D = 512, CSD and MLS (write, open, single-query latency, batch throughput, memory).
# Needs about 16 GB of free disk for the 1M MLS index (written to a temporary folder and
# removed) and an otherwise idle machine for meaningful timings.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example perf_index
out=docs/perf_index.jsonl
tmp=$(mktemp)
for n in 100000 1000000; do
  for d in csd mls; do
    ./target/release/examples/perf_index --gallery "$n" --dim 512 --distance "$d" | tee -a "$tmp"
  done
done
mv "$tmp" "$out"
echo "wrote $out"
