use crate::config::{attention_from_raw, AdamW, Attention, Config};
use crate::error::{check, Error, Result, Status};
use crate::kv_cache::KvCache;
use crate::layer::Gates;
use crate::parameters::{self, ParameterInfo};
use moas_sys as sys;
use std::ffi::{CStr, CString};
use std::mem::size_of;
use std::path::Path;
use std::ptr;

/// Routing statistics of one layer (of a [`Model`], or a standalone [`Layer`](crate::Layer)) from the last forward
/// (docs/math.md).
#[derive(Debug, Clone, PartialEq)]
pub struct RouterStats {
    /// What the routes are: MoAS branches or MoH routed heads.
    pub attention: Attention,
    /// f-hat per route (sums to 1).
    pub share: Vec<f32>,
    pub mean_gate: Vec<f32>,
    /// MoAS: fraction of tokens whose argmax is this branch; MoH: fraction of tokens activating the head (sums to K).
    pub top_share: Vec<f32>,
    /// 1 / (N * sum f-hat^2): 1 is uniform, 1/N collapsed.
    pub balance: f32,
    /// N * max f-hat.
    pub max_over_mean: f32,
    /// max f-hat > 0.9.
    pub collapsed: bool,
    /// Mean routing entropy in nats.
    pub entropy: f32,
    /// The layer's unweighted load-balance loss.
    pub aux_loss: f32,
    /// MoH: mean weight a1 of the shared heads (1 without a head-type router); MoAS: 0.
    pub mean_shared_weight: f32,
    /// MoH: mean weight a2 of the routed heads (1 without a head-type router); MoAS: 0.
    pub mean_routed_weight: f32,
}

impl RouterStats {
    pub(crate) fn from_raw(raw: &sys::moas_layer_router_stats, model_attention: Attention) -> RouterStats {
        let routes = usize::try_from(raw.n_routes).unwrap_or(0).min(sys::MOAS_MAX_ROUTES as usize);
        RouterStats {
            attention: attention_from_raw(raw.attention).unwrap_or(model_attention),
            share: raw.share[..routes].to_vec(),
            mean_gate: raw.mean_gate[..routes].to_vec(),
            top_share: raw.top_share[..routes].to_vec(),
            balance: raw.balance,
            max_over_mean: raw.max_over_mean,
            collapsed: raw.collapsed != 0,
            entropy: raw.entropy,
            aux_loss: raw.aux_loss,
            mean_shared_weight: raw.mean_shared_weight,
            mean_routed_weight: raw.mean_routed_weight,
        }
    }
}

/// A model owned by this handle; dropped with `moas_model_destroy`.
///
/// Every method maps to one libmoas call. Slice lengths are checked here (an error, never a panic); everything
/// else (config ranges, token ids, context length, finiteness) is checked by the library, whose message the
/// [`Error`] carries. A failed call leaves the model as it was.
pub struct Model {
    handle: ptr::NonNull<sys::moas_model>,
    config: Config,
    parameters: Vec<ParameterInfo>,
    /// batch * seq_len of the last successful forward: the logits' row count.
    last_forward_rows: Option<usize>,
}

// SAFETY: the C contract is that a model is used by one thread at a time, while distinct models may be used
// concurrently; the library keeps no thread-affine state in a model (the last-error message is per thread, and
// this crate reads it on the thread that made the call). Moving a Model to another thread is therefore sound.
// It is not Sync: `&Model` methods such as `logits` must not run on two threads at once, and the raw pointer
// field keeps Sync from being derived.
unsafe impl Send for Model {}

pub(crate) fn require_abi() -> Result<()> {
    let loaded = unsafe { sys::moas_abi_version() };
    if loaded != sys::MOAS_ABI_VERSION {
        return Err(Error::new(
            Status::AbiMismatch,
            format!(
                "the loaded libmoas has ABI version {loaded} but moas-sys was written for {}: rebuild against the matching library",
                sys::MOAS_ABI_VERSION
            ),
        ));
    }
    Ok(())
}

pub(crate) fn path_to_c(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| Error::new(Status::Io, format!("path {} is not valid Unicode", path.display())))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| Error::new(Status::Io, format!("path {} contains a NUL byte", path.display())))
}

pub(crate) fn metadata_to_c(user_metadata: Option<&str>) -> Result<Option<CString>> {
    user_metadata
        .map(|m| CString::new(m).map_err(|_| Error::new(Status::Io, "user metadata contains a NUL byte")))
        .transpose()
}

pub(crate) fn dim_to_i32(what: &str, value: usize) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| Error::new(Status::SizeMismatch, format!("{what} = {value} does not fit in int32")))
}

/// The "user" metadata string stored in a checkpoint by [`Model::save`].
pub fn checkpoint_user_metadata(path: impl AsRef<Path>) -> Result<String> {
    let path = path_to_c(path.as_ref())?;
    let mut needed = 0usize;
    check(unsafe { sys::moas_checkpoint_user_metadata(path.as_ptr(), ptr::null_mut(), 0, &mut needed) })?;
    let mut buffer = vec![0u8; needed.max(1)];
    check(unsafe {
        sys::moas_checkpoint_user_metadata(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len(), &mut needed)
    })?;
    let text = CStr::from_bytes_until_nul(&buffer)
        .map_err(|_| Error::new(Status::Internal, "metadata is not NUL-terminated"))?;
    Ok(text.to_string_lossy().into_owned())
}

impl Model {
    /// Validates `config` and creates a model with GPT-2 initialisation from its seed.
    pub fn new(config: &Config) -> Result<Model> {
        require_abi()?;
        let mut handle = ptr::null_mut();
        check(unsafe { sys::moas_model_create(config.as_raw(), &mut handle) })?;
        Model::wrap(handle)
    }

    /// Creates the model a checkpoint describes and loads its weights.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Model> {
        Model::create_from_file(path.as_ref(), None)
    }

    /// As [`Model::from_file`], taking device, threads and seed from `overrides` (its other fields are ignored).
    pub fn from_file_with(path: impl AsRef<Path>, overrides: &Config) -> Result<Model> {
        Model::create_from_file(path.as_ref(), Some(overrides))
    }

    fn create_from_file(path: &Path, overrides: Option<&Config>) -> Result<Model> {
        require_abi()?;
        let path = path_to_c(path)?;
        let overrides = overrides.map_or(ptr::null(), |c| c.as_raw() as *const _);
        let mut handle = ptr::null_mut();
        check(unsafe { sys::moas_model_create_from_file(path.as_ptr(), overrides, &mut handle) })?;
        Model::wrap(handle)
    }

    /// Takes ownership of a freshly created handle and caches what never changes: config and parameter list.
    fn wrap(handle: *mut sys::moas_model) -> Result<Model> {
        let handle = ptr::NonNull::new(handle)
            .ok_or_else(|| Error::new(Status::Internal, "moas_model_create returned MOAS_OK and no model"))?;
        let mut model = Model { handle, config: Config::default(), parameters: Vec::new(), last_forward_rows: None };
        model.config = model.read_config()?;
        model.parameters = model.read_parameter_infos()?;
        Ok(model)
    }

    fn read_config(&self) -> Result<Config> {
        let mut raw =
            sys::moas_model_config { struct_size: size_of::<sys::moas_model_config>() as u32, ..Default::default() };
        check(unsafe { sys::moas_model_get_config(self.handle.as_ptr(), &mut raw) })?;
        Ok(Config::from_raw(raw))
    }

    fn read_parameter_infos(&self) -> Result<Vec<ParameterInfo>> {
        let handle = self.handle.as_ptr();
        parameters::read_infos(
            |count| unsafe { sys::moas_parameter_count(handle, count) },
            |index, info| unsafe { sys::moas_parameter_info_at(handle, index, info) },
        )
    }

    /// The handle, for the crate's other wrappers ([`KvCache::new`]).
    pub(crate) fn raw(&self) -> *const sys::moas_model {
        self.handle.as_ptr()
    }

    /// The model's configuration as the library holds it.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Trainable scalars (tied embeddings counted once).
    pub fn num_parameters(&self) -> Result<u64> {
        let mut count = 0u64;
        check(unsafe { sys::moas_model_num_parameters(self.handle.as_ptr(), &mut count) })?;
        Ok(count)
    }

    /// Runs the model on `tokens` [batch, seq_len]; `targets` (same shape, -1 = ignore) gives the loss.
    /// `training` keeps activations for [`Model::backward`] and applies dropout.
    /// Returns (mean cross-entropy, unweighted auxiliary load-balance loss).
    pub fn forward(
        &mut self,
        tokens: &[i32],
        targets: Option<&[i32]>,
        batch: usize,
        seq_len: usize,
        training: bool,
    ) -> Result<(f32, f32)> {
        let rows = batch
            .checked_mul(seq_len)
            .ok_or_else(|| Error::new(Status::SizeMismatch, format!("batch {batch} * seq_len {seq_len} overflows")))?;
        if tokens.len() != rows {
            return Err(Error::new(
                Status::SizeMismatch,
                format!("tokens has {} elements but batch * seq_len = {batch} * {seq_len} = {rows}", tokens.len()),
            ));
        }
        if let Some(targets) = targets.filter(|t| t.len() != rows) {
            return Err(Error::new(
                Status::SizeMismatch,
                format!("targets has {} elements but batch * seq_len = {batch} * {seq_len} = {rows}", targets.len()),
            ));
        }
        let (batch_c, seq_len_c) = (dim_to_i32("batch", batch)?, dim_to_i32("seq_len", seq_len)?);
        let (mut loss, mut aux) = (0f32, 0f32);
        check(unsafe {
            sys::moas_forward(
                self.handle.as_ptr(),
                tokens.as_ptr(),
                targets.map_or(ptr::null(), |t| t.as_ptr()),
                batch_c,
                seq_len_c,
                training as i32,
                &mut loss,
                &mut aux,
            )
        })?;
        self.last_forward_rows = Some(rows);
        Ok((loss, aux))
    }

    /// Runs the model in eval mode on `tokens` [cache.batch(), seq_len] that continue the cached sequences, appends
    /// their keys and values to `cache`, and returns the logits of each sequence's last new position,
    /// [batch, vocab_size] row-major. They equal a full [`Model::forward`] over the whole prefix; the logits of every
    /// new position stay readable through [`Model::logits`] ([batch, seq_len, vocab_size]).
    ///
    /// [`Status::ContextFull`] when the positions would pass the cache's capacity ([`KvCache::reset`] makes room);
    /// [`Status::SizeMismatch`] for a wrong `tokens` length or a cache made for another architecture. A failed call
    /// leaves the model and the cache as they were.
    pub fn prefill(&mut self, cache: &mut KvCache, tokens: &[i32], seq_len: usize) -> Result<Vec<f32>> {
        let batch = cache.batch();
        let rows = batch.checked_mul(seq_len).ok_or_else(|| {
            Error::new(Status::SizeMismatch, format!("cache batch {batch} * seq_len {seq_len} overflows"))
        })?;
        if tokens.len() != rows {
            return Err(Error::new(
                Status::SizeMismatch,
                format!(
                    "tokens has {} elements but cache batch * seq_len = {batch} * {seq_len} = {rows}",
                    tokens.len()
                ),
            ));
        }
        let seq_len_c = dim_to_i32("seq_len", seq_len)?;
        let mut logits = vec![0f32; batch * self.config.as_raw().vocab_size as usize];
        check(unsafe {
            sys::moas_prefill(
                self.handle.as_ptr(),
                cache.raw(),
                tokens.as_ptr(),
                seq_len_c,
                logits.as_mut_ptr(),
                logits.len(),
            )
        })?;
        self.last_forward_rows = Some(rows);
        Ok(logits)
    }

    /// [`Model::prefill`] of one token per sequence: `tokens` [cache.batch()] -> logits [batch, vocab_size].
    pub fn decode_step(&mut self, cache: &mut KvCache, tokens: &[i32]) -> Result<Vec<f32>> {
        if tokens.len() != cache.batch() {
            return Err(Error::new(
                Status::SizeMismatch,
                format!(
                    "tokens has {} elements but decode_step takes one per sequence: cache batch = {}",
                    tokens.len(),
                    cache.batch()
                ),
            ));
        }
        self.prefill(cache, tokens, 1)
    }

    /// The last forward's logits, [batch, seq_len, vocab_size] row-major.
    pub fn logits(&self) -> Result<Vec<f32>> {
        let rows = self.last_forward_rows.ok_or_else(|| {
            Error::new(Status::NoForward, "no forward has run yet: logits come from the last forward")
        })?;
        let mut logits = vec![0f32; rows * self.config.as_raw().vocab_size as usize];
        check(unsafe { sys::moas_logits(self.handle.as_ptr(), logits.as_mut_ptr(), logits.len()) })?;
        Ok(logits)
    }

    /// Adds the gradient of CE + lambda * aux of the last training forward (which had targets) to the accumulated
    /// gradients: they keep summing over backward calls until [`Model::zero_grad`].
    pub fn backward(&mut self) -> Result<()> {
        check(unsafe { sys::moas_backward(self.handle.as_ptr()) })
    }

    /// Sets every accumulated gradient to zero; a loop that steps after every backward calls it after every step.
    pub fn zero_grad(&mut self) -> Result<()> {
        check(unsafe { sys::moas_zero_grad(self.handle.as_ptr()) })
    }

    /// One AdamW step on the accumulated gradients; returns the global gradient norm before clipping. The
    /// gradients stay as they are (zero them before the next backward). A non-finite gradient skips the step and
    /// returns [`Status::NonFinite`]. Note [`AdamW::default()`] is the library's AdamW (weight decay 0.1, clip 1.0),
    /// not RustGPT's Adam ([`AdamW::rustgpt`]).
    pub fn step(&mut self, adamw: &AdamW) -> Result<f32> {
        let raw = adamw.to_raw();
        let mut grad_norm = 0f32;
        check(unsafe { sys::moas_optimizer_step(self.handle.as_ptr(), &raw, &mut grad_norm) })?;
        Ok(grad_norm)
    }

    /// Optimizer steps taken so far.
    pub fn optimizer_steps(&self) -> Result<u64> {
        let mut steps = 0u64;
        check(unsafe { sys::moas_optimizer_steps(self.handle.as_ptr(), &mut steps) })?;
        Ok(steps)
    }

    /// Every parameter tensor, in checkpoint order.
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
            sys::moas_parameter_read(handle, c_name, out, len)
        })
    }

    /// Overwrites parameter `name` (all values finite, exactly numel of them).
    pub fn set_parameter(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let handle = self.handle.as_ptr();
        parameters::write(&self.parameters, name, values, |c_name, values, len| unsafe {
            sys::moas_parameter_write(handle, c_name, values, len)
        })
    }

    /// A copy of the accumulated gradient of parameter `name`.
    pub fn gradient(&self, name: &str) -> Result<Vec<f32>> {
        let handle = self.handle.as_ptr();
        parameters::read(&self.parameters, name, |c_name, out, len| unsafe {
            sys::moas_gradient_read(handle, c_name, out, len)
        })
    }

    /// All accumulated gradients as one vector of [`Model::num_parameters`] floats: the tensors in
    /// [`Model::parameters`] order, each row-major. Gradients accumulate over [`Model::backward`] calls until
    /// [`Model::zero_grad`].
    pub fn gradients(&self) -> Result<Vec<f32>> {
        let len = usize::try_from(self.num_parameters()?)
            .map_err(|_| Error::new(Status::SizeMismatch, "the parameter count does not fit in usize"))?;
        let mut values = vec![0f32; len];
        self.gradients_into(&mut values)?;
        Ok(values)
    }

    /// [`Model::gradients`] into the caller's buffer, which must hold exactly [`Model::num_parameters`] floats.
    pub fn gradients_into(&self, out: &mut [f32]) -> Result<()> {
        check(unsafe { sys::moas_gradients_read(self.handle.as_ptr(), out.as_mut_ptr(), out.len()) })
    }

    /// Replaces every accumulated gradient with `values` (laid out as [`Model::gradients`] returns them; all
    /// finite, else [`Status::NonFinite`] and nothing changes), e.g. the mean of several threads' or processes'
    /// gradients before one [`Model::step`].
    pub fn set_gradients(&mut self, values: &[f32]) -> Result<()> {
        check(unsafe { sys::moas_gradients_write(self.handle.as_ptr(), values.as_ptr(), values.len()) })
    }

    /// Writes a safetensors checkpoint (weights and config); `user_metadata` is stored verbatim, e.g. a vocabulary.
    pub fn save(&self, path: impl AsRef<Path>, user_metadata: Option<&str>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        let metadata = metadata_to_c(user_metadata)?;
        check(unsafe {
            sys::moas_model_save(
                self.handle.as_ptr(),
                path.as_ptr(),
                metadata.as_ref().map_or(ptr::null(), |m| m.as_ptr()),
            )
        })
    }

    /// Replaces the weights with a checkpoint's; its config must describe this model.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        check(unsafe { sys::moas_model_load(self.handle.as_ptr(), path.as_ptr()) })
    }

    /// Writes the AdamW state (moments and step count).
    pub fn optimizer_save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        check(unsafe { sys::moas_optimizer_save(self.handle.as_ptr(), path.as_ptr()) })
    }

    pub fn optimizer_load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_to_c(path.as_ref())?;
        check(unsafe { sys::moas_optimizer_load(self.handle.as_ptr(), path.as_ptr()) })
    }

    fn model_attention(&self) -> Attention {
        self.config.attention_kind().unwrap_or(Attention::Moh)
    }

    /// Routing statistics of `layer` from the last forward; [`Status::NoRouter`] for a layer without a router.
    pub fn router_stats(&self, layer: usize) -> Result<RouterStats> {
        let mut raw = sys::moas_layer_router_stats {
            struct_size: size_of::<sys::moas_layer_router_stats>() as u32,
            ..Default::default()
        };
        let layer = i32::try_from(layer).unwrap_or(i32::MAX); // out of range either way: the library says so
        check(unsafe { sys::moas_router_stats(self.handle.as_ptr(), layer, &mut raw) })?;
        Ok(RouterStats::from_raw(&raw, self.model_attention()))
    }

    /// Layer `layer`'s per-token gates of the last forward (as [`crate::Layer::gates`]).
    pub fn gates(&self, layer: i32) -> Result<Gates> {
        let mut width = 0i32;
        check(unsafe { sys::moas_gates(self.handle.as_ptr(), layer, ptr::null_mut(), 0, &mut width) })?;
        let width = usize::try_from(width).unwrap_or(0);
        let mut values = vec![0f32; self.last_forward_rows.unwrap_or(0) * width];
        check(unsafe { sys::moas_gates(self.handle.as_ptr(), layer, values.as_mut_ptr(), values.len(), &mut 0) })?;
        Ok(Gates { width, values })
    }

    /// Routing statistics of every layer.
    pub fn router_stats_all(&self) -> Result<Vec<RouterStats>> {
        let template = sys::moas_layer_router_stats {
            struct_size: size_of::<sys::moas_layer_router_stats>() as u32,
            ..Default::default()
        };
        let mut raw = vec![template; self.config.as_raw().n_layer.max(0) as usize];
        check(unsafe { sys::moas_router_stats_all(self.handle.as_ptr(), raw.as_mut_ptr(), raw.len()) })?;
        Ok(raw.iter().map(|r| RouterStats::from_raw(r, self.model_attention())).collect())
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::moas_model_destroy(self.handle.as_ptr()) }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).field("parameters", &self.parameters.len()).finish()
    }
}
