"""`Model`: one libmoas model behind a Python object; what it shares with `Layer` (owned handles, named
parameters, array conversion).

Thread safety: a Model is used by one thread at a time (guard it with a lock if threads share it); distinct models
may be used concurrently from different threads (ctypes releases the GIL during every library call).
"""
import ctypes
import json
import math
import os
from dataclasses import dataclass

from . import _lib
from .config import ATTENTIONS, Config, _enum_from_c, _f32
from .errors import NoForward, SizeMismatch, TargetOutOfRange, TokenOutOfRange, check

try:
    import numpy as _np
except ImportError:  # the package works without numpy: arrays become nested lists
    _np = None

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_int32_p = ctypes.POINTER(ctypes.c_int32)


def _path(path):
    return os.fsencode(path)


def _nest(flat, shape):
    """A flat list as nested lists of the given shape."""
    for size in reversed(shape[1:]):
        flat = [flat[i:i + size] for i in range(0, len(flat), size)]
    return flat


def _int32_batch(values, what, range_error):
    """values ([batch, seq_len] or [seq_len], numpy integers or Python lists) as a contiguous int32 buffer.

    Returns (owner, (batch, seq_len), pointer): the caller keeps `owner` referenced until the C call returns.
    """
    if _np is not None:
        try:
            arr = _np.asarray(values)
        except ValueError as e:  # ragged nested lists
            raise SizeMismatch(f"{what} must be a rectangular [batch, seq_len] array: {e}", status=4) from None
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(_np.int32)  # [] and [[]] arrive as float64
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integer ids, not an array of {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise SizeMismatch(f"{what} must be [batch, seq_len] or [seq_len], not of shape {arr.shape}", status=4)
        if arr.size and (int(arr.min()) < _INT32_MIN or int(arr.max()) > _INT32_MAX):
            bad = int(arr.max()) if int(arr.max()) > _INT32_MAX else int(arr.min())
            raise range_error(f"{what} id {bad} does not fit in int32", status=range_error.status)
        arr = _np.ascontiguousarray(arr, dtype=_np.int32)
        return arr, arr.shape, arr.ctypes.data_as(_c_int32_p)
    rows = list(values)
    if not rows or not all(hasattr(r, "__len__") for r in rows):
        rows = [rows]
    rows = [list(r) for r in rows]
    seq_len = len(rows[0])
    if any(len(r) != seq_len for r in rows):
        raise SizeMismatch(f"{what} must be a rectangular [batch, seq_len] list", status=4)
    flat = [v for r in rows for v in r]
    for v in flat:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{what} must be integer ids, not {type(v).__name__}")
        if not _INT32_MIN <= v <= _INT32_MAX:
            raise range_error(f"{what} id {v} does not fit in int32", status=range_error.status)
    buf = (ctypes.c_int32 * len(flat))(*flat)
    return buf, (len(rows), seq_len), ctypes.cast(buf, _c_int32_p)


def _float_buffer(n):
    """An output buffer of n float32: (owner, pointer)."""
    if _np is not None:
        arr = _np.empty(n, dtype=_np.float32)
        return arr, arr.ctypes.data_as(_c_float_p)
    buf = (ctypes.c_float * n)()
    return buf, ctypes.cast(buf, _c_float_p)


def _shaped(owner, shape):
    """An output buffer as a numpy array of `shape`, or nested lists without numpy."""
    if _np is not None:
        return owner.reshape(shape)
    return _nest(list(owner), shape) if shape else list(owner)


def _float_array(values, what):
    """values (any numpy array, or nested lists) as contiguous float32: (owner, shape, pointer).

    A float32 C-contiguous array is used as it is (no copy), so its pointer can be compared with an output's.
    """
    if _np is not None:
        try:
            arr = _np.ascontiguousarray(values, dtype=_np.float32)
        except ValueError as e:  # ragged nested lists
            raise SizeMismatch(f"{what} must be a rectangular array: {e}", status=4) from None
        return arr, arr.shape, arr.ctypes.data_as(_c_float_p)
    shape, level = [], values
    while isinstance(level, (list, tuple)):
        shape.append(len(level))
        level = level[0] if level else None

    def flatten(v, depth):
        if depth == len(shape):
            return [float(v)]
        if not isinstance(v, (list, tuple)) or len(v) != shape[depth]:
            raise SizeMismatch(f"{what} must be a rectangular nested list of shape {tuple(shape)}", status=4)
        return [x for item in v for x in flatten(item, depth + 1)]

    flat = flatten(values, 0)
    buf = (ctypes.c_float * len(flat))(*flat)
    return buf, tuple(shape), ctypes.cast(buf, _c_float_p)


_ADAMW_FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip")


def _adamw_config(lr=None, beta1=None, beta2=None, eps=None, weight_decay=None, grad_clip=None,
                  base="moas_adamw_config_default"):
    """A moas_adamw_config from the library's `base` settings, with the arguments that are not None."""
    c = _lib.new_struct(_lib.moas_adamw_config)
    check(getattr(_lib.lib(), base)(ctypes.byref(c)), base)
    for name, value in (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps),
                        ("weight_decay", weight_decay), ("grad_clip", grad_clip)):
        if value is not None:
            setattr(c, name, float(value))
    return c


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    shape: tuple
    numel: int


@dataclass(frozen=True)
class RouterStats:
    """Router statistics of one layer from the last forward (docs/math.md). Per-route tuples have n_routes entries."""

    layer: int  # the model's layer index; None for a standalone Layer
    attention: str  # "moas": routes are branches; "moh": routes are the routed heads
    n_routes: int
    share: tuple  # f-hat per route, sums to 1
    mean_gate: tuple
    top_share: tuple  # MoAS: argmax share per branch; MoH: f_i, fraction of tokens activating head i (sums to K)
    balance: float  # 1 / (N * sum f-hat^2): 1 uniform, 1/N collapsed
    max_over_mean: float  # N * max f-hat
    collapsed: bool  # max f-hat > 0.9
    entropy: float  # mean routing entropy (nats)
    aux_loss: float  # the layer's unweighted load-balance loss
    mean_shared_weight: float  # MoH: mean a1 (1 without a head-type router); MoAS: 0
    mean_routed_weight: float  # MoH: mean a2 (1 without a head-type router); MoAS: 0

    @classmethod
    def _from_c(cls, layer, s):
        n = max(0, min(s.n_routes, _lib.MOAS_MAX_ROUTES))
        return cls(layer=layer, attention=_enum_from_c(ATTENTIONS, s.attention), n_routes=s.n_routes,
                   share=tuple(s.share[:n]), mean_gate=tuple(s.mean_gate[:n]), top_share=tuple(s.top_share[:n]),
                   balance=s.balance, max_over_mean=s.max_over_mean, collapsed=bool(s.collapsed),
                   entropy=s.entropy, aux_loss=s.aux_loss, mean_shared_weight=s.mean_shared_weight,
                   mean_routed_weight=s.mean_routed_weight)


def _adamw_dict(c):
    return {name: _f32(getattr(c, name)) for name in _ADAMW_FIELDS}


def adamw_defaults():
    """The library's AdamW defaults (moas_adamw_config_default) as a dict: lr 1e-3, beta1 0.9, beta2 0.99, eps 1e-8,
    weight_decay 0.1, grad_clip 1.0. step() uses these for every argument not given. Not RustGPT's Adam: see
    adamw_rustgpt()."""
    return _adamw_dict(_adamw_config())


def adamw_rustgpt():
    """RustGPT's optimiser (moas_adamw_config_rustgpt) as a dict: plain Adam with lr 1e-3, beta1 0.9, beta2 0.999,
    eps 1e-8, weight_decay 0, grad_clip 0 (PyTorch's torch.optim.Adam). It is not adamw_defaults() (beta2 0.99,
    weight decay 0.1, clipping at 1.0), which step() falls back to for arguments not given: pass all of these,
    step(**moas.adamw_rustgpt()), or give it to Layer.backward_step."""
    return _adamw_dict(_adamw_config(base="moas_adamw_config_rustgpt"))


def _adamw_from(adam, lr):
    """A moas_adamw_config from a dict of settings (adamw_rustgpt(), adamw_defaults(), or some of their keys, the
    rest from the library's AdamW defaults), with learning rate `lr`."""
    if not hasattr(adam, "keys"):
        raise TypeError(f"adam must be a dict of AdamW settings such as moas.adamw_rustgpt(), not {adam!r}")
    unknown = set(adam) - set(_ADAMW_FIELDS)
    if unknown:
        raise TypeError(f"unknown AdamW setting(s): {', '.join(sorted(unknown))}; expected {', '.join(_ADAMW_FIELDS)}")
    return _adamw_config(**{**adam, "lr": lr})


def checkpoint_user_metadata(path, as_json=False):
    """The "user" metadata string stored in a checkpoint by Model.save(..., user_metadata=...); with as_json, parsed
    back into what Model.save was given as a dict or list (None when the checkpoint has none)."""
    lib = _lib.lib()
    needed = ctypes.c_size_t(0)
    check(lib.moas_checkpoint_user_metadata(_path(path), None, 0, ctypes.byref(needed)),
          "moas_checkpoint_user_metadata")
    buf = ctypes.create_string_buffer(max(needed.value, 1))
    check(lib.moas_checkpoint_user_metadata(_path(path), buf, len(buf), ctypes.byref(needed)),
          "moas_checkpoint_user_metadata")
    text = buf.value.decode("utf-8")
    if not as_json:
        return text
    return json.loads(text) if text else None


class _Owned:
    """A libmoas object this Python object owns: close() (or a `with` block, or garbage collection) frees it once."""

    _kind = "object"
    _destroy = None  # the name of the library's destroy function

    @property
    def _h(self):
        if self._handle is None:
            raise ValueError(f"this {self._kind} is closed")
        return self._handle

    def close(self):
        """Frees it now; later calls raise ValueError. Safe to call twice."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            getattr(self._lib, self._destroy)(handle)

    @property
    def closed(self):
        return self._handle is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down what close() needs
            pass


class _Parameters:
    """The named parameter tensors of a Model or a Layer, whose library functions differ only by their prefix
    (moas_parameter_read / moas_layer_parameter_read, ...). The list is read once and cached in `_infos`."""

    _prefix = "moas_"

    def _fn(self, suffix):
        name = self._prefix + suffix
        return getattr(self._lib, name), name

    def parameter_info(self):
        """[ParameterInfo(name, shape, numel)] in checkpoint order."""
        if self._infos is None:
            count_fn, count_name = self._fn("parameter_count")
            info_fn, info_name = self._fn("parameter_info_at")
            count = ctypes.c_size_t()
            check(count_fn(self._h, ctypes.byref(count)), count_name)
            infos = []
            for i in range(count.value):
                info = _lib.new_struct(_lib.moas_parameter_info)
                check(info_fn(self._h, i, ctypes.byref(info)), info_name)
                infos.append(ParameterInfo(info.name.decode("utf-8"), tuple(info.shape[:info.ndim]), info.numel))
            self._infos = infos
        return list(self._infos)

    def _info(self, name):
        # "lm_head.weight" names the tied embedding too, as in the library (and in PyTorch's state_dict).
        wanted = "transformer.wte.weight" if name == "lm_head.weight" else name
        for info in self.parameter_info():
            if info.name == wanted:
                return info
        return None

    def _read(self, suffix, name):
        fn, fn_name = self._fn(suffix)
        info = self._info(name)
        shape, numel = (info.shape, info.numel) if info else ((0,), 0)  # unknown: the library names the error
        owner, ptr = _float_buffer(numel)
        check(fn(self._h, name.encode("utf-8"), ptr, numel), fn_name)
        return _shaped(owner, shape)

    def _write(self, suffix, name, values):
        fn, fn_name = self._fn(suffix)
        info = self._info(name)
        owner, shape, ptr = _float_array(values, "values")
        if info is not None and tuple(shape) != tuple(info.shape) and tuple(shape) != (info.numel,):
            raise SizeMismatch(f'parameter "{name}" has shape {tuple(info.shape)}, values have {tuple(shape)}',
                               status=4, function=fn_name)
        status = fn(self._h, name.encode("utf-8"), ptr, math.prod(shape))
        del owner
        check(status, fn_name)

    def parameter(self, name):
        """A copy of parameter `name` (float32, its shape)."""
        return self._read("parameter_read", name)

    def gradient(self, name):
        """A copy of the accumulated gradient of parameter `name`."""
        return self._read("gradient_read", name)

    def parameters(self):
        """{name: copy of the tensor} for every parameter, in checkpoint order."""
        return {info.name: self.parameter(info.name) for info in self.parameter_info()}

    def gradients(self, flat=False):
        """The accumulated gradients (they add up over backward() calls until zero_grad()).

        flat=False: {name: copy of the gradient} in checkpoint order. flat=True: all of them as one float32 vector
        of num_parameters values, the tensors in parameter_info() order, each row-major (one library call): the
        form to sum or average over threads and write back with set_gradients().
        """
        if not flat:
            return {info.name: self.gradient(info.name) for info in self.parameter_info()}
        fn, fn_name = self._fn("gradients_read")
        n = self.num_parameters
        owner, ptr = _float_buffer(n)
        check(fn(self._h, ptr, n), fn_name)
        return _shaped(owner, (n,))

    def set_gradients(self, values):
        """Replaces every accumulated gradient: values is one vector laid out as gradients(flat=True) returns it,
        or a {name: array} dict as gradients() returns it, with every parameter. All values must be finite
        (NonFinite otherwise, and nothing changes). E.g. the mean of several threads' gradients before step()."""
        fn, fn_name = self._fn("gradients_write")
        if hasattr(values, "keys"):
            values = self._flatten_by_name(values)
        owner, shape, ptr = _float_array(values, "values")
        if len(shape) != 1:
            raise SizeMismatch(f"gradients are one flat vector of {self.num_parameters} values (or a dict by name), "
                               f"not an array of shape {tuple(shape)}", status=4, function=fn_name)
        status = fn(self._h, ptr, shape[0])
        del owner
        check(status, fn_name)

    def _flatten_by_name(self, by_name):
        infos = self.parameter_info()
        missing = [info.name for info in infos if info.name not in by_name]
        unknown = sorted(set(by_name) - {info.name for info in infos})
        if missing or unknown:
            raise SizeMismatch("set_gradients needs exactly one entry per parameter" +
                               (f"; missing {', '.join(missing)}" if missing else "") +
                               (f"; unknown {', '.join(unknown)}" if unknown else ""), status=4)
        parts = []
        for info in infos:
            owner, shape, _ = _float_array(by_name[info.name], info.name)
            if tuple(shape) != tuple(info.shape) and tuple(shape) != (info.numel,):
                raise SizeMismatch(f'parameter "{info.name}" has shape {tuple(info.shape)}, its gradient has '
                                   f"{tuple(shape)}", status=4)
            parts.append(owner)
        if _np is not None:
            return _np.concatenate([p.ravel() for p in parts]) if parts else _np.empty(0, _np.float32)
        return [x for p in parts for x in p]

    def set_parameter(self, name, values):
        """Overwrites parameter `name` from values of its shape (or flat), converted to float32; all finite."""
        self._write("parameter_write", name, values)


class KVCache(_Owned):
    """A key/value cache for decoding (docs/math.md): `batch` sequences of up to `capacity` positions.

    Create it with Model.kv_cache(). It may serve any model of the same architecture and does not keep the model
    alive. Free it with close() or a `with` block (or leave it to the garbage collector). A cache and the model it
    is used with are used by one thread at a time.
    """

    _kind, _destroy = "KVCache", "moas_kv_cache_destroy"

    def __init__(self, model, batch, capacity=None):
        if capacity is None:
            capacity = model.config.block_size
        self._lib = model._lib
        self._handle = None
        handle = ctypes.c_void_p()
        check(self._lib.moas_kv_cache_create(model._h, batch, capacity, ctypes.byref(handle)),
              "moas_kv_cache_create")
        self._handle = handle
        self.batch = batch
        self.capacity = capacity

    def reset(self):
        """Forgets every cached position (the memory stays allocated)."""
        check(self._lib.moas_kv_cache_reset(self._h), "moas_kv_cache_reset")

    @property
    def length(self):
        """Positions cached so far (the same for every sequence of the batch)."""
        n = ctypes.c_int32()
        check(self._lib.moas_kv_cache_length(self._h, ctypes.byref(n)), "moas_kv_cache_length")
        return n.value

    def __len__(self):
        return self.length

    @property
    def bytes_per_token(self):
        """Bytes of keys and values one position of one sequence occupies (MQA < GQA < MHA)."""
        n = ctypes.c_uint64()
        check(self._lib.moas_kv_cache_bytes_per_token(self._h, ctypes.byref(n)), "moas_kv_cache_bytes_per_token")
        return n.value

    def decode_read_bytes(self):
        """(weight_bytes, cache_bytes): what the next decode step of one sequence reads from memory at this length
        (moas_decode_read_bytes; docs/decoding.md). A step of B sequences reads the weights once and the cache B
        times, so B / (weights + B * cache) times the memory bandwidth bounds its tokens/s."""
        weights, cache = ctypes.c_uint64(), ctypes.c_uint64()
        check(self._lib.moas_decode_read_bytes(self._h, ctypes.byref(weights), ctypes.byref(cache)),
              "moas_decode_read_bytes")
        return weights.value, cache.value

    def __repr__(self):
        if self._handle is None:
            return "<moas.KVCache (closed)>"
        return f"<moas.KVCache batch={self.batch} capacity={self.capacity} length={self.length}>"


class Model(_Owned, _Parameters):
    """A GPT model with (mixtures of) attention schemes, owned by libmoas.

    Model(config) or Model(**config_fields); Model.from_file(path) for a checkpoint. Use it as a context manager
    or call close() to free it at once; otherwise it is freed when garbage-collected.

    Thread safety: a model is used by one thread at a time; distinct models may be used concurrently.
    """

    _kind, _destroy = "Model", "moas_model_destroy"

    def __init__(self, config=None, **fields):
        if config is None:
            config = Config(**fields)
        elif fields:
            config = config.replace(**fields)
        c = config._to_c()
        self._lib = _lib.lib()
        self._handle = None
        handle = ctypes.c_void_p()
        check(self._lib.moas_model_create(ctypes.byref(c), ctypes.byref(handle)), "moas_model_create")
        self._adopt(handle)

    def _adopt(self, handle):
        self._handle = handle
        self._last_shape = None  # (batch, seq_len) of the last successful forward
        self._infos = None
        self._vocab = None

    @classmethod
    def from_file(cls, path, *, config=None, device=None, device_index=None, n_threads=None, seed=None):
        """Creates a model from a checkpoint's stored config and weights.

        When any of device, device_index, n_threads or seed is given, those four come from the arguments (the
        ones not given from the library defaults); otherwise all come from the checkpoint.

        With config (a Config), the file may be a plain safetensors state_dict with nanoGPT's names and no libmoas
        metadata (e.g. saved from PyTorch with safetensors.torch.save_file): the model is built from config and takes
        every weight by name (lm_head.weight standing for the tied embedding; nanoGPT's attn.bias masks skipped).
        """
        if config is not None:
            from .state_dict import load_state_dict  # numpy reading of plain files
            changes = {k: v for k, v in (("device", device), ("device_index", device_index),
                                         ("n_threads", n_threads), ("seed", seed)) if v is not None}
            model = cls(config.replace(**changes) if changes else config)
            try:
                load_state_dict(model, path)
            except BaseException:
                model.close()
                raise
            return model
        lib = _lib.lib()
        overrides = None
        if any(v is not None for v in (device, device_index, n_threads, seed)):
            changes = {k: v for k, v in (("device", device), ("device_index", device_index),
                                         ("n_threads", n_threads), ("seed", seed)) if v is not None}
            overrides = Config(**changes)._to_c()
        handle = ctypes.c_void_p()
        check(lib.moas_model_create_from_file(_path(path), None if overrides is None else ctypes.byref(overrides),
                                              ctypes.byref(handle)), "moas_model_create_from_file")
        self = cls.__new__(cls)
        self._lib = lib
        self._adopt(handle)
        return self

    def __repr__(self):
        if self._handle is None:
            return "<moas.Model (closed)>"
        c = self.config
        return (f"<moas.Model attention={c.attention!r} n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} "
                f"vocab_size={c.vocab_size} parameters={self.num_parameters}>")

    # -- description ------------------------------------------------------------------------------------------
    @property
    def config(self):
        """The model's Config (a copy: editing it does not change the model)."""
        c = _lib.new_struct(_lib.moas_model_config)
        check(self._lib.moas_model_get_config(self._h, ctypes.byref(c)), "moas_model_get_config")
        return Config._from_c(c)

    @property
    def num_parameters(self):
        """Number of trainable scalars (tied embeddings counted once)."""
        n = ctypes.c_uint64()
        check(self._lib.moas_model_num_parameters(self._h, ctypes.byref(n)), "moas_model_num_parameters")
        return n.value

    # -- training and inference -------------------------------------------------------------------------------
    def forward(self, tokens, targets=None, training=False):
        """Runs the model on tokens [batch, seq_len] (or [seq_len]); returns (loss, aux) as floats.

        targets: None or ids of the same shape in [-1, vocab_size), -1 ignored; loss is their mean cross-entropy
        (0 without targets). aux is the unweighted load-balance loss (0 without routers or when not training).
        training=True keeps activations for backward() and applies dropout.
        """
        tok_owner, shape, tok_ptr = _int32_batch(tokens, "tokens", TokenOutOfRange)
        tgt_owner, tgt_ptr = None, None
        if targets is not None:
            tgt_owner, tgt_shape, tgt_ptr = _int32_batch(targets, "targets", TargetOutOfRange)
            if tuple(tgt_shape) != tuple(shape):
                raise SizeMismatch(f"targets have shape {tuple(tgt_shape)} but tokens have {tuple(shape)}", status=4)
        batch, seq_len = shape
        for what, n in (("batch", batch), ("seq_len", seq_len)):
            if n > _INT32_MAX:
                raise SizeMismatch(f"{what} {n} does not fit in int32", status=4)
        loss, aux = ctypes.c_float(), ctypes.c_float()
        status = self._lib.moas_forward(self._h, tok_ptr, tgt_ptr, batch, seq_len, 1 if training else 0,
                                        ctypes.byref(loss), ctypes.byref(aux))
        del tok_owner, tgt_owner  # the buffers lived through the call
        check(status, "moas_forward")
        self._last_shape = (batch, seq_len)
        return loss.value, aux.value

    def logits(self):
        """The last forward's logits [batch, seq_len, vocab_size] (float32 numpy array, or nested lists)."""
        if self._last_shape is None:
            raise NoForward("logits() needs a forward() first", status=NoForward.status, function="moas_logits")
        shape = (*self._last_shape, self._vocab_size)
        n = shape[0] * shape[1] * shape[2]
        owner, ptr = _float_buffer(n)
        check(self._lib.moas_logits(self._h, ptr, n), "moas_logits")
        return _shaped(owner, shape)

    @property
    def _vocab_size(self):
        if self._vocab is None:
            self._vocab = self.config.vocab_size
        return self._vocab

    # -- decoding with a KV cache ---------------------------------------------------------------------------------
    def generate(self, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
        """prompt_ids plus max_new_tokens sampled token ids, as a list: greedy at temperature 0, else from
        softmax(logits / temperature) cut to top_k tokens and then to top_p probability mass; seed makes it
        repeatable. Past block_size tokens the context slides (the model sees the last block_size)."""
        from .sampling import generate  # sampling builds on this module
        return generate(self, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed)

    def kv_cache(self, batch=1, capacity=None):
        """A new KVCache for `batch` sequences of up to `capacity` positions (default block_size)."""
        return KVCache(self, batch, capacity)

    def prefill(self, cache, tokens):
        """Runs tokens [batch, seq_len] (eval mode) that continue the cached sequences and appends their keys and
        values to the cache; returns the logits of each sequence's last new position [batch, vocab_size]. All new
        logits stay readable through logits(). Raises ContextFull past the cache's capacity."""
        owner, (batch, seq_len), ptr = _int32_batch(tokens, "tokens", TokenOutOfRange)
        if batch != cache.batch:
            raise SizeMismatch(f"tokens have batch {batch} but the cache holds {cache.batch} sequences", status=4,
                               function="moas_prefill")
        return self._decode(self._lib.moas_prefill, "moas_prefill", cache, owner, ptr, seq_len, (batch, seq_len))

    def decode_step(self, cache, tokens):
        """One new token per cached sequence: tokens [batch] -> logits [batch, vocab_size]."""
        owner, (rows, cols), ptr = _int32_batch(tokens, "tokens", TokenOutOfRange)
        if rows * cols != cache.batch:
            raise SizeMismatch(f"decode_step takes one token per sequence ({cache.batch}), not {rows * cols}",
                               status=4, function="moas_decode_step")
        return self._decode(self._lib.moas_decode_step, "moas_decode_step", cache, owner, ptr, None,
                            (cache.batch, 1))

    def _decode(self, fn, fn_name, cache, tokens_owner, tokens_ptr, seq_len, shape):
        out_shape = (shape[0], self._vocab_size)
        out_owner, out_ptr = _float_buffer(out_shape[0] * out_shape[1])
        args = (tokens_ptr,) if seq_len is None else (tokens_ptr, seq_len)
        status = fn(self._h, cache._h, *args, out_ptr, out_shape[0] * out_shape[1])
        del tokens_owner
        check(status, fn_name)
        self._last_shape = shape
        return _shaped(out_owner, out_shape)

    def backward(self):
        """Adds the gradient of CE + lambda * aux of the last training forward (which had targets) to the
        accumulated gradients: they keep adding up over backward() calls until zero_grad()."""
        check(self._lib.moas_backward(self._h), "moas_backward")

    def zero_grad(self):
        """Sets every accumulated gradient to zero (a loop that steps after every backward zeroes after every step)."""
        check(self._lib.moas_zero_grad(self._h), "moas_zero_grad")

    def step(self, lr=None, *, beta1=None, beta2=None, eps=None, weight_decay=None, grad_clip=None):
        """One AdamW step on the accumulated gradients; returns the global gradient norm before clipping. The
        gradients stay as they are.

        Arguments not given take the library's AdamW defaults (moas.adamw_defaults(): weight decay 0.1, clipping at
        1.0); step(**moas.adamw_rustgpt()) is RustGPT's plain Adam. A non-finite gradient skips the step and raises
        NonFinite.
        """
        c = _adamw_config(lr, beta1, beta2, eps, weight_decay, grad_clip)
        norm = ctypes.c_float()
        check(self._lib.moas_optimizer_step(self._h, ctypes.byref(c), ctypes.byref(norm)), "moas_optimizer_step")
        return norm.value

    @property
    def optimizer_steps(self):
        n = ctypes.c_uint64()
        check(self._lib.moas_optimizer_steps(self._h, ctypes.byref(n)), "moas_optimizer_steps")
        return n.value

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save(self, path, user_metadata=None):
        """Writes weights and config to a safetensors file. user_metadata: a str stored verbatim, or any other
        JSON-serialisable value stored as JSON (read it back with moas.checkpoint_user_metadata)."""
        if user_metadata is not None and not isinstance(user_metadata, str):
            user_metadata = json.dumps(user_metadata)
        meta = None if user_metadata is None else user_metadata.encode("utf-8")
        check(self._lib.moas_model_save(self._h, _path(path), meta), "moas_model_save")

    def load(self, path):
        """Replaces the weights with a checkpoint's (whose config must describe this model); unchanged on failure."""
        check(self._lib.moas_model_load(self._h, _path(path)), "moas_model_load")

    def save_optimizer(self, path):
        check(self._lib.moas_optimizer_save(self._h, _path(path)), "moas_optimizer_save")

    def load_optimizer(self, path):
        check(self._lib.moas_optimizer_load(self._h, _path(path)), "moas_optimizer_load")

    # -- routing ----------------------------------------------------------------------------------------------
    def gates(self, layer):
        """Layer `layer`'s per-token gates of the last forward, (batch, seq_len, width): MoAS the router's softmax over
        its branches, MoH every head's gate (0 where inactive); width 0 without routing. Raises NoForward before the
        first forward."""
        width = ctypes.c_int32()
        check(self._lib.moas_gates(self._h, layer, None, 0, ctypes.byref(width)), "moas_gates")
        shape = (*(self._last_shape or (0, 0)), width.value)
        n = math.prod(shape)
        owner, ptr = _float_buffer(n)
        check(self._lib.moas_gates(self._h, layer, ptr, n, ctypes.byref(width)), "moas_gates")
        return _shaped(owner, shape)

    def router_stats(self, layer=None):
        """RouterStats of `layer` from the last forward, or a list for every layer when layer is None.

        Raises NoRouter for a model (or layer) that routes nothing, NoForward before the first forward.
        """
        if layer is not None:
            s = _lib.new_struct(_lib.moas_layer_router_stats)
            check(self._lib.moas_router_stats(self._h, layer, ctypes.byref(s)), "moas_router_stats")
            return RouterStats._from_c(layer, s)
        n_layer = self.config.n_layer
        all_stats = (_lib.moas_layer_router_stats * n_layer)()
        for s in all_stats:
            s.struct_size = ctypes.sizeof(_lib.moas_layer_router_stats)
        check(self._lib.moas_router_stats_all(self._h, all_stats, n_layer), "moas_router_stats_all")
        return [RouterStats._from_c(i, s) for i, s in enumerate(all_stats)]
