#!/usr/bin/env python3
"""Compare medprob's Rust pairwise-distance kernels with the PyTorch way, same run.

docs/PERFORMANCE.md quotes the tables this script prints. Both halves run on
the same machine, one after the other, so the numbers are comparable:

* medprob: ``cargo run --release --example perf_core -- --threads T --sizes ...
  --dim D`` from the repository root. The example prints one JSON object per
  line on stdout, e.g.
  ``{"impl":"medprob","op":"csd","n":2048,"m":2048,"d":512,"seconds":0.0123,
  "pairs_per_s":3.4e8}``, with op in {csd, mls, gemm}.
* PyTorch (CPU, float32): the same three computations written the way the
  official code writes them:

  - ``csd``: PCME++ closed-form sampled distance,
    d_ij = ||mu1_i - mu2_j||^2 + sum_d (s1_id + s2_jd), s = exp(v);
    expression as in PCME++'s ``_compute_closed_form_loss``.
  - ``mls``: what MedProbCLIP calls "csd" (``MedProbClip.csd``),
    d_ij = 1/2 sum_d [(mu1_id - mu2_jd)^2 / (s1_id + s2_jd)
                      + log(s1_id + s2_jd + 1e-6)],
    s = clamp(exp(v), min=1e-6).
  - ``gemm``: a plain ``torch.mm`` of [N, D] x [D, M], the memory/compute
    floor any pairwise kernel is measured against.

  csd and mls broadcast an [n_q, n_g, D] tensor over chunks of 128 queries x
  512 gallery items written into a preallocated [N, M] matrix, which is the
  loop of MedProbCLIP's ``eval_retrieval_chunked`` (chunk_q=128,
  chunk_g=512). As a stronger PyTorch baseline we also time ``csd_gemm``:
  CSD expanded into ||a||^2 + ||b||^2 - 2 a.b plus per-row/column variance
  sums, i.e. the form of PCME++'s ``compute_csd_sims`` in evaluation.py
  (which assumes unit-norm means; here the norms are kept so it works for
  any input).

Install (tested on Debian 12, CPython 3.11, 2 cores, no GPU, PyPI only)::

    python3 -m venv scripts/.venv
    scripts/.venv/bin/pip install --no-deps -r scripts/requirements-perf.txt

That downloads ~2.4 GB and took 1 min 30 s here (4.1 GB on disk). PyPI only
has the CUDA build of torch for Linux x86_64 and its libtorch.so is linked
against the CUDA libraries, so ``import torch`` fails without them even on a
machine without a GPU; the CPU-only wheels live on PyTorch's own wheel index,
which the project machines cannot reach. ``--no-deps`` with the pinned list in
requirements-perf.txt installs only what the import needs and skips ~600 MB
(triton, cuSOLVER, cuda-bindings); ``pip check`` will therefore complain
about those on purpose. Where PyTorch's CPU index is reachable, a plain
``pip install torch==2.15.0 numpy`` from it is the smaller alternative.
Nothing here needs CUDA at run time: the script only ever uses the CPU.

Usage::

    scripts/.venv/bin/python scripts/perf_core.py              # both halves
    scripts/.venv/bin/python scripts/perf_core.py --skip-rust  # PyTorch only
    scripts/.venv/bin/python scripts/perf_core.py --json-out runs/perf.json

The tables go to stdout; progress, cargo's build output and warnings go to
stderr. The exit status is 0 on success and 2 when the Rust half was
requested but produced no measurements (the tables are still printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

# The repo root is the parent of scripts/, so the script works from any cwd.
REPO_ROOT = Path(__file__).resolve().parent.parent

OPS = ("csd", "mls", "gemm")
# Chunk sizes of MedProbCLIP's eval_retrieval_chunked; keeping them is what
# makes the PyTorch numbers "the official way" rather than our own tuning.
CHUNK_Q = 128
CHUNK_G = 512
MLS_EPS = 1e-6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info(threads: int, torch_mod=None) -> dict:
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rustc": command_version(["rustc", "--version"]),
    }
    if torch_mod is not None:
        info["torch"] = torch_mod.__version__
        info["torch_num_threads"] = torch_mod.get_num_threads()
        try:
            info["torch_cpu_capability"] = torch_mod.backends.cpu.get_cpu_capability()
        except AttributeError:
            pass
        info["torch_mkl"] = bool(torch_mod.backends.mkl.is_available())
    return info


# --------------------------------------------------------------------------
# Rust half
# --------------------------------------------------------------------------

def run_rust(sizes: list[int], dim: int, threads: int, package: str | None,
             timeout: float | None) -> tuple[list[dict], dict]:
    """Build + run the Rust example; return (records, run status)."""
    cmd = ["cargo", "run", "--release"]
    if package:
        cmd += ["-p", package]
    cmd += ["--example", "perf_core", "--",
            "--threads", str(threads),
            "--sizes", ",".join(str(s) for s in sizes),
            "--dim", str(dim)]
    status = {"command": cmd, "cwd": str(REPO_ROOT), "ok": False}
    if shutil.which("cargo") is None:
        status["error"] = "cargo not found on PATH"
        log(f"warning: {status['error']}; skipping the Rust half")
        return [], status

    log(f"$ {' '.join(cmd)}   (in {REPO_ROOT})")
    t0 = time.perf_counter()
    try:
        # stderr is inherited so cargo's build progress stays visible; only
        # stdout carries measurements and only JSON lines on it are used.
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=None, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        status["error"] = f"timed out after {timeout} s"
        log(f"warning: cargo {status['error']}")
        return [], status
    status["returncode"] = proc.returncode
    status["wall_seconds"] = time.perf_counter() - t0

    records = parse_rust_stdout(proc.stdout)
    if proc.returncode != 0:
        status["error"] = f"cargo exited with status {proc.returncode}"
        log(f"warning: {status['error']}")
    if not records:
        status.setdefault("error", "the example printed no measurement lines")
        log(f"warning: {status['error']}")
    status["ok"] = proc.returncode == 0 and bool(records)
    return records, status


def parse_rust_stdout(text: str) -> list[dict]:
    """Keep lines that are JSON objects with the fields the tables need."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        try:
            rec["n"], rec["m"], rec["d"] = int(rec["n"]), int(rec["m"]), int(rec["d"])
            rec["seconds"] = float(rec["seconds"])
            rec["op"] = str(rec["op"])
        except (KeyError, TypeError, ValueError):
            continue
        rec.setdefault("impl", "medprob")
        if "pairs_per_s" not in rec and rec["seconds"] > 0:
            rec["pairs_per_s"] = rec["n"] * rec["m"] / rec["seconds"]
        records.append(rec)
    return records


# --------------------------------------------------------------------------
# PyTorch half
# --------------------------------------------------------------------------

def torch_csd_chunked(torch, mu1, v1, mu2, v2, out):
    """PCME++ CSD, broadcast per (128 x 512) chunk like the official loop."""
    n, m = out.shape
    for qs in range(0, n, CHUNK_Q):
        qe = min(qs + CHUNK_Q, n)
        for gs in range(0, m, CHUNK_G):
            ge = min(gs + CHUNK_G, m)
            a_mu, a_v = mu1[qs:qe], v1[qs:qe]
            b_mu, b_v = mu2[gs:ge], v2[gs:ge]
            # Same expression as PCME++ _compute_closed_form_loss.
            mu_pdist = ((a_mu.unsqueeze(1) - b_mu.unsqueeze(0)) ** 2).sum(-1)
            sigma_pdist = (torch.exp(a_v).unsqueeze(1)
                           + torch.exp(b_v).unsqueeze(0)).sum(-1)
            out[qs:qe, gs:ge] = mu_pdist + sigma_pdist
    return out


def torch_mls_chunked(torch, mu1, v1, mu2, v2, out):
    """MedProbCLIP's csd (an MLS-style distance), chunked like its eval loop."""
    n, m = out.shape
    for qs in range(0, n, CHUNK_Q):
        qe = min(qs + CHUNK_Q, n)
        for gs in range(0, m, CHUNK_G):
            ge = min(gs + CHUNK_G, m)
            # Same expression as MedProbClip.csd (exp recomputed per chunk
            # there too, since it takes log-variances).
            sx = v1[qs:qe].exp().clamp_min(MLS_EPS)
            sy = v2[gs:ge].exp().clamp_min(MLS_EPS)
            dx = mu1[qs:qe].unsqueeze(1) - mu2[gs:ge].unsqueeze(0)
            s_sum = sx.unsqueeze(1) + sy.unsqueeze(0)
            out[qs:qe, gs:ge] = 0.5 * ((dx * dx) / s_sum
                                       + (s_sum + MLS_EPS).log()).sum(dim=-1)
    return out


def torch_csd_gemm(torch, mu1, v1, mu2, v2, out):
    """CSD via the GEMM expansion (PCME++ evaluation.py's compute_csd_sims)."""
    # out = -2 mu1 mu2^T, then rank-1 additions; no [n, m, D] temporary.
    torch.mm(mu1, mu2.t(), out=out)
    out.mul_(-2.0)
    row = (mu1 * mu1).sum(-1) + torch.exp(v1).sum(-1)
    col = (mu2 * mu2).sum(-1) + torch.exp(v2).sum(-1)
    out.add_(row.unsqueeze(1))
    out.add_(col.unsqueeze(0))
    return out


def torch_gemm(torch, mu1, v1, mu2, v2, out):
    return torch.mm(mu1, mu2.t(), out=out)


TORCH_KERNELS = {
    # op -> (function, how it is computed, for the JSON record)
    "csd": (torch_csd_chunked, f"chunked broadcast {CHUNK_Q}x{CHUNK_G}"),
    "mls": (torch_mls_chunked, f"chunked broadcast {CHUNK_Q}x{CHUNK_G}"),
    "gemm": (torch_gemm, "torch.mm"),
    "csd_gemm": (torch_csd_gemm, "GEMM expansion (PCME++ evaluation.py form)"),
}


def check_torch_kernels(torch, seed: int) -> None:
    """Cheap float64 cross-check so a typo cannot silently skew the timings.

    Uses sizes that are not multiples of the chunk sizes so the ragged edges
    of the chunk loop are exercised too.
    """
    g = torch.Generator().manual_seed(seed + 1)
    n, m, d = 150, 530, 16
    mu1, mu2 = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    v1 = torch.rand(n, d, generator=g) * 4 - 3
    v2 = torch.rand(m, d, generator=g) * 4 - 3
    a, b = mu1.double(), mu2.double()
    s1, s2 = v1.double().exp(), v2.double().exp()
    diff2 = (a[:, None, :] - b[None, :, :]) ** 2
    ssum = s1[:, None, :] + s2[None, :, :]
    ref = {
        "csd": diff2.sum(-1) + ssum.sum(-1),
        "mls": 0.5 * (diff2 / ssum + (ssum + MLS_EPS).log()).sum(-1),
        "gemm": a @ b.t(),
    }
    ref["csd_gemm"] = ref["csd"]
    for op, (fn, _) in TORCH_KERNELS.items():
        got = fn(torch, mu1, v1, mu2, v2, torch.empty(n, m)).double()
        err = ((got - ref[op]).abs() / ref[op].abs().clamp_min(1.0)).max().item()
        if err > 1e-4:
            raise RuntimeError(f"PyTorch {op} kernel disagrees with the float64 "
                               f"reference (max rel. error {err:.2e})")


def run_torch(sizes: list[int], dim: int, threads: int, repeats: int,
              seed: int) -> tuple[list[dict], object]:
    try:
        import torch
    except ImportError as exc:
        sys.exit(f"error: cannot import torch ({exc}); see the install "
                 f"commands in {Path(__file__).name}'s docstring")
    torch.set_num_threads(threads)
    check_torch_kernels(torch, seed)

    records = []
    with torch.no_grad():
        for n in sizes:
            m = n
            # Seeded per size so a size's inputs do not depend on --sizes.
            g = torch.Generator().manual_seed(seed + n)
            mu1 = torch.randn(n, dim, generator=g)
            mu2 = torch.randn(m, dim, generator=g)
            v1 = torch.rand(n, dim, generator=g) * 4.0 - 3.0  # U(-3, 1)
            v2 = torch.rand(m, dim, generator=g) * 4.0 - 3.0
            out = torch.empty(n, m)
            for op, (fn, method) in TORCH_KERNELS.items():
                fn(torch, mu1, v1, mu2, v2, out)  # warm-up (allocator, pools)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn(torch, mu1, v1, mu2, v2, out)
                    times.append(time.perf_counter() - t0)
                best = min(times)
                rec = {"impl": "pytorch", "op": op, "n": n, "m": m, "d": dim,
                       "seconds": best, "pairs_per_s": n * m / best,
                       "method": method, "threads": threads,
                       "repeats_seconds": times}
                records.append(rec)
                log(f"pytorch {op:8s} n=m={n:5d} d={dim}: best {best:.4f} s "
                    f"of {', '.join(f'{t:.4f}' for t in times)}")
    return records, torch


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt_s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def fmt_ratio(x: float | None, suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:.2f}{suffix}"


def index(records: list[dict]) -> dict:
    """(impl, op, n, m, d) -> best seconds (min if a line repeats)."""
    best: dict = {}
    for r in records:
        key = (r["impl"], r["op"], r["n"], r["m"], r["d"])
        if key not in best or r["seconds"] < best[key]:
            best[key] = r["seconds"]
    return best


def div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def render(records: list[dict], sizes: list[int], dim: int, machine: dict,
           rust_status: dict | None, repeats: int) -> str:
    best = index(records)
    lines = []
    lines.append("Machine: " + machine["cpu_model"]
                 + f", {machine['logical_cpus']} logical CPUs, "
                 f"{machine['threads']} threads for both implementations; "
                 f"torch {machine.get('torch', 'n/a')} "
                 f"(CPU capability {machine.get('torch_cpu_capability', 'n/a')}, "
                 f"MKL {'yes' if machine.get('torch_mkl') else 'no'}); "
                 f"{machine.get('rustc') or 'rustc n/a'}; "
                 f"Python {machine['python']}.")
    lines.append(f"Inputs: float32, mu ~ N(0,1), log-variance ~ U(-3,1); "
                 f"PyTorch timings are the best of {repeats} after one warm-up. "
                 f"PyTorch csd/mls broadcast an [n_q, n_g, D] tensor in "
                 f"{CHUNK_Q} x {CHUNK_G} chunks (MedProbCLIP's evaluation loop); "
                 f"gemm is torch.mm.")
    if rust_status is None:
        lines.append("medprob: not run (--skip-rust).")
    elif not rust_status.get("ok"):
        lines.append(f"medprob: FAILED ({rust_status.get('error', 'unknown error')}).")
    lines.append("")

    def px(impl, op, n):
        return best.get((impl, op, n, n, dim))

    lines.append("| op | N=M | D | medprob s | medprob pairs/s "
                 "| PyTorch chunked-broadcast s | PyTorch pairs/s | speed-up |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for op in OPS:
        for n in sizes:
            ms, ps = px("medprob", op, n), px("pytorch", op, n)
            lines.append(
                f"| {op} | {n} | {dim} | {fmt_s(ms)} | "
                f"{fmt_rate(div(n * n, ms))} | {fmt_s(ps)} | "
                f"{fmt_rate(div(n * n, ps))} | {fmt_ratio(div(ps, ms), 'x')} |")
    lines.append("")
    lines.append("gemm row: PyTorch column is torch.mm (no broadcast). "
                 "speed-up = PyTorch seconds / medprob seconds.")
    lines.append("")

    # How close each CSD implementation gets to the GEMM floor of its own
    # library, plus the stronger GEMM-expanded PyTorch CSD for honesty.
    lines.append("| N=M | medprob CSD / medprob GEMM | PyTorch broadcast CSD / torch.mm "
                 "| PyTorch GEMM-expanded CSD s | medprob CSD speed-up vs it |")
    lines.append("|---:|---:|---:|---:|---:|")
    for n in sizes:
        mc, mg = px("medprob", "csd", n), px("medprob", "gemm", n)
        pc, pg = px("pytorch", "csd", n), px("pytorch", "gemm", n)
        pe = px("pytorch", "csd_gemm", n)
        lines.append(f"| {n} | {fmt_ratio(div(mc, mg))} | {fmt_ratio(div(pc, pg))} "
                     f"| {fmt_s(pe)} | {fmt_ratio(div(pe, mc), 'x')} |")
    lines.append("")
    lines.append("GEMM-expanded CSD = ||a||^2 + ||b||^2 - 2 a.b + row/column "
                 "variance sums, the form PCME++'s evaluation.py uses; it is "
                 "not available for mls.")
    return "\n".join(lines)


# --------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=parse_sizes, default=[1024, 2048],
                    help="comma-separated N (= M) values (default 1024,2048)")
    ap.add_argument("--dim", type=int, default=512, help="embedding dim D (default 512)")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for both halves (default 2)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed PyTorch repeats, best is kept (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-rust", action="store_true", help="run only the PyTorch half")
    ap.add_argument("--package", help="cargo -p PACKAGE owning the perf_core example "
                    "(only needed if cargo cannot find it unaided)")
    ap.add_argument("--cargo-timeout", type=float, default=3600.0,
                    help="seconds allowed for cargo build + run (default 3600)")
    ap.add_argument("--json-out", type=Path, help="also write raw measurements here")
    args = ap.parse_args(argv)

    # Rust first: its build is the slow, noisy part, and running the two
    # halves back to back (never concurrently) keeps them off each other's cores.
    rust_records, rust_status = [], None
    if not args.skip_rust:
        rust_records, rust_status = run_rust(args.sizes, args.dim, args.threads,
                                             args.package, args.cargo_timeout)

    torch_records, torch_mod = run_torch(args.sizes, args.dim, args.threads,
                                         args.repeats, args.seed)
    records = rust_records + torch_records
    machine = machine_info(args.threads, torch_mod)

    print(render(records, args.sizes, args.dim, machine, rust_status, args.repeats))

    if args.json_out:
        payload = {
            "machine": machine,
            "config": {"sizes": args.sizes, "dim": args.dim, "threads": args.threads,
                       "repeats": args.repeats, "seed": args.seed,
                       "chunk_q": CHUNK_Q, "chunk_g": CHUNK_G,
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "rust": rust_status,
            "records": records,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.json_out}")

    if rust_status is not None and not rust_status.get("ok"):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
