//! Raw declarations of the libmoas C ABI (`include/moas.h`, ABI 1, libmoas 0.8.0).
//!
//! Written in the shape `bindgen --no-prepend-enum-name --allowlist-item 'moas_.*|MOAS_.*' include/moas.h`
//! produces, so it can be regenerated and diffed; `tests/layout.rs` compares every struct's size and field offsets
//! with the C compiler's, and `tests/declarations.rs` checks every `MOAS_API` function and constant against the
//! header. Ownership, thread-safety and units are documented in the header; the `moas` crate wraps all of this
//! safely.
//!
//! Conventions that matter at this level: set `struct_size = size_of::<T>() as u32` before passing a struct in;
//! no struct crosses the ABI by value; on a status other than `MOAS_OK`, `moas_last_error()` holds the message
//! for the calling thread until its next libmoas call.

#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]

pub const MOAS_ABI_VERSION: u32 = 1;
pub const MOAS_MAX_BRANCHES: u32 = 4;
pub const MOAS_MAX_DIMS: u32 = 4;
pub const MOAS_MAX_ROUTES: u32 = 64;

pub const MOAS_OK: moas_status = 0;
pub const MOAS_ERR_NULL_ARGUMENT: moas_status = 1;
pub const MOAS_ERR_INVALID_CONFIG: moas_status = 2;
pub const MOAS_ERR_ABI_MISMATCH: moas_status = 3;
pub const MOAS_ERR_SIZE_MISMATCH: moas_status = 4;
pub const MOAS_ERR_TOKEN_OUT_OF_RANGE: moas_status = 5;
pub const MOAS_ERR_TARGET_OUT_OF_RANGE: moas_status = 6;
pub const MOAS_ERR_CONTEXT_TOO_LONG: moas_status = 7;
pub const MOAS_ERR_NO_FORWARD: moas_status = 8;
pub const MOAS_ERR_NON_FINITE: moas_status = 9;
pub const MOAS_ERR_UNKNOWN_PARAMETER: moas_status = 10;
pub const MOAS_ERR_IO: moas_status = 11;
pub const MOAS_ERR_CHECKPOINT_TRUNCATED: moas_status = 12;
pub const MOAS_ERR_CHECKPOINT_HEADER: moas_status = 13;
pub const MOAS_ERR_CHECKPOINT_LAYOUT: moas_status = 14;
pub const MOAS_ERR_CHECKPOINT_MISSING_TENSOR: moas_status = 15;
pub const MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR: moas_status = 16;
pub const MOAS_ERR_CHECKPOINT_SHAPE: moas_status = 17;
pub const MOAS_ERR_CHECKPOINT_DTYPE: moas_status = 18;
pub const MOAS_ERR_CHECKPOINT_CONFIG: moas_status = 19;
pub const MOAS_ERR_NO_ROUTER: moas_status = 20;
pub const MOAS_ERR_DEVICE_UNAVAILABLE: moas_status = 21;
pub const MOAS_ERR_OUT_OF_MEMORY: moas_status = 22;
pub const MOAS_ERR_INDEX_OUT_OF_RANGE: moas_status = 23;
pub const MOAS_ERR_INTERNAL: moas_status = 24;
pub const MOAS_ERR_CONTEXT_FULL: moas_status = 25;
pub const MOAS_ERR_INVALID_ARGUMENT: moas_status = 26;
pub const MOAS_ERR_CHECKPOINT_VALUE: moas_status = 27;
pub type moas_status = ::std::os::raw::c_uint;

extern "C" {
    pub fn moas_status_string(status: moas_status) -> *const ::std::os::raw::c_char;
}
extern "C" {
    pub fn moas_last_error() -> *const ::std::os::raw::c_char;
}
extern "C" {
    pub fn moas_abi_version() -> u32;
}
extern "C" {
    pub fn moas_version_string() -> *const ::std::os::raw::c_char;
    pub fn moas_build_info() -> *const ::std::os::raw::c_char;
}

pub const MOAS_NORM_LAYERNORM: _bindgen_ty_1 = 0;
pub const MOAS_NORM_RMSNORM: _bindgen_ty_1 = 1;
pub type _bindgen_ty_1 = ::std::os::raw::c_uint;
pub const MOAS_MLP_GELU: _bindgen_ty_2 = 0;
pub const MOAS_MLP_SWIGLU: _bindgen_ty_2 = 1;
pub type _bindgen_ty_2 = ::std::os::raw::c_uint;
pub const MOAS_POSITION_LEARNED: _bindgen_ty_3 = 0;
pub const MOAS_POSITION_ROPE: _bindgen_ty_3 = 1;
pub const MOAS_POSITION_COPE: _bindgen_ty_3 = 2;
pub type _bindgen_ty_3 = ::std::os::raw::c_uint;
pub const MOAS_ATTENTION_SCHEME: _bindgen_ty_4 = 0;
pub const MOAS_ATTENTION_MOAS: _bindgen_ty_4 = 1;
pub const MOAS_ATTENTION_MOH: _bindgen_ty_4 = 2;
pub type _bindgen_ty_4 = ::std::os::raw::c_uint;
pub const MOAS_MODE_STATIC: _bindgen_ty_5 = 0;
pub const MOAS_MODE_SOFT: _bindgen_ty_5 = 1;
pub const MOAS_MODE_TOP1: _bindgen_ty_5 = 2;
pub type _bindgen_ty_5 = ::std::os::raw::c_uint;
pub const MOAS_HEADS_ALL: _bindgen_ty_6 = 0;
pub const MOAS_HEADS_MIXTURE: _bindgen_ty_6 = 1;
pub const MOAS_HEADS_STATIC_PRUNING: _bindgen_ty_6 = 2;
pub type _bindgen_ty_6 = ::std::os::raw::c_uint;
pub const MOAS_MOH_GATES_REFERENCE: _bindgen_ty_7 = 0;
pub const MOAS_MOH_GATES_PAPER: _bindgen_ty_7 = 1;
pub type _bindgen_ty_7 = ::std::os::raw::c_uint;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_head_selection {
    pub strategy: i32,
    pub num_shared_heads: i32,
    pub num_active_routed_heads: i32,
    pub num_active_heads: i32,
    pub load_balance_weight: f32,
    pub gate_variant: i32,
}

pub const MOAS_DEVICE_CPU: _bindgen_ty_8 = 0;
pub const MOAS_DEVICE_CUDA: _bindgen_ty_8 = 1;
pub type _bindgen_ty_8 = ::std::os::raw::c_uint;

pub const MOAS_MATMUL_FP32: _bindgen_ty_9 = 0;
pub const MOAS_MATMUL_TF32: _bindgen_ty_9 = 1;
pub const MOAS_MATMUL_BF16: _bindgen_ty_9 = 2;
pub type _bindgen_ty_9 = ::std::os::raw::c_uint;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_model_config {
    pub struct_size: u32,
    pub abi_version: u32,
    pub vocab_size: i32,
    pub block_size: i32,
    pub n_layer: i32,
    pub n_head: i32,
    pub n_kv_head: i32,
    pub n_embd: i32,
    pub mlp_hidden: i32,
    pub norm: i32,
    pub mlp: i32,
    pub position: i32,
    pub attention: i32,
    pub bias: i32,
    pub dropout: f32,
    pub attn_dropout: i32,
    pub rope_base: f32,
    pub seed: u64,
    pub n_threads: i32,
    pub device: i32,
    pub device_index: i32,
    pub reserved0: i32,
    pub moas_mode: i32,
    pub moas_n_branches: i32,
    pub moas_branch_kv_heads: [i32; 4usize],
    pub moas_aux_weight: f32,
    pub head_selection: moas_head_selection,
    pub reserved1: i32,
    pub cope_max_pos: i32,
    pub window_size: i32,
    pub matmul_precision: i32,
    pub reserved2: i32,
}

extern "C" {
    pub fn moas_model_config_default(cfg: *mut moas_model_config) -> moas_status;
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_model {
    _unused: [u8; 0],
}

extern "C" {
    pub fn moas_model_create(cfg: *const moas_model_config, out: *mut *mut moas_model) -> moas_status;
}
extern "C" {
    pub fn moas_model_destroy(model: *mut moas_model);
}
extern "C" {
    pub fn moas_model_get_config(model: *const moas_model, out: *mut moas_model_config) -> moas_status;
}
extern "C" {
    pub fn moas_model_num_parameters(model: *const moas_model, out: *mut u64) -> moas_status;
}
extern "C" {
    pub fn moas_forward(
        model: *mut moas_model,
        tokens: *const i32,
        targets: *const i32,
        batch: i32,
        seq_len: i32,
        training: i32,
        loss_out: *mut f32,
        aux_out: *mut f32,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_logits(model: *const moas_model, out: *mut f32, out_len: usize) -> moas_status;
}
extern "C" {
    pub fn moas_backward(model: *mut moas_model) -> moas_status;
}
extern "C" {
    pub fn moas_zero_grad(model: *mut moas_model) -> moas_status;
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_adamw_config {
    pub struct_size: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
}

extern "C" {
    pub fn moas_adamw_config_default(cfg: *mut moas_adamw_config) -> moas_status;
}
extern "C" {
    pub fn moas_adamw_config_rustgpt(cfg: *mut moas_adamw_config) -> moas_status;
}
extern "C" {
    pub fn moas_optimizer_step(
        model: *mut moas_model,
        cfg: *const moas_adamw_config,
        grad_norm_out: *mut f32,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_optimizer_steps(model: *const moas_model, out: *mut u64) -> moas_status;
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_parameter_info {
    pub struct_size: u32,
    pub ndim: i32,
    pub name: *const ::std::os::raw::c_char,
    pub shape: [i64; 4usize],
    pub numel: u64,
}

extern "C" {
    pub fn moas_parameter_count(model: *const moas_model, out: *mut usize) -> moas_status;
}
extern "C" {
    pub fn moas_parameter_info_at(model: *const moas_model, index: usize, out: *mut moas_parameter_info)
        -> moas_status;
}
extern "C" {
    pub fn moas_parameter_read(
        model: *const moas_model,
        name: *const ::std::os::raw::c_char,
        out: *mut f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_parameter_write(
        model: *mut moas_model,
        name: *const ::std::os::raw::c_char,
        values: *const f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_gradient_read(
        model: *const moas_model,
        name: *const ::std::os::raw::c_char,
        out: *mut f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_gradients_read(model: *const moas_model, out: *mut f32, len: usize) -> moas_status;
}
extern "C" {
    pub fn moas_gradients_write(model: *mut moas_model, values: *const f32, len: usize) -> moas_status;
}
extern "C" {
    pub fn moas_model_save(
        model: *const moas_model,
        path: *const ::std::os::raw::c_char,
        user_metadata: *const ::std::os::raw::c_char,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_model_load(model: *mut moas_model, path: *const ::std::os::raw::c_char) -> moas_status;
}
extern "C" {
    pub fn moas_model_create_from_file(
        path: *const ::std::os::raw::c_char,
        overrides: *const moas_model_config,
        out: *mut *mut moas_model,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_checkpoint_user_metadata(
        path: *const ::std::os::raw::c_char,
        buf: *mut ::std::os::raw::c_char,
        buf_len: usize,
        needed: *mut usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_optimizer_save(model: *const moas_model, path: *const ::std::os::raw::c_char) -> moas_status;
}
extern "C" {
    pub fn moas_optimizer_load(model: *mut moas_model, path: *const ::std::os::raw::c_char) -> moas_status;
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_kv_cache {
    _unused: [u8; 0],
}

extern "C" {
    pub fn moas_kv_cache_create(
        model: *const moas_model,
        batch: i32,
        capacity: i32,
        out: *mut *mut moas_kv_cache,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_kv_cache_destroy(cache: *mut moas_kv_cache);
}
extern "C" {
    pub fn moas_kv_cache_reset(cache: *mut moas_kv_cache) -> moas_status;
}
extern "C" {
    pub fn moas_kv_cache_length(cache: *const moas_kv_cache, out: *mut i32) -> moas_status;
}
extern "C" {
    pub fn moas_kv_cache_bytes_per_token(cache: *const moas_kv_cache, out: *mut u64) -> moas_status;
}
extern "C" {
    pub fn moas_decode_read_bytes(
        cache: *const moas_kv_cache,
        weight_bytes: *mut u64,
        cache_bytes: *mut u64,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_prefill(
        model: *mut moas_model,
        cache: *mut moas_kv_cache,
        tokens: *const i32,
        seq_len: i32,
        last_logits: *mut f32,
        last_logits_len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_decode_step(
        model: *mut moas_model,
        cache: *mut moas_kv_cache,
        tokens: *const i32,
        logits: *mut f32,
        logits_len: usize,
    ) -> moas_status;
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_layer_router_stats {
    pub struct_size: u32,
    pub n_routes: i32,
    pub share: [f32; 64usize],
    pub mean_gate: [f32; 64usize],
    pub balance: f32,
    pub max_over_mean: f32,
    pub collapsed: i32,
    pub entropy: f32,
    pub aux_loss: f32,
    pub top_share: [f32; 64usize],
    pub mean_shared_weight: f32,
    pub mean_routed_weight: f32,
    pub attention: i32,
}

extern "C" {
    pub fn moas_router_stats(model: *const moas_model, layer: i32, out: *mut moas_layer_router_stats) -> moas_status;
}
extern "C" {
    pub fn moas_router_stats_all(
        model: *const moas_model,
        out: *mut moas_layer_router_stats,
        n_layers: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_gates(model: *const moas_model, layer: i32, out: *mut f32, out_len: usize, width: *mut i32)
        -> moas_status;
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_layer {
    _unused: [u8; 0],
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct moas_layer_config {
    pub struct_size: u32,
    pub abi_version: u32,
    pub n_embd: i32,
    pub n_head: i32,
    pub n_kv_head: i32,
    pub max_seq_len: i32,
    pub attention: i32,
    pub position: i32,
    pub rope_base: f32,
    pub cope_max_pos: i32,
    pub window_size: i32,
    pub residual: i32,
    pub bias: i32,
    pub dropout: f32,
    pub moas_mode: i32,
    pub moas_n_branches: i32,
    pub moas_branch_kv_heads: [i32; 4usize],
    pub moas_aux_weight: f32,
    pub head_selection: moas_head_selection,
    pub n_threads: i32,
    pub seed: u64,
    pub device: i32,
    pub device_index: i32,
    pub matmul_precision: i32,
    pub reserved0: i32,
}

extern "C" {
    pub fn moas_layer_config_default(cfg: *mut moas_layer_config) -> moas_status;
}
extern "C" {
    pub fn moas_layer_create(cfg: *const moas_layer_config, out: *mut *mut moas_layer) -> moas_status;
}
extern "C" {
    pub fn moas_layer_destroy(layer: *mut moas_layer);
}
extern "C" {
    pub fn moas_layer_get_config(layer: *const moas_layer, out: *mut moas_layer_config) -> moas_status;
}
extern "C" {
    pub fn moas_layer_forward(
        layer: *mut moas_layer,
        x: *const f32,
        y: *mut f32,
        len: usize,
        batch: i32,
        seq_len: i32,
        training: i32,
        aux_out: *mut f32,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_backward(layer: *mut moas_layer, dy: *const f32, dx: *mut f32, len: usize) -> moas_status;
}
extern "C" {
    pub fn moas_layer_zero_grad(layer: *mut moas_layer) -> moas_status;
}
extern "C" {
    pub fn moas_layer_optimizer_step(
        layer: *mut moas_layer,
        cfg: *const moas_adamw_config,
        grad_norm_out: *mut f32,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_parameter_count(layer: *const moas_layer, out: *mut usize) -> moas_status;
}
extern "C" {
    pub fn moas_layer_parameter_info_at(
        layer: *const moas_layer,
        index: usize,
        out: *mut moas_parameter_info,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_parameter_read(
        layer: *const moas_layer,
        name: *const ::std::os::raw::c_char,
        out: *mut f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_parameter_write(
        layer: *mut moas_layer,
        name: *const ::std::os::raw::c_char,
        values: *const f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_gradient_read(
        layer: *const moas_layer,
        name: *const ::std::os::raw::c_char,
        out: *mut f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_gradient_write(
        layer: *mut moas_layer,
        name: *const ::std::os::raw::c_char,
        values: *const f32,
        len: usize,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_num_parameters(layer: *const moas_layer, out: *mut u64) -> moas_status;
}
extern "C" {
    pub fn moas_layer_gradients_read(layer: *const moas_layer, out: *mut f32, len: usize) -> moas_status;
}
extern "C" {
    pub fn moas_layer_gradients_write(layer: *mut moas_layer, values: *const f32, len: usize) -> moas_status;
}
extern "C" {
    pub fn moas_layer_save(
        layer: *const moas_layer,
        path: *const ::std::os::raw::c_char,
        user_metadata: *const ::std::os::raw::c_char,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_load(layer: *mut moas_layer, path: *const ::std::os::raw::c_char) -> moas_status;
}
extern "C" {
    pub fn moas_layer_create_from_file(
        path: *const ::std::os::raw::c_char,
        overrides: *const moas_layer_config,
        out: *mut *mut moas_layer,
    ) -> moas_status;
}
extern "C" {
    pub fn moas_layer_optimizer_save(layer: *const moas_layer, path: *const ::std::os::raw::c_char) -> moas_status;
}
extern "C" {
    pub fn moas_layer_optimizer_load(layer: *mut moas_layer, path: *const ::std::os::raw::c_char) -> moas_status;
}
extern "C" {
    pub fn moas_layer_optimizer_steps(layer: *const moas_layer, out: *mut u64) -> moas_status;
}
extern "C" {
    pub fn moas_layer_get_router_stats(layer: *const moas_layer, out: *mut moas_layer_router_stats) -> moas_status;
}
extern "C" {
    pub fn moas_layer_gates(layer: *const moas_layer, out: *mut f32, out_len: usize, width: *mut i32) -> moas_status;
}

// All-zero structs, as bindgen's `derive_default` writes them (arrays longer than 32 have no derived Default).
// Zero is a valid value for every field; the caller still sets `struct_size`.
macro_rules! zeroed_default {
    ($($name:ident),*) => {$(
        impl Default for $name {
            fn default() -> Self {
                let mut s = ::std::mem::MaybeUninit::<Self>::uninit();
                unsafe {
                    ::std::ptr::write_bytes(s.as_mut_ptr(), 0, 1);
                    s.assume_init()
                }
            }
        }
    )*};
}
zeroed_default!(
    moas_head_selection,
    moas_model_config,
    moas_adamw_config,
    moas_parameter_info,
    moas_layer_router_stats,
    moas_layer_config
);
