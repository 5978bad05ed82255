"""Training the ways RustGPT-style programs do: gradients as one buffer (a Layer's and a Model's), several threads
sharing one layer and combining their gradients, backward_step (RustGPT's backward(grads, lr)), RustGPT's Adam,
and layer checkpoints that let training continue bit for bit."""
import threading

import numpy as np
import pytest

import moas

C = 32
MOH = moas.MixtureOfHeads(2, 4)


def small(**changes):
    fields = dict(n_embd=C, max_seq_len=20, n_threads=1, seed=3)
    fields.update(changes)
    return moas.LayerConfig(**fields)


def activations(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def weights(layer):
    return np.concatenate([v.ravel() for v in layer.parameters().values()])


# -- optimiser settings ----------------------------------------------------------------------------------------------
def test_adamw_rustgpt_is_plain_adam_and_not_the_default():
    assert moas.adamw_rustgpt() == dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=0.0)
    assert moas.adamw_defaults() == dict(lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, grad_clip=1.0)


def test_step_with_rustgpt_settings_is_plain_adam():
    """Adam's first step moves each weight by lr against its gradient's sign; weight decay would shrink it more."""
    with moas.Layer(small()) as layer:
        name = "attn.c_proj.weight"
        before = layer.parameter(name)
        gradient = np.where(np.arange(C * C).reshape(C, C) % 3 == 0, 0.5, -2.0).astype(np.float32)
        layer.set_gradient(name, gradient)
        layer.step(**moas.adamw_rustgpt())
        np.testing.assert_allclose(layer.parameter(name), before - 1e-3 * np.sign(gradient), atol=1e-6)


# -- gradients as one buffer -----------------------------------------------------------------------------------------
def test_layer_gradients_as_one_buffer():
    with moas.Layer(small(head_selection=MOH)) as layer:
        assert layer.num_parameters == sum(info.numel for info in layer.parameter_info())
        flat = layer.gradients(flat=True)
        assert flat.shape == (layer.num_parameters,) and flat.dtype == np.float32 and not flat.any()
        x = activations(1, (2, 10, C))
        layer.forward(x, training=True)
        layer.backward(activations(2, x.shape))
        flat = layer.gradients(flat=True)
        by_name = layer.gradients()
        np.testing.assert_array_equal(flat, np.concatenate([g.ravel() for g in by_name.values()]))

        # Gradients add up over backwards until zero_grad.
        layer.forward(x, training=True)
        layer.backward(activations(2, x.shape))
        np.testing.assert_allclose(layer.gradients(flat=True), 2 * flat, rtol=1e-5, atol=1e-6)

        layer.set_gradients(flat * 0.5)
        np.testing.assert_array_equal(layer.gradients(flat=True), flat * 0.5)
        layer.set_gradients(by_name)  # the {name: array} form round-trips too
        np.testing.assert_array_equal(layer.gradients(flat=True), flat)
        layer.zero_grad()
        assert not layer.gradients(flat=True).any()

        with pytest.raises(moas.SizeMismatch) as info:
            layer.set_gradients(flat[1:])
        assert info.value.function == "moas_layer_gradients_write" and info.value.message
        with pytest.raises(moas.SizeMismatch, match="missing"):
            layer.set_gradients({k: v for k, v in list(by_name.items())[1:]})
        with pytest.raises(moas.SizeMismatch):
            layer.set_gradients(flat.reshape(1, -1))
        bad = flat.copy()
        bad[5] = np.nan
        with pytest.raises(moas.NonFinite):
            layer.set_gradients(bad)
        assert not layer.gradients(flat=True).any(), "a refused write changes nothing"


def test_model_gradients_as_one_buffer(tiny_config):
    with moas.Model(tiny_config()) as model:
        tokens = np.arange(2 * 8).reshape(2, 8) % 13
        model.forward(tokens, (tokens + 1) % 13, training=True)
        model.backward()
        flat = model.gradients(flat=True)
        assert flat.shape == (model.num_parameters,)
        np.testing.assert_array_equal(flat, np.concatenate([g.ravel() for g in model.gradients().values()]))
        model.set_gradients(flat * 2)
        np.testing.assert_array_equal(model.gradients(flat=True), flat * 2)
        with pytest.raises(moas.SizeMismatch) as info:
            model.set_gradients(flat[:-1])
        assert info.value.function == "moas_gradients_write"
        bad = flat.copy()
        bad[0] = np.inf
        with pytest.raises(moas.NonFinite):
            model.set_gradients(bad)
        np.testing.assert_array_equal(model.gradients(flat=True), flat * 2)


def test_mean_of_per_thread_sequence_gradients_equals_the_batched_gradient():
    """Threads share one layer behind a lock, each computing the gradient of its own sequence; the mean drives one
    step. A twin layer (same seed) runs the same sequences as one batch and scales its gradient by 1/n."""
    n, T = 4, 12
    # One scheme (GQA, 2 kv heads over 4): no load-balance loss, whose batch mean would not split over sequences.
    config = small(n_head=4, n_kv_head=2, seed=11)
    # eps 1e-2 keeps the first Adam step lr * g / (|g| + eps) a smooth function of the gradient; with eps 1e-8 it is
    # lr * sign(g), which float noise in a near-zero gradient element could flip, moving that weight by 2 lr.
    adam = dict(moas.adamw_rustgpt(), lr=1e-2, eps=1e-2)
    xs = [activations(100 + i, (T, C)) for i in range(n)]
    dys = [activations(200 + i, (T, C)) for i in range(n)]

    layer, lock = moas.Layer(config), threading.Lock()
    per_thread = [None] * n

    def work(i):
        with lock:
            layer.forward(xs[i], training=True)
            layer.backward(dys[i])
            per_thread[i] = layer.gradients(flat=True)
            layer.zero_grad()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mean = np.sum(per_thread, axis=0) / n
    layer.set_gradients(mean)
    layer.step(**adam)

    with moas.Layer(config) as batched:
        batched.forward(np.stack(xs), training=True)
        batched.backward(np.stack(dys))
        scaled = batched.gradients(flat=True) / n
        batched.set_gradients(scaled)
        batched.step(**adam)
        # The sums add the same terms in another order, so they agree to float rounding, not bit for bit.
        scale = np.abs(scaled).max()
        assert scale > 0
        assert np.abs(mean - scaled).max() <= 1e-5 * scale
        assert np.abs(weights(layer) - weights(batched)).max() <= 1e-6
    with moas.Layer(config) as untouched:
        assert np.abs(weights(layer) - weights(untouched)).max() > 1e-3, "the step moved the weights"
    layer.close()


# -- backward_step ---------------------------------------------------------------------------------------------------
def test_backward_step_is_backward_then_step_at_lr_then_zero_grad():
    config = small(dropout=0.1, head_selection=MOH)
    adam = dict(moas.adamw_rustgpt(), lr=0.5)  # backward_step must use its lr argument, not this
    lr = 2e-3
    with moas.Layer(config) as combined, moas.Layer(config) as separate:
        for step in range(3):
            T = 8 + 4 * step
            x, dy = activations(10 + step, (T, C)), activations(20 + step, (T, C))
            combined.forward(x, training=True)
            dx = combined.backward_step(dy, lr, adam)
            separate.forward(x, training=True)
            want = separate.backward(dy)
            separate.step(**dict(adam, lr=lr))
            separate.zero_grad()
            np.testing.assert_array_equal(dx, want)
            np.testing.assert_array_equal(weights(combined), weights(separate))
            assert not combined.gradients(flat=True).any()
        assert combined.optimizer_steps == separate.optimizer_steps == 3

        out = np.empty((8, C), np.float32)
        combined.forward(activations(30, (8, C)), training=True)
        assert combined.backward_step(activations(31, (8, C)), lr, moas.adamw_rustgpt(), out=out) is out

        before = weights(combined)
        with pytest.raises(moas.NoForward):
            combined.backward_step(activations(32, (8, C)), lr, adam)
        combined.forward(activations(33, (8, C)), training=True)
        with pytest.raises(moas.InvalidConfig, match="lr"):
            combined.backward_step(activations(34, (8, C)), float("nan"), adam)
        np.testing.assert_array_equal(weights(combined), before)
        assert not combined.gradients(flat=True).any(), "a failed step leaves no gradient behind"
        with pytest.raises(TypeError, match="unknown AdamW setting"):
            combined.backward_step(activations(34, (8, C)), lr, dict(adam, momentum=0.9))
        with pytest.raises(TypeError, match="dict"):
            combined.backward_step(activations(34, (8, C)), lr, 0.9)


# -- checkpoints -----------------------------------------------------------------------------------------------------
def test_checkpoints_continue_training_bit_for_bit(tmp_path):
    # Dropout on: its masks are keyed by the count of training forwards, which the optimiser file carries.
    config = small(dropout=0.1, position="rope", head_selection=MOH, seed=5)
    adam = moas.adamw_rustgpt()

    def train(layer, step):
        x = activations(40 + step, (2, 10, C))
        layer.forward(x, training=True)
        layer.backward_step(activations(50 + step, x.shape), 1e-2, adam)

    weights_path, optimizer_path = tmp_path / "layer.safetensors", tmp_path / "optimizer.safetensors"
    with moas.Layer(config) as original:
        with pytest.raises(moas.Error, match="optimizer_step"):
            original.save_optimizer(optimizer_path)  # no step taken yet: no state to save
        for step in range(3):
            train(original, step)
        original.save(weights_path, user_metadata={"vocab": "abc"})
        original.save_optimizer(optimizer_path)
        assert moas.checkpoint_user_metadata(weights_path) == '{"vocab": "abc"}'

        with moas.Layer.from_file(weights_path, n_threads=1) as restored:
            assert restored.parameter_info() == original.parameter_info()
            np.testing.assert_array_equal(weights(restored), weights(original))
            assert restored.config == config
            assert restored.optimizer_steps == 0
            restored.load_optimizer(optimizer_path)
            assert restored.optimizer_steps == 3
            for step in range(3, 6):
                train(original, step)
                train(restored, step)
            np.testing.assert_array_equal(weights(restored), weights(original))

    # A fresh layer of the same config, loaded in place, continues like one created from the file (the seed keys
    # the dropout masks, so it must be the file's).
    with moas.Layer(config) as reloaded, moas.Layer.from_file(str(weights_path)) as again:
        assert again.config == config.replace(n_threads=0)
        reloaded.load(weights_path)
        reloaded.load_optimizer(optimizer_path)
        again.load_optimizer(optimizer_path)
        for step in range(3, 6):
            train(reloaded, step)
            train(again, step)
        np.testing.assert_array_equal(weights(reloaded), weights(again))

    # A layer of another shape refuses both files with the library's message and stays as it was.
    with moas.Layer(config.replace(n_embd=2 * C)) as wider:
        before = weights(wider)
        with pytest.raises(moas.CheckpointConfig) as info:
            wider.load(weights_path)
        assert info.value.function == "moas_layer_load" and "n_embd" in info.value.message
        np.testing.assert_array_equal(weights(wider), before)
        with pytest.raises(moas.CheckpointConfig, match="n_embd"):
            wider.load_optimizer(optimizer_path)
        assert wider.optimizer_steps == 0

    with pytest.raises(moas.FileError):
        moas.Layer.from_file(tmp_path / "missing.safetensors")
    with moas.Model(n_layer=1, n_head=4, n_embd=C, vocab_size=13, block_size=8) as model:
        model.save(tmp_path / "model.safetensors")
        with pytest.raises(moas.CheckpointConfig, match="model"):
            moas.Layer.from_file(tmp_path / "model.safetensors")  # a model's checkpoint is not a layer's


@pytest.mark.parametrize("fields", [
    dict(),
    dict(position="cope", cope_max_pos=6, window_size=4, bias=True, residual=False),
    dict(attention="moas", moas_mode="top1", moas_branch_kv_heads=(0, 1), moas_aux_weight=0.02),
    dict(head_selection=moas.MixtureOfHeads(1, 3, 0.05, "paper"), n_kv_head=2),
    dict(head_selection=moas.StaticPruning(5), position="rope", rope_base=500.0, dropout=0.25),
], ids=["gqa", "cope-window-bias-no-residual", "moas-top1", "moh-paper", "pruning-rope"])
def test_from_file_reads_back_the_config(tmp_path, fields):
    config = small(**fields)
    # The library reports MoAS branch kv heads resolved: the MHA branch's 0 reads back as the 8 heads.
    expected = config.replace(moas_branch_kv_heads=(8, 1)) if config.attention == "moas" else config
    path = tmp_path / "layer.safetensors"
    with moas.Layer(config) as layer:
        assert layer.config == expected
        layer.save(path)
        with moas.Layer.from_file(path, n_threads=1) as restored:
            assert restored.config == expected
            np.testing.assert_array_equal(weights(restored), weights(layer))
            x = activations(60, (2, 6, C))
            np.testing.assert_array_equal(restored.forward(x), layer.forward(x))
