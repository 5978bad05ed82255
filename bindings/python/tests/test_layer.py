"""The attention layer alone (moas.Layer): config defaults, shapes, errors, gradients and the optimiser step, and its
output and gradients against the independent numpy reference (tests/reference.py), CoPE and windows included."""
import ctypes

import numpy as np
import pytest

import moas
from moas import _lib
from moas import layer as layer_module
from moas import model as model_module
from reference import Reference
from test_reference import close, min_margin, randomise

C, T, B = 32, 10, 2


def small(**changes):
    """A small, single-threaded layer config: width 32, 8 heads over 4 kv heads, sequences up to 12."""
    fields = dict(n_embd=C, max_seq_len=12, n_threads=1, seed=3)
    fields.update(changes)
    return moas.LayerConfig(**fields)


def activations(seed, shape=(B, T, C)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


MOH = moas.MixtureOfHeads(2, 4)


# -- configuration ---------------------------------------------------------------------------------------------------
def test_layer_config_defaults_are_the_libraries():
    c = _lib.new_struct(_lib.moas_layer_config)
    assert _lib.lib().moas_layer_config_default(ctypes.byref(c)) == 0
    assert bytes(moas.LayerConfig()._to_c()) == bytes(c)
    d = moas.LayerConfig()
    assert (d.n_embd, d.n_head, d.n_kv_head, d.max_seq_len) == (128, 8, 4, 80)  # RustGPT's attention
    assert d.residual is True and d.position == "learned" and d.window_size == 0 and d.attention == "scheme"
    assert moas.LayerConfig(n_head=4).n_kv_head == 4  # the default is not "= n_head": nothing follows
    assert moas.LayerConfig(head_selection=MOH).attention == "moh"
    assert small() == small() and small() != small(seed=4) and small() != moas.Config()
    with pytest.raises(TypeError, match="unknown LayerConfig field"):
        moas.LayerConfig(vocab_size=3)
    with pytest.raises(moas.InvalidConfig, match='position must be one of "learned", "rope", "cope"'):
        moas.Layer(small(position="alibi"))


def test_layer_keeps_its_config():
    with moas.Layer(small(position="cope", cope_max_pos=7, window_size=4, head_selection=MOH)) as layer:
        config = layer.config
        assert (config.position, config.cope_max_pos, config.window_size, config.attention) == ("cope", 7, 4, "moh")
        config.n_embd = 64  # a copy
        assert layer.config.n_embd == C
        assert "Layer" in repr(layer) and "moh" in repr(layer)


# -- shapes ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [dict(), dict(position="rope", n_kv_head=1),
                                    dict(position="cope", cope_max_pos=8, window_size=4),
                                    dict(attention="moas", moas_mode="top1"), dict(head_selection=MOH),
                                    dict(residual=False)],
                         ids=["gqa", "rope-mqa", "cope-window", "moas-top1", "moh", "no-residual"])
def test_shapes(fields):
    with moas.Layer(small(**fields)) as layer:
        x = activations(1)
        y = layer.forward(x, training=True)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        dx = layer.backward(np.ones_like(y))
        assert dx.shape == x.shape and dx.dtype == np.float32 and np.isfinite(dx).all()
        one = layer.forward(x[0])  # [T, C]: one sequence
        assert one.shape == (T, C)
        np.testing.assert_allclose(one, y[0], rtol=1e-5, atol=1e-6)
        # Any float dtype and nested lists are converted; the result is float32.
        np.testing.assert_array_equal(layer.forward(x.astype(np.float64)), y)
        np.testing.assert_array_equal(layer.forward(x[:, :3].tolist()), layer.forward(x[:, :3]))
        assert layer.num_parameters == sum(info.numel for info in layer.parameter_info())


def test_without_numpy_results_are_nested_lists(monkeypatch):
    with moas.Layer(small()) as layer:
        x = activations(2, (3, C))
        want = layer.forward(x)
        monkeypatch.setattr(model_module, "_np", None)
        monkeypatch.setattr(layer_module, "_np", None)
        y = layer.forward(x.tolist(), training=True)
        assert isinstance(y, list) and len(y) == 3 and len(y[0]) == C
        np.testing.assert_array_equal(np.array(y, dtype=np.float32), want)
        dx = layer.backward([[1.0] * C] * 3)
        assert isinstance(dx, list) and np.isfinite(np.array(dx)).all()
        with pytest.raises(moas.SizeMismatch, match="rectangular"):
            layer.forward([[0.0] * C, [0.0] * (C - 1)])


def test_forward_and_backward_in_place():
    with moas.Layer(small()) as layer:
        x = activations(3)
        want = layer.forward(x, training=True)
        want_dx = layer.backward(x)
        buffer = x.copy()
        assert layer.forward(buffer, training=True, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, want)
        dy = x.copy()
        assert layer.backward(dy, out=dy) is dy
        np.testing.assert_array_equal(dy, want_dx)


def test_residual_adds_the_input():
    x = activations(4)
    with moas.Layer(small()) as with_residual, moas.Layer(small(residual=False)) as without:
        np.testing.assert_allclose(with_residual.forward(x), x + without.forward(x), rtol=1e-6, atol=1e-6)


# -- errors ----------------------------------------------------------------------------------------------------------
def test_nan_input_raises_non_finite_and_the_layer_works_on():
    with moas.Layer(small(head_selection=MOH)) as layer:
        x = activations(5)
        before = layer.forward(x, training=True)
        bad = x.copy()
        bad[1, 2, 3] = np.nan
        out = np.full_like(x, -7.0)
        with pytest.raises(moas.NonFinite) as info:
            layer.forward(bad, training=True, out=out)
        e = info.value
        assert e.status == 9 and e.status_name == "MOAS_ERR_NON_FINITE" and e.function == "moas_layer_forward"
        assert e.message and isinstance(e, ValueError)
        assert (out == -7.0).all(), "out is untouched on failure"
        # The training forward before the failed call still stands: backward applies to it.
        assert np.isfinite(layer.backward(np.ones_like(x))).all()
        np.testing.assert_array_equal(layer.forward(x), before)
        bad_dy = np.ones_like(x)
        bad_dy[0, 0, 0] = np.inf
        layer.forward(x, training=True)
        with pytest.raises(moas.NonFinite):
            layer.backward(bad_dy)
        assert np.isfinite(layer.backward(np.ones_like(x))).all()


def test_wrong_shapes_and_calls_raise():
    with moas.Layer(small()) as layer:
        x = activations(6)
        with pytest.raises(moas.NoForward) as info:
            layer.backward(x)
        assert info.value.status_name == "MOAS_ERR_NO_FORWARD" and "training" in info.value.message
        with pytest.raises(moas.NoForward):
            layer.gates()
        with pytest.raises(moas.SizeMismatch, match=rf"\[batch, seq_len, {C}\]"):
            layer.forward(x[..., :-1])
        with pytest.raises(moas.SizeMismatch):
            layer.forward(x[0, 0])  # [C]: no sequence axis
        with pytest.raises(moas.SizeMismatch):
            layer.forward(x[None])  # 4-d
        with pytest.raises(moas.ContextTooLong) as info:
            layer.forward(activations(7, (1, 13, C)))
        assert "max_seq_len" in info.value.message
        layer.forward(x)
        with pytest.raises(moas.NoForward):
            layer.backward(x)  # an eval forward keeps nothing
        layer.forward(x, training=True)
        with pytest.raises(moas.SizeMismatch) as info:
            layer.backward(x[:, :4])
        assert "last forward" in info.value.message
        with pytest.raises(moas.SizeMismatch):
            layer.forward(x, out=np.empty((B, T + 1, C), np.float32))
        with pytest.raises(TypeError, match="float32"):
            layer.forward(x, out=np.empty(x.shape))
        with pytest.raises(moas.NoRouter):
            layer.router_stats()
        assert layer.gates().shape == (B, T, 0)
        with pytest.raises(moas.UnknownParameter) as info:
            layer.parameter("attn.no_such.weight")
        assert "attn.no_such.weight" in info.value.message
        with pytest.raises(moas.SizeMismatch):
            layer.set_gradient("attn.c_proj.weight", np.zeros(3))
        with pytest.raises(moas.InvalidConfig):
            layer.step(lr=float("nan"))


def test_partly_overlapping_buffers_raise_invalid_argument():
    with moas.Layer(small()) as layer:
        n = B * T * C
        buffer = np.zeros(n + C, np.float32)
        buffer[:n] = activations(8).ravel()
        x, y = buffer[:n].reshape(B, T, C), buffer[C:].reshape(B, T, C)  # y starts one row into x
        with pytest.raises(moas.InvalidArgument) as info:
            layer.forward(x, out=y)
        assert info.value.status == 26 and info.value.status_name == "MOAS_ERR_INVALID_ARGUMENT"
        assert "overlap" in info.value.message
        assert not buffer[n:].any(), "nothing was written"


def test_invalid_config_raises_with_the_library_message():
    with pytest.raises(moas.InvalidConfig) as info:
        moas.Layer(small(n_kv_head=3))
    assert info.value.function == "moas_layer_create" and "n_kv_head" in info.value.message
    with pytest.raises(moas.InvalidConfig, match="window_size"):
        moas.Layer(small(window_size=-1))
    with pytest.raises(moas.InvalidConfig, match="cope_max_pos"):
        moas.Layer(small(position="cope", cope_max_pos=0))


def test_closed_layer_raises():
    layer = moas.Layer(small())
    layer.close()
    layer.close()
    assert layer.closed and "closed" in repr(layer)
    with pytest.raises(ValueError, match="closed"):
        layer.forward(activations(9))


# -- parameters, gradients, optimiser --------------------------------------------------------------------------------
def test_parameters_are_named_and_shaped():
    with moas.Layer(small(position="cope", cope_max_pos=6, head_selection=MOH)) as layer:
        shapes = {info.name: info.shape for info in layer.parameter_info()}
        d = C // 8
        assert shapes["attn.q_proj.weight"] == (C, C) and shapes["attn.k_proj.weight"] == (4 * d, C)
        assert shapes["attn.wg.weight"] == (6, C) and shapes["attn.wg_0.weight"] == (2, C)
        assert shapes["attn.cope.weight"] == (8, 6, d)
        params = layer.parameters()
        assert list(params) == list(shapes) and not params["attn.cope.weight"].any()  # CoPE starts at zero
        values = np.arange(np.prod(shapes["attn.cope.weight"]), dtype=np.float32).reshape(8, 6, d) / 100
        layer.set_parameter("attn.cope.weight", values)
        np.testing.assert_array_equal(layer.parameter("attn.cope.weight"), values)


def test_gradients_accumulate_write_and_step():
    with moas.Layer(small()) as layer:
        name = "attn.c_proj.weight"
        x = activations(10)
        layer.forward(x, training=True)
        layer.backward(x)
        once = layer.gradient(name)
        assert once.shape == (C, C) and np.abs(once).max() > 0
        layer.forward(x, training=True)
        layer.backward(x)
        np.testing.assert_allclose(layer.gradient(name), 2 * once, rtol=1e-5, atol=1e-7)
        layer.zero_grad()
        assert not any(g.any() for g in layer.gradients().values())

        # A written gradient drives the step: Adam's first step moves each weight by lr against its sign.
        before, untouched = layer.parameter(name), layer.parameter("attn.q_proj.weight")
        gradient = np.where(np.arange(C * C).reshape(C, C) % 2 == 0, 1.0, -0.5).astype(np.float32)
        layer.set_gradient(name, gradient)
        np.testing.assert_array_equal(layer.gradient(name), gradient)
        norm = layer.step(lr=1e-2, weight_decay=0.0, grad_clip=0.0)
        assert norm == pytest.approx(np.linalg.norm(gradient), rel=1e-5)
        np.testing.assert_allclose(layer.parameter(name), before - 1e-2 * np.sign(gradient), atol=1e-5)
        np.testing.assert_array_equal(layer.parameter("attn.q_proj.weight"), untouched)
        with pytest.raises(moas.NoForward):
            layer.backward(x)  # a step invalidates the kept forward


def test_router_stats_and_gates():
    with moas.Layer(small(head_selection=MOH)) as layer:
        layer.forward(activations(11), training=True)
        assert layer.aux_loss > 0
        stats = layer.router_stats()
        assert stats.layer is None and stats.attention == "moh" and stats.n_routes == 6
        assert sum(stats.top_share) == pytest.approx(4.0, abs=1e-4)
        assert stats.aux_loss == pytest.approx(layer.aux_loss)
        gates = layer.gates()
        assert gates.shape == (B, T, 8)
        assert (gates[..., :2] > 0).all() and ((gates[..., 2:] > 0).sum(-1) == 4).all()
        layer.forward(activations(11)[0])
        assert layer.gates().shape == (T, 8) and layer.aux_loss == 0.0  # eval: no aux
    with moas.Layer(small(attention="moas", moas_branch_kv_heads=(0, 2))) as layer:
        layer.forward(activations(12))
        np.testing.assert_allclose(layer.gates().sum(-1), 1.0, rtol=1e-5)
        assert layer.router_stats().attention == "moas"


# -- against the numpy reference -------------------------------------------------------------------------------------
REFERENCE_CASES = {
    "gqa": dict(),
    "rope-bias": dict(position="rope", bias=True),
    "window": dict(window_size=3),
    "cope": dict(position="cope", cope_max_pos=6),
    "moas-soft": dict(attention="moas", moas_mode="soft"),
    "moas-top1-cope": dict(attention="moas", moas_mode="top1", position="cope", cope_max_pos=8),
    "moh": dict(head_selection=MOH),
    "cope-window-gqa-moh": dict(position="cope", cope_max_pos=5, window_size=4, head_selection=MOH),
    "no-residual-moh-mqa": dict(residual=False, n_kv_head=1, head_selection=moas.MixtureOfHeads(0, 3)),
}


def reference_with_clear_routing(layer, x, case):
    """Randomised weights whose routing decisions are clear of float32 noise, and the reference's attention."""
    for attempt in range(20):
        randomise(layer, seed=100 * list(REFERENCE_CASES).index(case) + attempt)
        ref = Reference(layer.parameters(), layer.config)
        route = {}
        attention = ref.attention("attn", x.astype(np.float64), route)
        if min_margin([route], layer.config) > 1e-3:
            return ref, attention, route
    pytest.fail("no weights with clear routing margins found")


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_layer_matches_the_numpy_reference(case):
    config = small(**REFERENCE_CASES[case])
    x = activations(13)
    with moas.Layer(config) as layer:
        _, attention, route = reference_with_clear_routing(layer, x, case)
        want = x + attention if config.residual else attention
        close(layer.forward(x), want)
        close(layer.forward(x, training=True), want)  # dropout 0: the same, plus the aux loss
        if route.get("aux") is not None:
            assert layer.aux_loss == pytest.approx(route["aux"], rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("case", ["window", "cope", "cope-window-gqa-moh"])
def test_layer_gradients_match_the_reference_by_finite_differences(case):
    """The library's dLoss/dx and dLoss/d(c_proj, cope) for Loss = <y, r> + lambda * aux (the layer's backward
    includes its load-balance loss) against central differences of the float64 reference along random directions,
    with no routing decision flipping between the evaluations."""
    config = small(**REFERENCE_CASES[case])
    aux_weight = config.head_selection.load_balance_weight if config.attention == "moh" else config.moas_aux_weight
    x = activations(14).astype(np.float64)
    rng = np.random.default_rng(15)
    r = rng.standard_normal(x.shape)
    with moas.Layer(config) as layer:
        ref, _, _ = reference_with_clear_routing(layer, x, case)
        layer.forward(x, training=True)
        analytic = {"x": layer.backward(r), **layer.gradients()}

        def loss(x_at, params):
            route = {}
            y = x_at + Reference(params, layer.config).attention("attn", x_at, route)
            return float(np.sum(y * r)) + aux_weight * (route.get("aux") or 0.0), route.get("mask")

        _, base_mask = loss(x, ref.P)
        eps = 1e-5
        for name in ["x", "attn.c_proj.weight"] + (["attn.cope.weight"] if config.position == "cope" else []):
            value = x if name == "x" else ref.P[name]
            direction = rng.standard_normal(value.shape)
            evaluations = []
            for sign in (1, -1):
                shifted = value + sign * eps * direction
                evaluations.append(loss(shifted, ref.P) if name == "x" else loss(x, {**ref.P, name: shifted}))
            for _, mask in evaluations:
                assert np.array_equal(mask, base_mask), f"{name}: a routing decision flipped"
            numeric = (evaluations[0][0] - evaluations[1][0]) / (2 * eps)
            assert float(np.sum(analytic[name] * direction)) == pytest.approx(numeric, rel=2e-3, abs=1e-3), name
