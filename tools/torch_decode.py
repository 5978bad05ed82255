#!/usr/bin/env python3
"""PyTorch-eager baseline for the decode benchmark: greedy KV-cache decoding of the independent reference model
(tools/reference/gpt.py) in float32, one token per sequence per step, reported as tokens/s.

What is measured (decode_tokens_per_s): the paper's model (6 layers, n_embd 384, vocab 65, learned positions, no
bias, dropout 0, block_size = context) in eval mode under torch.inference_mode(), torch.set_num_threads(threads).
`batch` sequences of `context - steps` random tokens are prefilled into the cache (untimed, in chunks), one decode
step is run and rewound as a warm-up (untimed), then `steps` greedy steps are timed, each feeding back the argmax
token; the result is batch * steps / seconds. Model construction and prefill are never timed.

How it maps to libmoas's decode (moas_kv_cache_create / moas_prefill / moas_decode_step): like libmoas, the cache
holds per layer, and per MoAS branch, only the kv heads that scheme has (MQA < GQA < MHA; MoAS pays the sum of its
branches), preallocated for the whole context, and a query head h reads kv head h // (H / Hkv) by indexing, not by
expanding K/V (the query heads of one kv head are folded into the query-length dimension, so GQA/MQA attention is
one batched product over the Hkv cached heads). Each step runs the full stack on the new token only.

The math is the reference's: the decoder calls the reference model's own modules and weights (wte, wpe, each
block's ln_1 / ln_2 / mlp, MoAS routers, ln_f, the tied lm_head) and re-does only the attention, which must read the
cache. Its q/k/v projections are one product with the reference's q/k/v weights concatenated (the same dot
products; libmoas fuses them too), attention is (q k^T) / sqrt(d), causal mask, softmax, times v, as in the
reference's explicit path (sdpa=True uses F.scaled_dot_product_attention instead). Kinds (KINDS below):

- MHA / GQA2 / MQA: one scheme with 6 query heads and 6 / 2 / 1 kv heads.
- MoAS_soft, MoAS_top1 (and MoAS_static): branches MHA / GQA-2 / MQA (the reference's default moas_branch_kv_heads
  [n_head, 2, 1]), mixed by the router's softmax on the block's normalised input. soft computes every branch and
  sums them weighted by the gates. top1 weights the argmax branch by its gate; every branch's keys and values are
  still computed and cached at every step (later tokens may pick any branch), but while decoding only the sequences
  that picked a branch run its attention and output projection (all rows at once when every sequence picked it,
  none when no sequence did). Prefill computes every branch densely and masks, as the reference does.
- MoH75: 8 heads, 2 shared + the top 4 of 6 routed heads active per token, with the reference-faithful gates
  (MoHAttention.gates without its router statistics). This baseline computes all 8 heads and multiplies the
  inactive ones by their zero gate (libmoas computes routed queries only where a head is active).
- StaticPruning75: 8 heads, the first 6 always active, the rest gated to zero forever. The pruned heads can never
  reach an output, so only the 6 active heads' queries, the kv heads they read, and the matching columns of c_proj
  are computed and cached (libmoas does the same); the result equals the reference's gated output.

Nothing is left out of the reference: every attention kind it defines ("scheme" with any n_kv_head; MoAS static,
soft and top1; MoH all, mixture and static_pruning) decodes through the cache, with learned or RoPE positions.
check_against_full_forward holds the cached logits to the full forward's on a tiny model.

    /tmp/torchvenv/bin/python tools/torch_decode.py   # self-check every kind, then a short timing demo

Interface for tools/bench_decode.py: load_torch(), decode_tokens_per_s(torch, kind, batch, context, threads,
steps=32, seed=0), check_against_full_forward(torch, kind), KINDS.
"""
import copy
import importlib.util
import math
import sys
import time
from pathlib import Path

REFERENCE_PATH = Path(__file__).resolve().parent / "reference" / "gpt.py"

# The paper's model; each kind adds its attention fields (gpt.py Config keywords). block_size is the context.
PAPER = dict(vocab_size=65, n_layer=6, n_embd=384, dropout=0.0, bias=False, norm="layernorm", mlp="gelu",
             position="learned")
KINDS = {
    "MHA": dict(n_head=6, n_kv_head=6),
    "GQA2": dict(n_head=6, n_kv_head=2),
    "MQA": dict(n_head=6, n_kv_head=1),
    "MoAS_static": dict(n_head=6, n_kv_head=6, attention="moas", moas_mode="static"),
    "MoAS_soft": dict(n_head=6, n_kv_head=6, attention="moas", moas_mode="soft"),
    "MoAS_top1": dict(n_head=6, n_kv_head=6, attention="moas", moas_mode="top1"),
    "MoH75": dict(n_head=8, n_kv_head=8, attention="moh",
                  head_selection=dict(strategy="mixture", num_shared_heads=2, num_active_routed_heads=4)),
    "StaticPruning75": dict(n_head=8, n_kv_head=8, attention="moh",
                            head_selection=dict(strategy="static_pruning", num_active_heads=6)),
}

PREFILL_CHUNK = 256  # prefill bounds its [*, T, T] attention scores by going this many tokens at a time


def load_torch():
    """(torch, None), or (None, why) when torch cannot be imported; imported lazily so callers run without it."""
    try:
        import torch
    except Exception as e:  # an ImportError, or a broken install failing with something else
        return None, f"torch is not importable: {type(e).__name__}: {e}"
    return torch, None


def _reference():
    """tools/reference/gpt.py as a module, loaded by path (it imports torch, so only after load_torch succeeds)."""
    name = "moas_reference_gpt"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REFERENCE_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build_reference_model(torch, kind, context, seed=0, **overrides):
    """The reference GPT for `kind` (the paper's sizes unless overridden), float32, eval mode, seeded weights."""
    ref = _reference()
    fields = {**PAPER, **copy.deepcopy(KINDS[kind]), "block_size": context, **overrides}
    with torch.random.fork_rng(devices=[]):  # seed the reference's init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = ref.GPT(ref.Config(**fields))
    return model.float().eval()


def _rope_tables(torch, capacity, d, base, dtype):
    """cos/sin [capacity, d/2] of rope() in gpt.py: the same float64 angles pos * base^(-2i/d), cast the same way."""
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(capacity, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rotate(torch, x, cos, sin):
    """gpt.py's rope on x [B, heads, T, d] with the rows of the tables for these T positions."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def _attend(torch, q, keys, values, first, sdpa):
    """Causal attention of q [B, Hq, T, d] (queries at positions first..first+T-1) over the cached keys/values
    [B, Hkv, L, d], L = first + T, query head h reading kv head h // (Hq / Hkv). Returns [B, Hq, T, d]."""
    B, Hq, T, d = q.shape
    Hkv, L = keys.shape[1], keys.shape[2]
    G = Hq // Hkv
    # The G query heads of a kv head are adjacent, so [B, Hq, T, d] -> [B, Hkv, G*T, d] is a plain reshape: one
    # batched product per kv head and no expanded copy of the cache.
    q2 = q.reshape(B, Hkv, G * T, d)
    mask = None
    if T > 1:  # a single new token sees every cached position; a chunk must not see its own future
        allowed = torch.arange(L)[None, :] <= (first + torch.arange(T))[:, None]
        mask = allowed.repeat(G, 1)  # row g*T + t of q2 is query position first + t
    if sdpa:
        y = torch.nn.functional.scaled_dot_product_attention(q2, keys, values, attn_mask=mask)
    else:
        att = (q2 @ keys.transpose(-2, -1)) / math.sqrt(d)
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        y = att.softmax(-1) @ values
    return y.reshape(B, Hq, T, d)


class _CachedScheme:
    """One reference Attention module (a plain scheme, a MoAS branch or a MoH layer) with its KV cache.

    Only the first `active_heads` query heads are computed (StaticPruning: the others are always gated to zero), and
    only the kv heads those read are cached; query heads up to a whole kv group are computed so that the group folds
    evenly in _attend, and the extra ones are dropped before the output projection."""

    def __init__(self, torch, attn, batch, capacity, sdpa, rope, active_heads=None):
        cfg = attn.cfg
        C, H, Hkv = cfg.n_embd, cfg.n_head, attn.n_kv_head
        d, G = C // H, H // Hkv
        self.torch, self.sdpa, self.rope, self.d = torch, sdpa, rope, d
        self.heads = H if active_heads is None else active_heads
        self.kv_heads = -(-self.heads // G)
        self.q_heads = self.kv_heads * G  # >= heads: whole kv groups
        if Hkv == H:
            ws = attn.c_attn.weight.split(C)
            bs = attn.c_attn.bias.split(C) if attn.c_attn.bias is not None else None
        else:
            ws = (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
            bs = None if attn.q_proj.bias is None else (attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias)
        rows = (self.q_heads * d, self.kv_heads * d, self.kv_heads * d)
        self.split = rows
        # One [q; k; v] matrix (for full MHA it is c_attn's own weight), so the projection is a single product.
        self.w_qkv = torch.cat([w[:n] for w, n in zip(ws, rows)]).detach()
        self.b_qkv = None if bs is None else torch.cat([b[:n] for b, n in zip(bs, rows)]).detach()
        self.w_proj = attn.c_proj.weight[:, :self.heads * d].detach().contiguous()
        self.b_proj = None if attn.c_proj.bias is None else attn.c_proj.bias.detach()
        self.k = torch.zeros(batch, self.kv_heads, capacity, d)
        self.v = torch.zeros(batch, self.kv_heads, capacity, d)

    def queries(self, x, first):
        """Project x [B, T, C] at positions first.., append its keys/values to the cache; returns q [B, Hq, T, d]."""
        B, T, _ = x.shape
        q, k, v = self.torch.nn.functional.linear(x, self.w_qkv, self.b_qkv).split(self.split, dim=-1)
        q = q.view(B, T, self.q_heads, self.d).transpose(1, 2)
        k = k.view(B, T, self.kv_heads, self.d).transpose(1, 2)
        v = v.view(B, T, self.kv_heads, self.d).transpose(1, 2)
        if self.rope is not None:
            cos, sin = self.rope[0][first:first + T], self.rope[1][first:first + T]
            q, k = _rotate(self.torch, q, cos, sin), _rotate(self.torch, k, cos, sin)
        self.k[:, :, first:first + T] = k
        self.v[:, :, first:first + T] = v
        return q

    def attend(self, q, first, rows=None):
        """Per-head outputs [B or len(rows), heads, T, d] of q's rows (all sequences, or those in `rows`)."""
        L = first + q.shape[2]
        keys, values = self.k[:, :, :L], self.v[:, :, :L]
        if rows is not None:
            keys, values = keys[rows], values[rows]
        y = _attend(self.torch, q, keys, values, first, self.sdpa)
        return y[:, :self.heads] if self.q_heads != self.heads else y

    def project(self, y, gates=None):
        """c_proj of the heads y [B, heads, T, d], each first scaled by its gate [B, T, heads] when given."""
        if gates is not None:
            y = y * gates.transpose(1, 2).unsqueeze(-1)
        B, Hh, T, d = y.shape
        return self.torch.nn.functional.linear(y.transpose(1, 2).reshape(B, T, Hh * d), self.w_proj, self.b_proj)


class CachedDecoder:
    """KV-cache decoding of a reference GPT for a fixed batch. Build it after the weights are final (it keeps fused
    copies of the attention projections), and call it under torch.inference_mode() (or no_grad) throughout."""

    def __init__(self, torch, model, batch, capacity=None, sdpa=False):
        cfg = model.cfg
        self.torch, self.model, self.cfg, self.batch = torch, model, cfg, batch
        self.capacity = capacity or cfg.block_size
        assert cfg.position != "learned" or self.capacity <= cfg.block_size, "wpe has block_size positions"
        dtype = model.transformer.wte.weight.dtype
        rope = None
        if cfg.position == "rope":
            rope = _rope_tables(torch, self.capacity, cfg.n_embd // cfg.n_head, cfg.rope_base, dtype)
        self.layers = []
        for block in model.transformer.h:
            attn = block.attn
            if cfg.attention == "moas":
                branches = [getattr(attn, name) for name in attn.names]
            else:
                branches = [attn]
            active = attn.k_active if cfg.attention == "moh" and attn.strategy == "static_pruning" else None
            schemes = [_CachedScheme(torch, a, batch, self.capacity, sdpa, rope, active) for a in branches]
            self.layers.append((block, schemes))
        self.pos = 0  # positions cached so far; lowering it rewinds (later entries are overwritten before use)

    def forward(self, idx):
        """Logits [B, T, vocab] of the tokens idx [B, T] at positions pos..pos+T-1, appending them to the cache."""
        torch, tr = self.torch, self.model.transformer
        B, T = idx.shape
        first = self.pos
        assert B == self.batch and first + T <= self.capacity, (B, first, T)
        x = tr.wte(idx)
        if self.cfg.position == "learned":
            x = x + tr.wpe(torch.arange(first, first + T))
        for block, schemes in self.layers:
            x = x + self._attention(block.attn, schemes, block.ln_1(x), first)
            x = x + block.mlp(block.ln_2(x))
        self.pos = first + T
        return self.model.lm_head(tr.ln_f(x))

    def prefill(self, idx, chunk=PREFILL_CHUNK):
        """forward() over idx [B, T] in chunks of `chunk` tokens; the logits of every position."""
        return self.torch.cat([self.forward(idx[:, s:s + chunk]) for s in range(0, idx.shape[1], chunk)], dim=1)

    def _attention(self, attn, schemes, h, first):
        kind = self.cfg.attention
        if kind == "scheme":
            s = schemes[0]
            return s.project(s.attend(s.queries(h, first), first))
        if kind == "moh":
            s = schemes[0]
            gates = _moh_gates(self.torch, attn, h) if attn.strategy == "mixture" else None
            if s.heads == 0:  # StaticPruning 0: every head gated off, so only c_proj's bias (if any) remains
                s.queries(h, first)
                return s.project(h.new_zeros(h.shape[0], 0, h.shape[1], s.d))
            return s.project(s.attend(s.queries(h, first), first), gates)
        return self._moas(attn, schemes, h, first)

    def _moas(self, attn, schemes, h, first):
        """MoASAttention.forward in eval mode (gate dropout is the identity) over the cached branches."""
        torch = self.torch
        if attn.mode == "static":
            outs = [s.project(s.attend(s.queries(h, first), first)) for s in schemes]
            return torch.stack(outs, dim=-1).mean(-1)
        g = attn.router(h).softmax(-1)  # [B, T, S]
        if attn.mode == "soft":
            y = None
            for b, s in enumerate(schemes):
                out = s.project(s.attend(s.queries(h, first), first)) * g[..., b:b + 1]
                y = out if y is None else y + out
            return y
        pick = g.argmax(-1)  # top1: ties to the lower index, as in the reference
        if h.shape[1] > 1:  # prefill: every branch on every token, masked to the picked one (the reference's way)
            w = g * torch.nn.functional.one_hot(pick, len(schemes)).to(g.dtype)
            y = None
            for b, s in enumerate(schemes):
                out = s.project(s.attend(s.queries(h, first), first)) * w[..., b:b + 1]
                y = out if y is None else y + out
            return y
        # One token per sequence: every branch caches its keys/values; only the sequences that picked a branch run
        # its attention and output projection (an unpicked branch adds exactly zero in the reference).
        y = h.new_zeros(h.shape)
        for b, s in enumerate(schemes):
            q = s.queries(h, first)
            rows = (pick[:, 0] == b).nonzero().flatten()
            n = rows.numel()
            if n == h.shape[0]:
                y = y + s.project(s.attend(q, first)) * g[..., b:b + 1]
            elif n > 0:
                y.index_add_(0, rows, s.project(s.attend(q[rows], first, rows)) * g[rows, :, b:b + 1])
        return y


def _moh_gates(torch, attn, x):
    """MoHAttention.gates for the mixture strategy (reference-faithful gates) without its router statistics:
    gates [B, T, H], shared heads first, then the routed heads (zero where not in the top K)."""
    ref = _reference()
    B, T, _ = x.shape
    h_s, E, K = attn.h_s, attn.E, attn.K
    shared = routed = None
    if h_s > 0:
        shared = h_s * (attn.wg_1(x).softmax(-1) if h_s > 1 else x.new_ones(B, T, 1))
    if E > 0:
        r = attn.wg(x).softmax(-1)
        rm = r * ref.topk_mask(r, K)
        routed = K * rm / rm.sum(-1, keepdim=True).clamp_min(ref.MOH_EPS)
    if h_s > 0 and K > 0:
        a = attn.wg_0(x).softmax(-1)
        shared = shared * (2 * a[..., 0:1])
        routed = routed * (2 * a[..., 1:2])
    return torch.cat([p for p in (shared, routed) if p is not None], dim=-1)


def decode_tokens_per_s(torch, kind, batch, context, threads, steps=32, seed=0, sdpa=False):
    """Greedy decode throughput (tokens/s over batch sequences) of the paper's model of `kind`; None for a kind this
    file does not know. The cache is prefilled with context - steps random tokens per sequence (untimed)."""
    if kind not in KINDS:
        return None
    if not 0 < steps < context:
        raise ValueError(f"need 0 < steps < context (steps {steps}, context {context})")
    model = build_reference_model(torch, kind, context, seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            decoder = CachedDecoder(torch, model, batch, context, sdpa)
            gen = torch.Generator().manual_seed(seed + 1)
            prompt = torch.randint(0, model.cfg.vocab_size, (batch, context - steps), generator=gen)
            token = decoder.prefill(prompt)[:, -1:].argmax(-1)  # [B, 1]
            decoder.forward(token)  # warm-up: the first single-token step pays one-off allocations; then rewind
            decoder.pos -= 1
            start = time.perf_counter()
            for _ in range(steps):
                token = decoder.forward(token)[:, -1:].argmax(-1)
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    return batch * steps / seconds


def check_against_full_forward(torch, kind, position="learned", sdpa=False, overrides=None, tol=1e-4):
    """Cached logits == the reference's full-forward logits at every position, on a tiny model of `kind` (2 layers,
    n_embd 48, context 16, batch 4): two prefill chunks (the second attends across the chunk boundary), then one
    token at a time. Raises AssertionError on a mismatch; returns the largest |difference|."""
    T, B, V = 16, 4, PAPER["vocab_size"]
    model = build_reference_model(torch, kind, T, seed=1, n_layer=2, n_embd=48, position=position,
                                  **(overrides or {}))
    # The reference's init (std 0.02) gives near-zero logits and near-uniform routers, which would make 1e-4 a
    # weak test; weights of std 1/sqrt(fan_in) give logits of order 1 and decisive routing.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p.shape[1] ** -0.5)
        idx = torch.randint(0, V, (B, T))
    with torch.inference_mode():
        full = model(idx)[0]
        decoder = CachedDecoder(torch, model, B, T, sdpa)
        parts = [decoder.prefill(idx[:, :4]), decoder.prefill(idx[:, 4:7], chunk=2)]
        parts += [decoder.forward(idx[:, t:t + 1]) for t in range(7, T)]
        cached = torch.cat(parts, dim=1)
    diff = (cached - full).abs()
    worst = diff.max().item()
    if not worst <= tol:
        bad = (diff.amax(dim=(0, 2)) > tol).nonzero().flatten().tolist()
        raise AssertionError(f"{kind} ({position}, sdpa={sdpa}, {overrides or {}}): cached logits differ from the "
                             f"full forward by {worst:.3g} > {tol} at positions {bad}")
    return worst


# Extra configurations checked beside each kind's own: GQA under MoH, and a pruned head count that is not a whole
# number of kv groups (8 heads, 2 kv heads, 6 active: query heads are padded to the group and dropped again).
CHECK_OVERRIDES = {"MoH75": [{"n_kv_head": 4}], "StaticPruning75": [{"n_kv_head": 2}]}


def main():
    torch, why = load_torch()
    if torch is None:
        print(why)
        return 1
    torch.set_num_threads(1)
    for kind in KINDS:
        worst = 0.0
        for overrides in [None] + CHECK_OVERRIDES.get(kind, []):
            for position in ("learned", "rope"):
                for sdpa in (False, True):
                    worst = max(worst, check_against_full_forward(torch, kind, position, sdpa, overrides))
        extra = "".join(f", {k}={v}" for o in CHECK_OVERRIDES.get(kind, []) for k, v in o.items())
        print(f"ok {kind}  (max |cached - full| {worst:.1e}; learned+rope, matmul+sdpa{extra})")
    print("demo: context 256, batch 1, 1 thread, 32 timed greedy steps, float32 eager (matmul attention)")
    for kind in KINDS:
        print(f"  {kind:16s} {decode_tokens_per_s(torch, kind, batch=1, context=256, threads=1):8.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
