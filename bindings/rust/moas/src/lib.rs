//! Safe Rust API for libmoas: small GPT models whose attention is one scheme (MHA/GQA/MQA), a Mixture of Attention
//! Schemes (MoAS) or a Mixture-of-Heads (MoH, RustGPT's [`HeadSelectionStrategy`]), trained on the CPU.
//!
//! ```no_run
//! use moas::{AdamW, Config, HeadSelectionStrategy, Model};
//! # fn main() -> moas::Result<()> {
//! let config = Config::new().vocab_size(64).block_size(16).layers(2).heads(4).width(64).dropout(0.0)
//!     .head_selection(HeadSelectionStrategy::MixtureOfHeads {
//!         num_shared_heads: 1, num_active_routed_heads: 2, load_balance_weight: 0.01,
//!     });
//! let mut model = Model::new(&config)?;
//! let tokens: Vec<i32> = (0..16).collect();
//! let targets: Vec<i32> = (1..17).collect();
//! let (loss, aux) = model.forward(&tokens, Some(&targets), 1, 16, true)?;
//! model.backward()?;
//! model.step(&AdamW::default())?;
//! model.zero_grad()?;
//! println!("loss {loss} aux {aux}, layer 0 balance {}", model.router_stats(0)?.balance);
//! # Ok(()) }
//! ```
//!
//! Errors carry the library's status and its message ([`Error`]). A [`Model`] is `Send` but not `Sync`: the C
//! library lets one thread at a time use a model, and distinct models run concurrently.
//!
//! Training, for a model and a layer alike:
//!
//! - Gradients **accumulate** over backward calls until `zero_grad`; a step leaves them as they are. A loop that
//!   steps after every backward zeroes them after every step.
//! - [`AdamW::default()`] is the library's AdamW: lr 1e-3, beta1 0.9, beta2 0.99, eps 1e-8, weight decay 0.1,
//!   gradient clipping at norm 1.0. [`AdamW::rustgpt()`] is RustGPT's plain Adam (beta2 0.999, no weight decay, no
//!   clipping). `..Default::default()` in a struct literal fills the other fields from the AdamW default, not from
//!   RustGPT's.
//! - [`Layer::backward_step`] is RustGPT's `backward(grads, lr)`: backward, one step at learning rate `lr`, zero_grad.
//! - `gradients` / `set_gradients` ([`Layer::gradients`], [`Model::gradients`]) read and replace all gradients as one
//!   buffer, to sum or average the gradients of several sequences (computed on several threads sharing a
//!   `Mutex<Layer>`, say) before one step.
//! - Checkpoints: [`Model::save`] / [`Model::from_file`] and [`Layer::save`] / [`Layer::from_file`] for weights,
//!   [`Model::optimizer_save`] / [`Model::optimizer_load`] and [`Layer::optimizer_save`] / [`Layer::optimizer_load`]
//!   for the Adam moments and step count; after loading both, training continues bit for bit.
//!
//! Incremental decoding: a [`KvCache`] made for a model's architecture (it does not keep the model alive) feeds
//! [`Model::prefill`] and [`Model::decode_step`], whose logits equal a full forward over the whole prefix. It is
//! `Send` but not `Sync`, like [`Model`].
//!
//! The attention block alone: a [`Layer`] (configured by a [`LayerConfig`]) runs forward and backward on the
//! caller's `[batch, seq_len, width]` activations, with its own parameters, gradients and AdamW moments, for
//! programs that compose their own network around it (RustGPT's `Layer` trait; see `examples/rustgpt_layer.rs`).
//! Positions may be learned by the caller, rotary, or contextual ([`Position::Cope`]), with an optional sliding
//! window, in a model as in a layer.

mod config;
mod error;
mod kv_cache;
mod layer;
mod model;
mod parameters;

pub use config::{
    AdamW, Attention, Config, Device, HeadSelectionStrategy, LayerConfig, MatmulPrecision, Mlp, MoasMode, MohGates,
    Norm, Position,
};
pub use error::{Error, Result, Status};
pub use kv_cache::KvCache;
pub use layer::{Gates, Layer};
pub use moas_sys as sys;
pub use model::{checkpoint_user_metadata, Model, RouterStats};
pub use parameters::ParameterInfo;

/// `MOAS_ABI_VERSION` of the loaded library (models refuse to be created when it differs from moas-sys's).
pub fn abi_version() -> u32 {
    unsafe { sys::moas_abi_version() }
}

/// The loaded library's version, e.g. "0.1.0".
pub fn version() -> &'static str {
    // Static storage in the library.
    unsafe { std::ffi::CStr::from_ptr(sys::moas_version_string()) }.to_str().unwrap_or("")
}

/// How the loaded library was built (version, GEMM library, kernel instruction set, CPU threads), for reports.
pub fn build_info() -> &'static str {
    // Static storage in the library.
    unsafe { std::ffi::CStr::from_ptr(sys::moas_build_info()) }.to_str().unwrap_or("")
}
