#!/usr/bin/env python3
"""Golden reference for a tiny, randomly initialised timm Vision Transformer.

Builds the real `timm.models.vision_transformer.VisionTransformer` (timm pinned in
scripts/requirements-timm.txt) with

    img_size=32, patch_size=8, in_chans=3, num_classes=0, embed_dim=48, depth=2,
    num_heads=3, mlp_ratio=2.0, qkv_bias=True, class_token=True, global_pool='token'

under torch.manual_seed(0), then perturbs every parameter (in named_parameters() order) by
0.05 * randn drawn under torch.manual_seed(1), so that no LayerNorm weight is exactly 1, no bias
is exactly 0 and cls_token is not ~0: a golden test then notices a wrong/missing mapping of any
tensor. The model runs in eval mode, float32, CPU, one thread.

Writes
  testdata/golden/vit_timm_tiny.safetensors  every state_dict tensor, under timm's own names
                                             (Identity modules own no tensors, so none appear)
  testdata/golden/vit_timm_tiny.json         config, input recipe, versions and outputs

Input (deterministic, no RNG):
  x = torch.linspace(-1, 1, 2*3*32*32, dtype=float32).reshape(2, 3, 32, 32)   # NCHW

Outputs (torch.no_grad()):
  features = model.forward_features(x)        [2, 17, 48]  tokens after the final `norm`
  cls        = features[:, 0]                 [2, 48]      == model(x) for global_pool='token'
  mean_patch = features[:, 1:].mean(1)        [2, 48]      mean over the 16 patch tokens of the
                                                           *normed* sequence (NOT timm's 'avg'
                                                           pool, which skips `norm` and applies
                                                           `fc_norm` after the mean instead)
  features_first_token_row = features[0, 0]   [48]         sanity duplicate of cls[0]
  features   (full [2][17][48])               for debugging a mismatch token by token

Floats are written as Python float reprs of the exact float32 values, so parsing them as f32
(or as f64 and casting) gives back torch's outputs bit for bit.

Setup (on top of scripts/requirements-perf.txt and scripts/requirements-golden.txt):
  scripts/.venv/bin/pip install --no-deps -r scripts/requirements-timm.txt

usage: scripts/.venv/bin/python scripts/golden_vit_timm.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F
import timm
from timm.models.vision_transformer import VisionTransformer
from safetensors.torch import save_file, load_file

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(SCRIPTS)
OUT_DIR = os.path.join(ROOT, "testdata", "golden")
OUT_ST = os.path.join(OUT_DIR, "vit_timm_tiny.safetensors")
OUT_JSON = os.path.join(OUT_DIR, "vit_timm_tiny.json")

CONFIG = dict(img_size=32, patch_size=8, in_chans=3, num_classes=0, embed_dim=48, depth=2,
              num_heads=3, mlp_ratio=2.0, qkv_bias=True, class_token=True, global_pool="token")
LN_EPS = 1e-6  # timm.layers.LayerNorm default, used by VisionTransformer when norm_layer=None
PERTURB_SEED = 1
PERTURB_STD = 0.05
BATCH = 2


def build_model():
    torch.manual_seed(0)
    model = VisionTransformer(**CONFIG)
    torch.manual_seed(PERTURB_SEED)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(PERTURB_STD * torch.randn_like(p))
    model.eval()
    return model


def make_input():
    c, s = CONFIG["in_chans"], CONFIG["img_size"]
    return torch.linspace(-1.0, 1.0, BATCH * c * s * s, dtype=torch.float32).reshape(BATCH, c, s, s)


def reference_forward(sd, x):
    """Plain-torch ViT straight from the state dict: checks the layout claims in the JSON."""
    D, H, P = CONFIG["embed_dim"], CONFIG["num_heads"], CONFIG["patch_size"]
    hd = D // H
    B = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P)
    t = t.flatten(2).transpose(1, 2)                       # [B, gh*gw, D], row-major patches
    t = torch.cat([sd["cls_token"].expand(B, -1, -1), t], dim=1) + sd["pos_embed"]
    N = t.shape[1]
    for i in range(CONFIG["depth"]):
        pre = "blocks.%d." % i
        h = F.layer_norm(t, (D,), sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], LN_EPS)
        qkv = h @ sd[pre + "attn.qkv.weight"].T + sd[pre + "attn.qkv.bias"]   # [B, N, 3D]
        q, k, v = qkv.split(D, dim=-1)                     # q rows 0..D, k rows D..2D, v 2D..3D
        q, k, v = (z.reshape(B, N, H, hd).transpose(1, 2) for z in (q, k, v))  # heads contiguous
        a = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        o = (a @ v).transpose(1, 2).reshape(B, N, D)
        t = t + o @ sd[pre + "attn.proj.weight"].T + sd[pre + "attn.proj.bias"]
        h = F.layer_norm(t, (D,), sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], LN_EPS)
        h = h @ sd[pre + "mlp.fc1.weight"].T + sd[pre + "mlp.fc1.bias"]
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # nn.GELU() default: exact erf
        t = t + h @ sd[pre + "mlp.fc2.weight"].T + sd[pre + "mlp.fc2.bias"]
    return F.layer_norm(t, (D,), sd["norm.weight"], sd["norm.bias"], LN_EPS)


def floats(t):
    return [float(v) for v in t.tolist()]


def main():
    torch.set_num_threads(1)
    model = build_model()
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}

    for name, t in sd.items():
        assert t.dtype == torch.float32, (name, t.dtype)
        if name.endswith(".bias"):
            assert not (t == 0).any(), name
        if "norm" in name and name.endswith(".weight"):
            assert not (t == 1).any(), name

    x = make_input()
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)                                   # head is Identity (num_classes=0)
        pooled = model.forward_head(feats, pre_logits=True)
        ref = reference_forward(sd, x)
    n_tok = (CONFIG["img_size"] // CONFIG["patch_size"]) ** 2 + 1
    assert feats.shape == (BATCH, n_tok, CONFIG["embed_dim"]), feats.shape
    cls = feats[:, 0]
    mean_patch = feats[:, 1:].mean(1)
    assert torch.equal(logits, cls) and torch.equal(pooled, cls)
    ref_err = (ref - feats).abs().max().item()
    assert ref_err < 1e-5, ref_err

    os.makedirs(OUT_DIR, exist_ok=True)
    save_file(sd, OUT_ST + ".part", metadata={"format": "pt", "generator": "scripts/golden_vit_timm.py"})
    os.replace(OUT_ST + ".part", OUT_ST)
    back = load_file(OUT_ST)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)

    head = {
        "model": "timm.models.vision_transformer.VisionTransformer (random init, perturbed)",
        "generator": "scripts/golden_vit_timm.py",
        "weights": "testdata/golden/vit_timm_tiny.safetensors",
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "config": dict(CONFIG, layer_norm_eps=LN_EPS, gelu="erf (torch.nn.GELU, approximate='none')",
                       num_tokens=n_tok, head_dim=CONFIG["embed_dim"] // CONFIG["num_heads"],
                       mlp_hidden=int(CONFIG["embed_dim"] * CONFIG["mlp_ratio"])),
        "init": "torch.manual_seed(0); VisionTransformer(**config); torch.manual_seed(1); "
                "for each named_parameters() in order: p += 0.05 * randn_like(p)",
        "layout": {
            "patch_embed": "Conv2d(in_chans, D, kernel=stride=patch_size); weight [D, C, P, P]; "
                           "patches flattened row-major (h, w) after the class token",
            "pos_embed": "[1, 1 + num_patches, D], added after concatenating cls_token first",
            "qkv": "attn.qkv.weight [3D, D] (nn.Linear, y = x W^T + b): rows [0,D) = q, "
                   "[D,2D) = k, [2D,3D) = v; within each, head h owns rows [h*hd, (h+1)*hd)",
            "attn_scale": "head_dim ** -0.5",
            "block": "pre-norm: x += attn.proj(attn(norm1(x))); x += mlp.fc2(gelu(mlp.fc1(norm2(x))))",
            "final_norm": "`norm` is applied to all tokens inside forward_features; fc_norm is "
                          "Identity for global_pool='token' (for 'avg' timm swaps: norm=Identity, "
                          "fc_norm applied after the mean over patch tokens)",
        },
        "input": "x = torch.linspace(-1, 1, 2*3*32*32, dtype=float32).reshape(2, 3, 32, 32) (NCHW)",
        "outputs": "features = forward_features(x) [2,17,48]; cls = features[:, 0]; "
                   "mean_patch = features[:, 1:].mean(1); features_first_token_row = features[0, 0]",
        "reference_forward_max_abs_err": ref_err,
    }
    body = {
        "cls": [floats(r) for r in cls],
        "mean_patch": [floats(r) for r in mean_patch],
        "features_first_token_row": floats(feats[0, 0]),
        "features": [[floats(tok) for tok in img] for img in feats],
    }
    lines = ["{"]
    for key, value in head.items():
        lines.append("  %s: %s," % (json.dumps(key), json.dumps(value)))
    items = list(body.items())
    for k, (key, value) in enumerate(items):
        lines.append("  %s: %s%s" % (json.dumps(key), json.dumps(value), "," if k + 1 < len(items) else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    with open(OUT_JSON + ".part", "w") as f:
        f.write(text)
    os.replace(OUT_JSON + ".part", OUT_JSON)

    for k, v in sd.items():
        print("%-28s %s" % (k, list(v.shape)))
    print("features", list(feats.shape), "reference max abs err", ref_err)
    print("cls[0][:5]        ", floats(cls[0][:5]))
    print("mean_patch[0][:5] ", floats(mean_patch[0][:5]))
    print(OUT_ST, os.path.getsize(OUT_ST))
    print(OUT_JSON, os.path.getsize(OUT_JSON))


if __name__ == "__main__":
    main()
