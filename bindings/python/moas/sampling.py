"""Sampling text from a model: the next-token distribution (temperature, top-k, top-p) and generation through a KV
cache that slides when the context is full, plus the vocabulary `moas train` stores in its checkpoints."""
import json

import numpy as np

from .model import checkpoint_user_metadata


def sample_next(logits, rng, temperature=1.0, top_k=None, top_p=None):
    """One token id from a row of logits: greedy at temperature 0, else softmax(logits / temperature) restricted to
    the top_k most likely tokens and then to the smallest set whose probability reaches top_p."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    if temperature < 0:
        raise ValueError(f"temperature is {temperature}: use 0 (greedy) or a positive value")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p is {top_p}: it must be in (0, 1]")
    z = logits / temperature
    if top_k is not None and 0 < top_k < z.size:
        cutoff = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cutoff, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        # Keep every token until the kept mass reaches top_p (the token that crosses it included).
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        kept = np.zeros_like(p)
        kept[keep] = p[keep]
        p = kept / kept.sum()
    return int(rng.choice(p.size, p=p))


def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
    """prompt_ids followed by max_new_tokens sampled ids (a list). The model sees at most its block_size last tokens,
    as nanoGPT's generate crops them: once the cache is full, each step re-runs the last block_size - 1 tokens from
    position 0 and decodes the newest after them."""
    ids = [int(t) for t in prompt_ids]
    if not ids:
        raise ValueError("prompt_ids is empty: give at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens is {max_new_tokens}: it must be >= 0")
    rng = np.random.default_rng(seed)
    block = model.config.block_size
    with model.kv_cache(batch=1, capacity=block) as cache:
        logits = model.prefill(cache, [ids[-block:]])[0]
        for _ in range(max_new_tokens):
            ids.append(sample_next(logits, rng, temperature, top_k, top_p))
            if cache.length < block:
                logits = model.decode_step(cache, [ids[-1]])[0]
            else:  # full: slide the window by one token
                cache.reset()
                logits = model.prefill(cache, [ids[-block:]])[0]
    return ids


class Vocabulary:
    """The token ids of a `moas train` checkpoint: characters (token i is the i-th code point of the stored string)
    or bytes (token i is byte i). See docs/checkpoints.md."""

    def __init__(self, kind, characters=""):
        if kind not in ("characters", "bytes"):
            raise ValueError(f'vocabulary kind "{kind}": expected "characters" or "bytes"')
        self.kind = kind
        self.characters = characters if kind == "characters" else ""
        self._index = {c: i for i, c in enumerate(self.characters)}

    @classmethod
    def from_checkpoint(cls, path):
        """The vocabulary stored in the "user" metadata of a checkpoint that moas train wrote."""
        text = checkpoint_user_metadata(path)
        try:
            vocabulary = json.loads(text)["vocabulary"]
            return cls(vocabulary["kind"], vocabulary.get("characters", ""))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} has no moas train vocabulary in its metadata ({e}): use a checkpoint that "
                             "moas train wrote") from None

    def __len__(self):
        return 256 if self.kind == "bytes" else len(self.characters)

    def encode(self, text):
        """Token ids of text; a character outside the vocabulary raises ValueError naming it."""
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        try:
            return [self._index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in this vocabulary") from None

    def decode(self, ids):
        """The text of token ids (bytes that are not UTF-8 become U+FFFD)."""
        if self.kind == "bytes":
            return bytes(int(i) for i in ids).decode("utf-8", "replace")
        return "".join(self.characters[int(i)] for i in ids)
