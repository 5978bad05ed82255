use crate::config::{AdamW, Attention, LayerConfig};
use crate::error::{check, Error, Result, Status};
use crate::model::{dim_to_i32, require_abi, RouterStats};
use crate::parameters::{self, ParameterInfo};
use moas_sys as sys;
use std::mem::size_of;
use std::ptr;

/// The per-token gates of a layer's last forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Gates per token: MoAS the router's softmax over its branches, MoH every head's gate (0 where inactive);
    /// 0 for a layer that routes nothing.
    pub width: usize,
    /// [batch * seq_len, width] row-major.
    pub values: Vec<f32>,
}

/// One attention block on caller-owned activations (`moas_layer_*`; SPEC §2-4 and §7), for programs that compose
/// their own network around it, as RustGPT does; dropped with `moas_layer_destroy`.
///
/// Activations are row-major `[batch, seq_len, width]` slices of f32. With the default `residual`, `forward`
/// returns x + Attn(x); norms and embeddings are the caller's. The layer keeps its parameter gradients (they
/// accumulate over backwards until [`Layer::zero_grad`]) and its own AdamW moments ([`Layer::step`]).
///
/// Slice lengths are checked here or by the library (an error, never a panic); a failed call leaves the layer as
/// it was, so after, say, [`Status::NonFinite`] for a NaN in the input the layer is used on as before.
///
/// A `Layer` is `Send` but not `Sync`, like [`Model`](crate::Model): the C library lets one thread at a time use a
/// layer, and distinct layers run concurrently.
///
/// ```no_run
/// use moas::{AdamW, HeadSelectionStrategy, Layer, LayerConfig};
/// # fn main() -> moas::Result<()> {
/// let moh = HeadSelectionStrategy::MixtureOfHeads {
///     num_shared_heads: 2,
///     num_active_routed_heads: 4,
///     load_balance_weight: 0.01,
/// };
/// let mut layer = Layer::new(&LayerConfig::new().width(64).head_selection(moh))?;
/// let x = vec![0.1f32; 10 * 64]; // one sequence of 10 tokens
/// let y = layer.forward(&x, 1, 10, true)?; // x + Attn(x)
/// let dx = layer.backward(&vec![1.0; y.len()])?;
/// layer.step(&AdamW { lr: 1e-3, weight_decay: 0.0, ..AdamW::default() })?;
/// layer.zero_grad()?;
/// # Ok(()) }
/// ```
pub struct Layer {
    handle: ptr::NonNull<sys::moas_layer>,
    config: LayerConfig,
    parameters: Vec<ParameterInfo>,
    /// batch * seq_len of the last successful forward: the gates' row count.
    last_forward_rows: Option<usize>,
    aux_loss: f32,
}

// SAFETY: as for Model: the C contract is one thread at a time per layer, distinct layers concurrently, and a layer
// holds no thread-affine state (the last-error message is per thread and read on the calling thread). Every call
// that changes the layer takes `&mut self`. Not Sync: the raw pointer keeps it from being derived.
unsafe impl Send for Layer {}

impl Layer {
    /// Validates `config` and creates a layer with the model's initialisation from its seed (weights N(0, 0.02), the
    /// output projection N(0, 0.02 / sqrt(2)), CoPE embeddings 0).
    pub fn new(config: &LayerConfig) -> Result<Layer> {
        require_abi()?;
        let mut handle = ptr::null_mut();
        check(unsafe { sys::moas_layer_create(config.as_raw(), &mut handle) })?;
        let handle = ptr::NonNull::new(handle)
            .ok_or_else(|| Error::new(Status::Internal, "moas_layer_create returned MOAS_OK and no layer"))?;
        let mut layer =
            Layer { handle, config: *config, parameters: Vec::new(), last_forward_rows: None, aux_loss: 0.0 };
        let raw = layer.handle.as_ptr();
        layer.parameters = parameters::read_infos(
            |count| unsafe { sys::moas_layer_parameter_count(raw, count) },
            |index, info| unsafe { sys::moas_layer_parameter_info_at(raw, index, info) },
        )?;
        Ok(layer)
    }

    /// The configuration the layer was created from.
    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// The width C of every activation row.
    pub fn width(&self) -> usize {
        self.config.as_raw().n_embd as usize
    }

    /// Trainable scalars (RustGPT's `parameters()`).
    pub fn num_parameters(&self) -> usize {
        self.parameters.iter().map(|p| p.numel).sum()
    }

    /// y = x + Attn(x) (Attn(x) without residual) for `x` [batch, seq_len, width], 1 <= seq_len <= max_seq_len.
    /// `training` keeps what [`Layer::backward`] needs and applies dropout.
    pub fn forward(&mut self, x: &[f32], batch: usize, seq_len: usize, training: bool) -> Result<Vec<f32>> {
        let mut y = vec![0f32; x.len()];
        self.forward_into(x, &mut y, batch, seq_len, training)?;
        Ok(y)
    }

    /// [`Layer::forward`] into the caller's `y` (as long as `x`); `y` is untouched on failure.
    pub fn forward_into(
        &mut self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        seq_len: usize,
        training: bool,
    ) -> Result<()> {
        if y.len() != x.len() {
            return Err(Error::new(
                Status::SizeMismatch,
                format!("y has {} elements but x has {}: they have the same shape", y.len(), x.len()),
            ));
        }
        let (batch_c, seq_len_c) = (dim_to_i32("batch", batch)?, dim_to_i32("seq_len", seq_len)?);
        let mut aux = 0f32;
        check(unsafe {
            sys::moas_layer_forward(
                self.handle.as_ptr(),
                x.as_ptr(),
                y.as_mut_ptr(),
                x.len(),
                batch_c,
                seq_len_c,
                training as i32,
                &mut aux,
            )
        })?;
        self.last_forward_rows = Some(batch * seq_len);
        self.aux_loss = aux;
        Ok(())
    }

    /// The unweighted load-balance loss of the last forward: 0 in eval mode and without a router.
    pub fn aux_loss(&self) -> f32 {
        self.aux_loss
    }

    /// Given dy = dLoss/dy of the last training forward, returns dx = dLoss/dx (the residual's identity included)
    /// and adds the parameter gradients, the load-balance loss's weighted by its lambda. [`Status::NoForward`]
    /// without a training forward since the last backward, parameter write or step.
    pub fn backward(&mut self, dy: &[f32]) -> Result<Vec<f32>> {
        let mut dx = vec![0f32; dy.len()];
        self.backward_into(dy, &mut dx)?;
        Ok(dx)
    }

    /// [`Layer::backward`] into the caller's `dx` (overwritten, as long as `dy`).
    pub fn backward_into(&mut self, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        if dx.len() != dy.len() {
            return Err(Error::new(
                Status::SizeMismatch,
                format!("dx has {} elements but dy has {}: they have the same shape", dx.len(), dy.len()),
            ));
        }
        check(unsafe { sys::moas_layer_backward(self.handle.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), dy.len()) })
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) -> Result<()> {
        check(unsafe { sys::moas_layer_zero_grad(self.handle.as_ptr()) })
    }

    /// One AdamW step on the accumulated gradients with the layer's own moments; returns the gradient norm before
    /// clipping. `weight_decay: 0.0, grad_clip: 0.0` is plain Adam. A non-finite norm skips the step
    /// ([`Status::NonFinite`]).
    pub fn step(&mut self, adamw: &AdamW) -> Result<f32> {
        let raw = adamw.to_raw();
        let mut grad_norm = 0f32;
        check(unsafe { sys::moas_layer_optimizer_step(self.handle.as_ptr(), &raw, &mut grad_norm) })?;
        Ok(grad_norm)
    }

    /// Every parameter tensor (`attn.c_attn.weight`, `attn.cope.weight`, ...), in checkpoint order.
    pub fn parameters(&self) -> &[ParameterInfo] {
        &self.parameters
    }

    pub fn parameter_names(&self) -> Vec<&str> {
        self.parameters.iter().map(|p| p.name.as_str()).collect()
    }

    /// A copy of parameter `name`.
    pub fn parameter(&self, name: &str) -> Result<Vec<f32>> {
        let handle = self.handle.as_ptr();
        parameters::read(&self.parameters, name, |c_name, out, len| unsafe {
            sys::moas_layer_parameter_read(handle, c_name, out, len)
        })
    }

    /// Overwrites parameter `name` (all values finite, exactly numel of them).
    pub fn set_parameter(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let handle = self.handle.as_ptr();
        parameters::write(&self.parameters, name, values, |c_name, values, len| unsafe {
            sys::moas_layer_parameter_write(handle, c_name, values, len)
        })
    }

    /// A copy of the accumulated gradient of parameter `name`.
    pub fn gradient(&self, name: &str) -> Result<Vec<f32>> {
        let handle = self.handle.as_ptr();
        parameters::read(&self.parameters, name, |c_name, out, len| unsafe {
            sys::moas_layer_gradient_read(handle, c_name, out, len)
        })
    }

    /// Overwrites the accumulated gradient of parameter `name`, e.g. to scale or clip it before [`Layer::step`].
    pub fn set_gradient(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let handle = self.handle.as_ptr();
        parameters::write(&self.parameters, name, values, |c_name, values, len| unsafe {
            sys::moas_layer_gradient_write(handle, c_name, values, len)
        })
    }

    /// Routing statistics of the last forward; [`Status::NoRouter`] for a layer that routes nothing.
    pub fn router_stats(&self) -> Result<RouterStats> {
        let mut raw = sys::moas_layer_router_stats {
            struct_size: size_of::<sys::moas_layer_router_stats>() as u32,
            ..Default::default()
        };
        check(unsafe { sys::moas_layer_get_router_stats(self.handle.as_ptr(), &mut raw) })?;
        Ok(RouterStats::from_raw(&raw, self.config.attention_kind().unwrap_or(Attention::Moh)))
    }

    /// The last forward's per-token gates; [`Status::NoForward`] before the first forward.
    pub fn gates(&self) -> Result<Gates> {
        let mut width = 0i32;
        check(unsafe { sys::moas_layer_gates(self.handle.as_ptr(), ptr::null_mut(), 0, &mut width) })?;
        let width = usize::try_from(width).unwrap_or(0);
        let mut values = vec![0f32; self.last_forward_rows.unwrap_or(0) * width];
        check(unsafe { sys::moas_layer_gates(self.handle.as_ptr(), values.as_mut_ptr(), values.len(), &mut 0) })?;
        Ok(Gates { width, values })
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        unsafe { sys::moas_layer_destroy(self.handle.as_ptr()) }
    }
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer").field("config", &self.config).field("parameters", &self.parameters.len()).finish()
    }
}
