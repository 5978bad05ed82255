"""Plain safetensors state_dicts (nanoGPT's names, no libmoas metadata), read with numpy: a model made from a
Config takes such a file's weights by name. libmoas's own checkpoints carry their config and load in the library."""
import json
import struct

import numpy as np

from .errors import CheckpointDtype, CheckpointHeader, CheckpointMissingTensor, CheckpointShape, \
    CheckpointUnexpectedTensor, CheckpointTruncated

_HEAD, _EMBEDDING = "lm_head.weight", "transformer.wte.weight"
# Buffers a PyTorch GPT may save beside its parameters (nanoGPT's causal mask): not weights, skipped.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _fail(cls, message, function):
    raise cls(message, status=cls.status, function=function)


def read_tensors(path, function="from_file"):
    """{name: float32 array} of a safetensors file's F32, F16 and BF16 tensors (the format's checks are the
    library's job for its own files; here a damaged file raises the matching Checkpoint* error)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        _fail(CheckpointTruncated, f"{path}: {len(data)} bytes, too short for a safetensors header", function)
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        _fail(CheckpointTruncated, f"{path}: header length {n} runs past the end of the file", function)
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        _fail(CheckpointHeader, f"{path}: the header is not UTF-8 JSON ({e})", function)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[8 + n + begin:8 + n + end]
        dtype = entry["dtype"]
        if dtype == "F32":
            values = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "BF16":
            values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            _fail(CheckpointDtype, f"{path}: tensor \"{name}\" has dtype {dtype}; F32, F16 and BF16 load", function)
        tensors[name] = values.reshape(entry["shape"]).astype(np.float32, copy=False)
    return tensors


def load_state_dict(model, path):
    """Writes every parameter of `model` from the file's tensor of the same name (lm_head.weight may stand for the
    tied embedding), after checking that each is there with the model's shape and that no other weight is."""
    function = "Model.from_file"
    tensors = read_tensors(path, function)
    staged = {}
    for info in model.parameter_info():
        name = info.name
        if name not in tensors and name == _EMBEDDING and _HEAD in tensors:
            name = _HEAD
        if name not in tensors:
            _fail(CheckpointMissingTensor, f"{path}: tensor \"{info.name}\" is missing (shape {info.shape})", function)
        if tuple(tensors[name].shape) != tuple(info.shape):
            _fail(CheckpointShape, f"{path}: tensor \"{name}\" has shape {tuple(tensors[name].shape)} but the model "
                                   f"needs {tuple(info.shape)}", function)
        staged[info.name] = tensors[name]
    used = set(staged) | {_HEAD}
    for name in tensors:
        if name not in used and not name.endswith(_BUFFER_SUFFIXES):
            _fail(CheckpointUnexpectedTensor, f"{path}: tensor \"{name}\" does not belong to this model (another "
                                              "architecture, or a config that differs from the file's?)", function)
    for name, values in staged.items():
        model.set_parameter(name, values)
