"""An independent PyTorch implementation of SPEC §1-4 (nanoGPT-style): the plain GPT with one attention scheme
(MHA/GQA/MQA), MoAS (Mixture of Attention Schemes, §3) and MoH (Mixture-of-Heads with reference-faithful gates,
§4), used to check libmoas against and to benchmark against. Its state_dict names are the ones libmoas reads and
writes. Written from SPEC.md alone; it computes every branch / head densely and masks, which is mathematically
what libmoas computes sparsely."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MOH_EPS = 1e-9  # eps in max(sum_j r_j m_j, eps) of SPEC §4 (SPEC gives no value; never binds: the sum >= K/E)


class Config:
    def __init__(self, **kw):
        self.vocab_size, self.block_size, self.n_layer, self.n_head = 65, 256, 6, 6
        self.n_kv_head, self.n_embd, self.mlp_hidden, self.dropout = 6, 384, 0, 0.0
        self.norm, self.mlp, self.position, self.bias = "layernorm", "gelu", "learned", False
        self.rope_base = 10000.0
        self.attention = "scheme"  # "scheme" | "moas" | "moh"
        self.moas_mode, self.moas_branch_kv_heads, self.moas_aux_weight = "soft", None, 0.01
        head_selection = dict(strategy="all", num_shared_heads=0, num_active_routed_heads=0, num_active_heads=0,
                              load_balance_weight=0.01, gates="reference")
        head_selection.update(kw.pop("head_selection", None) or {})
        self.head_selection = head_selection
        self.__dict__.update(kw)
        self.hidden = self.mlp_hidden or 4 * self.n_embd
        if self.moas_branch_kv_heads is None:
            self.moas_branch_kv_heads = [self.n_head, 2, 1]
        self.moas_branch_kv_heads = [int(k) for k in self.moas_branch_kv_heads]

    def aux_weight(self):
        """lambda of total = CE + lambda * aux (SPEC §3, §4, §8)."""
        if self.attention == "moas":
            return self.moas_aux_weight
        if self.attention == "moh":
            return self.head_selection["load_balance_weight"]
        return 0.0


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
    """One scheme (SPEC §2). n_kv_head overrides cfg.n_kv_head (a MoAS branch)."""

    def __init__(self, cfg, sdpa, n_kv_head=None):
        super().__init__()
        self.cfg, self.sdpa = cfg, sdpa
        self.n_kv_head = cfg.n_kv_head if n_kv_head is None else n_kv_head
        C, d = cfg.n_embd, cfg.n_embd // cfg.n_head
        assert cfg.n_head % self.n_kv_head == 0
        if self.n_kv_head == cfg.n_head:
            self.c_attn = nn.Linear(C, 3 * C, bias=cfg.bias)
        else:
            self.q_proj = nn.Linear(C, C, bias=cfg.bias)
            self.k_proj = nn.Linear(C, self.n_kv_head * d, bias=cfg.bias)
            self.v_proj = nn.Linear(C, self.n_kv_head * d, bias=cfg.bias)
        self.c_proj = nn.Linear(C, C, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def heads(self, x):
        """Per-head attention outputs [B, H, T, d], before the output projection."""
        cfg = self.cfg
        B, T, C = x.shape
        H, Hkv, d = cfg.n_head, self.n_kv_head, C // cfg.n_head
        if Hkv == H:
            q, k, v = self.c_attn(x).split(C, dim=2)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, H, d).transpose(1, 2)
        k = k.view(B, T, Hkv, d).transpose(1, 2)
        v = v.view(B, T, Hkv, d).transpose(1, 2)
        if cfg.position == "rope":
            q, k = rope(q, cfg.rope_base), rope(k, cfg.rope_base)
        if Hkv != H:  # the reference expands K/V (query head h reads kv head h // (H/Hkv)); libmoas indexes instead
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        if self.sdpa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=cfg.dropout if self.training else 0.0)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.attn_dropout(att) @ v

    def project(self, y):
        B, H, T, d = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, H * d)))

    def forward(self, x):
        return self.project(self.heads(x))


def moas_branch_names(cfg):
    kvs = cfg.moas_branch_kv_heads
    if kvs == [cfg.n_head, 2, 1]:
        return ["mha", "gqa", "mqa"]
    return [f"b{k}" for k in range(len(kvs))]


class MoASAttention(nn.Module):
    """SPEC §3: S complete schemes mixed per token by a router on the block's normalised input."""

    def __init__(self, cfg, sdpa):
        super().__init__()
        self.cfg, self.mode = cfg, cfg.moas_mode
        assert self.mode in ("static", "soft", "top1"), self.mode
        assert 1 <= len(cfg.moas_branch_kv_heads) <= 4
        self.names = moas_branch_names(cfg)
        for name, kv in zip(self.names, cfg.moas_branch_kv_heads):
            setattr(self, name, Attention(cfg, sdpa, n_kv_head=kv))
        C, S = cfg.n_embd, len(self.names)
        if self.mode != "static":
            self.router = nn.Sequential(nn.Linear(C, C // 4, bias=cfg.bias), nn.GELU(),
                                        nn.Linear(C // 4, S, bias=cfg.bias))
        self.gate_dropout = nn.Dropout(cfg.dropout)
        self.last_gates = self.last_margin = None

    def forward(self, x):
        """Returns (y, aux): aux is the layer's load-balance loss (None without router or outside training)."""
        outs = torch.stack([getattr(self, n)(x) for n in self.names], dim=-1)  # [B, T, C, S]
        S = outs.shape[-1]
        if self.mode == "static":
            self.last_gates = self.last_margin = None
            return outs.mean(-1), None
        g = self.router(x).softmax(-1)  # [B, T, S], in the compute dtype (float64 here)
        self.last_gates = g.detach()
        aux = None
        if self.training:
            aux = ((g.reshape(-1, S).mean(0) - 1.0 / S) ** 2).mean()
        gd = self.gate_dropout(g)  # no renormalisation
        if self.mode == "soft":
            self.last_margin = None
            return (outs * gd.unsqueeze(-2)).sum(-1), aux
        # top1: the branch is picked by the pre-dropout argmax (ties to the lower index: argmax returns the first)
        pick = g.argmax(-1)
        onehot = F.one_hot(pick, S).to(g.dtype)
        srt = g.detach().sort(-1, descending=True).values
        self.last_margin = (srt[..., 0] - srt[..., 1]) if S > 1 else None
        return (outs * (gd * onehot).unsqueeze(-2)).sum(-1), aux


def topk_mask(r, k):
    """0/1 indicator of the k largest entries along the last dim, ties to the lower index."""
    order = torch.sort(r.detach(), dim=-1, descending=True, stable=True).indices
    m = torch.zeros_like(r)
    return m.scatter(-1, order[..., :k], 1.0)


class MoHAttention(Attention):
    """SPEC §4: one scheme whose heads are gated per token (reference-faithful gates of the public MoH code)."""

    def __init__(self, cfg, sdpa):
        super().__init__(cfg, sdpa)
        hs = cfg.head_selection
        self.strategy = hs["strategy"]
        H, C = cfg.n_head, cfg.n_embd
        if self.strategy == "mixture":
            assert hs["gates"] == "reference", "only the reference-faithful gates are implemented"
            self.h_s, self.K = int(hs["num_shared_heads"]), int(hs["num_active_routed_heads"])
            self.E = H - self.h_s
            assert 0 <= self.h_s <= H and 0 <= self.K <= self.E
            if self.E > 0:
                self.wg = nn.Linear(C, self.E, bias=False)
            if self.h_s > 0 and self.K > 0:
                self.wg_0 = nn.Linear(C, 2, bias=False)
            if self.h_s > 1:
                self.wg_1 = nn.Linear(C, self.h_s, bias=False)
        elif self.strategy == "static_pruning":
            self.k_active = int(hs["num_active_heads"])
            assert 0 <= self.k_active <= H
        else:
            assert self.strategy == "all", self.strategy
        self.last_margin = self.last_mask = None

    def gates(self, x):
        """(gates [B, T, H], aux or None)."""
        B, T, C = x.shape
        H = self.cfg.n_head
        self.last_margin = self.last_mask = None
        if self.strategy == "all":
            return x.new_ones(B, T, H), None
        if self.strategy == "static_pruning":
            g = x.new_zeros(B, T, H)
            g[..., :self.k_active] = 1.0
            return g, None
        h_s, E, K = self.h_s, self.E, self.K
        shared = routed = None
        aux = None
        if h_s > 0:
            s = self.wg_1(x).softmax(-1) if h_s > 1 else x.new_ones(B, T, 1)
            shared = h_s * s
        if E > 0:
            r = self.wg(x).softmax(-1)  # [B, T, E], the full routed softmax
            m = topk_mask(r, K)
            self.last_mask = m
            if 0 < K < E:
                srt = r.detach().sort(-1, descending=True).values
                self.last_margin = srt[..., K - 1] - srt[..., K]
            rm = r * m
            routed = K * rm / rm.sum(-1, keepdim=True).clamp_min(MOH_EPS)
            if self.training:
                P = r.reshape(-1, E).mean(0)
                f = m.reshape(-1, E).mean(0)
                aux = E * (P * f).sum()
        if h_s > 0 and K > 0:
            a = self.wg_0(x).softmax(-1)
            shared = shared * (2 * a[..., 0:1])
            routed = routed * (2 * a[..., 1:2])
        parts = [p for p in (shared, routed) if p is not None]
        return torch.cat(parts, dim=-1), aux

    def forward(self, x):
        g, aux = self.gates(x)
        y = self.heads(x) * g.transpose(1, 2).unsqueeze(-1)  # inactive heads contribute zeros
        return self.project(y), aux


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


def make_attention(cfg, sdpa):
    if cfg.attention == "moas":
        return MoASAttention(cfg, sdpa)
    if cfg.attention == "moh":
        return MoHAttention(cfg, sdpa)
    assert cfg.attention == "scheme", cfg.attention
    return Attention(cfg, sdpa)


class Block(nn.Module):
    def __init__(self, cfg, sdpa):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = make_norm(cfg), make_attention(cfg, sdpa), make_norm(cfg), MLP(cfg)

    def forward(self, x):
        """Returns (x, aux of this layer's attention or None)."""
        a = self.attn(self.ln_1(x))
        a, aux = a if isinstance(a, tuple) else (a, None)
        x = x + a
        return x + self.mlp(self.ln_2(x)), aux


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

    def forward(self, idx, targets=None, return_aux=False):
        """return_aux=False (the original interface): (logits, loss) with loss = CE + lambda * aux (= CE for a
        plain model). return_aux=True: (logits, ce, aux), aux the unweighted mean over MoAS/MoH layers (a 0-d
        tensor, 0 for plain models, static MoAS, AllHeads/StaticPruning and outside training)."""
        B, T = idx.shape
        x = self.transformer.wte(idx)
        if self.cfg.position == "learned":
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        x = self.transformer.drop(x)
        auxes = []
        for block in self.transformer.h:
            x, aux = block(x)
            if aux is not None:
                auxes.append(aux)
        logits = self.lm_head(self.transformer.ln_f(x))
        mixed = self.cfg.attention in ("moas", "moh")
        aux = torch.stack(auxes).sum() / self.cfg.n_layer if auxes else logits.new_zeros(())
        # every layer of a MoAS/MoH model is such a layer, so the mean is over n_layer
        assert not auxes or (mixed and len(auxes) == self.cfg.n_layer)
        ce = None
        if targets is not None:
            ce = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        if return_aux:
            return logits, ce, aux
        loss = None if ce is None else (ce + self.cfg.aux_weight() * aux if auxes else ce)
        return logits, loss
