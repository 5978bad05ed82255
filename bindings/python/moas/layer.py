"""`Layer`: libmoas's attention block alone, on the caller's activations (the moas_layer_* calls).

Thread safety: a Layer is used by one thread at a time; distinct layers may be used concurrently.
"""
import ctypes
import math

from . import _lib
from .config import LayerConfig
from .errors import SizeMismatch, check
from .model import (RouterStats, _adamw_config, _c_float_p, _float_array, _float_buffer, _np, _Owned, _Parameters,
                    _shaped)


class Layer(_Owned, _Parameters):
    """One attention block (SPEC §2-4 and §7) on activations x [batch, seq_len, n_embd] or [seq_len, n_embd], for
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
        self._handle = handle
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
        """The LayerConfig the layer was created from (a copy: editing it does not change the layer)."""
        return self._config.replace()

    @property
    def num_parameters(self):
        """Number of trainable scalars."""
        return sum(info.numel for info in self.parameter_info())

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
        check(self._lib.moas_layer_zero_grad(self._h), "moas_layer_zero_grad")

    def step(self, lr=None, *, beta1=None, beta2=None, eps=None, weight_decay=None, grad_clip=None):
        """One AdamW step on the accumulated gradients; returns the gradient norm before clipping. Arguments not
        given take the library defaults (moas.adamw_defaults()); weight_decay=0, grad_clip=0 is plain Adam (as in
        RustGPT). A non-finite gradient skips the step and raises NonFinite."""
        c = _adamw_config(lr, beta1, beta2, eps, weight_decay, grad_clip)
        norm = ctypes.c_float()
        check(self._lib.moas_layer_optimizer_step(self._h, ctypes.byref(c), ctypes.byref(norm)),
              "moas_layer_optimizer_step")
        return norm.value

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
