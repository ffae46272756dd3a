#!/usr/bin/env python3
"""Pairwise CSD and MLS on a GPU with PyTorch's reference formulation: the PyTorch half of
``examples/bench_gpu.rs``, with the same operations, sizes and JSON fields.

* ``csd``: ``(mu1**2).sum + (mu2**2).sum - 2 mu1 mu2^T + sum s1 + sum s2`` (one matrix
  product, as medprob's GEMM decomposition and PCME++'s code);
* ``mls``: the broadcast formula, ``[N, 1, D]`` against ``[1, M, D]``,
  ``1/2 sum_d [(mu1 - mu2)^2 / t + log(t + 1e-6)]``, ``t = s1 + s2``,
  ``s = max(exp(v), 1e-6)``, in chunks of query rows whose ``[rows, M, D]`` temporaries
  take at most ``--chunk-gib`` (``chunks`` in the line says how many);
* ``mls_fwd_bwd``: that forward, then ``backward`` of its sum to both sides' means and
  log-variances. Where the whole graph would not fit (more than half the GPU's memory for
  the saved ``N x M x D`` temporaries), each chunk runs under
  ``torch.utils.checkpoint`` (recomputed in the backward pass) and the line says
  ``"checkpointed": true``.

Inputs are ``f32``, means N(0, 1), log-variances U(-3, 1), made on the device. Each
operation runs once untimed, then ``--repeats`` times between ``torch.cuda.synchronize()``
calls; ``ms`` is the fastest and ``pairs_per_s`` is ``n * m / ms``. TF32 is off (PyTorch's
default for matrix products, and candle's).

Usage (on the GPU machine, from ``gpu-bundle/run.sh``)::

    python3 scripts/gpu_bench.py                 # the default sizes of bench_gpu.rs
    python3 scripts/gpu_bench.py --device cpu --square 256 --gallery 1x20000 --small 128 --train 128
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.utils.checkpoint

MLS_EPS = 1e-6


def csd(mu1, v1, mu2, v2):
    row1 = (mu1**2).sum(-1) + v1.exp().sum(-1)
    row2 = (mu2**2).sum(-1) + v2.exp().sum(-1)
    return row1[:, None] + row2[None, :] - 2.0 * mu1 @ mu2.t()


def mls_block(mu1, v1, mu2, v2):
    s1 = v1.exp().clamp(min=MLS_EPS)
    s2 = v2.exp().clamp(min=MLS_EPS)
    t = s1[:, None, :] + s2[None, :, :]
    dm2 = (mu1[:, None, :] - mu2[None, :, :]) ** 2
    return 0.5 * (dm2 / t + (t + MLS_EPS).log()).sum(-1)


def chunk_rows(m: int, d: int, chunk_gib: float) -> int:
    """Query rows per chunk so that one [rows, M, D] f32 temporary stays under chunk_gib."""
    return max(1, int(chunk_gib * 2**30 // (m * d * 4)))


def mls(mu1, v1, mu2, v2, rows: int, checkpoint: bool = False):
    parts = []
    for i in range(0, mu1.shape[0], rows):
        args = (mu1[i : i + rows], v1[i : i + rows], mu2, v2)
        if checkpoint:
            parts.append(torch.utils.checkpoint.checkpoint(mls_block, *args, use_reentrant=False))
        else:
            parts.append(mls_block(*args))
    return torch.cat(parts, 0)


def gaussians(n: int, d: int, device, grad: bool = False):
    mu = torch.randn(n, d, device=device)
    v = torch.rand(n, d, device=device) * 4.0 - 3.0
    return mu.requires_grad_(grad), v.requires_grad_(grad)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_ms(device, repeats: int, f) -> float:
    f()
    sync(device)
    best = float("inf")
    for _ in range(max(1, repeats)):
        sync(device)
        t = time.perf_counter()
        f()
        sync(device)
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (device 0) or cpu")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension D")
    p.add_argument("--square", default="4096", help="comma-separated N = M sizes")
    p.add_argument("--gallery", default="1x1000000,1024x100000", help="comma-separated NxM")
    p.add_argument("--small", type=int, default=512, help="one more N = M size")
    p.add_argument("--train", default="1024,4096", help="comma-separated N = M for mls_fwd_bwd")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (fastest reported)")
    p.add_argument("--chunk-gib", type=float, default=1.0, help="GiB per [rows, M, D] temporary")
    args = p.parse_args()

    device = torch.device("cuda:0" if args.device == "cuda" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        label = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory
    else:
        label, memory = "cpu", 16 * 2**30
    torch.manual_seed(0)
    d = args.dim

    def line(op: str, n: int, m: int, ms: float, **extra) -> None:
        out = {
            "impl": "pytorch",
            "device": label,
            "op": op,
            "n": n,
            "m": m,
            "d": d,
            "dtype": "f32",
            "ms": round(ms, 3),
            "pairs_per_s": round(n * m / (ms / 1e3)),
            "torch": torch.__version__,
        }
        out.update(extra)
        print(json.dumps(out), flush=True)

    shapes = [(int(s), int(s)) for s in args.square.split(",") if s]
    shapes += [tuple(int(x) for x in g.split("x")) for g in args.gallery.split(",") if g]
    shapes.append((args.small, args.small))
    with torch.no_grad():
        for n, m in shapes:
            mu1, v1 = gaussians(n, d, device)
            mu2, v2 = gaussians(m, d, device)
            line("csd", n, m, best_ms(device, args.repeats, lambda: csd(mu1, v1, mu2, v2)))
            rows = chunk_rows(m, d, args.chunk_gib)
            ms = best_ms(device, args.repeats, lambda: mls(mu1, v1, mu2, v2, rows))
            line("mls", n, m, ms, chunks=-(-n // rows))
            del mu1, v1, mu2, v2
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for n in (int(s) for s in args.train.split(",") if s):
        mu1, v1 = gaussians(n, d, device, grad=True)
        mu2, v2 = gaussians(n, d, device, grad=True)
        # About five N x M x D f32 tensors are saved for the backward pass.
        checkpoint = 5 * n * n * d * 4 > memory // 2
        rows = chunk_rows(n, d, args.chunk_gib)

        def step():
            for x in (mu1, v1, mu2, v2):
                x.grad = None
            mls(mu1, v1, mu2, v2, rows, checkpoint).sum().backward()

        ms = best_ms(device, args.repeats, step)
        line("mls_fwd_bwd", n, n, ms, chunks=-(-n // rows), checkpointed=checkpoint)
        del mu1, v1, mu2, v2
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
