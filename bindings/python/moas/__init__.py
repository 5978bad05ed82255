"""Python bindings (ctypes) for libmoas: GPT models whose attention is one scheme (MHA, GQA, MQA), a Mixture of
Attention Schemes (MoAS) or Mixture-of-Heads (MoH), and that attention block alone as a `Layer`.

    import moas
    with moas.Model(vocab_size=13, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0,
                    attention="moas", moas_mode="soft") as model:
        loss, aux = model.forward(tokens, targets, training=True)
        model.backward(); model.step(lr=1e-3); model.zero_grad()

    with moas.Layer(n_embd=64, head_selection=moas.MixtureOfHeads(2, 4), position="cope") as layer:
        y = layer.forward(x, training=True)           # x [batch, seq_len, 64] -> x + Attn(x)
        dx = layer.backward(dy); layer.step(lr=1e-3, weight_decay=0.0); layer.zero_grad()
        dx = layer.backward_step(dy, 1e-3, moas.adamw_rustgpt())   # RustGPT's backward(grads, lr)

Gradients accumulate over backward() calls until zero_grad(). step() falls back to moas.adamw_defaults() (AdamW:
weight decay 0.1, clipping at 1.0) for settings not given; moas.adamw_rustgpt() is RustGPT's plain Adam.

The library is found through MOAS_LIBRARY (a full path), MOAS_LIBRARY_DIR, next to this package, the install
prefix, then the system loader; it must speak ABI version `ABI_VERSION`.

Thread safety: a Model (or Layer) is used by one thread at a time; distinct ones may be used concurrently.
"""
from ._lib import ABI_VERSION, LibraryError
from ._lib import lib as _load
from .config import AllHeads, Config, HeadSelection, LayerConfig, MixtureOfHeads, StaticPruning
from .errors import (AbiMismatch, CheckpointConfig, CheckpointDtype, CheckpointError, CheckpointHeader,
                     CheckpointValue,
                     CheckpointLayout, CheckpointMissingTensor, CheckpointShape, CheckpointTruncated,
                     CheckpointUnexpectedTensor, ContextFull, ContextTooLong, DeviceUnavailable, Error, FileError,
                     IndexOutOfRange, InternalError, InvalidArgument, InvalidConfig, InvalidInput, NoForward,
                     NonFinite, NoRouter, NullArgument, OutOfMemory, SizeMismatch, TargetOutOfRange, TokenOutOfRange,
                     UnknownParameter)
from .layer import Layer
from .sampling import Vocabulary, sample_next
from .model import (KVCache, Model, ParameterInfo, RouterStats, adamw_defaults, adamw_rustgpt,
                    checkpoint_user_metadata)

__version__ = "0.8.0"


def load_library():
    """Loads libmoas now (it is otherwise loaded on first use); raises LibraryError if absent or incompatible."""
    return _load()


def library_version():
    """The loaded library's version string, e.g. "0.1.0"."""
    return _load().moas_version_string().decode("ascii")


def build_info():
    """How the loaded library was built: version, GEMM library, kernel instruction set, CPU threads."""
    return _load().moas_build_info().decode("ascii")


def abi_version():
    """MOAS_ABI_VERSION of the loaded library (equal to ABI_VERSION once loaded)."""
    return _load().moas_abi_version()


def library_path():
    """Where the loaded library came from."""
    return _load()._moas_path


__all__ = [
    "ABI_VERSION", "LibraryError", "load_library", "library_version", "build_info", "abi_version", "library_path",
    "Config", "LayerConfig", "HeadSelection", "AllHeads", "MixtureOfHeads", "StaticPruning",
    "Model", "KVCache", "Layer", "ParameterInfo", "RouterStats", "adamw_defaults", "adamw_rustgpt",
    "checkpoint_user_metadata", "Vocabulary", "sample_next",
    "Error", "NullArgument", "InvalidConfig", "AbiMismatch", "SizeMismatch", "InvalidInput", "TokenOutOfRange",
    "TargetOutOfRange", "ContextTooLong", "ContextFull", "NoForward", "NonFinite", "UnknownParameter",
    "CheckpointError", "FileError", "CheckpointTruncated", "CheckpointHeader", "CheckpointLayout",
    "CheckpointMissingTensor", "CheckpointUnexpectedTensor", "CheckpointShape", "CheckpointDtype",
    "CheckpointConfig", "NoRouter", "DeviceUnavailable", "OutOfMemory", "IndexOutOfRange", "InternalError",
    "InvalidArgument", "CheckpointValue",
]
