"""Loading libmoas and the ctypes mirror of include/moas.h (ABI version 1, libmoas 0.8.0).

Every struct and function of the header is mirrored here, in header order. tests/test_abi.py compiles a small C
program against the header and checks every size and field offset, and that every ``MOAS_API`` function has a
prototype here, so a stale mirror fails a test instead of shifting fields at run time.
"""
import ctypes
import ctypes.util
import os
import sys

#: The MOAS_ABI_VERSION these mirrors were written from.
ABI_VERSION = 1

MOAS_MAX_BRANCHES = 4
MOAS_MAX_DIMS = 4
MOAS_MAX_ROUTES = 64

c_status = ctypes.c_int  # moas_status is a C enum: an int on every supported platform
c_model_p = ctypes.c_void_p  # moas_model * (opaque)
c_cache_p = ctypes.c_void_p  # moas_kv_cache * (opaque)
c_layer_p = ctypes.c_void_p  # moas_layer * (opaque)


class moas_head_selection(ctypes.Structure):
    _fields_ = [
        ("strategy", ctypes.c_int32),
        ("num_shared_heads", ctypes.c_int32),
        ("num_active_routed_heads", ctypes.c_int32),
        ("num_active_heads", ctypes.c_int32),
        ("load_balance_weight", ctypes.c_float),
        ("gate_variant", ctypes.c_int32),
    ]


class moas_model_config(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("vocab_size", ctypes.c_int32),
        ("block_size", ctypes.c_int32),
        ("n_layer", ctypes.c_int32),
        ("n_head", ctypes.c_int32),
        ("n_kv_head", ctypes.c_int32),
        ("n_embd", ctypes.c_int32),
        ("mlp_hidden", ctypes.c_int32),
        ("norm", ctypes.c_int32),
        ("mlp", ctypes.c_int32),
        ("position", ctypes.c_int32),
        ("attention", ctypes.c_int32),
        ("bias", ctypes.c_int32),
        ("dropout", ctypes.c_float),
        ("attn_dropout", ctypes.c_int32),
        ("rope_base", ctypes.c_float),
        ("seed", ctypes.c_uint64),
        ("n_threads", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("device_index", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        # Appended in libmoas 0.2.0.
        ("moas_mode", ctypes.c_int32),
        ("moas_n_branches", ctypes.c_int32),
        ("moas_branch_kv_heads", ctypes.c_int32 * MOAS_MAX_BRANCHES),
        ("moas_aux_weight", ctypes.c_float),
        ("head_selection", moas_head_selection),
        ("reserved1", ctypes.c_int32),
        # Appended in libmoas 0.3.0.
        ("cope_max_pos", ctypes.c_int32),
        ("window_size", ctypes.c_int32),
        # Appended in libmoas 0.5.0.
        ("matmul_precision", ctypes.c_int32),
        ("reserved2", ctypes.c_int32),
    ]


class moas_adamw_config(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("lr", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("weight_decay", ctypes.c_float),
        ("grad_clip", ctypes.c_float),
    ]


class moas_parameter_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("ndim", ctypes.c_int32),
        ("name", ctypes.c_char_p),  # borrowed from the model: copied to a str at once
        ("shape", ctypes.c_int64 * MOAS_MAX_DIMS),
        ("numel", ctypes.c_uint64),
    ]


class moas_layer_router_stats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("n_routes", ctypes.c_int32),
        ("share", ctypes.c_float * MOAS_MAX_ROUTES),
        ("mean_gate", ctypes.c_float * MOAS_MAX_ROUTES),
        ("balance", ctypes.c_float),
        ("max_over_mean", ctypes.c_float),
        ("collapsed", ctypes.c_int32),
        ("entropy", ctypes.c_float),
        ("aux_loss", ctypes.c_float),
        # Appended in libmoas 0.2.0.
        ("top_share", ctypes.c_float * MOAS_MAX_ROUTES),
        ("mean_shared_weight", ctypes.c_float),
        ("mean_routed_weight", ctypes.c_float),
        ("attention", ctypes.c_int32),
    ]


class moas_layer_config(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("n_embd", ctypes.c_int32),
        ("n_head", ctypes.c_int32),
        ("n_kv_head", ctypes.c_int32),
        ("max_seq_len", ctypes.c_int32),
        ("attention", ctypes.c_int32),
        ("position", ctypes.c_int32),
        ("rope_base", ctypes.c_float),
        ("cope_max_pos", ctypes.c_int32),
        ("window_size", ctypes.c_int32),
        ("residual", ctypes.c_int32),
        ("bias", ctypes.c_int32),
        ("dropout", ctypes.c_float),
        ("moas_mode", ctypes.c_int32),
        ("moas_n_branches", ctypes.c_int32),
        ("moas_branch_kv_heads", ctypes.c_int32 * MOAS_MAX_BRANCHES),
        ("moas_aux_weight", ctypes.c_float),
        ("head_selection", moas_head_selection),
        ("n_threads", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("device", ctypes.c_int32),
        ("device_index", ctypes.c_int32),
        # Appended in libmoas 0.5.0.
        ("matmul_precision", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
    ]


#: Every struct of moas.h, by its C name.
STRUCTS = {
    cls.__name__: cls
    for cls in (moas_head_selection, moas_model_config, moas_adamw_config, moas_parameter_info,
                moas_layer_router_stats, moas_layer_config)
}


def new_struct(cls):
    """A zeroed struct with struct_size set, ready to pass to the library."""
    s = cls()
    s.struct_size = ctypes.sizeof(cls)
    return s


_P = ctypes.POINTER
_c_float_p = _P(ctypes.c_float)
_c_int32_p = _P(ctypes.c_int32)

#: name -> (restype, argtypes), in header order.
PROTOTYPES = {
    "moas_status_string": (ctypes.c_char_p, [c_status]),
    "moas_last_error": (ctypes.c_char_p, []),
    "moas_abi_version": (ctypes.c_uint32, []),
    "moas_version_string": (ctypes.c_char_p, []),
    "moas_build_info": (ctypes.c_char_p, []),
    "moas_model_config_default": (c_status, [_P(moas_model_config)]),
    "moas_model_create": (c_status, [_P(moas_model_config), _P(c_model_p)]),
    "moas_model_destroy": (None, [c_model_p]),
    "moas_model_get_config": (c_status, [c_model_p, _P(moas_model_config)]),
    "moas_model_num_parameters": (c_status, [c_model_p, _P(ctypes.c_uint64)]),
    "moas_forward": (c_status, [c_model_p, _c_int32_p, _c_int32_p, ctypes.c_int32, ctypes.c_int32,
                                ctypes.c_int32, _c_float_p, _c_float_p]),
    "moas_logits": (c_status, [c_model_p, _c_float_p, ctypes.c_size_t]),
    "moas_backward": (c_status, [c_model_p]),
    "moas_zero_grad": (c_status, [c_model_p]),
    "moas_adamw_config_default": (c_status, [_P(moas_adamw_config)]),
    "moas_adamw_config_rustgpt": (c_status, [_P(moas_adamw_config)]),
    "moas_optimizer_step": (c_status, [c_model_p, _P(moas_adamw_config), _c_float_p]),
    "moas_optimizer_steps": (c_status, [c_model_p, _P(ctypes.c_uint64)]),
    "moas_parameter_count": (c_status, [c_model_p, _P(ctypes.c_size_t)]),
    "moas_parameter_info_at": (c_status, [c_model_p, ctypes.c_size_t, _P(moas_parameter_info)]),
    "moas_parameter_read": (c_status, [c_model_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_parameter_write": (c_status, [c_model_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_gradient_read": (c_status, [c_model_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_gradients_read": (c_status, [c_model_p, _c_float_p, ctypes.c_size_t]),
    "moas_gradients_write": (c_status, [c_model_p, _c_float_p, ctypes.c_size_t]),
    "moas_model_save": (c_status, [c_model_p, ctypes.c_char_p, ctypes.c_char_p]),
    "moas_model_load": (c_status, [c_model_p, ctypes.c_char_p]),
    "moas_model_create_from_file": (c_status, [ctypes.c_char_p, _P(moas_model_config), _P(c_model_p)]),
    "moas_checkpoint_user_metadata": (c_status, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                                 _P(ctypes.c_size_t)]),
    "moas_optimizer_save": (c_status, [c_model_p, ctypes.c_char_p]),
    "moas_optimizer_load": (c_status, [c_model_p, ctypes.c_char_p]),
    "moas_kv_cache_create": (c_status, [c_model_p, ctypes.c_int32, ctypes.c_int32, _P(c_cache_p)]),
    "moas_kv_cache_destroy": (None, [c_cache_p]),
    "moas_kv_cache_reset": (c_status, [c_cache_p]),
    "moas_kv_cache_length": (c_status, [c_cache_p, _c_int32_p]),
    "moas_kv_cache_bytes_per_token": (c_status, [c_cache_p, _P(ctypes.c_uint64)]),
    "moas_decode_read_bytes": (c_status, [c_cache_p, _P(ctypes.c_uint64), _P(ctypes.c_uint64)]),
    "moas_prefill": (c_status, [c_model_p, c_cache_p, _c_int32_p, ctypes.c_int32, _c_float_p, ctypes.c_size_t]),
    "moas_decode_step": (c_status, [c_model_p, c_cache_p, _c_int32_p, _c_float_p, ctypes.c_size_t]),
    "moas_router_stats": (c_status, [c_model_p, ctypes.c_int32, _P(moas_layer_router_stats)]),
    "moas_router_stats_all": (c_status, [c_model_p, _P(moas_layer_router_stats), ctypes.c_size_t]),
    "moas_gates": (c_status, [c_model_p, ctypes.c_int32, _c_float_p, ctypes.c_size_t, _c_int32_p]),
    "moas_layer_config_default": (c_status, [_P(moas_layer_config)]),
    "moas_layer_create": (c_status, [_P(moas_layer_config), _P(c_layer_p)]),
    "moas_layer_destroy": (None, [c_layer_p]),
    "moas_layer_get_config": (c_status, [c_layer_p, _P(moas_layer_config)]),
    "moas_layer_forward": (c_status, [c_layer_p, _c_float_p, _c_float_p, ctypes.c_size_t, ctypes.c_int32,
                                      ctypes.c_int32, ctypes.c_int32, _c_float_p]),
    "moas_layer_backward": (c_status, [c_layer_p, _c_float_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_zero_grad": (c_status, [c_layer_p]),
    "moas_layer_optimizer_step": (c_status, [c_layer_p, _P(moas_adamw_config), _c_float_p]),
    "moas_layer_parameter_count": (c_status, [c_layer_p, _P(ctypes.c_size_t)]),
    "moas_layer_parameter_info_at": (c_status, [c_layer_p, ctypes.c_size_t, _P(moas_parameter_info)]),
    "moas_layer_parameter_read": (c_status, [c_layer_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_parameter_write": (c_status, [c_layer_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_gradient_read": (c_status, [c_layer_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_gradient_write": (c_status, [c_layer_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_num_parameters": (c_status, [c_layer_p, _P(ctypes.c_uint64)]),
    "moas_layer_gradients_read": (c_status, [c_layer_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_gradients_write": (c_status, [c_layer_p, _c_float_p, ctypes.c_size_t]),
    "moas_layer_save": (c_status, [c_layer_p, ctypes.c_char_p, ctypes.c_char_p]),
    "moas_layer_load": (c_status, [c_layer_p, ctypes.c_char_p]),
    "moas_layer_create_from_file": (c_status, [ctypes.c_char_p, _P(moas_layer_config), _P(c_layer_p)]),
    "moas_layer_optimizer_save": (c_status, [c_layer_p, ctypes.c_char_p]),
    "moas_layer_optimizer_load": (c_status, [c_layer_p, ctypes.c_char_p]),
    "moas_layer_optimizer_steps": (c_status, [c_layer_p, _P(ctypes.c_uint64)]),
    "moas_layer_get_router_stats": (c_status, [c_layer_p, _P(moas_layer_router_stats)]),
    "moas_layer_gates": (c_status, [c_layer_p, _c_float_p, ctypes.c_size_t, _c_int32_p]),
}


class LibraryError(OSError):
    """libmoas could not be found or loaded, or it speaks another ABI version."""


_SONAMES = ("libmoas.so.0", "libmoas.so") if sys.platform not in ("darwin", "win32") else (
    ("libmoas.0.dylib", "libmoas.dylib") if sys.platform == "darwin" else ("moas.dll",))


def _candidates():
    """Where to look for the library, first match wins: each as (path or soname, where it came from)."""
    explicit = os.environ.get("MOAS_LIBRARY")
    if explicit:
        return [(explicit, "MOAS_LIBRARY")]  # an explicit path is never second-guessed
    found = []
    lib_dir = os.environ.get("MOAS_LIBRARY_DIR")
    if lib_dir:
        found += [(os.path.join(lib_dir, n), "MOAS_LIBRARY_DIR") for n in _SONAMES]
    here = os.path.dirname(os.path.abspath(__file__))
    found += [(os.path.join(here, n), "the package directory") for n in _SONAMES]
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found += [(os.path.join(prefix, "lib", n), "the install prefix") for n in _SONAMES]
    found += [(n, "the system loader") for n in _SONAMES]
    system = ctypes.util.find_library("moas")
    if system:
        found.append((system, "the system loader"))
    return found


def _declare(lib):
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def load_library():
    """Finds, loads and checks libmoas; returns the ctypes.CDLL with every prototype declared."""
    # OpenMP reads its wait policy when it loads: idle workers that sleep instead of spinning keep training from
    # collapsing when other processes share the cores (as the moas CLI does). A policy the user set, or an OpenMP
    # runtime another package loaded first, wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    tried = []
    for path, origin in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path} ({origin}): no such file")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({origin}): {e}")
            continue
        missing = [n for n in PROTOTYPES if not hasattr(lib, n)]
        if missing:
            raise LibraryError(f"{path} ({origin}) is not a usable libmoas: it lacks {', '.join(missing)}")
        _declare(lib)
        version = lib.moas_abi_version()
        if version != ABI_VERSION:
            raise LibraryError(
                f"{path} ({origin}) speaks libmoas ABI version {version}, but this moas package mirrors ABI "
                f"version {ABI_VERSION}: install the package that matches the library (or point MOAS_LIBRARY "
                f"at a matching libmoas)")
        lib._moas_path = path
        return lib
    raise LibraryError("libmoas not found; set MOAS_LIBRARY to its full path or MOAS_LIBRARY_DIR to its folder. "
                       "Tried:\n  " + "\n  ".join(tried))


_lib = None


def lib():
    """The loaded library (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = load_library()
    return _lib
