#!/usr/bin/env python3
"""Training throughput of MedProbCLIP in PyTorch on the CPU (or, with ``--device cuda``,
a GPU): the PyTorch half of ``scripts/bench_train.sh``, whose Rust half is
``examples/bench_train.rs``.

Both train the quickstart's model and objective for a fixed number of steps on
one fixed synthetic batch (data loading excluded) and print one JSON line, e.g.
``{"impl": "pytorch", "steps_per_s": 4.1, "ms_per_step": 243.9, "batch": 16,
"threads": 2, "peak_rss_mib": 420.3, ...}``. What is written out here mirrors
medprob's ``TrainConfig::default()`` operation by operation:

* image encoder (``crates/medprob-encoders/src/vit.rs``): ViT on 3x64x64
  inputs, 16-pixel patches (a stride-16 convolution), width 128, 2 pre-norm
  blocks (LayerNorm eps 1e-6, fused qkv, 4 heads, MLP ratio 2 with erf GELU,
  no dropout), a [CLS] token in the sequence, final LayerNorm, mean of the 16
  patch tokens (the [CLS] token is left out of the mean);
* text encoder (``bert.rs``): one post-norm BERT layer, hidden 64, 4 heads,
  intermediate 128, erf GELU, word + position (256) + token-type embeddings,
  LayerNorm eps 1e-12, dropout 0.1 after the embeddings, on the attention
  probabilities and after the attention and feed-forward outputs, additive
  mask ``(mask - 1) * 1e4``, mean pooling over the mask;
* heads (``heads.rs``): ``Linear(128, 2 * 64)`` (image) and ``Linear(64, 2 * 64)`` (text), split into mean and
  log-variance, the log-variance clamped to [-6, 6], means not normalised;
* loss (``crates/medprob-losses/src/medprobclip.rs``, SPEC section 4): MLS
  ``d = 1/2 sum_d [(mu1 - mu2)^2 / (s1 + s2) + log(s1 + s2 + 1e-6)]`` with
  ``s = max(exp(v), 1e-6)``, logits ``-max(a, 1e-3) * d + b`` (a = 1, b = 0,
  learnable), pair term ``1/2 [CE(L) + CE(L^T)]``, total
  ``1/4 [l(I1,T1) + l(I1,T2) + l(I2,T1) + l(I2,T2)] + 0.1 l(I1,I2)
  + 0.1 l(T1,T2) + 1e-4 * 1/2 (KL(I1) + KL(I2)) + 1e-4 * 1/2 (KL(T1) + KL(T2))``
  with the VIB KL summed over dimensions and averaged over the batch;
* optimiser (``crates/medprob-train/src/optim.rs``): AdamW (betas 0.9/0.999,
  eps 1e-8, weight decay 1e-4 on parameters with two or more dimensions
  only), ``clip_grad_norm_(1.0)``, learning rate 2e-3 with a linear warm-up
  over 10 % of all steps (warm-up + timed) and a cosine to 0;
* initialisation as candle's: Kaiming-normal (fan-in, gain sqrt 2) weights,
  uniform(+-1/sqrt(fan-in)) biases, N(0, 1) embeddings, N(0, 0.02) [CLS] and
  position embeddings, zero patch bias.

Inputs: two views of B standard-normal 3x64x64 images and two sections of B
token-id rows of length 48, uniform in [5, 2000), no padding. The steps are
the same as medprob's; the random numbers are not (another generator), so the
losses agree in range, not digit for digit.

Setup: the venv of ``scripts/perf_core.py`` (torch only; see its docstring).
Usage::

    scripts/.venv/bin/python scripts/bench_train.py --threads 2 --steps 100 --warmup 10
    scripts/bench_train.sh 2 100      # both halves and the ratio
    python3 scripts/bench_train.py --device cuda --batch 128   # on a GPU (gpu-bundle/run.sh)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

# medprob's TrainConfig::default() (crates/medprob-train/src/config.rs).
IMAGE_SIZE = 64
PATCH = 16
VIT_DIM = 128
VIT_DEPTH = 2
VIT_HEADS = 4
VIT_MLP_RATIO = 2.0
TEXT_HIDDEN = 64
TEXT_LAYERS = 1
TEXT_HEADS = 4
TEXT_INTERMEDIATE = 2 * TEXT_HIDDEN
MAX_POSITIONS = 256
EMBED_DIM = 64
LAMBDA_IMAGE = 0.1
LAMBDA_TEXT = 0.1
BETA_IMAGE = 1e-4
BETA_TEXT = 1e-4
LR = 2e-3
WEIGHT_DECAY = 1e-4
WARMUP_FRACTION = 0.1
GRAD_CLIP = 1.0
MLS_EPS = 1e-6
MIN_SCALE = 1e-3


def init_linear(layer: nn.Linear) -> nn.Linear:
    """candle_nn::linear's initialisation."""
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound)
    return layer


def linear(i: int, o: int) -> nn.Linear:
    return init_linear(nn.Linear(i, o))


class VitBlock(nn.Module):
    """Pre-norm transformer block with timm's layout."""

    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.qkv = linear(d, 3 * d)
        self.proj = linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.fc1 = linear(d, hidden)
        self.fc2 = linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        dh = d // self.heads
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * dh**-0.5, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(out)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Vit(nn.Module):
    def __init__(self):
        super().__init__()
        d, n = VIT_DIM, (IMAGE_SIZE // PATCH) ** 2
        self.patch = nn.Conv2d(3, d, PATCH, stride=PATCH)
        nn.init.kaiming_normal_(self.patch.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.patch.bias)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        hidden = round(d * VIT_MLP_RATIO)
        self.blocks = nn.ModuleList(VitBlock(d, VIT_HEADS, hidden) for _ in range(VIT_DEPTH))
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 1:].mean(dim=1)


class BertLayer(nn.Module):
    """Post-norm BERT layer with Hugging Face's layout."""

    def __init__(self, h: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = linear(h, h), linear(h, h), linear(h, h)
        self.attn_out = linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=1e-12)
        self.intermediate = linear(h, intermediate)
        self.output = linear(intermediate, h)
        self.out_norm = nn.LayerNorm(h, eps=1e-12)
        self.attn_dropout = nn.Dropout(dropout)
        self.hidden_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, l, h = x.shape
        dh = h // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, l, self.heads, dh).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh) + bias
        probs = self.attn_dropout(torch.softmax(scores, dim=-1))
        ctx = (probs @ v).transpose(1, 2).reshape(b, l, h)
        x1 = self.attn_norm(self.hidden_dropout(self.attn_out(ctx)) + x)
        ff = self.hidden_dropout(self.output(F.gelu(self.intermediate(x1))))
        return self.out_norm(ff + x1)


class Bert(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        h = TEXT_HIDDEN
        self.word = nn.Embedding(vocab, h)
        self.position = nn.Embedding(MAX_POSITIONS, h)
        self.token_type = nn.Embedding(2, h)
        self.emb_norm = nn.LayerNorm(h, eps=1e-12)
        self.emb_dropout = nn.Dropout(0.1)
        self.layers = nn.ModuleList(
            BertLayer(h, TEXT_HEADS, TEXT_INTERMEDIATE, 0.1) for _ in range(TEXT_LAYERS)
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, l = ids.shape
        positions = torch.arange(l, device=ids.device).unsqueeze(0).expand(b, l)
        types = torch.zeros_like(ids)
        x = self.word(ids) + self.position(positions) + self.token_type(types)
        x = self.emb_dropout(self.emb_norm(x))
        m = mask.to(x.dtype)
        bias = ((m - 1.0) * 1e4).reshape(b, 1, 1, l)
        for layer in self.layers:
            x = layer(x, bias)
        m = m.unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class ProbabilisticHead(nn.Module):
    def __init__(self, i: int, d: int):
        super().__init__()
        self.d = d
        self.proj = linear(i, 2 * d)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.proj(f)
        return out[:, : self.d], out[:, self.d :].clamp(-6.0, 6.0)


class MedProbClip(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.image = Vit()
        self.text = Bert(vocab)
        self.image_head = ProbabilisticHead(VIT_DIM, EMBED_DIM)
        self.text_head = ProbabilisticHead(TEXT_HIDDEN, EMBED_DIM)
        self.scale = nn.Parameter(torch.ones(1))
        self.shift = nn.Parameter(torch.zeros(1))

    def encode_images(self, x):
        return self.image_head(self.image(x))

    def encode_texts(self, ids, mask):
        return self.text_head(self.text(ids, mask))


def mls_pairwise(a, b) -> torch.Tensor:
    (m1, v1), (m2, v2) = a, b
    s1 = v1.exp().clamp(min=MLS_EPS)
    s2 = v2.exp().clamp(min=MLS_EPS)
    t = s1[:, None, :] + s2[None, :, :]
    dm2 = (m1[:, None, :] - m2[None, :, :]) ** 2
    return 0.5 * (dm2 / t + (t + MLS_EPS).log()).sum(-1)


def pair_term(x, y, scale, shift) -> torch.Tensor:
    logits = -scale.clamp(min=MIN_SCALE) * mls_pairwise(x, y) + shift
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def vib_kl(g) -> torch.Tensor:
    mu, v = g
    return (0.5 * (v.exp() + mu**2 - 1.0 - v).sum(-1)).mean()


def medprobclip_loss(i1, i2, t1, t2, scale, shift) -> torch.Tensor:
    inter = 0.25 * (
        pair_term(i1, t1, scale, shift)
        + pair_term(i1, t2, scale, shift)
        + pair_term(i2, t1, scale, shift)
        + pair_term(i2, t2, scale, shift)
    )
    intra_i = pair_term(i1, i2, scale, shift)
    intra_t = pair_term(t1, t2, scale, shift)
    kl_i = 0.5 * (vib_kl(i1) + vib_kl(i2))
    kl_t = 0.5 * (vib_kl(t1) + vib_kl(t2))
    return inter + LAMBDA_IMAGE * intra_i + LAMBDA_TEXT * intra_t + BETA_IMAGE * kl_i + BETA_TEXT * kl_t


def lr_at(step: int, total: int) -> float:
    """OptimConfig::lr_at: linear warm-up, then a cosine to 0."""
    total = max(total, 1)
    warmup = min(round(WARMUP_FRACTION * total), total - 1)
    if step < warmup:
        return LR * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return LR * 0.5 * (1.0 + math.cos(math.pi * progress))


def peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="timed optimisation steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    p.add_argument("--batch", type=int, default=16, help="studies per batch")
    p.add_argument("--tokens", type=int, default=48, help="tokens per report section")
    p.add_argument("--vocab", type=int, default=2000, help="text vocabulary size")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic batch")
    p.add_argument("--separate-views", action="store_true",
                   help="one encoder call per view and per section (the reference code's way) "
                        "instead of one call for both, as medprob's trainer makes")
    p.add_argument("--encode", type=int, default=2048,
                   help="images embedded (inference, batches of 128) for encode_images_per_s")
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda (device 0; every phase is timed to a torch.cuda.synchronize)")
    p.add_argument("--breakdown", action="store_true",
                   help="also report mean ms of forward, backward and optimiser per step")
    args = p.parse_args()
    if args.batch < 2 or args.steps < 1:
        p.error("need --batch >= 2 and --steps >= 1")

    torch.set_num_threads(args.threads)
    device = torch.device("cuda:0" if args.device == "cuda" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # as candle: full f32 products
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = MedProbClip(args.vocab).to(device)
    model.train()
    decay = [q for q in model.parameters() if q.ndim >= 2]
    no_decay = [q for q in model.parameters() if q.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.999), eps=1e-8,
    )

    g = torch.Generator().manual_seed(args.seed)
    b, l, s = args.batch, args.tokens, IMAGE_SIZE
    image1 = torch.randn(b, 3, s, s, generator=g)
    image2 = torch.randn(b, 3, s, s, generator=g)
    text1 = torch.randint(5, args.vocab, (b, l), generator=g)
    text2 = torch.randint(5, args.vocab, (b, l), generator=g)
    mask = torch.ones(b, l, dtype=torch.long)
    # Made on the CPU from the seeded generator (the same numbers on every device), then moved.
    image1, image2, text1, text2, mask = (x.to(device) for x in (image1, image2, text1, text2, mask))
    total_steps = args.warmup + args.steps

    def step(k: int) -> tuple[float, float, float, float]:
        t0 = time.perf_counter()
        if args.separate_views:
            i1, i2 = model.encode_images(image1), model.encode_images(image2)
            t1, t2 = model.encode_texts(text1, mask), model.encode_texts(text2, mask)
        else:
            # Both views (and both sections) in one pass of each encoder, as medprob's
            # trainer does (MedProbModel::encode_image_views / encode_text_sections).
            def halves(e):  # (mean, log-variance) of 2B rows -> the two (mean, log-variance)
                return tuple(zip(*(x.split(b) for x in e)))
            i1, i2 = halves(model.encode_images(torch.cat([image1, image2])))
            t1, t2 = halves(model.encode_texts(torch.cat([text1, text2]), torch.cat([mask, mask])))
        loss = medprobclip_loss(i1, i2, t1, t2, model.scale, model.shift)
        value = loss.item()
        if not math.isfinite(value):
            raise SystemExit(f"non-finite loss {value} at step {k}")
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        if not math.isfinite(norm.item()):
            raise SystemExit(f"non-finite gradient norm at step {k}")
        for group in optimizer.param_groups:
            group["lr"] = lr_at(k, total_steps)
        optimizer.step()
        sync()
        t3 = time.perf_counter()
        return value, t1 - t0, t2 - t1, t3 - t2

    first_loss = final_loss = float("nan")
    for k in range(args.warmup):
        value = step(k)[0]
        if k == 0:
            first_loss = value
    sums = [0.0, 0.0, 0.0]
    started = time.perf_counter()
    for k in range(args.warmup, total_steps):
        value, *phases = step(k)
        if k == 0:
            first_loss = value
        final_loss = value
        sums = [a + x for a, x in zip(sums, phases)]
    seconds = time.perf_counter() - started

    # Inference: embed --encode images in batches of 128 (after one untimed batch).
    model.eval()
    batch_images = torch.randn(128, 3, s, s, generator=g).to(device)
    with torch.no_grad():
        model.encode_images(batch_images)
        sync()
        t = time.perf_counter()
        for _ in range(max(1, args.encode // 128)):
            model.encode_images(batch_images)
        sync()
        encode_per_s = max(1, args.encode // 128) * 128 / (time.perf_counter() - t)

    n = args.steps
    rss = peak_rss_mib()
    line = {
        "impl": "pytorch",
        "steps_per_s": round(n / seconds, 3),
        "ms_per_step": round(1e3 * seconds / n, 2),
        "batch": args.batch,
        "threads": args.threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_rss_mib": None if rss is None else round(rss, 1),
        "steps": n,
        "warmup": args.warmup,
        "first_loss": round(first_loss, 4),
        "final_loss": round(final_loss, 4),
        "encode_images_per_s": round(encode_per_s, 1),
        "torch": torch.__version__,
    }
    if args.breakdown:
        line["breakdown_ms"] = {
            name: round(1e3 * x / n, 2) for name, x in zip(("forward", "backward", "optimiser"), sums)
        }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
