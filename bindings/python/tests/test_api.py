"""The Python API: config defaults, errors, training, gradients, checkpoints, router statistics, decoding."""
import ctypes
import json
import threading

import numpy as np
import pytest

import moas
from moas import _lib, model as model_module
from conftest import tiny


def c_default_config():
    c = _lib.new_struct(_lib.moas_model_config)
    assert _lib.lib().moas_model_config_default(ctypes.byref(c)) == 0
    return c


def pattern_batch(config, batch=4, seed=0):
    """Sequences that continue a fixed cycle from random offsets: easy to learn."""
    rng = np.random.default_rng(seed)
    cycle = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]) % config.vocab_size
    starts = rng.integers(0, len(cycle), size=batch)
    idx = (starts[:, None] + np.arange(config.block_size + 1)[None, :]) % len(cycle)
    seq = cycle[idx]
    return seq[:, :-1], seq[:, 1:]


# -- configuration ---------------------------------------------------------------------------------------------------
def test_config_defaults_are_the_libraries():
    c = c_default_config()
    assert bytes(moas.Config()._to_c()) == bytes(c)
    assert moas.Config._from_c(c) == moas.Config()
    d = moas.Config()
    assert (d.vocab_size, d.block_size, d.n_layer, d.n_head, d.n_embd) == (
        c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd)
    assert d.attention == "scheme" and d.moas_mode == "soft" and d.head_selection == moas.AllHeads()
    assert d.moas_branch_kv_heads == tuple(c.moas_branch_kv_heads[:c.moas_n_branches])
    assert d.dropout == pytest.approx(c.dropout) and isinstance(d.bias, bool)
    assert moas.MixtureOfHeads(1, 2).load_balance_weight == pytest.approx(c.head_selection.load_balance_weight)
    adamw = moas.adamw_defaults()
    assert set(adamw) == {"lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip"}


def resolved(config):
    """config as the library reports it back: mlp_hidden 0 = 4 * n_embd; in MoAS a branch's 0 kv heads = n_head."""
    heads = config.moas_branch_kv_heads
    if config.attention == "moas":
        heads = tuple(h or config.n_head for h in heads)
    return config.replace(mlp_hidden=config.mlp_hidden or 4 * config.n_embd, moas_branch_kv_heads=heads)


def assert_same_config(got, want):
    got, want = got.to_dict(), want.to_dict()
    assert got == want, {k: (got[k], want[k]) for k in got if got[k] != want[k]}


def test_config_round_trips_through_the_library():
    for config in (tiny(), tiny(attention="moas", moas_mode="top1", moas_branch_kv_heads=(1, 0)),
                   tiny(matmul_precision="bf16"),
                   tiny(head_selection=moas.MixtureOfHeads(1, 2, load_balance_weight=0.05, gate_variant="paper")),
                   tiny(head_selection=moas.StaticPruning(3), norm="rmsnorm", mlp="swiglu", position="rope")):
        with moas.Model(config) as m:
            assert_same_config(m.config, resolved(config))


def test_config_conveniences_and_validation():
    assert moas.Config(n_head=4).n_kv_head == 4
    assert moas.Config(n_head=4, n_kv_head=2).n_kv_head == 2
    assert moas.Config(head_selection=moas.StaticPruning(2)).attention == "moh"
    assert moas.HeadSelection.MixtureOfHeads(1, 2) == moas.MixtureOfHeads(1, 2)
    assert moas.Config(moas_n_branches=2).moas_branch_kv_heads == moas.Config().moas_branch_kv_heads[:2]
    assert moas.Config(moas_n_branches=2).moas_n_branches == 2
    assert tiny().replace(n_layer=1).n_layer == 1
    with pytest.raises(TypeError, match="unknown Config field"):
        moas.Config(n_layers=2)
    with pytest.raises(moas.InvalidConfig, match='norm must be one of "layernorm", "rmsnorm"'):
        moas.Model(tiny(norm="batchnorm"))
    with pytest.raises(moas.InvalidConfig, match="does not fit"):
        moas.Model(tiny(vocab_size=2 ** 40))
    assert moas.Config().matmul_precision == "fp32"
    with pytest.raises(moas.InvalidConfig, match='matmul_precision must be one of "fp32", "tf32", "bf16"'):
        moas.Model(tiny(matmul_precision="fp16"))


# -- errors ------------------------------------------------------------------------------------------------------------
def assert_library_error(excinfo, cls, status_name, *fragments):
    e = excinfo.value
    assert type(e) is cls and isinstance(e, moas.Error)
    assert e.status == cls.status and moas.errors.BY_STATUS[e.status] is cls
    assert e.status_name == status_name
    assert str(e).startswith(status_name + ": ")
    for fragment in fragments:
        assert fragment in e.message


def test_bad_config_raises_invalid_config_with_the_library_message():
    with pytest.raises(moas.InvalidConfig) as info:
        moas.Model(tiny(n_embd=30))
    assert_library_error(info, moas.InvalidConfig, "MOAS_ERR_INVALID_CONFIG", "n_embd", "n_head")
    assert info.value.status == 2 and info.value.function == "moas_model_create"
    assert isinstance(info.value, ValueError)


def test_bad_inputs_raise_the_matching_exception():
    with moas.Model(tiny()) as m:
        V, T = m.config.vocab_size, m.config.block_size
        with pytest.raises(moas.TokenOutOfRange) as info:
            m.forward([[1, 2, V]])
        assert_library_error(info, moas.TokenOutOfRange, "MOAS_ERR_TOKEN_OUT_OF_RANGE", f"[0, {V})")
        with pytest.raises(moas.TargetOutOfRange) as info:
            m.forward([[1, 2, 3]], [[1, 2, -2]])
        assert_library_error(info, moas.TargetOutOfRange, "MOAS_ERR_TARGET_OUT_OF_RANGE", "-1")
        with pytest.raises(moas.ContextTooLong) as info:
            m.forward([list(range(T + 1))])
        assert_library_error(info, moas.ContextTooLong, "MOAS_ERR_CONTEXT_TOO_LONG", "block_size")
        with pytest.raises(moas.TokenOutOfRange):
            m.forward(np.array([[1, 2 ** 40]], dtype=np.int64))  # would wrap to a valid id if cast blindly
        with pytest.raises(moas.SizeMismatch):
            m.forward([[1, 2, 3]], [[1, 2]])
        with pytest.raises(TypeError):
            m.forward([[1.5, 2.0]])
        with pytest.raises(moas.NoForward) as info:
            m.logits()
        with pytest.raises(moas.NoForward) as info:
            m.backward()
        assert_library_error(info, moas.NoForward, "MOAS_ERR_NO_FORWARD", "moas_forward")
        m.forward([[1, 2, 3]], training=True)  # no targets: nothing to differentiate
        with pytest.raises(moas.NoForward):
            m.backward()
        with pytest.raises(moas.UnknownParameter) as info:
            m.parameter("no.such.weight")
        assert_library_error(info, moas.UnknownParameter, "MOAS_ERR_UNKNOWN_PARAMETER", "no.such.weight")
        with pytest.raises(moas.SizeMismatch):
            m.set_parameter("transformer.ln_f.weight", np.ones(5))
        before = m.parameter("transformer.ln_f.weight")
        with pytest.raises(moas.NonFinite) as info:
            m.set_parameter("transformer.ln_f.weight", np.full(16, np.nan))
        assert_library_error(info, moas.NonFinite, "MOAS_ERR_NON_FINITE", "not finite")
        assert np.array_equal(m.parameter("transformer.ln_f.weight"), before)  # a failed call changes nothing
        with pytest.raises(moas.NoRouter) as info:
            m.router_stats(0)
        assert_library_error(info, moas.NoRouter, "MOAS_ERR_NO_ROUTER")
    try:
        moas.Model(tiny(device="cuda")).close()  # a build with CUDA on a machine with a GPU
    except moas.DeviceUnavailable as e:
        assert e.status == 21 and "CUDA" in e.message


def test_closed_model_raises():
    m = moas.Model(tiny())
    m.close()
    m.close()
    assert m.closed and "closed" in repr(m)
    with pytest.raises(ValueError, match="closed"):
        m.forward([[1, 2]])


# -- training --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [dict(), dict(n_kv_head=1), dict(attention="moas", moas_mode="soft"),
                                    dict(attention="moas", moas_mode="top1"),
                                    dict(head_selection=moas.MixtureOfHeads(1, 2))],
                         ids=["mha", "mqa", "moas-soft", "moas-top1", "moh"])
def test_training_lowers_the_loss(fields):
    with moas.Model(tiny(**fields)) as m:
        tokens, targets = pattern_batch(m.config)
        first, _ = m.forward(tokens, targets)
        for _ in range(25):
            m.zero_grad()
            m.forward(tokens, targets, training=True)
            m.backward()
            norm = m.step(lr=1e-2)
            assert np.isfinite(norm) and norm > 0
        last, _ = m.forward(tokens, targets)
        assert m.optimizer_steps == 25
        assert last < 0.6 * first, (first, last)


def test_gradients_accumulate_and_zero():
    with moas.Model(tiny()) as m:
        tokens, targets = pattern_batch(m.config, batch=2)
        name = "transformer.h.0.attn.c_attn.weight"
        m.forward(tokens, targets, training=True)
        m.backward()
        g1 = m.gradient(name)
        assert g1.shape == m.parameter(name).shape and np.abs(g1).max() > 0
        m.forward(tokens, targets, training=True)
        m.backward()
        np.testing.assert_allclose(m.gradient(name), 2 * g1, rtol=1e-5, atol=1e-7)
        m.zero_grad()
        assert not np.any(m.gradient(name))
        grads = m.gradients()
        assert list(grads) == list(m.parameters())


def test_tokens_accept_lists_and_any_integer_array():
    with moas.Model(tiny()) as m:
        base = [[1, 2, 3, 4], [5, 6, 7, 8]]
        m.forward(base)
        want = m.logits()
        assert want.shape == (2, 4, m.config.vocab_size) and want.dtype == np.float32
        strided = np.array([[1, 9, 2, 9, 3, 9, 4], [5, 9, 6, 9, 7, 9, 8]])[:, ::2]  # not contiguous
        for tokens in (np.array(base, dtype=np.int64), np.array(base, dtype=np.int32), np.array(base, np.uint8),
                       np.asfortranarray(np.array(base)), strided):
            m.forward(tokens)
            assert np.array_equal(m.logits(), want)
        m.forward([1, 2, 3, 4])  # one sequence
        assert np.array_equal(m.logits()[0], want[0])


def test_without_numpy_results_are_nested_lists(monkeypatch):
    with moas.Model(tiny()) as m:
        m.forward([[1, 2, 3]])
        want_logits = m.logits()
        want_param = m.parameter("transformer.wte.weight")
        monkeypatch.setattr(model_module, "_np", None)
        m.forward([[1, 2, 3]])
        logits = m.logits()
        assert isinstance(logits, list) and len(logits) == 1 and len(logits[0]) == 3
        assert np.array_equal(np.array(logits), want_logits)
        assert np.array_equal(np.array(m.parameters()["transformer.wte.weight"]), want_param)
        m.set_parameter("transformer.ln_f.weight", [0.5] * 16)
        assert m.parameter("transformer.ln_f.weight") == [0.5] * 16


def test_distinct_models_run_concurrently():
    results = {}

    def work(i):
        with moas.Model(tiny(seed=i)) as m:
            m.forward([[1, 2, 3]], [[2, 3, 4]])
            results[i] = m.logits()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        with moas.Model(tiny(seed=i)) as m:
            m.forward([[1, 2, 3]])
            assert np.array_equal(m.logits(), results[i])


# -- checkpoints -----------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    path = tmp_path / "model.safetensors"
    config = tiny(attention="moas", moas_mode="top1")
    tokens, targets = pattern_batch(config, batch=2)
    with moas.Model(config) as m:
        m.forward(tokens, targets, training=True)
        m.backward()
        m.step()
        m.save(path, user_metadata={"vocab": list("abcdefghijklm")})
        m.save_optimizer(tmp_path / "model.optim.safetensors")
        m.forward(tokens)
        want = m.logits()
        params = m.parameters()
    assert json.loads(moas.checkpoint_user_metadata(path)) == {"vocab": list("abcdefghijklm")}
    with moas.Model.from_file(path) as loaded:
        # n_threads is a run-time setting: the checkpoint's model takes the library's default
        assert_same_config(loaded.config, resolved(config).replace(n_threads=loaded.config.n_threads))
        loaded.forward(tokens)
        assert np.array_equal(loaded.logits(), want)
        for name, value in loaded.parameters().items():
            assert np.array_equal(value, params[name]), name
        loaded.load_optimizer(tmp_path / "model.optim.safetensors")
        assert loaded.optimizer_steps == 1
    with moas.Model.from_file(str(path), n_threads=1, seed=99) as loaded:
        assert loaded.config.seed == 99 and loaded.config.n_threads == 1
    with moas.Model(config.replace(seed=123)) as other:
        other.load(path)
        other.forward(tokens)
        assert np.array_equal(other.logits(), want)
    m2 = moas.Model(tiny())
    m2.save(tmp_path / "plain.safetensors")
    assert moas.checkpoint_user_metadata(tmp_path / "plain.safetensors") == ""


def test_checkpoint_errors(tmp_path):
    with moas.Model(tiny()) as m:
        with pytest.raises(moas.FileError) as info:
            m.load(tmp_path / "missing.safetensors")
        assert isinstance(info.value, moas.CheckpointError) and "missing.safetensors" in info.value.message
        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(b"\x03\x00")
        with pytest.raises(moas.CheckpointError) as info:
            m.load(garbage)
        assert info.value.status in range(11, 20)
        with moas.Model(tiny(n_layer=1)) as other:
            other.save(tmp_path / "other.safetensors")
        before = m.parameters()
        with pytest.raises(moas.CheckpointError):
            m.load(tmp_path / "other.safetensors")
        after = m.parameters()
        assert all(np.array_equal(before[k], after[k]) for k in before)


# -- router statistics -----------------------------------------------------------------------------------------------
def test_router_stats_moas_and_moh():
    with moas.Model(tiny(attention="moas", moas_mode="soft")) as m:
        with pytest.raises(moas.NoForward):
            m.router_stats()
        _, aux = m.forward(*pattern_batch(m.config), training=True)
        stats = m.router_stats()
        assert [s.layer for s in stats] == [0, 1]
        for s in stats:
            assert s.attention == "moas" and s.n_routes == 3 and len(s.share) == 3
            assert sum(s.share) == pytest.approx(1, abs=1e-5)
            assert 1 / 3 - 1e-6 <= s.balance <= 1 + 1e-6 and not s.collapsed
        assert aux == pytest.approx(np.mean([s.aux_loss for s in stats]), rel=1e-4, abs=1e-9)
        assert m.router_stats(1) == stats[1]
        with pytest.raises(moas.IndexOutOfRange):
            m.router_stats(2)
    with moas.Model(tiny(head_selection=moas.MixtureOfHeads(1, 2))) as m:
        m.forward(*pattern_batch(m.config), training=True)
        for s in m.router_stats():
            assert s.attention == "moh" and s.n_routes == 3
            assert sum(s.top_share) == pytest.approx(2, abs=1e-5)
            assert sum(s.share) == pytest.approx(1, abs=1e-5)
            assert 0 < s.mean_shared_weight and 0 < s.mean_routed_weight


# -- decoding --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [dict(n_kv_head=2), dict(attention="moas", moas_mode="top1"),
                                    dict(head_selection=moas.MixtureOfHeads(1, 2), position="rope")],
                         ids=["gqa", "moas-top1", "moh-rope"])
def test_cached_decoding_equals_the_full_forward(fields):
    with moas.Model(tiny(**fields)) as m:
        tokens, _ = pattern_batch(m.config, batch=2, seed=3)
        m.forward(tokens)
        full = m.logits().astype(np.float64)
        with m.kv_cache(batch=2) as cache:
            last = m.prefill(cache, tokens[:, :5])
            assert cache.length == 5 and last.shape == (2, m.config.vocab_size)
            assert m.logits().shape == (2, 5, m.config.vocab_size)
            np.testing.assert_allclose(last, full[:, 4], atol=1e-4 * np.abs(full).max())
            for t in range(5, m.config.block_size):
                step = m.decode_step(cache, tokens[:, t])
                np.testing.assert_allclose(step, full[:, t], atol=1e-4 * np.abs(full).max())
            assert len(cache) == m.config.block_size
            with pytest.raises(moas.ContextFull):
                m.decode_step(cache, [1, 2])
            with pytest.raises(moas.SizeMismatch):
                m.decode_step(cache, [1, 2, 3])
            cache.reset()
            assert cache.length == 0


def test_cache_bytes_per_token_orders_the_schemes():
    sizes = {}
    for name, kv in (("mha", 4), ("gqa", 2), ("mqa", 1)):
        with moas.Model(tiny(n_kv_head=kv)) as m, m.kv_cache(batch=1, capacity=4) as cache:
            sizes[name] = cache.bytes_per_token
    assert sizes["mqa"] < sizes["gqa"] < sizes["mha"]


def test_decode_read_bytes_grow_with_the_cache():
    with moas.Model(tiny(n_kv_head=2)) as m, m.kv_cache(batch=1, capacity=8) as cache:
        weights, cached = cache.decode_read_bytes()
        assert cached == 0 and weights > 0
        m.prefill(cache, [[1, 2, 3]])
        assert cache.decode_read_bytes() == (weights, 3 * cache.bytes_per_token)


# -- device = "cuda" without a GPU -----------------------------------------------------------------------------------
CUDA_TABLE_SCRIPT = """
import numpy as np, moas
def train(device, matmul_precision="fp32"):
    m = moas.Model(moas.Config(vocab_size=13, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                               dropout=0.1, position="rope", n_threads=1, seed=7, device=device,
                               matmul_precision=matmul_precision))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(3):
        x = rng.integers(0, 13, size=(2, 12))
        m.zero_grad()
        losses.append(m.forward(x, np.roll(x, -1, axis=1), training=True))
        m.backward()
        m.step(3e-3)
    return losses, m.parameter("transformer.ln_f.weight")
cuda, cpu = train("cuda"), train("cpu")
assert cuda[0] == cpu[0] and np.array_equal(cuda[1], cpu[1]), (cuda, cpu)
print("cuda == cpu", cuda[0])
# The table rounds TF32 products' inputs as tensor cores do: close to fp32, not equal; the CPU ignores the setting.
tf32 = train("cuda", "tf32")
assert tf32[0] != cuda[0] and np.allclose(tf32[0], cuda[0], rtol=1e-3), (tf32, cuda)
assert train("cpu", "tf32")[0] == cpu[0]
print("tf32 close to fp32")
"""


def test_cuda_device_through_the_cpu_table_trains_like_the_cpu():
    """MOAS_CUDA_LIBRARY points libmoas at the test build's table of CPU functions (tests/cuda/cpu_backend_table.hpp): the
    CUDA model's orchestration runs through the Python API and must reproduce the CPU model exactly."""
    import os
    import subprocess
    import sys
    table = os.path.join(os.path.dirname(moas.library_path()), "tests", "libmoas_cuda_cpu.so")
    if not os.path.exists(table):
        pytest.skip(f"{table} not built (tests off)")
    env = dict(os.environ, MOAS_CUDA_LIBRARY=table)
    done = subprocess.run([sys.executable, "-c", CUDA_TABLE_SCRIPT], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cuda == cpu" in done.stdout and "tf32 close to fp32" in done.stdout


def test_lm_head_weight_names_the_tied_embedding():
    with moas.Model(tiny()) as m:
        wte = m.parameter("transformer.wte.weight")
        np.testing.assert_array_equal(m.parameter("lm_head.weight"), wte)
        m.set_parameter("lm_head.weight", np.full(wte.shape, 0.5, dtype=np.float32))
        assert (m.parameter("transformer.wte.weight") == 0.5).all()


def test_model_gates_per_layer():
    with moas.Model(tiny(attention="moas")) as m:
        m.forward(np.arange(2 * 8, dtype=np.int32).reshape(2, 8) % 13)
        gates = m.gates(0)
        assert gates.shape[:2] == (2, 8) and gates.shape[2] >= 1
        np.testing.assert_allclose(gates.sum(axis=-1), 1.0, atol=1e-5)
