#!/usr/bin/env python3
"""Golden reference values for medprob's evaluation metrics.

Writes testdata/golden/metrics.json: random inputs (numpy default_rng(20261127)) together
with reference outputs for
  * AUROC            -- sklearn.metrics.roc_auc_score (ties count 1/2, as Mann-Whitney U);
  * calibration      -- ECE with equal-width and equal-mass bins, Brier score, NLL
                        (plain numpy; Brier and NLL cross-checked against sklearn);
  * risk-coverage    -- AURC, E-AURC and selective risk at coverages 1.0, 0.9, ..., 0.1
                        (plain numpy).
Inputs are stored next to the outputs so a Rust test can recompute everything. Floats are
written with Python's shortest round-trip repr of the float64 values.

Definitions (B = n_bins = 15, N = number of samples):
  equal-width ECE: bin b = clip(ceil(p * B) - 1, 0, B - 1), computed in float64, i.e. bins
      (b/B, (b+1)/B] with p == 0 in bin 0. ECE = sum over non-empty bins of
      (n_b / N) * |mean(correct in b) - mean(p in b)|. The script asserts no p lies within
      1e-9 of a bin edge (p * B within 1e-9 of an integer), so the golden value does not
      depend on how an implementation rounds at edges.
  equal-mass ECE: order = argsort(p, stable); chunks = np.array_split(order, B) (the first
      N % B chunks hold N // B + 1 items, the rest N // B); empty chunks are skipped; same
      ECE formula over the chunks.
  Brier = mean((p - correct)^2).
  NLL = -mean(correct * log(p) + (1 - correct) * log(1 - p)), p clipped to [1e-12, 1 - 1e-12]
      (generated p lie in [0.001, 0.999], so the clip never acts).
  AURC: sort by confidence descending; within each group of exactly equal confidence every
      loss is replaced by the group's mean loss. L = resulting losses, r_i = sum(L[:i+1]) /
      (i + 1), AURC = mean(r). Oracle: losses sorted ascending (no tie averaging), same r;
      E-AURC = AURC - AURC_oracle. Selective risk at coverage c: n_c = max(1, ceil(c*N - 1e-9)),
      risk = r[n_c - 1] (r of the tie-averaged, confidence-sorted losses).

Reproduce (from the repository root):
  python3 -m venv scripts/.venv && scripts/.venv/bin/pip install -r scripts/requirements-golden-metrics.txt && scripts/.venv/bin/python scripts/golden_metrics.py

usage: scripts/.venv/bin/python scripts/golden_metrics.py [--out PATH]
       (PATH defaults to testdata/golden/metrics.json under the repository root)
"""
import argparse
import json
import math
import os

import numpy as np
import sklearn
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

SEED = 20261127
N_BINS = 15
COVERAGES = [round(1.0 - 0.1 * k, 1) for k in range(10)]  # 1.0, 0.9, ..., 0.1
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- AUROC


def auroc_cases(rng):
    cases = []

    def add(name, scores, labels):
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        assert 0 < labels.sum() < len(labels), name
        cases.append({
            "name": name,
            "scores": [float(x) for x in scores],
            "labels": [int(x) for x in labels],
            "auroc": float(roc_auc_score(labels, scores)),
        })

    # n=10, continuous scores, balanced-ish labels.
    n = 10
    labels = rng.integers(0, 2, n)
    scores = rng.random(n)
    add("n10_continuous", scores, labels)

    # n=200, scores rounded to one decimal: many ties, some across classes.
    n = 200
    labels = rng.integers(0, 2, n)
    scores = np.round(np.clip(0.5 + 0.2 * (labels - 0.5) + 0.25 * rng.standard_normal(n), 0.0, 1.0), 1)
    add("n200_ties_1dp", scores, labels)

    # n=1000, continuous, prevalence 0.1.
    n = 1000
    labels = (rng.random(n) < 0.1).astype(np.int64)
    scores = rng.random(n) + 0.3 * labels * rng.random(n)
    add("n1000_prevalence_0.1", scores, labels)

    # n=500, positives ~ N(1, 1), negatives ~ N(0, 1).
    n = 500
    labels = rng.integers(0, 2, n)
    scores = rng.standard_normal(n) + labels.astype(np.float64)
    add("n500_shifted_normal", scores, labels)
    return cases


# ---------------------------------------------------------------- calibration


def ece_equal_width(p, y, n_bins):
    idx = np.clip(np.ceil(p * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    n = len(p)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        nb = int(m.sum())
        if nb == 0:
            continue
        ece += (nb / n) * abs(float(np.mean(y[m])) - float(np.mean(p[m])))
    return ece


def ece_equal_mass(p, y, n_bins):
    order = np.argsort(p, kind="stable")
    n = len(p)
    ece = 0.0
    for chunk in np.array_split(order, n_bins):
        if len(chunk) == 0:
            continue
        ece += (len(chunk) / n) * abs(float(np.mean(y[chunk])) - float(np.mean(p[chunk])))
    return ece


def brier(p, y):
    return float(np.mean((p - y) ** 2))


def nll(p, y):
    q = np.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)))


def calibration_cases(rng):
    cases = []

    def add(name, conf, correct):
        p = np.asarray(conf, dtype=np.float64)
        y = np.asarray(correct, dtype=np.int64)
        assert np.all((p > 0.0) & (p < 1.0)), name
        # Keep every p clear of an equal-width bin edge (see module docstring).
        pb = p * N_BINS
        assert np.all(np.abs(pb - np.round(pb)) > 1e-9), name
        yf = y.astype(np.float64)
        b = brier(p, yf)
        l = nll(p, yf)
        assert np.isclose(b, brier_score_loss(y, p, pos_label=1), rtol=1e-12, atol=0.0), name
        assert np.isclose(l, log_loss(y, p, labels=[0, 1]), rtol=1e-12, atol=0.0), name
        cases.append({
            "name": name,
            "confidence": [float(x) for x in p],
            "correct": [int(x) for x in y],
            "n_bins": N_BINS,
            "ece_equal_width": ece_equal_width(p, yf, N_BINS),
            "ece_equal_mass": ece_equal_mass(p, yf, N_BINS),
            "brier": b,
            "nll": l,
        })

    def draw(n, a, b):
        conf = np.clip(rng.beta(a, b, n), 0.001, 0.999)
        correct = (rng.random(n) < conf ** 1.5).astype(np.int64)  # overconfident model
        return conf, correct

    add("n50_beta_5_2", *draw(50, 5.0, 2.0))
    add("n1000_beta_4_1.5", *draw(1000, 4.0, 1.5))
    add("n5000_beta_2_1", *draw(5000, 2.0, 1.0))
    # Fewer samples than bins: 7 equal-mass chunks of one item, 8 empty ones.
    add("n7_fewer_than_bins", *draw(7, 2.0, 2.0))
    return cases


# ---------------------------------------------------------------- risk-coverage


def risk_curve_tie_averaged(conf, loss):
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    l = loss[order].copy()
    n = len(c)
    i = 0
    while i < n:
        j = i + 1
        while j < n and c[j] == c[i]:
            j += 1
        if j - i > 1:
            l[i:j] = np.mean(l[i:j])
        i = j
    return np.cumsum(l) / np.arange(1, n + 1)


def risk_curve_oracle(loss):
    l = np.sort(loss)
    return np.cumsum(l) / np.arange(1, len(l) + 1)


def risk_coverage_cases(rng):
    cases = []

    def add(name, conf, loss):
        conf = np.asarray(conf, dtype=np.float64)
        loss = np.asarray(loss, dtype=np.float64)
        assert np.all((loss >= 0.0) & (loss <= 1.0)), name
        n = len(conf)
        r = risk_curve_tie_averaged(conf, loss)
        r_oracle = risk_curve_oracle(loss)
        aurc = float(np.mean(r))
        aurc_oracle = float(np.mean(r_oracle))
        assert aurc >= aurc_oracle - 1e-12, (name, aurc, aurc_oracle)
        sel = []
        for c in COVERAGES:
            n_c = max(1, math.ceil(c * n - 1e-9))
            sel.append(float(r[n_c - 1]))
        cases.append({
            "name": name,
            "confidence": [float(x) for x in conf],
            "loss": [float(x) for x in loss],
            "aurc": aurc,
            "eaurc": aurc - aurc_oracle,
            "coverages": list(COVERAGES),
            "selective_risk": sel,
        })

    # n=20, 0/1 losses, confidences rounded to one decimal (ties).
    n = 20
    conf = np.round(rng.random(n), 1)
    loss = (rng.random(n) < 1.0 - conf).astype(np.float64)
    add("n20_01_ties_1dp", conf, loss)

    # n=1000, 0/1 losses with P(loss = 1) decreasing in confidence.
    n = 1000
    conf = rng.random(n)
    loss = (rng.random(n) < 0.8 * (1.0 - conf) + 0.05).astype(np.float64)
    add("n1000_01_decreasing", conf, loss)

    # n=300, real-valued losses in [0, 1].
    n = 300
    conf = rng.beta(2.0, 2.0, n)
    loss = np.clip(0.7 * (1.0 - conf) + 0.3 * rng.random(n) + 0.1 * rng.standard_normal(n), 0.0, 1.0)
    add("n300_real_losses", conf, loss)

    # n=1000, one constant confidence (a single tie group), 0/1 losses.
    n = 1000
    conf = np.full(n, 0.5)
    loss = (rng.random(n) < 0.3).astype(np.float64)
    add("n1000_01_all_ties", conf, loss)
    return cases


# ---------------------------------------------------------------- output


def dumps(obj, indent=0):
    """JSON with objects indented and arrays of scalars on one line."""
    pad = "  " * indent
    if isinstance(obj, dict):
        items = [f'{pad}  {json.dumps(k)}: {dumps(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if obj and isinstance(obj[0], dict):
            items = [f"{pad}  {dumps(v, indent + 1)}" for v in obj]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return "[" + ",".join(json.dumps(v) for v in obj) + "]"
    return json.dumps(obj)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "testdata", "golden", "metrics.json"))
    args = ap.parse_args()

    rng = np.random.default_rng(SEED)
    doc = {
        "generator": "scripts/golden_metrics.py",
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "auroc": auroc_cases(rng),
        "calibration": calibration_cases(rng),
        "risk_coverage": risk_coverage_cases(rng),
    }
    text = dumps(doc) + "\n"
    assert json.loads(text) == doc  # exact float round trip
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)

    print(f"wrote {args.out} ({len(text)} bytes); numpy {np.__version__}, sklearn {sklearn.__version__}")
    for c in doc["auroc"]:
        print(f"  auroc  {c['name']:24s} n={len(c['scores']):5d} auroc={c['auroc']:.6f}")
    for c in doc["calibration"]:
        print(f"  calib  {c['name']:24s} n={len(c['confidence']):5d} ece_w={c['ece_equal_width']:.6f} "
              f"ece_m={c['ece_equal_mass']:.6f} brier={c['brier']:.6f} nll={c['nll']:.6f}")
    for c in doc["risk_coverage"]:
        print(f"  rc     {c['name']:24s} n={len(c['confidence']):5d} aurc={c['aurc']:.6f} eaurc={c['eaurc']:.6f} "
              f"risk@1.0={c['selective_risk'][0]:.4f} risk@0.1={c['selective_risk'][-1]:.4f}")


if __name__ == "__main__":
    main()
