"""An independent PyTorch implementation of SPEC §1-2 (nanoGPT-style), used to check libmoas against and to
benchmark against. Its state_dict names are the ones libmoas reads and writes."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, **kw):
        self.vocab_size, self.block_size, self.n_layer, self.n_head = 65, 256, 6, 6
        self.n_kv_head, self.n_embd, self.mlp_hidden, self.dropout = 6, 384, 0, 0.0
        self.norm, self.mlp, self.position, self.bias = "layernorm", "gelu", "learned", False
        self.rope_base = 10000.0
        self.__dict__.update(kw)
        self.hidden = self.mlp_hidden or 4 * self.n_embd


class RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def make_norm(cfg):
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd)
    return nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)


def rope(x, base):
    # x [B, heads, T, d]: rotate pairs (2i, 2i+1) by pos * base^(-2i/d)
    B, Hh, T, d = x.shape
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


class Attention(nn.Module):
    def __init__(self, cfg, sdpa):
        super().__init__()
        self.cfg, self.sdpa = cfg, sdpa
        C, d = cfg.n_embd, cfg.n_embd // cfg.n_head
        if cfg.n_kv_head == cfg.n_head:
            self.c_attn = nn.Linear(C, 3 * C, bias=cfg.bias)
        else:
            self.q_proj = nn.Linear(C, C, bias=cfg.bias)
            self.k_proj = nn.Linear(C, cfg.n_kv_head * d, bias=cfg.bias)
            self.v_proj = nn.Linear(C, cfg.n_kv_head * d, bias=cfg.bias)
        self.c_proj = nn.Linear(C, C, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        cfg = self.cfg
        B, T, C = x.shape
        H, Hkv, d = cfg.n_head, cfg.n_kv_head, C // cfg.n_head
        if Hkv == H:
            q, k, v = self.c_attn(x).split(C, dim=2)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, H, d).transpose(1, 2)
        k = k.view(B, T, Hkv, d).transpose(1, 2)
        v = v.view(B, T, Hkv, d).transpose(1, 2)
        if cfg.position == "rope":
            q, k = rope(q, cfg.rope_base), rope(k, cfg.rope_base)
        if Hkv != H:  # the reference expands K/V; libmoas indexes the shared head instead
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=cfg.dropout if self.training else 0.0)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = self.attn_dropout(att) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.c_fc = nn.Linear(cfg.n_embd, cfg.hidden, bias=cfg.bias)
        if self.swiglu:
            self.c_up = nn.Linear(cfg.n_embd, cfg.hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = F.silu(self.c_fc(x)) * self.c_up(x) if self.swiglu else F.gelu(self.c_fc(x))
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg, sdpa):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = make_norm(cfg), Attention(cfg, sdpa), make_norm(cfg), MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg, sdpa=False):
        super().__init__()
        self.cfg = cfg
        modules = dict(wte=nn.Embedding(cfg.vocab_size, cfg.n_embd), drop=nn.Dropout(cfg.dropout),
                       h=nn.ModuleList([Block(cfg, sdpa) for _ in range(cfg.n_layer)]), ln_f=make_norm(cfg))
        if cfg.position == "learned":
            modules["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.transformer.wte(idx)
        if self.cfg.position == "learned":
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss
