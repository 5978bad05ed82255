"""Generation through the KV cache (sliding past block_size), the sampling rules, and a moas train vocabulary."""
import json

import numpy as np
import pytest

import moas
from conftest import tiny


def full_forward_greedy(model, ids, n):
    """nanoGPT's generate at temperature 0: a full forward over the last block_size tokens per step."""
    ids = list(ids)
    block = model.config.block_size
    for _ in range(n):
        context = ids[-block:]
        model.forward(np.array([context], dtype=np.int32))
        ids.append(int(np.argmax(model.logits()[0, -1])))
    return ids


def test_greedy_generation_equals_full_forwards_and_slides():
    with moas.Model(tiny()) as m:  # block_size 12: 20 new tokens slide the window 10 times
        prompt = [1, 2, 3]
        assert m.generate(prompt, 20, temperature=0) == full_forward_greedy(m, prompt, 20)
        long_prompt = list(range(13)) * 2  # longer than the context: only the last 12 are seen
        assert m.generate(long_prompt, 3, temperature=0)[-3:] == full_forward_greedy(m, long_prompt[-12:], 3)[-3:]


def test_sampling_is_repeatable_and_respects_top_k_and_top_p():
    with moas.Model(tiny()) as m:
        a = m.generate([4, 5], 15, temperature=1.0, top_k=3, seed=11)
        assert a == m.generate([4, 5], 15, temperature=1.0, top_k=3, seed=11)
        assert len(a) == 17
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 5.0, 4.0, -1.0, 3.0])
    assert {moas.sample_next(logits, rng, top_k=2) for _ in range(200)} <= {1, 2}
    # p = softmax: token 1 alone holds about 0.66 of the mass, so top_p 0.5 keeps only it.
    assert {moas.sample_next(logits, rng, top_p=0.5) for _ in range(100)} == {1}
    assert moas.sample_next(logits, rng, temperature=0) == 1
    with pytest.raises(ValueError):
        moas.sample_next(logits, rng, top_p=1.5)


def test_vocabulary_of_a_train_checkpoint(tmp_path):
    path = str(tmp_path / "m.safetensors")
    chars = "\n !abc\u00e9"
    with moas.Model(tiny(vocab_size=len(chars))) as m:
        m.save(path, user_metadata={"moas_train": 1, "vocabulary": {"kind": "characters", "characters": chars}})
    v = moas.Vocabulary.from_checkpoint(path)
    assert len(v) == 7 and v.decode(v.encode("abc \u00e9!")) == "abc \u00e9!"
    with pytest.raises(ValueError, match="'z'"):
        v.encode("z")
    b = moas.Vocabulary("bytes")
    assert b.decode(b.encode("h\u00e9")) == "h\u00e9" and len(b) == 256
    with moas.Model(tiny()) as m:
        m.save(path, user_metadata=json.dumps({"other": 1}))
    with pytest.raises(ValueError, match="moas train"):
        moas.Vocabulary.from_checkpoint(path)
