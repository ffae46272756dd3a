#!/usr/bin/env python3
"""What predicts that a top-1 hit is plausible? A diagnostic of issue #20/#22.

Asks every test study of a quickstart run, both ways, through `retrieve --index --json`
(the study's image, and its report, with its own positive labels given by `--labels`), and
prints, for the first hit, the AUROC of three would-be confidences against "the first hit
has exactly the query's positive label set": -d1 (nearer is surer), +u and -u (the query's
uncertainty, either way), plus the plausible rate by rank. A probability that is a
decreasing function of distance alone can only be useful where AUROC(-d1) is above 0.5.

    cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \\
        --study synth004197 --write-index runs/quickstart/index-medprobclip
    python3 scripts/probe_plausible.py runs/quickstart medprobclip runs/quickstart/index-medprobclip

Standard library only; reads runs/<...>/synthcxr/studies.csv and the test split.
"""
import csv
import json
import subprocess
import sys

META = {"study_id", "image_paths", "view_names", "findings", "impression", "patient_id", "split"}


def auroc(scores, labels):
    pos = sorted(s for s, y in zip(scores, labels) if y)
    neg = sorted(s for s, y in zip(scores, labels) if not y)
    if not pos or not neg:
        return float("nan")
    # Mann-Whitney U by merging the two sorted lists (ties count one half).
    wins, j, k = 0.0, 0, 0
    for p in pos:
        while j < len(neg) and neg[j] < p:
            j += 1
        k = j
        while k < len(neg) and neg[k] == p:
            k += 1
        wins += j + 0.5 * (k - j)
    return wins / (len(pos) * len(neg))


def main():
    run, method, index = sys.argv[1], sys.argv[2], sys.argv[3]
    binary = sys.argv[4] if len(sys.argv) > 4 else "target/release/examples/retrieve"
    rows = list(csv.DictReader(open(f"{run}/synthcxr/studies.csv", newline="")))
    labels = [c for c in rows[0] if c not in META]
    test = [r for r in rows if r["split"] == "test"]
    for side in ("image", "report"):
        first, unc, dist, by_rank = [], [], [], [0] * 10
        for r in test:
            positive = [l for l in labels if r[l] in ("1", "1.0")]
            query = (
                ["--image", f"{run}/synthcxr/" + r["image_paths"].split(";")[0]]
                if side == "image"
                else ["--report", r["findings"] or r["impression"]]
            )
            out = subprocess.run(
                [binary, "--checkpoint", f"{run}/{method}", "--index", index, *query,
                 "--labels", ";".join(positive) or "No Finding", "--k", "10", "--json"],
                capture_output=True, text=True, check=True,
            )
            a = json.loads(out.stdout)
            hits = a["hits"]
            first.append(bool(hits[0]["plausible"]))
            unc.append(a["uncertainty"])
            dist.append(hits[0]["distance"])
            for i, h in enumerate(hits[:10]):
                by_rank[i] += bool(h["plausible"])
        n = len(test)
        print(f"{side} queries: {n}, top-1 plausible {sum(first) / n:.3f}")
        print(f"  AUROC of -d1 {auroc([-d for d in dist], first):.3f}, "
              f"+u {auroc(unc, first):.3f}, -u {auroc([-u for u in unc], first):.3f}")
        print("  plausible by rank 1..10: " + " ".join(f"{c / n:.3f}" for c in by_rank))


if __name__ == "__main__":
    main()
