#!/usr/bin/env python3
"""Writes the PyTorch reference files that tests/test_reference.cpp compares libmoas against (run by hand; needs
torch, which CI does not install). For each configuration it builds tools/reference/gpt.py in float64, runs one
forward and backward on fixed tokens, and writes beside each other:

  tests/reference/NAME.safetensors           the weights as a libmoas checkpoint (state_dict names, config JSON)
  tests/reference/NAME.expected.safetensors  tokens, targets, logits, loss and every parameter's gradient (F64)

    python3 tools/reference/make_reference.py
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt import GPT, Config  # noqa: E402

FORMAT_VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference")

CASES = {
    "mha_layernorm_gelu": dict(n_head=4, n_kv_head=4),
    "gqa_bias": dict(n_head=4, n_kv_head=2, bias=True),
    "mqa_rmsnorm_swiglu_rope": dict(n_head=4, n_kv_head=1, norm="rmsnorm", mlp="swiglu", position="rope"),
    "gqa_6_3_rope_bias": dict(n_head=6, n_kv_head=3, n_embd=24, position="rope", bias=True),
}


def write_safetensors(path, tensors, metadata):
    """Minimal safetensors writer (F32/F64/I32), independent of libmoas's."""
    dtypes = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_case(name, overrides):
    base = dict(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=4, n_embd=16, mlp_hidden=32)
    base.update(overrides)
    cfg = Config(**base)
    torch.manual_seed(1234)
    model = GPT(cfg).double()
    with torch.no_grad():  # move norm gains and biases off their initial values
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
            p.copy_(p.float().double())  # the checkpoint holds float32: compute from exactly those values
    B, T = 2, 7
    g = torch.Generator().manual_seed(99)
    tokens = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    targets[0, 2] = -1
    logits, loss = model(tokens, targets)
    loss.backward()

    config_json = json.dumps(dict(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                                  n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, n_embd=cfg.n_embd,
                                  mlp_hidden=cfg.hidden, norm=cfg.norm, mlp=cfg.mlp, position=cfg.position,
                                  attention="scheme", bias=cfg.bias, dropout=0.0, attn_dropout=False,
                                  rope_base=cfg.rope_base, seed=1))
    state = {k: v.float() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(OUT, f"{name}.safetensors"), state, {"config": config_json, "format": "pt"})

    expected = {"tokens": tokens.int(), "targets": targets.int(), "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for pname, p in model.named_parameters():  # the tied head appears once, as transformer.wte.weight
        expected["grad." + pname] = p.grad
    write_safetensors(os.path.join(OUT, f"{name}.expected.safetensors"), expected,
                      {"format_version": str(FORMAT_VERSION), "torch": torch.__version__})


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    for name, overrides in CASES.items():
        make_case(name, overrides)
        print("wrote", name)


if __name__ == "__main__":
    main()
