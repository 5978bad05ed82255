"""The library's logits, loss, aux loss and router statistics against tests/reference.py, an independent float64
numpy implementation of SPEC §1-4 and §7, fed the library's own weights through Model.parameters()."""
import numpy as np
import pytest

import moas
from conftest import tiny
from reference import Reference

CASES = {
    "mha": dict(),
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "rope-rmsnorm-swiglu-bias": dict(n_kv_head=2, position="rope", norm="rmsnorm", mlp="swiglu", bias=True,
                                     mlp_hidden=24),
    "layernorm-bias": dict(bias=True, n_embd=24, n_head=3),
    "moas-static": dict(attention="moas", moas_mode="static"),
    "moas-soft": dict(attention="moas", moas_mode="soft"),
    "moas-top1": dict(attention="moas", moas_mode="top1"),
    "moas-soft-2-branches-bias": dict(attention="moas", moas_mode="soft", moas_branch_kv_heads=(2, 0), bias=True,
                                      n_embd=32),
    "moas-top1-4-branches-rope": dict(attention="moas", moas_mode="top1", moas_branch_kv_heads=(1, 4, 2, 0),
                                      position="rope"),
    "moh-all-heads": dict(head_selection=moas.AllHeads(), attention="moh"),
    "moh-mixture-1-shared": dict(head_selection=moas.MixtureOfHeads(1, 2)),
    "moh-mixture-2-shared-gqa": dict(n_head=6, n_kv_head=3, n_embd=24, head_selection=moas.MixtureOfHeads(2, 2)),
    "moh-mixture-no-shared": dict(head_selection=moas.MixtureOfHeads(0, 2)),
    "moh-mixture-paper-gates": dict(n_head=6, n_embd=24, head_selection=moas.MixtureOfHeads(2, 3,
                                                                                             gate_variant="paper")),
    "static-pruning": dict(head_selection=moas.StaticPruning(2)),
    "static-pruning-gqa": dict(n_kv_head=2, head_selection=moas.StaticPruning(3)),
    # block_size 12 > cope_max_pos 6: positions reach the P - 1 clamp.
    "cope": dict(position="cope", cope_max_pos=6),
    "window": dict(window_size=3),
    "window-rope-gqa": dict(window_size=5, position="rope", n_kv_head=2),
    "cope-window-gqa-moh": dict(position="cope", cope_max_pos=5, window_size=4, n_head=8, n_kv_head=4, n_embd=32,
                                head_selection=moas.MixtureOfHeads(2, 4)),
    "cope-window-moas-top1": dict(position="cope", cope_max_pos=8, window_size=6, attention="moas",
                                  moas_mode="top1"),
}

ROUTER_GAIN = 4.0  # routers scaled up so that argmax / top-K margins dwarf float32 noise


def randomise(model, seed):
    """Replaces every weight by O(1)-scale random values (init weights are too small to exercise attention; CoPE
    embeddings start at zero)."""
    rng = np.random.default_rng(seed)
    for info in model.parameter_info():
        name, shape = info.name, info.shape
        if name.endswith(".bias"):
            values = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:  # norm weights
            values = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name in ("transformer.wte.weight", "transformer.wpe.weight"):
            values = rng.standard_normal(shape)
        else:
            values = rng.standard_normal(shape) / np.sqrt(shape[-1])
            if ".router." in name or ".wg" in name:
                values *= ROUTER_GAIN
        model.set_parameter(name, values)


def min_margin(routes, config):
    """The smallest router-logit gap behind a discrete decision (top-1 branch, top-K heads) in the reference."""
    decides = config.attention == "moh" or config.moas_mode == "top1"
    return min([r["margin"] for r in routes if "margin" in r and decides], default=np.inf)


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    worst = np.abs(a - b).max()
    assert worst <= tol * np.abs(b).max(), f"max|a-b| = {worst:.3g} > {tol} * max|b| = {tol * np.abs(b).max():.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_numpy_reference(case):
    config = tiny(**CASES[case])
    rng = np.random.default_rng(11)
    B, T = 2, config.block_size
    tokens = rng.integers(0, config.vocab_size, size=(B, T))
    targets = rng.integers(-1, config.vocab_size, size=(B, T))
    with moas.Model(config) as model:
        # Routing is discontinuous: a decision within float32 noise of a tie could flip between the library and the
        # reference. Draw weights until every argmax / top-K margin is clear of it (deterministic seeds).
        for attempt in range(20):
            randomise(model, seed=1000 * list(CASES).index(case) + attempt)
            ref = Reference(model.parameters(), model.config)
            want_logits, want_loss, want_aux, routes = ref.forward(tokens, targets)
            if min_margin(routes, config) > 1e-3:
                break
        else:
            pytest.fail("no weights with clear routing margins found")

        loss, aux = model.forward(tokens, targets)
        close(model.logits(), want_logits)
        assert loss == pytest.approx(want_loss, rel=1e-4)
        assert aux == 0.0  # eval mode computes no aux

        loss_t, aux_t = model.forward(tokens, targets, training=True)  # dropout 0: the same numbers, plus aux
        close(model.logits(), want_logits)
        assert loss_t == pytest.approx(want_loss, rel=1e-4)
        assert aux_t == pytest.approx(want_aux, rel=1e-3, abs=1e-6)

        routed = [r for r in routes if r.get("aux") is not None]
        if not routed:
            if config.attention == "moas":  # static MoAS: stats of the fixed uniform mixture
                stats = model.router_stats()
                assert all(s.share == pytest.approx([1 / s.n_routes] * s.n_routes) for s in stats)
            else:
                with pytest.raises(moas.NoRouter):
                    model.router_stats()
            return
        stats = model.router_stats()
        assert len(stats) == config.n_layer
        for s, route in zip(stats, routes):
            assert s.aux_loss == pytest.approx(route["aux"], rel=1e-3, abs=1e-6)
            if "gates" in route:  # MoAS
                g = route["gates"].reshape(-1, route["gates"].shape[-1])
                assert s.attention == "moas" and s.n_routes == g.shape[1]
                assert s.mean_gate == pytest.approx(g.mean(0), abs=1e-5)
                argmax_share = np.bincount(g.argmax(1), minlength=g.shape[1]) / len(g)
                assert s.top_share == pytest.approx(argmax_share, abs=1e-6)
                want_share = argmax_share if config.moas_mode == "top1" else g.mean(0)
                assert s.share == pytest.approx(want_share, abs=1e-5)
            else:  # MoH
                m = route["mask"].reshape(-1, route["mask"].shape[-1])
                K = config.head_selection.num_active_routed_heads
                assert s.attention == "moh" and s.n_routes == m.shape[1]
                assert s.top_share == pytest.approx(m.mean(0), abs=1e-6)
                assert s.share == pytest.approx(m.mean(0) / K, abs=1e-6)
            assert s.balance == pytest.approx(1.0 / (s.n_routes * np.sum(np.square(s.share))), rel=1e-4)
