"""libmoas accepts exactly the files the safetensors reference accepts, at the level of the format itself.

Reference: safetensors.deserialize(bytes) succeeds. libmoas: moas_checkpoint_user_metadata(path) returns MOAS_OK (it
parses the header and checks the layout, not the model config). Both see named corruptions of a real libmoas
checkpoint (the kinds the C++ suite tests/checkpoint/test_corrupt_checkpoints.cpp loads) and a few thousand seeded
random mutations of it (bit flips, truncations, header length and header edits). Their verdicts must agree, except
where a documented difference below explains the disagreement.
"""
import ctypes
import json
import os
import random
import struct

import pytest

import moas
from moas import _lib
from conftest import tiny

safetensors = pytest.importorskip("safetensors")

MUTATIONS = 5000
SEED = 20240611

# Every dtype the reference (safetensors 0.8) knows, and the ones libmoas's table does not: it cannot size them,
# so it refuses them with MOAS_ERR_CHECKPOINT_DTYPE. It could not load them into a model either.
REFERENCE_DTYPES = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
                    "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
UNSIZED_BY_LIBMOAS = {"F4", "F6_E2M3", "F6_E3M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"}


def _pairs_with_duplicates(pairs):
    keys = [k for k, _ in pairs]
    return {"__pairs__": pairs, "__duplicate__": len(keys) != len(set(keys))}


def _header_json(data):
    """The header of a file parsed keeping duplicate keys (None when there is no parsable header)."""
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        return None
    try:
        return json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_pairs_with_duplicates)
    except (ValueError, RecursionError):
        return None


def _top_pairs(header):
    return header["__pairs__"] if isinstance(header, dict) and "__pairs__" in header else []


def duplicate_keys(header):
    """Top-level (tensor names) or __metadata__ keys that repeat: the reference keeps the last silently (serde into
    maps), libmoas refuses the header (MOAS_ERR_CHECKPOINT_HEADER), as a repeated tensor name is ambiguous. A repeated
    field inside a tensor entry, or a repeated "__metadata__", both refuse."""
    if not isinstance(header, dict) or "__pairs__" not in header:
        return False
    if header["__duplicate__"] and sum(k == "__metadata__" for k, _ in _top_pairs(header)) <= 1:
        return True
    return any(k == "__metadata__" and isinstance(v, dict) and v.get("__duplicate__") for k, v in _top_pairs(header))


def unsized_dtype(header):
    return any(isinstance(v, dict) and "__pairs__" in v and
               any(fk == "dtype" and fv in UNSIZED_BY_LIBMOAS for fk, fv in v["__pairs__"])
               for k, v in _top_pairs(header) if k != "__metadata__")


# Documented differences: (name, predicate on the parsed header, the side that accepts).
KNOWN_DIFFERENCES = [
    ("duplicate keys", duplicate_keys, "reference"),
    ("dtype libmoas cannot size", unsized_dtype, "reference"),
]


def reference_accepts(data):
    try:
        safetensors.deserialize(data)
        return True
    except safetensors.SafetensorError:
        return False


def libmoas_status(path):
    needed = ctypes.c_size_t(0)
    return _lib.lib().moas_checkpoint_user_metadata(os.fsencode(path), None, 0, ctypes.byref(needed))


class Verdicts:
    """Runs both readers on files and keeps the disagreements no documented difference explains."""

    def __init__(self, directory):
        self.path = str(directory / "candidate.safetensors")
        self.mismatches = []
        self.explained = {name: 0 for name, _, _ in KNOWN_DIFFERENCES}
        self.accepted = self.checked = 0

    def check(self, label, data):
        with open(self.path, "wb") as f:
            f.write(data)
        status = libmoas_status(self.path)
        ours, theirs = status == 0, reference_accepts(data)
        self.checked += 1
        self.accepted += theirs
        if ours == theirs:
            return
        header = _header_json(data)
        for name, applies, accepting_side in KNOWN_DIFFERENCES:
            if header is not None and applies(header) and (accepting_side == "reference") == theirs:
                self.explained[name] += 1
                return
        message = "" if ours else _lib.lib().moas_last_error().decode("utf-8", "replace")
        self.mismatches.append(f"{label}: reference {'accepts' if theirs else 'refuses'}, libmoas "
                               f"{'accepts' if ours else f'refuses ({status}: {message[:200]})'}")

    def report(self):
        return "\n".join(self.mismatches[:40]) + (f"\n... {len(self.mismatches)} in all" if self.mismatches else "")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real libmoas checkpoint of a tiny model, with user metadata."""
    path = tmp_path_factory.mktemp("differential") / "tiny.safetensors"
    with moas.Model(tiny(n_layer=1, n_embd=8, n_head=2)) as model:
        model.save(str(path), user_metadata={"vocab": "abcdefghijklm"})
    return path.read_bytes()


def split(data):
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n], object_pairs_hook=lambda pairs: pairs)
    return header, data[8 + n:]


def text_of(value):
    """JSON text of a value whose objects are lists of pairs (so keys may repeat and keep their order)."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + text_of(v) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(text_of(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def file_of(header_text, data, length=None):
    raw = header_text if isinstance(header_text, bytes) else header_text.encode("utf-8")
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def build(pairs, data):
    return file_of(text_of(pairs), data)


def entry(pairs, name):
    return dict(dict(pairs)[name])


def replace_entry(pairs, name, value):
    return [(k, list(value.items()) if k == name else v) for k, v in pairs]


def tensor_names(pairs):
    return [k for k, _ in pairs if k != "__metadata__"]


def named_corruptions(good):
    """The header- and layout-level corruptions of the C++ suite, made here from the same kind of file."""
    pairs, data = split(good)
    text = text_of(pairs)
    names = tensor_names(pairs)
    last, first = names[-1], names[0]
    n = len(text.encode())
    meta = dict(pairs)["__metadata__"]

    def with_entry(name, **changes):
        e = entry(pairs, name)
        e.update(changes)
        return build(replace_entry(pairs, name, e), data)

    def nested(depth):
        marked = text_of(replace_entry(pairs, last, {**entry(pairs, last), "x": "NESTED"}))
        return file_of(marked.replace('"NESTED"', "[" * depth + "]" * depth), data)

    cases = {"intact": good, "unpadded": build(pairs, data)}
    for cut in [0, 3, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 9 + n, len(good) - 1]:
        cases[f"truncated to {cut}"] = build(pairs, data)[:cut]
    for length in [0, 100000001, 2**64 - 1, 99999999, n + len(data) + 1, n - 1, n + 4]:
        cases[f"header length {length}"] = file_of(text, data, length)
    cases.update({
        "plain text": file_of("this is not JSON", b""),
        "JSON array": file_of("[]", b""),
        "byte 0xFF": file_of(text.encode().replace(b'"pt"', b'"p\xff"', 1), data),
        "overlong UTF-8": file_of(text.encode().replace(b"ln_f", b"ln\xc0\xaf", 1), data),
        "encoded surrogate": file_of(text.encode().replace(b'"pt"', b'"p\xed\xa0\x80"', 1), data),
        "escaped lone surrogate": file_of(text.replace('"pt"', '"p\\ud800"', 1), data),
        "NUL before": file_of(b"\0" + text.encode(), data),
        "NUL then garbage after": file_of(text.encode() + b"\0garbage", data),
        "NUL in a string": file_of(text.encode().replace(b'"pt"', b'"p\0t"', 1), data),
        "escaped NUL in a string": file_of(text.replace('"pt"', '"p\\u0000t"', 1), data),
        "BOM": file_of(b"\xef\xbb\xbf" + text.encode(), data),
        "whitespace around": file_of(" \n\t" + text + " \r\n", data),
        "100000 unclosed brackets": file_of('{"a":' + "[" * 100000, data),
        "100000 nested arrays in an entry": nested(100000),
        "10 nested arrays in an entry": nested(10),
        "extra field in an entry": with_entry(last, note="x"),
        "duplicate tensor": build(pairs + [(last, dict(pairs)[last])], data),
        "duplicate metadata key": build([("__metadata__", meta + [meta[0]])] + pairs[1:], data),
        "duplicate dtype": file_of(text.replace('"dtype":"F32"', '"dtype":"F32","dtype":"F32"', 1), data),
        "metadata value a number": build([("__metadata__", [(meta[0][0], 1)] + meta[1:])] + pairs[1:], data),
        "metadata an array": build([("__metadata__", ["pt"])] + pairs[1:], data),
        "metadata null": build([("__metadata__", None)] + pairs[1:], data),
        "no metadata": build(pairs[1:], data),
        "200 KB unterminated string": file_of(text[:-1] + ',"' + "a" * 200000, data),
        "dtype a number": with_entry(last, dtype=5),
        "three offsets": with_entry(last, data_offsets=entry(pairs, last)["data_offsets"] + [0]),
        "negative dimension": with_entry(last, shape=[-8]),
        "fractional dimension": with_entry(last, shape=[8.0]),
        "garbage after": file_of(text + "x", data),
        "unknown dtype": with_entry(last, dtype="F31"),
        "lower-case dtype": with_entry(last, dtype="f32"),
        "I32": with_entry(last, dtype="I32"),
        "I8 of the same bytes": with_entry(last, dtype="I8", shape=[entry(pairs, last)["data_offsets"][1] -
                                                                    entry(pairs, last)["data_offsets"][0]]),
        "F8_E5M2FNUZ of the same bytes": with_entry(last, dtype="F8_E5M2FNUZ",
                                                    shape=[entry(pairs, last)["data_offsets"][1] -
                                                           entry(pairs, last)["data_offsets"][0]]),
        "shape disagrees with span": with_entry(last, shape=[9]),
        "trailing bytes": build(pairs, data + b"\0" * 4),
        "span ends past the file": with_entry(last, data_offsets=[o + 4 for o in entry(pairs, last)["data_offsets"]]),
        "offsets near 2^63": with_entry(last, data_offsets=[2**63, 2**63 + 32]),
        "offsets reversed": with_entry(last, data_offsets=entry(pairs, last)["data_offsets"][::-1]),
        "element count overflows": with_entry(last, shape=[2**32, 2**32]),
        "20000 dims": with_entry(last, shape=[1] * 20000 + [8]),
        "header order not data order": build([pairs[0]] + pairs[:0:-1], data),
        "zero-size extra tensor": build(pairs + [("extra", [("dtype", "F32"), ("shape", [0]),
                                                            ("data_offsets", [len(data), len(data)])])], data),
        "empty header": file_of("{}", b""),
        "empty header with data": file_of("{}", b"\0" * 4),
        "first tensor removed": build([p for p in pairs if p[0] != first], data),
    })
    b, e = entry(pairs, last)["data_offsets"]
    cases["overlapping spans"] = with_entry(last, data_offsets=[b - 4, e - 4])[:-4]
    return cases


def test_named_corruptions_agree(checkpoint, tmp_path):
    verdicts = Verdicts(tmp_path)
    for label, data in named_corruptions(checkpoint).items():
        verdicts.check(label, data)
    assert not verdicts.mismatches, "libmoas and safetensors disagree:\n" + verdicts.report()
    # Each documented difference still exists (else it no longer needs excusing: take it off the list).
    assert all(verdicts.explained.values()), verdicts.explained


def mutate(rng, good):
    """One seeded random mutation of the file: a label saying what was done, and the bytes."""
    pairs, data = split(good)
    text = text_of(pairs).encode()
    n = len(text)
    kind = rng.random()
    if kind < 0.25:  # bit flips inside the length field and header
        out = bytearray(good)
        flips = []
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(0, min(len(out), 8 + n))
            bit = rng.randrange(8)
            out[at] ^= 1 << bit
            flips.append(f"{at}.{bit}")
        return "bit flips " + ",".join(flips), bytes(out)
    if kind < 0.35:  # a byte anywhere set to a value JSON or UTF-8 cares about
        out = bytearray(good)
        at = rng.randrange(len(out))
        out[at] = rng.choice([0, 0x22, 0x2C, 0x5B, 0x5D, 0x7B, 0x7D, 0x5C, 0x2D, 0x30, 0x39, 0x20, 0x80, 0xC0, 0xFF])
        return f"byte {at} = {out[at]:#x}", bytes(out)
    if kind < 0.45:
        cut = rng.randrange(len(good))
        return f"truncated to {cut}", good[:cut]
    if kind < 0.55:
        length = rng.choice([0, 1, n - 1, n + 1, n - rng.randint(2, 50), n + rng.randint(2, 50), 2**63,
                             100000000, 100000001, rng.randrange(2**64)])
        return f"header length {length}", file_of(text, data, length)
    return edit_header(rng, pairs, data)


def edit_header(rng, pairs, data):
    names = tensor_names(pairs)
    name = rng.choice(names)
    e = entry(pairs, name)
    choice = rng.randrange(14)
    label = f"edit {choice} of {name}"
    if choice == 0:
        which = rng.randrange(2)
        e["data_offsets"] = list(e["data_offsets"])
        e["data_offsets"][which] += rng.choice([-8, -4, -1, 1, 4, 8, 2**32, 2**64 - e["data_offsets"][which] - 1])
    elif choice == 1:
        e["dtype"] = rng.choice(REFERENCE_DTYPES + ["F31", "f32", "", "F32 ", 32])
    elif choice == 2:
        shape = list(e["shape"])
        i = rng.randrange(len(shape) + 1)
        value = rng.choice([0, 1, 2, -1, 2**32, 2**63, 2**64 - 1, 1.0, "8", None])
        e["shape"] = shape[:i] + [value] + shape[i + 1:] if rng.random() < 0.7 else shape[:i] + [value] + shape[i:]
    elif choice == 3:  # swap the spans of two tensors
        other = rng.choice(names)
        o = entry(pairs, other)
        e["data_offsets"], o["data_offsets"] = o["data_offsets"], e["data_offsets"]
        return label + f" with {other}", build(replace_entry(replace_entry(pairs, name, e), other, o), data)
    elif choice == 4:  # the entry gone, its bytes kept
        return label + ": removed", build([p for p in pairs if p[0] != name], data)
    elif choice == 5:  # the entry and its bytes gone, later spans moved down
        b, end = e["data_offsets"]
        moved = []
        for k, v in pairs:
            if k == name:
                continue
            if k != "__metadata__" and dict(v)["data_offsets"][0] >= end:
                v = [(fk, [x - (end - b) for x in fv] if fk == "data_offsets" else fv) for fk, fv in v]
            moved.append((k, v))
        return label + ": removed with its bytes", build(moved, data[:b] + data[end:])
    elif choice == 6:
        return label + ": repeated", build(pairs + [(name, dict(pairs)[name])], data)
    elif choice == 7:
        depth = rng.randint(1, 20)
        e[rng.choice(["x", "offsets", "Dtype", "__metadata__"])] = json.loads("[" * depth + "]" * depth)
    elif choice == 8:
        meta = list(dict(pairs)["__metadata__"])
        key = rng.choice(meta)[0]
        value = rng.choice([1, None, [], {}, True, "", "x" * 50, "\u00e9\u4e2d"])
        meta = [(k, value if k == key else v) for k, v in meta]
        return f"metadata {key} = {value!r}", build([("__metadata__", meta)] + pairs[1:], data)
    elif choice == 9:
        value = rng.choice([None, [], "pt", 1, [("a", "b")], [("a", "b"), ("a", "c")]])
        return f"__metadata__ = {value!r}", build([("__metadata__", value)] + pairs[1:], data)
    elif choice == 10:
        extra = rng.choice([b"", b"\0", b"\0" * 4, b"\1" * 7])
        return f"data + {len(extra)} bytes", build(pairs, data + extra)
    elif choice == 11:  # a character inserted into the header text
        text = text_of(pairs).encode()
        at = rng.randrange(len(text) + 1)
        char = rng.choice([b"\0", b"\xef\xbb\xbf", b'"', b",", b"}", b"]", b" ", b"\t", b"\x01", b"\xc3\xa9", b"\\",
                           b"-", b"0", b"\xff"])
        return f"{char!r} inserted at {at}", file_of(text[:at] + char + text[at:], data)
    elif choice == 12:
        new = rng.choice(["", "\u00e9", "a" * 300, "__metadata__", names[0], "x.y", "\t"])
        return f"{name} renamed {new!r}", build([(new if k == name else k, v) for k, v in pairs], data)
    else:  # two characters of the header text swapped
        text = bytearray(text_of(pairs).encode())
        i, j = rng.randrange(len(text)), rng.randrange(len(text))
        text[i], text[j] = text[j], text[i]
        return f"header bytes {i} and {j} swapped", file_of(bytes(text), data)
    return label, build(replace_entry(pairs, name, e), data)


def test_random_mutations_agree(checkpoint, tmp_path):
    rng = random.Random(SEED)
    verdicts = Verdicts(tmp_path)
    for i in range(MUTATIONS):
        label, data = mutate(rng, checkpoint)
        verdicts.check(f"#{i} {label}", data)
    # The mutations must reach both verdicts often enough to mean something.
    assert verdicts.accepted > MUTATIONS // 20
    assert verdicts.checked - verdicts.accepted > MUTATIONS // 2
    assert not verdicts.mismatches, (f"libmoas and safetensors disagree on {len(verdicts.mismatches)} of "
                                     f"{MUTATIONS} mutations (seed {SEED}):\n" + verdicts.report())
