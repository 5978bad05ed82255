use crate::config::{AdamW, Attention, LayerConfig};
use crate::error::{check, Error, Result, Status};
use crate::model::{dim_to_i32, metadata_to_c, path_to_c, require_abi, RouterStats};
use crate::parameters::{self, ParameterInfo};
use moas_sys as sys;
use std::mem::size_of;
use std::path::Path;
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

/// One attention block on caller-owned activations (`moas_layer_*`; docs/math.md), for programs that compose
/// their own network around it, as RustGPT does; dropped with `moas_layer_destroy`.
///
/// Activations are row-major `[batch, seq_len, width]` slices of f32. With the default `residual`, `forward`
/// returns x + Attn(x); norms and embeddings are the caller's. The layer keeps its parameter gradients (they
/// accumulate over backwards until [`Layer::zero_grad`]) and its own AdamW moments ([`Layer::step`]).
/// [`Layer::backward_step`] is RustGPT's `backward(grads, lr)`: backward, step, zero_grad in one call.
///
/// Slice lengths are checked here or by the library (an error, never a panic); a failed call leaves the layer as
/// it was, so after, say, [`Status::NonFinite`] for a NaN in the input the layer is used on as before.
///
/// A `Layer` is `Send` but not `Sync`, like [`Model`](crate::Model): the C library lets one thread at a time use a
/// layer, and distinct layers run concurrently. Threads that share one layer put it in a `Mutex<Layer>` (which is
/// `Sync`); each can then compute its own sequence's gradient under the lock, read it with [`Layer::gradients`] and
/// zero it, and the combined gradient goes back with [`Layer::set_gradients`] before one [`Layer::step`].
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
/// let dy = vec![1.0; y.len()];
/// let dx = layer.backward(&dy)?;
/// layer.step(&AdamW::rustgpt())?; // RustGPT's Adam; AdamW::default() has weight decay and clipping
/// layer.zero_grad()?;
///
/// // The same three calls in one, as RustGPT's backward(grads, lr):
/// layer.forward(&x, 1, 10, true)?;
/// let mut dx = vec![0.0; dy.len()];
/// layer.backward_step(&dy, &mut dx, 1e-3, &AdamW::rustgpt())?;
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

// SAFETY: moas.h's contract for layers is "distinct layers may be used from different threads at once; one layer
// is used by one thread at a time", and a layer holds no thread-affine state (the last-error message is per thread
// and read on the calling thread), so moving a Layer to another thread is sound. Every call that changes the layer
// takes `&mut self`. Not Sync: `&Layer` methods (parameter, gradients) must not run on two threads at once, and the
// raw pointer keeps Sync from being derived; a Mutex<Layer> gives the one-thread-at-a-time use the header asks.
unsafe impl Send for Layer {}

impl Layer {
    /// Validates `config` and creates a layer with the model's initialisation from its seed (weights N(0, 0.02), the
    /// output projection N(0, 0.02 / sqrt(2)), CoPE embeddings 0).
    pub fn new(config: &LayerConfig) -> Result<Layer> {
        require_abi()?;
        let mut handle = ptr::null_mut();
        check(unsafe { sys::moas_layer_create(config.as_raw(), &mut handle) })?;
        Layer::wrap(handle)
    }

    /// Creates the layer a file written by [`Layer::save`] describes, with its weights (not its optimiser state:
    /// [`Layer::optimizer_load`]). With `overrides`, its device, device index, threads and matmul precision replace
    /// the file's (its other fields are ignored); without, the layer runs on the CPU with all cores.
    pub fn from_file(path: impl AsRef<Path>, overrides: Option<&LayerConfig>) -> Result<Layer> {
        require_abi()?;
        let path = path_to_c(path.as_ref())?;
        let mut handle = ptr::null_mut();
        let overrides = overrides.map_or(ptr::null(), |o| o.as_raw() as *const _);
        check(unsafe { sys::moas_layer_create_from_file(path.as_ptr(), overrides, &mut handle) })?;
        Layer::wrap(handle)
    }

    /// Takes ownership of a freshly created handle and caches what never changes: config and parameter list.
    fn wrap(handle: *mut sys::moas_layer) -> Result<Layer> {
        let handle = ptr::NonNull::new(handle)
            .ok_or_else(|| Error::new(Status::Internal, "libmoas returned MOAS_OK and no layer"))?;
        // Owned from here on, so an error below still destroys the handle (Drop).
        let mut layer = Layer {
            handle,
            config: LayerConfig::default(),
            parameters: Vec::new(),
            last_forward_rows: None,
            aux_loss: 0.0,
        };
        layer.config = layer.read_config()?;
        let raw = layer.handle.as_ptr();
        layer.parameters = parameters::read_infos(
            |count| unsafe { sys::moas_layer_parameter_count(raw, count) },
            |index, info| unsafe { sys::moas_layer_parameter_info_at(raw, index, info) },
        )?;
        Ok(layer)
    }

    fn read_config(&self) -> Result<LayerConfig> {
        let mut raw =
            sys::moas_layer_config { struct_size: size_of::<sys::moas_layer_config>() as u32, ..Default::default() };
        check(unsafe { sys::moas_layer_get_config(self.handle.as_ptr(), &mut raw) })?;
        Ok(LayerConfig::from_raw(raw))
    }

    /// The layer's configuration as the library reports it (`moas_layer_get_config`): the one [`Layer::new`] was
    /// given, or for [`Layer::from_file`] the file's with the overrides applied. MoAS branch kv heads come back
    /// resolved (`branch_kv_heads(&[0, 2])` on 8 heads reads back as `[8, 2]`), and fields the layer's attention
    /// kind does not use (the MoAS fields of an MoH layer, say) hold the library's defaults.
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

    /// Sets every parameter gradient to zero. Gradients accumulate over backward calls until then, so a loop that
    /// steps after every backward zeroes them after every step ([`Layer::backward_step`] does all three).
    pub fn zero_grad(&mut self) -> Result<()> {
        check(unsafe { sys::moas_layer_zero_grad(self.handle.as_ptr()) })
    }

    /// One AdamW step on the accumulated gradients with the layer's own moments; returns the gradient norm before
    /// clipping. The gradients stay as they are (zero them before the next backward). [`AdamW::rustgpt()`] is
    /// RustGPT's plain Adam; [`AdamW::default()`] is the library's AdamW (weight decay 0.1, clip 1.0). A
    /// non-finite gradient skips the step ([`Status::NonFinite`]).
    pub fn step(&mut self, adamw: &AdamW) -> Result<f32> {
        let raw = adamw.to_raw();
        let mut grad_norm = 0f32;
        check(unsafe { sys::moas_layer_optimizer_step(self.handle.as_ptr(), &raw, &mut grad_norm) })?;
        Ok(grad_norm)
    }

    /// RustGPT's `backward(grads, lr)`: [`Layer::backward_into`] (dx into `dx`), one optimiser step with `adam`'s
    /// settings but learning rate `lr` (`adam.lr` is not used), then [`Layer::zero_grad`], so each call applies its
    /// own gradient once, as RustGPT's layers do. Pass [`AdamW::rustgpt()`] for RustGPT's Adam.
    ///
    /// A failed backward changes nothing. When the step fails (an invalid `lr`, a non-finite gradient) the weights
    /// stay as they were, the gradients are still zeroed (a NaN gradient must not reach the next call), and the
    /// step's error is returned; `dx` then holds the backward's result.
    pub fn backward_step(&mut self, dy: &[f32], dx: &mut [f32], lr: f32, adam: &AdamW) -> Result<()> {
        self.backward_into(dy, dx)?;
        let raw = AdamW { lr, ..*adam }.to_raw();
        // No norm is asked for: with grad_clip 0 the library then skips computing it, which matters for the short
        // sequences RustGPT trains on.
        let stepped = check(unsafe { sys::moas_layer_optimizer_step(self.handle.as_ptr(), &raw, ptr::null_mut()) });
        let zeroed = self.zero_grad();
        stepped.and(zeroed)
    }

    /// Optimizer steps taken so far (they key dropout masks and Adam's bias correction; saved with the optimiser
    /// state).
    pub fn optimizer_steps(&self) -> Result<u64> {
        let mut steps = 0u64;
        check(unsafe { sys::moas_layer_optimizer_steps(self.handle.as_ptr(), &mut steps) })?;
        Ok(steps)
    }

    /// All accumulated gradients as one vector of [`Layer::num_parameters`] floats: the tensors in
    /// [`Layer::parameters`] order, each row-major. With [`Layer::set_gradients`] it lets a caller combine the
    /// gradients of several sequences (computed on this layer one after another with [`Layer::zero_grad`] between,
    /// or on several layers) and take one [`Layer::step`].
    pub fn gradients(&self) -> Result<Vec<f32>> {
        let mut values = vec![0f32; self.num_parameters()];
        self.gradients_into(&mut values)?;
        Ok(values)
    }

    /// [`Layer::gradients`] into the caller's buffer, which must hold exactly [`Layer::num_parameters`] floats.
    pub fn gradients_into(&self, out: &mut [f32]) -> Result<()> {
        check(unsafe { sys::moas_layer_gradients_read(self.handle.as_ptr(), out.as_mut_ptr(), out.len()) })
    }

    /// Replaces every accumulated gradient with `values`, laid out as [`Layer::gradients`] returns them (all
    /// finite, else [`Status::NonFinite`] and nothing changes).
    pub fn set_gradients(&mut self, values: &[f32]) -> Result<()> {
        check(unsafe { sys::moas_layer_gradients_write(self.handle.as_ptr(), values.as_ptr(), values.len()) })
    }

    /// Writes the weights and the layer's config to a safetensors file (through a temporary file and a rename);
    /// `user_metadata` is stored verbatim (read it back with
    /// [`checkpoint_user_metadata`](crate::checkpoint_user_metadata)). The optimiser state is a separate file:
    /// [`Layer::optimizer_save`].
    pub fn save(&self, path: impl AsRef<Path>, user_metadata: Option<&str>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        let metadata = metadata_to_c(user_metadata)?;
        check(unsafe {
            sys::moas_layer_save(
                self.handle.as_ptr(),
                path.as_ptr(),
                metadata.as_ref().map_or(ptr::null(), |m| m.as_ptr()),
            )
        })
    }

    /// Replaces the weights with those of a file written by [`Layer::save`], which must describe a layer of this
    /// shape ([`Status::CheckpointConfig`] or a checkpoint status otherwise); on any failure the layer is unchanged.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        check(unsafe { sys::moas_layer_load(self.handle.as_ptr(), path.as_ptr()) })
    }

    /// Writes the optimiser state (Adam moments and step count); it needs one [`Layer::step`] taken. After
    /// [`Layer::from_file`] (or [`Layer::load`]) and [`Layer::optimizer_load`], training continues bit for bit as if
    /// never interrupted.
    pub fn optimizer_save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        check(unsafe { sys::moas_layer_optimizer_save(self.handle.as_ptr(), path.as_ptr()) })
    }

    /// Restores the optimiser state written by [`Layer::optimizer_save`] for a layer of this shape; unchanged on
    /// failure.
    pub fn optimizer_load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        check(unsafe { sys::moas_layer_optimizer_load(self.handle.as_ptr(), path.as_ptr()) })
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
