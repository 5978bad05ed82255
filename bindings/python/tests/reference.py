"""An independent float64 numpy implementation of the libmoas forward pass, written from SPEC.md §1-4 and §7 (not
from the library's sources). It reads the weights by their checkpoint names (SPEC §8) from a {name: array} dict.

forward() returns the logits [B, T, V], the mean cross-entropy, the unweighted auxiliary loss (mean over routed
layers) and, per routed layer, what the router decided (for margin checks and router statistics).
"""
import math

import numpy as np

EPS = 1e-5
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Reference:
    def __init__(self, params, config):
        self.P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.c = config
        self.H = config.n_head
        self.C = config.n_embd
        self.d = self.C // self.H

    def w(self, name):
        return self.P[name]

    def linear(self, prefix, x):
        y = x @ self.P[prefix + ".weight"].T
        bias = self.P.get(prefix + ".bias")
        return y if bias is None else y + bias

    def norm(self, prefix, x):
        weight = self.P[prefix + ".weight"]
        if self.c.norm == "rmsnorm":
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * weight
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + EPS) * weight
        bias = self.P.get(prefix + ".bias")
        return y if bias is None else y + bias

    def rope(self, x):
        """x [B, T, heads, d]: rotate pairs (2i, 2i+1) by pos * base^(-2i/d)."""
        T, d = x.shape[1], x.shape[3]
        i = np.arange(d // 2)
        angle = np.arange(T)[:, None] * self.c.rope_base ** (-2.0 * i / d)[None, :]  # [T, d/2]
        cos, sin = np.cos(angle)[None, :, None, :], np.sin(angle)[None, :, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def visible(self, T):
        """[T, T]: may query i attend to key j? Causal (j <= i), and with a window w only keys i - w .. i (§7)."""
        i, j = np.arange(T)[:, None], np.arange(T)[None, :]
        visible = j <= i
        if self.c.window_size > 0:
            visible &= j >= i - self.c.window_size
        return visible

    def cope(self, q, scores, visible, e):
        """The CoPE logit term q_i . e(p_ij) of one head (§7): q [B, T, d], scores q.k/sqrt(d) [B, T, T], e [P, d]."""
        P = e.shape[0]
        gates = sigmoid(scores) * visible
        # p_ij = sum of g_it for t = j..i: a cumulative sum from the right (gates past i are 0).
        positions = np.minimum(np.flip(np.cumsum(np.flip(gates, -1), -1), -1), P - 1)
        lower, upper = np.floor(positions).astype(int), np.ceil(positions).astype(int)
        q_e = q @ e.T  # [B, T, P]: q_i . e[n] for every integer position n
        frac = positions - lower
        return (frac * np.take_along_axis(q_e, upper, axis=-1)
                + (1.0 - frac) * np.take_along_axis(q_e, lower, axis=-1))

    def heads(self, prefix, x, n_kv):
        """One attention scheme (SPEC §2) up to, not including, c_proj: per-head outputs [B, T, H, d]. Its CoPE
        embeddings live under its own prefix (a MoAS branch has its own, SPEC §8)."""
        B, T, _ = x.shape
        H, d = self.H, self.d
        if prefix + ".c_attn.weight" in self.P:
            qkv = self.linear(prefix + ".c_attn", x)
            q, k, v = qkv[..., :self.C], qkv[..., self.C:2 * self.C], qkv[..., 2 * self.C:]
        else:
            q = self.linear(prefix + ".q_proj", x)
            k = self.linear(prefix + ".k_proj", x)
            v = self.linear(prefix + ".v_proj", x)
        q = q.reshape(B, T, H, d)
        k = k.reshape(B, T, n_kv, d)
        v = v.reshape(B, T, n_kv, d)
        if self.c.position == "rope":
            q, k = self.rope(q), self.rope(k)
        cope = self.P[prefix + ".cope.weight"] if self.c.position == "cope" else None
        group = H // n_kv
        visible = self.visible(T)
        mask = np.where(visible, 0.0, -np.inf)
        out = np.empty((B, T, H, d))
        for h in range(H):
            g = h // group
            scores = np.einsum("btd,bsd->bts", q[:, :, h], k[:, :, g]) / math.sqrt(d)
            if cope is not None:
                scores = scores + self.cope(q[:, :, h], scores, visible, cope[h])
            out[:, :, h] = np.einsum("bts,bsd->btd", softmax(scores + mask), v[:, :, g])
        return out

    def scheme(self, prefix, x, n_kv):
        B, T, _ = x.shape
        return self.linear(prefix + ".c_proj", self.heads(prefix, x, n_kv).reshape(B, T, self.C))

    # -- MoAS (SPEC §3) --------------------------------------------------------------------------------------------
    def moas(self, prefix, x, route):
        heads = [kv or self.H for kv in self.c.moas_branch_kv_heads]
        S = len(heads)
        default_names = ("mha", "gqa", "mqa")
        names = []
        for k in range(S):
            name = f"b{k}"
            if not any(n.startswith(f"{prefix}.{name}.") for n in self.P):
                name = default_names[k]
            names.append(f"{prefix}.{name}")
        outputs = np.stack([self.scheme(n, x, kv) for n, kv in zip(names, heads)], axis=2)  # [B, T, S, C]
        if self.c.moas_mode == "static":
            route.update(aux=None)
            return outputs.mean(axis=2)
        r = self.linear(prefix + ".router.2", gelu(self.linear(prefix + ".router.0", x)))
        g = softmax(r)  # [B, T, S]
        top2 = np.sort(r, axis=-1)[..., -2:]  # the argmax margin, in logit space
        route.update(gates=g, margin=(top2[..., 1] - top2[..., 0]).min() if S > 1 else np.inf,
                     aux=((g.mean(axis=(0, 1)) - 1.0 / S) ** 2).mean())
        if self.c.moas_mode == "soft":
            return np.einsum("bts,btsc->btc", g, outputs)
        top = g.argmax(-1)
        chosen = np.take_along_axis(outputs, top[:, :, None, None], axis=2)[:, :, 0]
        return np.take_along_axis(g, top[:, :, None], axis=2) * chosen

    # -- MoH (SPEC §4) ---------------------------------------------------------------------------------------------
    def moh(self, prefix, x, route):
        B, T, _ = x.shape
        H = self.H
        sel = self.c.head_selection
        per_head = self.heads(prefix, x, self.c.n_kv_head)  # [B, T, H, d]
        gates = np.zeros((B, T, H))
        kind = type(sel).__name__
        if kind == "AllHeads":
            gates[:] = 1.0
            route.update(aux=None)
        elif kind == "StaticPruning":
            gates[..., :sel.num_active_heads] = 1.0
            route.update(aux=None)
        else:
            hs, K = sel.num_shared_heads, sel.num_active_routed_heads
            E = H - hs
            r = softmax(x @ self.w(prefix + ".wg.weight").T)  # [B, T, E]
            order = np.argsort(-r, axis=-1, kind="stable")  # ties: the lower index first
            m = np.zeros_like(r)
            np.put_along_axis(m, order[..., :K], 1.0, axis=-1)
            if hs > 1:
                s = softmax(x @ self.w(prefix + ".wg_1.weight").T)
            else:
                s = np.ones((B, T, hs))
            if hs > 0 and K > 0:
                a = softmax(x @ self.w(prefix + ".wg_0.weight").T)
                a1, a2 = a[..., :1], a[..., 1:]
            else:
                a1 = a2 = None
            if sel.gate_variant == "reference":
                routed = K * r * m / np.maximum((r * m).sum(-1, keepdims=True), 1e-12)
                shared = hs * s
                if a1 is not None:
                    shared, routed = shared * 2 * a1, routed * 2 * a2
            else:  # the MoH paper's Eq. 5
                routed, shared = r * m, s
                if a1 is not None:
                    shared, routed = shared * a1, routed * a2
            gates[..., :hs] = shared
            gates[..., hs:] = routed
            P_i = r.mean(axis=(0, 1))
            f_i = m.mean(axis=(0, 1))
            sorted_logr = np.log(np.take_along_axis(r, order, axis=-1))  # margins in logit space
            margin = (sorted_logr[..., K - 1] - sorted_logr[..., K]).min() if K < E else np.inf
            route.update(probs=r, mask=m, margin=margin, aux=E * (P_i * f_i).sum())
        y = (gates[..., None] * per_head).reshape(B, T, self.C)
        return self.linear(prefix + ".c_proj", y)

    def mlp(self, prefix, x):
        if self.c.mlp == "swiglu":
            h = self.linear(prefix + ".c_fc", x)
            return self.linear(prefix + ".c_proj", h / (1.0 + np.exp(-h)) * self.linear(prefix + ".c_up", x))
        return self.linear(prefix + ".c_proj", gelu(self.linear(prefix + ".c_fc", x)))

    def attention(self, prefix, x, route):
        """A block's attention on its normalised input x [B, T, C] (the layer API computes exactly this)."""
        if self.c.attention == "moas":
            return self.moas(prefix, x, route)
        if self.c.attention == "moh":
            return self.moh(prefix, x, route)
        return self.scheme(prefix, x, self.c.n_kv_head)

    def forward(self, tokens, targets=None):
        tokens = np.asarray(tokens)
        B, T = tokens.shape
        x = self.w("transformer.wte.weight")[tokens]
        if self.c.position == "learned":
            x = x + self.w("transformer.wpe.weight")[:T][None]
        routes = []
        for layer in range(self.c.n_layer):
            p = f"transformer.h.{layer}"
            h = self.norm(p + ".ln_1", x)
            route = {}
            x = x + self.attention(p + ".attn", h, route)
            routes.append(route)
            x = x + self.mlp(p + ".mlp", self.norm(p + ".ln_2", x))
        logits = self.norm("transformer.ln_f", x) @ self.w("transformer.wte.weight").T
        loss = 0.0
        if targets is not None:
            targets = np.asarray(targets)
            logp = logits - logits.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            keep = targets != -1
            picked = np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
            loss = -picked[keep].mean() if keep.any() else 0.0
        auxes = [r["aux"] for r in routes if r.get("aux") is not None]
        aux = float(np.mean(auxes)) if auxes else 0.0
        return logits, loss, aux, routes
