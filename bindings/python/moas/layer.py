"""`Layer`: libmoas's attention block alone, on the caller's activations (the moas_layer_* calls).

Thread safety: a Layer is used by one thread at a time; distinct layers may be used concurrently.
"""
import ctypes
import json
import math

from . import _lib
from .config import LayerConfig
from .errors import SizeMismatch, check
from .model import (RouterStats, _adamw_config, _adamw_from, _c_float_p, _float_array, _float_buffer, _np, _Owned,
                    _Parameters, _path, _shaped)


class Layer(_Owned, _Parameters):
    """One attention block (docs/math.md) on activations x [batch, seq_len, n_embd] or [seq_len, n_embd], for
    programs that compose their own network (embeddings and norms are the caller's). With residual=True (the
    default) forward returns x + Attn(x).

    Layer(config) or Layer(**LayerConfig fields). Parameters are named as in a model without the
    "transformer.h.{l}." prefix ("attn.c_attn.weight", "attn.cope.weight", ...). Gradients accumulate over
    backward() calls until zero_grad(); step() is AdamW with the layer's own moments. A failed call leaves the
    layer as it was. Free it with close() or a `with` block (or leave it to the garbage collector).
    """

    _kind, _destroy = "Layer", "moas_layer_destroy"
    _prefix = "moas_layer_"

    def __init__(self, config=None, **fields):
        if config is None:
            config = LayerConfig(**fields)
        elif fields:
            config = config.replace(**fields)
        c = config._to_c()
        self._lib = _lib.lib()
        self._handle = None
        handle = ctypes.c_void_p()
        check(self._lib.moas_layer_create(ctypes.byref(c), ctypes.byref(handle)), "moas_layer_create")
        self._adopt(handle)

    def _adopt(self, handle):
        """Takes ownership of a freshly created handle and caches its config, which never changes."""
        self._handle = handle
        c = _lib.new_struct(_lib.moas_layer_config)
        check(self._lib.moas_layer_get_config(self._h, ctypes.byref(c)), "moas_layer_get_config")
        self._config = LayerConfig._from_c(c)
        self._infos = None
        self._last_shape = None  # the shape of the last successful forward's x
        self.aux_loss = 0.0  # the last forward's unweighted load-balance loss (0 in eval mode or without a router)

    def __repr__(self):
        if self._handle is None:
            return "<moas.Layer (closed)>"
        c = self._config
        return (f"<moas.Layer attention={c.attention!r} n_embd={c.n_embd} n_head={c.n_head} "
                f"n_kv_head={c.n_kv_head} position={c.position!r} parameters={self.num_parameters}>")

    @property
    def config(self):
        """The layer's LayerConfig as the library reports it (moas_layer_get_config; a copy: editing it does not
        change the layer): the one given, or for from_file() the file's with the overrides applied. MoAS branch kv
        heads come back resolved (moas_branch_kv_heads=(0, 2) on 8 heads reads back as (8, 2)), and fields the
        layer's attention does not use (the MoAS fields of an MoH layer, say) hold the library's defaults."""
        return self._config.replace()

    @property
    def num_parameters(self):
        """Number of trainable scalars: the length of gradients(flat=True)."""
        n = ctypes.c_uint64()
        check(self._lib.moas_layer_num_parameters(self._h, ctypes.byref(n)), "moas_layer_num_parameters")
        return n.value

    def _activations(self, values, what):
        """values as float32 [batch, seq_len, n_embd] (or [seq_len, n_embd]): (owner, shape, pointer, batch,
        seq_len)."""
        owner, shape, ptr = _float_array(values, what)
        width = self._config.n_embd
        if len(shape) not in (2, 3) or shape[-1] != width:
            raise SizeMismatch(f"{what} must be [batch, seq_len, {width}] or [seq_len, {width}], not of shape "
                               f"{tuple(shape)}", status=4)
        batch, seq_len = (1, shape[0]) if len(shape) == 2 else shape[:2]
        return owner, tuple(shape), ptr, batch, seq_len

    @staticmethod
    def _output(out, shape):
        """The buffer a call writes: a new one, or `out` (a writable C-contiguous float32 numpy array of `shape`,
        which may be the input itself for an in-place call). Returns (owner, pointer)."""
        if out is None:
            return _float_buffer(math.prod(shape))
        if (_np is None or not isinstance(out, _np.ndarray) or out.dtype != _np.float32
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise TypeError("out must be a writable C-contiguous float32 numpy array")
        if out.shape != shape:
            raise SizeMismatch(f"out has shape {out.shape} but the result has {shape}", status=4)
        return out, out.ctypes.data_as(_c_float_p)

    def forward(self, x, training=False, out=None):
        """y = x + Attn(x) (Attn(x) without residual), of x's shape, as float32.

        training=True keeps what backward() needs and applies dropout. out (optional) receives y; out=x (a float32
        array) runs in place. Raises NonFinite for a NaN or infinity in x, SizeMismatch for a wrong shape,
        ContextTooLong past max_seq_len, InvalidArgument when out partly overlaps x.
        """
        x_owner, shape, x_ptr, batch, seq_len = self._activations(x, "x")
        y_owner, y_ptr = self._output(out, shape)
        aux = ctypes.c_float()
        n = batch * seq_len * self._config.n_embd
        status = self._lib.moas_layer_forward(self._h, x_ptr, y_ptr, n, batch, seq_len, 1 if training else 0,
                                              ctypes.byref(aux))
        del x_owner  # the input buffer lived through the call
        check(status, "moas_layer_forward")
        self._last_shape = shape
        self.aux_loss = aux.value
        return out if out is not None else _shaped(y_owner, shape)

    def backward(self, dy, out=None):
        """Given dy = dLoss/dy of the last training forward (its shape), returns dx = dLoss/dx (the residual's
        identity included) and adds the parameter gradients, the load-balance loss's weighted by its lambda.
        out (optional) receives dx; out=dy runs in place. Raises NoForward without a training forward since the
        last backward, parameter write or step."""
        dy_owner, shape, dy_ptr, batch, seq_len = self._activations(dy, "dy")
        dx_owner, dx_ptr = self._output(out, shape)
        status = self._lib.moas_layer_backward(self._h, dy_ptr, dx_ptr, batch * seq_len * self._config.n_embd)
        del dy_owner
        check(status, "moas_layer_backward")
        return out if out is not None else _shaped(dx_owner, shape)

    def zero_grad(self):
        """Sets every parameter gradient to zero. Gradients add up over backward() calls until then, so a loop that
        steps after every backward zeroes them after every step (backward_step() does all three)."""
        check(self._lib.moas_layer_zero_grad(self._h), "moas_layer_zero_grad")

    def step(self, lr=None, *, beta1=None, beta2=None, eps=None, weight_decay=None, grad_clip=None):
        """One AdamW step on the accumulated gradients; returns the gradient norm before clipping. The gradients
        stay as they are. Arguments not given take the library's AdamW defaults (moas.adamw_defaults(): weight
        decay 0.1, clipping at 1.0); step(**moas.adamw_rustgpt()) is RustGPT's plain Adam. A non-finite gradient
        skips the step and raises NonFinite."""
        c = _adamw_config(lr, beta1, beta2, eps, weight_decay, grad_clip)
        norm = ctypes.c_float()
        check(self._lib.moas_layer_optimizer_step(self._h, ctypes.byref(c), ctypes.byref(norm)),
              "moas_layer_optimizer_step")
        return norm.value

    def backward_step(self, dy, lr, adam, out=None):
        """RustGPT's backward(grads, lr): backward(dy), one optimiser step with the settings of `adam` (a dict such
        as moas.adamw_rustgpt(); keys it lacks take the AdamW defaults) at learning rate `lr` (adam's own "lr" is
        not used), then zero_grad(), so each call applies its own gradient once. Returns dx (into `out` if given).

        A failed backward changes nothing. When the step fails (an invalid lr, a non-finite gradient) the weights
        stay as they were, the gradients are still zeroed so that a NaN gradient cannot reach the next call, and
        the step's error is raised.
        """
        c = _adamw_from(adam, lr)
        dx = self.backward(dy, out=out)
        # No norm is asked for: with grad_clip 0 the library then skips computing it.
        status = self._lib.moas_layer_optimizer_step(self._h, ctypes.byref(c), None)
        try:
            check(status, "moas_layer_optimizer_step")
        finally:
            self.zero_grad()
        return dx

    @property
    def optimizer_steps(self):
        """Optimizer steps taken (they key dropout masks and Adam's bias correction; saved with save_optimizer)."""
        n = ctypes.c_uint64()
        check(self._lib.moas_layer_optimizer_steps(self._h, ctypes.byref(n)), "moas_layer_optimizer_steps")
        return n.value

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save(self, path, user_metadata=None):
        """Writes the weights and the layer's config to a safetensors file (a temporary file, then a rename).
        user_metadata: a str stored verbatim, or any other JSON-serialisable value stored as JSON (read it back with
        moas.checkpoint_user_metadata). The optimiser state is a separate file: save_optimizer()."""
        if user_metadata is not None and not isinstance(user_metadata, str):
            user_metadata = json.dumps(user_metadata)
        meta = None if user_metadata is None else user_metadata.encode("utf-8")
        check(self._lib.moas_layer_save(self._h, _path(path), meta), "moas_layer_save")

    def load(self, path):
        """Replaces the weights with those of a file written by save(), which must describe a layer of this shape
        (a CheckpointError otherwise); on any failure the layer is unchanged."""
        check(self._lib.moas_layer_load(self._h, _path(path)), "moas_layer_load")

    @classmethod
    def from_file(cls, path, *, device=None, device_index=None, n_threads=None, matmul_precision=None):
        """Creates the layer a file written by save() describes, with its weights.

        When any of device, device_index, n_threads or matmul_precision is given, those four come from the
        arguments (the ones not given from the library defaults); otherwise all come from the file.
        """
        lib = _lib.lib()
        overrides = None
        changes = {k: v for k, v in (("device", device), ("device_index", device_index), ("n_threads", n_threads),
                                     ("matmul_precision", matmul_precision)) if v is not None}
        if changes:
            overrides = LayerConfig(**changes)._to_c()
        handle = ctypes.c_void_p()
        check(lib.moas_layer_create_from_file(_path(path), None if overrides is None else ctypes.byref(overrides),
                                              ctypes.byref(handle)), "moas_layer_create_from_file")
        self = cls.__new__(cls)
        self._lib = lib
        self._adopt(handle)
        return self

    def save_optimizer(self, path):
        """Writes the optimiser state (Adam moments and step count); it needs one step taken. After from_file() (or
        load()) and load_optimizer(), training continues bit for bit as if never interrupted."""
        check(self._lib.moas_layer_optimizer_save(self._h, _path(path)), "moas_layer_optimizer_save")

    def load_optimizer(self, path):
        """Restores the optimiser state written by save_optimizer() for a layer of this shape; unchanged on
        failure."""
        check(self._lib.moas_layer_optimizer_load(self._h, _path(path)), "moas_layer_optimizer_load")

    def set_gradient(self, name, values):
        """Overwrites the accumulated gradient of parameter `name` (e.g. scaled or clipped) before step()."""
        self._write("gradient_write", name, values)

    def router_stats(self):
        """RouterStats of the last forward (layer=None). Raises NoRouter for a layer that routes nothing,
        NoForward before the first forward."""
        s = _lib.new_struct(_lib.moas_layer_router_stats)
        check(self._lib.moas_layer_get_router_stats(self._h, ctypes.byref(s)), "moas_layer_get_router_stats")
        return RouterStats._from_c(None, s)

    def gates(self):
        """The last forward's per-token gates, x's leading shape + (width,): MoAS the router's softmax over its
        branches, MoH every head's gate (0 where inactive); width 0 without routing. Raises NoForward before the
        first forward."""
        width = ctypes.c_int32()
        check(self._lib.moas_layer_gates(self._h, None, 0, ctypes.byref(width)), "moas_layer_gates")
        shape = (*self._last_shape[:-1], width.value)
        n = math.prod(shape)
        owner, ptr = _float_buffer(n)
        check(self._lib.moas_layer_gates(self._h, ptr, n, ctypes.byref(width)), "moas_layer_gates")
        return _shaped(owner, shape)
