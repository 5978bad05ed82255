#!/usr/bin/env python3
"""Writes the PyTorch reference files that tests/model/test_reference.cpp compares libmoas against (run by hand; needs
torch, which CI does not install). For each configuration it builds tools/reference/gpt.py in float64, runs one
training-mode forward (dropout 0) and backward on fixed tokens, and writes beside each other:

  tests/reference/NAME.safetensors           the weights as a libmoas checkpoint (state_dict names, config JSON)
  tests/reference/NAME.expected.safetensors  F64 unless noted:
      tokens, targets  I32 [B, T]
      logits           [B, T, V]
      loss             [1]  the cross-entropy alone
      aux              [1]  the unweighted auxiliary (load-balance) loss, mean over layers; 0 for plain models
      grad.{param}     the gradient of loss + aux_weight * aux (aux_weight in the metadata: moas_aux_weight for
                       MoAS, head_selection.load_balance_weight for MoH, 0 otherwise)
    metadata: format_version, torch, aux_weight, and for routed cases (MoAS top1, MoH mixture with K < E)
    min_routing_margin: the smallest gap, over layers and tokens, between the last selected and the best unselected
    probability (router softmax), at least MIN_MARGIN.

    python3 tools/reference/make_reference.py

Before writing, it checks a few invariants of SPEC §6.1-6.2 in PyTorch itself and prints them.
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt import GPT, Config, MoASAttention, MoHAttention  # noqa: E402

FORMAT_VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference")
MIN_MARGIN = 1e-4

# gate_scale multiplies the router / gate weights after initialisation so that routing is not near-uniform.
CASES = {
    "mha_layernorm_gelu": dict(n_head=4, n_kv_head=4),
    "gqa_bias": dict(n_head=4, n_kv_head=2, bias=True),
    "mqa_rmsnorm_swiglu_rope": dict(n_head=4, n_kv_head=1, norm="rmsnorm", mlp="swiglu", position="rope"),
    "gqa_6_3_rope_bias": dict(n_head=6, n_kv_head=3, n_embd=24, position="rope", bias=True),
    "moas_static": dict(n_head=4, attention="moas", moas_mode="static"),
    "moas_soft": dict(n_head=4, attention="moas", moas_mode="soft", bias=True, gate_scale=8.0),
    "moas_top1": dict(n_head=4, attention="moas", moas_mode="top1", gate_scale=8.0),
    "moas_soft_rope_rms_custom_branches": dict(n_head=6, n_kv_head=6, n_embd=24, attention="moas", moas_mode="soft",
                                               moas_branch_kv_heads=[3, 1], position="rope", norm="rmsnorm",
                                               gate_scale=8.0),
    "moh_mixture": dict(n_head=4, n_kv_head=4, attention="moh", gate_scale=5.0,
                        head_selection=dict(strategy="mixture", num_shared_heads=1, num_active_routed_heads=2)),
    "moh_mixture_gqa_rope": dict(n_head=6, n_kv_head=2, n_embd=24, attention="moh", position="rope", gate_scale=5.0,
                                 head_selection=dict(strategy="mixture", num_shared_heads=2,
                                                     num_active_routed_heads=2)),
    "moh_routed_only": dict(n_head=4, n_kv_head=4, attention="moh", gate_scale=5.0,
                            head_selection=dict(strategy="mixture", num_shared_heads=0, num_active_routed_heads=2)),
    "moh_static_pruning": dict(n_head=4, n_kv_head=2, attention="moh",
                               head_selection=dict(strategy="static_pruning", num_active_heads=3)),
    "moh_one_shared": dict(n_head=4, n_kv_head=4, attention="moh", gate_scale=5.0,
                           head_selection=dict(strategy="mixture", num_shared_heads=1, num_active_routed_heads=1)),
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


def config_json(cfg):
    d = dict(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
             n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, n_embd=cfg.n_embd,
             mlp_hidden=cfg.hidden, norm=cfg.norm, mlp=cfg.mlp, position=cfg.position,
             attention=cfg.attention, bias=cfg.bias, dropout=0.0, attn_dropout=False,
             rope_base=cfg.rope_base, seed=1)
    if cfg.attention == "moas":
        d.update(moas_mode=cfg.moas_mode, moas_branch_kv_heads=list(cfg.moas_branch_kv_heads),
                 moas_aux_weight=cfg.moas_aux_weight)
    elif cfg.attention == "moh":
        hs = cfg.head_selection
        d["head_selection"] = dict(strategy=hs["strategy"], num_shared_heads=int(hs["num_shared_heads"]),
                                   num_active_routed_heads=int(hs["num_active_routed_heads"]),
                                   num_active_heads=int(hs["num_active_heads"]),
                                   load_balance_weight=hs["load_balance_weight"], gates=hs["gates"])
    return json.dumps(d)


def is_gate_weight(pname):
    return ".attn.router." in pname or any(pname.endswith(f".attn.{w}.weight") for w in ("wg", "wg_0", "wg_1"))


def routing_margin(model):
    """Smallest selection margin over layers and tokens of the last forward (None when nothing is selected)."""
    margins = [m.last_margin.min().item() for m in model.modules()
               if isinstance(m, (MoASAttention, MoHAttention)) and m.last_margin is not None]
    return min(margins) if margins else None


def build(cfg, seed, gate_scale):
    torch.manual_seed(seed)
    model = GPT(cfg).double()
    with torch.no_grad():  # move norm gains and biases off their initial values
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
            if is_gate_weight(pname) and p.dim() >= 2:
                p.mul_(gate_scale)
            p.copy_(p.float().double())  # the checkpoint holds float32: compute from exactly those values
    return model


def make_case(name, overrides):
    overrides = dict(overrides)
    gate_scale = overrides.pop("gate_scale", 1.0)
    base = dict(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=4, n_embd=16, mlp_hidden=32)
    base.update(overrides)
    cfg = Config(**base)
    B, T = 2, 7
    g = torch.Generator().manual_seed(99)
    tokens = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    targets[0, 2] = -1
    for seed in range(1234, 1334):
        model = build(cfg, seed, gate_scale)
        logits, ce, aux = model(tokens, targets, return_aux=True)
        margin = routing_margin(model)
        if margin is None or margin >= MIN_MARGIN:
            break
    else:
        raise RuntimeError(f"{name}: no seed gives routing margins >= {MIN_MARGIN}")
    weight = cfg.aux_weight()
    (ce + weight * aux).backward()

    state = {k: v.float() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(OUT, f"{name}.safetensors"), state, {"config": config_json(cfg), "format": "pt"})

    expected = {"tokens": tokens.int(), "targets": targets.int(), "logits": logits.detach(),
                "loss": ce.detach().reshape(1)}
    for pname, p in model.named_parameters():  # the tied head appears once, as transformer.wte.weight
        expected["grad." + pname] = p.grad
    expected["aux"] = aux.detach().reshape(1)
    meta = {"format_version": str(FORMAT_VERSION), "torch": torch.__version__, "aux_weight": repr(weight)}
    if margin is not None:
        meta["min_routing_margin"] = repr(margin)
    write_safetensors(os.path.join(OUT, f"{name}.expected.safetensors"), expected, meta)
    return seed, margin, ce.item(), aux.item()


def max_diff(a, b):
    return (a - b).abs().max().item()


def self_check():
    """SPEC §6.1-6.2 facts, in PyTorch alone (float64). Returns the worst difference."""
    base = dict(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, mlp_hidden=32)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 11, (2, 7), generator=g)
    worst = 0.0

    # static MoAS == the average of its branches evaluated alone (per layer, on the same normalised input)
    torch.manual_seed(1)
    moas = GPT(Config(**dict(base, attention="moas", moas_mode="static", position="rope"))).double()
    x = torch.randn(2, 7, 16, generator=g)
    for l, block in enumerate(moas.transformer.h):
        y, _ = block.attn(x)
        alone = sum(getattr(block.attn, n)(x) for n in block.attn.names) / len(block.attn.names)
        d = max_diff(y, alone)
        worst = max(worst, d)
        print(f"  self-check: MoAS static layer {l} == mean of branches alone: max|diff| = {d:.3g}")

    for kv, pos in ((4, "learned"), (2, "rope"), (1, "learned")):
        cfg_plain = dict(base, n_kv_head=kv, position=pos)
        torch.manual_seed(2)
        plain = GPT(Config(**cfg_plain)).double()
        sd = plain.state_dict()
        ref = plain(tokens)[0]
        # MoH AllHeads == plain attention with the same weights
        allh = GPT(Config(**dict(cfg_plain, attention="moh", head_selection=dict(strategy="all")))).double()
        allh.load_state_dict(sd)
        d = max_diff(allh(tokens)[0], ref)
        worst = max(worst, d)
        print(f"  self-check: MoH all == plain (kv {kv}, {pos}): max|diff| = {d:.3g}")
        # StaticPruning{H} == AllHeads
        sp = GPT(Config(**dict(cfg_plain, attention="moh",
                               head_selection=dict(strategy="static_pruning", num_active_heads=4)))).double()
        sp.load_state_dict(sd)
        d = max_diff(sp(tokens)[0], ref)
        worst = max(worst, d)
        print(f"  self-check: MoH static_pruning{{H}} == all (kv {kv}, {pos}): max|diff| = {d:.3g}")
        # MixtureOfHeads with zero gate weights and K = E == AllHeads; the LB loss is then E (= K)
        for h_s in (0, 1, 2):
            E = 4 - h_s
            mix = GPT(Config(**dict(cfg_plain, attention="moh", head_selection=dict(
                strategy="mixture", num_shared_heads=h_s, num_active_routed_heads=E)))).double()
            missing, unexpected = mix.load_state_dict(sd, strict=False)
            assert not unexpected and all(is_gate_weight(m) for m in missing), (missing, unexpected)
            with torch.no_grad():
                for m in missing:
                    mix.get_parameter(m).zero_()
            logits, _, aux = mix(tokens, return_aux=True)
            d = max_diff(logits, ref)
            worst = max(worst, d, abs(aux.item() - E))
            print(f"  self-check: MoH mixture h_s={h_s} K=E={E}, zero gates == all (kv {kv}, {pos}): "
                  f"max|diff| = {d:.3g}, aux = {aux.item():.12g} (want {E})")
    return worst


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    worst = self_check()
    assert worst < 1e-12, worst
    print(f"self-check passed (worst {worst:.3g})")
    for name, overrides in CASES.items():
        seed, margin, ce, aux = make_case(name, overrides)
        print(f"wrote {name}: seed {seed}, CE {ce:.6f}, aux {aux:.6g}"
              + ("" if margin is None else f", min routing margin {margin:.3g}"))


if __name__ == "__main__":
    main()
