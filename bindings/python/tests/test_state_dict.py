"""Interop with plain state_dicts: a nanoGPT-style safetensors file without libmoas metadata loads into a model built
from a Config; user metadata comes back as the dict it was saved as."""
import json
import struct

import numpy as np
import pytest

import moas
from conftest import tiny


def write_plain(path, tensors, dtype="F32"):
    """A safetensors file with only tensors (no __metadata__), as safetensors.torch.save_file writes a state_dict."""
    header, blobs, offset = {}, [], 0
    for name, values in tensors.items():
        if dtype == "F32":
            raw = np.asarray(values, dtype="<f4").tobytes()
        else:  # BF16: the upper half of each float32
            raw = (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_a_plain_state_dict_loads_by_name(tmp_path):
    config = tiny()
    with moas.Model(config.replace(seed=99)) as source:
        weights = source.parameters()
        tokens = np.arange(2 * 8, dtype=np.int32).reshape(2, 8) % 13
        source.forward(tokens)
        expected = source.logits()
    plain = dict(weights)
    plain["lm_head.weight"] = plain.pop("transformer.wte.weight")  # as a tied PyTorch model may name it
    plain["transformer.h.0.attn.bias"] = np.tril(np.ones((12, 12), dtype=np.float32))  # nanoGPT's mask buffer
    path = str(tmp_path / "plain.safetensors")
    write_plain(path, plain)
    with pytest.raises(moas.CheckpointConfig):
        moas.Model.from_file(path)  # no config in the file: the library cannot build the model alone
    with moas.Model.from_file(path, config=config) as m:
        m.forward(tokens)
        np.testing.assert_array_equal(m.logits(), expected)


def test_plain_state_dict_mismatches_raise(tmp_path):
    with moas.Model(tiny()) as source:
        weights = source.parameters()
    path = str(tmp_path / "p.safetensors")
    write_plain(path, {k: v for k, v in weights.items() if k != "transformer.ln_f.weight"})
    with pytest.raises(moas.CheckpointMissingTensor, match="ln_f"):
        moas.Model.from_file(path, config=tiny())
    write_plain(path, {**weights, "extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(moas.CheckpointUnexpectedTensor, match="extra.weight"):
        moas.Model.from_file(path, config=tiny())
    write_plain(path, weights)
    with pytest.raises(moas.CheckpointShape):
        moas.Model.from_file(path, config=tiny(n_embd=32))
    write_plain(path, weights, dtype="BF16")
    with moas.Model.from_file(path, config=tiny()) as m:  # BF16 rounds each weight to its upper 16 bits
        w = m.parameter("transformer.wte.weight")
        np.testing.assert_allclose(w, weights["transformer.wte.weight"], rtol=1e-2, atol=1e-6)


def test_user_metadata_round_trips_as_a_dict(tmp_path):
    path = str(tmp_path / "m.safetensors")
    meta = {"run": "a", "steps": [1, 2, 3], "nested": {"lr": 0.001}}
    with moas.Model(tiny()) as m:
        m.save(path, user_metadata=meta)
        assert moas.checkpoint_user_metadata(path, as_json=True) == meta
        assert json.loads(moas.checkpoint_user_metadata(path)) == meta
        m.save(path)
        assert moas.checkpoint_user_metadata(path, as_json=True) is None


def test_a_pytorch_reference_model_exports_and_loads(tmp_path):
    """tools/reference/gpt.py (float64 PyTorch, written from the math alone): its state_dict, saved as a plain file,
    runs in libmoas with the same logits. Needs torch (skipped without it)."""
    torch = pytest.importorskip("torch")
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "reference"))
    import gpt
    torch.manual_seed(0)
    reference = gpt.GPT(gpt.Config(vocab_size=13, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                                   position="rope")).double()
    path = str(tmp_path / "reference.safetensors")
    write_plain(path, {k: v.detach().numpy() for k, v in reference.state_dict().items()})
    tokens = np.arange(2 * 8, dtype=np.int32).reshape(2, 8) % 13
    expected, _ = reference(torch.from_numpy(tokens.astype(np.int64)))
    with moas.Model.from_file(path, config=tiny(n_kv_head=2, position="rope")) as m:
        m.forward(tokens)
        np.testing.assert_allclose(m.logits(), expected.detach().numpy(), atol=1e-4)
