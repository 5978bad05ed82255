use moas_sys as sys;
use std::mem::size_of;

/// `moas_model_config.norm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    LayerNorm,
    RmsNorm,
}

/// `moas_model_config.mlp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// c_proj(GELU(c_fc(x))), exact erf GELU.
    Gelu,
    /// c_proj(SiLU(c_fc(x)) * c_up(x)).
    SwiGlu,
}

/// `device` (with `device_index`) of a model or layer config. `Cuda` loads libmoas_cuda.so on first use (or the file
/// the environment variable MOAS_CUDA_LIBRARY names); without it, a driver or a device, creating the model or layer
/// fails with [`Status::DeviceUnavailable`](crate::Status) and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda { index: usize },
}

/// `matmul_precision` of a model or layer config: how a CUDA device computes the matrix products. Weights, gradients
/// and optimiser state stay fp32 and every sum accumulates in fp32; the CPU backend always computes in fp32, so one
/// config serves both devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPrecision {
    /// Full fp32 (the default): the CPU backend's results to 1e-4.
    Fp32,
    /// Projections, MLP, LM head and routers on tensor cores, their inputs rounded to TF32 (10-bit mantissas);
    /// attention in fp32.
    Tf32,
    /// Those products with bfloat16 (or TF32, as cuBLAS chooses) inputs, and attention's products on bfloat16 tensor
    /// cores where the device and head_dim allow: fastest, least exact.
    Bf16,
}

/// `position` (with `cope_max_pos`) of a model or layer config: RustGPT's `PositionalEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Token plus learned position embeddings (wte + wpe). For a [`LayerConfig`]: nothing inside attention, the
    /// caller's embeddings carry positions.
    Learned,
    /// Rotary q/k, no position embeddings.
    Rope,
    /// Contextual positions (docs/math.md): each head learns `max_pos` position embeddings indexed by a gated count of
    /// the keys between query and key; no position embeddings. Parameter `attn.cope.weight` [heads, max_pos,
    /// head_dim], initialised to zero.
    Cope { max_pos: usize },
}

/// `moas_model_config.attention`: what every block's attention is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// One scheme: MHA (kv heads = heads), GQA, or MQA (one kv head).
    Scheme,
    /// Mixture of Attention Schemes (docs/math.md): [`MoasMode`], branch kv heads, aux weight.
    Moas,
    /// One scheme with per-token head selection (docs/math.md): [`HeadSelectionStrategy`].
    Moh,
}

/// `moas_model_config.moas_mode`: how the MoAS branches are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoasMode {
    /// The mean of the branches; no router.
    Static,
    /// The gate-weighted sum of the branches (the reference's "dynamic").
    Soft,
    /// Only the argmax branch is computed for each query token.
    Top1,
}

/// `moas_head_selection.gate_variant`: how Mixture-of-Heads gates are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MohGates {
    /// The public MoH code: normalised and rescaled so uniform routing gives gates of 1 (the default).
    Reference,
    /// The MoH paper's Eq. 5: a1 * s_i for shared heads, a2 * r_i for selected routed heads.
    Paper,
}

/// Which attention heads each token uses, with RustGPT's names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadSelectionStrategy {
    /// Plain attention: every head, gate 1.
    AllHeads,
    /// Heads `0..num_shared_heads` always active, plus the top `num_active_routed_heads` of the others per token.
    MixtureOfHeads { num_shared_heads: usize, num_active_routed_heads: usize, load_balance_weight: f32 },
    /// Heads `0..num_active_heads` active with gate 1, no router.
    StaticPruning { num_active_heads: usize },
}

/// Sizes beyond i32 saturate, so the library rejects them with a message naming the field.
fn to_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn to_usize(value: i32) -> usize {
    usize::try_from(value).unwrap_or(0)
}

/// The setters and getters of the fields `moas_model_config` and `moas_layer_config` share (same names, same
/// meaning), written once for [`Config`] and [`LayerConfig`].
macro_rules! shared_settings {
    () => {
        /// Width C (`n_embd`), divisible by the number of heads.
        pub fn width(mut self, n_embd: usize) -> Self {
            self.raw.n_embd = to_i32(n_embd);
            self
        }

        /// How attention sees positions; [`Position::Cope`] also sets `cope_max_pos`.
        pub fn position(mut self, position: Position) -> Self {
            self.raw.position = match position {
                Position::Learned => sys::MOAS_POSITION_LEARNED,
                Position::Rope => sys::MOAS_POSITION_ROPE,
                Position::Cope { max_pos } => {
                    self.raw.cope_max_pos = to_i32(max_pos);
                    sys::MOAS_POSITION_COPE
                }
            } as i32;
            self
        }

        /// The position encoding, if this crate knows its value.
        pub fn position_kind(&self) -> Option<Position> {
            match u32::try_from(self.raw.position).ok()? {
                sys::MOAS_POSITION_LEARNED => Some(Position::Learned),
                sys::MOAS_POSITION_ROPE => Some(Position::Rope),
                sys::MOAS_POSITION_COPE => Some(Position::Cope { max_pos: to_usize(self.raw.cope_max_pos) }),
                _ => None,
            }
        }

        /// Sliding window: `Some(w)` lets query i attend to keys i - w ..= i; `None` is full causal attention.
        /// `Some(0)` (each token alone) has no C encoding, 0 meaning "off": it is passed as -1, which the library
        /// refuses with a message naming window_size.
        pub fn window_size(mut self, window: Option<usize>) -> Self {
            self.raw.window_size = match window {
                None => 0,
                Some(0) => -1,
                Some(w) => to_i32(w),
            };
            self
        }

        /// The sliding window, `None` for full causal attention.
        pub fn sliding_window(&self) -> Option<usize> {
            usize::try_from(self.raw.window_size).ok().filter(|&w| w > 0)
        }

        /// Linear (and, in a model, LayerNorm and router) biases; the reference-faithful default is none.
        pub fn bias(mut self, bias: bool) -> Self {
            self.raw.bias = bias as i32;
            self
        }

        /// Dropout probability in [0, 1) at every dropout site; 0 makes training deterministic.
        pub fn dropout(mut self, p: f32) -> Self {
            self.raw.dropout = p;
            self
        }

        /// Initialisation and dropout seed.
        pub fn seed(mut self, seed: u64) -> Self {
            self.raw.seed = seed;
            self
        }

        /// CPU threads; 0 means all cores.
        pub fn threads(mut self, n_threads: usize) -> Self {
            self.raw.n_threads = to_i32(n_threads);
            self
        }

        /// Where forward, backward and the optimiser run (the default: the CPU).
        pub fn device(mut self, device: Device) -> Self {
            let (kind, index) = match device {
                Device::Cpu => (sys::MOAS_DEVICE_CPU, 0),
                Device::Cuda { index } => (sys::MOAS_DEVICE_CUDA, index),
            };
            self.raw.device = kind as i32;
            self.raw.device_index = to_i32(index);
            self
        }

        /// The device, if this crate knows its value.
        pub fn device_kind(&self) -> Option<Device> {
            match u32::try_from(self.raw.device).ok()? {
                sys::MOAS_DEVICE_CPU => Some(Device::Cpu),
                sys::MOAS_DEVICE_CUDA => Some(Device::Cuda { index: to_usize(self.raw.device_index) }),
                _ => None,
            }
        }

        /// How a CUDA device runs the matrix products (the default: [`MatmulPrecision::Fp32`]).
        pub fn matmul_precision(mut self, precision: MatmulPrecision) -> Self {
            self.raw.matmul_precision = match precision {
                MatmulPrecision::Fp32 => sys::MOAS_MATMUL_FP32,
                MatmulPrecision::Tf32 => sys::MOAS_MATMUL_TF32,
                MatmulPrecision::Bf16 => sys::MOAS_MATMUL_BF16,
            } as i32;
            self
        }

        /// The matmul precision, if this crate knows its value.
        pub fn matmul_precision_kind(&self) -> Option<MatmulPrecision> {
            match u32::try_from(self.raw.matmul_precision).ok()? {
                sys::MOAS_MATMUL_FP32 => Some(MatmulPrecision::Fp32),
                sys::MOAS_MATMUL_TF32 => Some(MatmulPrecision::Tf32),
                sys::MOAS_MATMUL_BF16 => Some(MatmulPrecision::Bf16),
                _ => None,
            }
        }

        pub fn attention(mut self, attention: Attention) -> Self {
            self.raw.attention = attention_to_raw(attention);
            self
        }

        /// The attention kind, if this crate knows its value.
        pub fn attention_kind(&self) -> Option<Attention> {
            attention_from_raw(self.raw.attention)
        }

        /// How MoAS mixes its branches (applies with [`Attention::Moas`]).
        pub fn moas_mode(mut self, mode: MoasMode) -> Self {
            self.raw.moas_mode = match mode {
                MoasMode::Static => sys::MOAS_MODE_STATIC,
                MoasMode::Soft => sys::MOAS_MODE_SOFT,
                MoasMode::Top1 => sys::MOAS_MODE_TOP1,
            } as i32;
            self
        }

        /// The MoAS branches, one kv-head count each (0 means heads, i.e. MHA); sets the number of branches too.
        /// The library accepts 1 to `MOAS_MAX_BRANCHES` branches and reports any other count.
        pub fn branch_kv_heads(mut self, kv_heads: &[usize]) -> Self {
            self.raw.moas_n_branches = to_i32(kv_heads.len());
            self.raw.moas_branch_kv_heads = [0; sys::MOAS_MAX_BRANCHES as usize];
            for (slot, kv) in self.raw.moas_branch_kv_heads.iter_mut().zip(kv_heads) {
                *slot = to_i32(*kv);
            }
            self
        }

        /// Weight lambda of the MoAS load-balance loss.
        pub fn aux_weight(mut self, lambda: f32) -> Self {
            self.raw.moas_aux_weight = lambda;
            self
        }

        /// The head selection; any strategy other than `AllHeads` also selects [`Attention::Moh`].
        pub fn head_selection(mut self, strategy: HeadSelectionStrategy) -> Self {
            let selection = &mut self.raw.head_selection;
            match strategy {
                HeadSelectionStrategy::AllHeads => selection.strategy = sys::MOAS_HEADS_ALL as i32,
                HeadSelectionStrategy::MixtureOfHeads {
                    num_shared_heads,
                    num_active_routed_heads,
                    load_balance_weight,
                } => {
                    selection.strategy = sys::MOAS_HEADS_MIXTURE as i32;
                    selection.num_shared_heads = to_i32(num_shared_heads);
                    selection.num_active_routed_heads = to_i32(num_active_routed_heads);
                    selection.load_balance_weight = load_balance_weight;
                    self.raw.attention = sys::MOAS_ATTENTION_MOH as i32;
                }
                HeadSelectionStrategy::StaticPruning { num_active_heads } => {
                    selection.strategy = sys::MOAS_HEADS_STATIC_PRUNING as i32;
                    selection.num_active_heads = to_i32(num_active_heads);
                    self.raw.attention = sys::MOAS_ATTENTION_MOH as i32;
                }
            }
            self
        }

        /// The head selection, if this crate knows the strategy's value.
        pub fn head_selection_strategy(&self) -> Option<HeadSelectionStrategy> {
            let selection = &self.raw.head_selection;
            match selection.strategy as u32 {
                sys::MOAS_HEADS_ALL => Some(HeadSelectionStrategy::AllHeads),
                sys::MOAS_HEADS_MIXTURE => Some(HeadSelectionStrategy::MixtureOfHeads {
                    num_shared_heads: to_usize(selection.num_shared_heads),
                    num_active_routed_heads: to_usize(selection.num_active_routed_heads),
                    load_balance_weight: selection.load_balance_weight,
                }),
                sys::MOAS_HEADS_STATIC_PRUNING => Some(HeadSelectionStrategy::StaticPruning {
                    num_active_heads: to_usize(selection.num_active_heads),
                }),
                _ => None,
            }
        }

        /// The Mixture-of-Heads gate normalisation (recorded in checkpoints).
        pub fn moh_gates(mut self, gates: MohGates) -> Self {
            self.raw.head_selection.gate_variant = match gates {
                MohGates::Reference => sys::MOAS_MOH_GATES_REFERENCE,
                MohGates::Paper => sys::MOAS_MOH_GATES_PAPER,
            } as i32;
            self
        }
    };
}

/// A model configuration, starting from the library's defaults (`moas_model_config_default`) and edited with
/// builder-style setters. The library validates it when a model is created.
///
/// ```no_run
/// use moas::{Config, HeadSelectionStrategy};
/// let config = Config::new().width(128).heads(8).kv_heads(4).layers(3).block_size(80).head_selection(
///     HeadSelectionStrategy::MixtureOfHeads { num_shared_heads: 2, num_active_routed_heads: 4, load_balance_weight: 0.01 },
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Config {
    raw: sys::moas_model_config,
    /// Whether kv heads were set explicitly; until then they follow `heads` (the C default: MHA).
    kv_heads_set: bool,
}

impl Default for Config {
    fn default() -> Self {
        let mut raw =
            sys::moas_model_config { struct_size: size_of::<sys::moas_model_config>() as u32, ..Default::default() };
        // Fails only for a null pointer or a struct_size below 4 bytes, neither possible here.
        let status = unsafe { sys::moas_model_config_default(&mut raw) };
        debug_assert_eq!(status, sys::MOAS_OK);
        Config { raw, kv_heads_set: false }
    }
}

impl Config {
    /// The library's defaults (the MoAS paper's model).
    pub fn new() -> Config {
        Config::default()
    }

    pub(crate) fn from_raw(raw: sys::moas_model_config) -> Config {
        Config { raw, kv_heads_set: true }
    }

    /// The C struct, for fields without a setter and for reading values back.
    pub fn as_raw(&self) -> &sys::moas_model_config {
        &self.raw
    }

    /// The C struct, mutable: fields without a setter (rope_base, attn_dropout).
    pub fn as_raw_mut(&mut self) -> &mut sys::moas_model_config {
        &mut self.raw
    }

    shared_settings!();

    /// Query heads H. Until [`Config::kv_heads`] is called the kv heads follow, keeping the default MHA.
    pub fn heads(mut self, n_head: usize) -> Self {
        self.raw.n_head = to_i32(n_head);
        if !self.kv_heads_set {
            self.raw.n_kv_head = self.raw.n_head;
        }
        self
    }

    /// Key/value heads of the one-scheme and MoH attention; must divide `heads` (MHA: = heads, MQA: 1).
    pub fn kv_heads(mut self, n_kv_head: usize) -> Self {
        self.raw.n_kv_head = to_i32(n_kv_head);
        self.kv_heads_set = true;
        self
    }

    pub fn layers(mut self, n_layer: usize) -> Self {
        self.raw.n_layer = to_i32(n_layer);
        self
    }

    /// Maximum context length T.
    pub fn block_size(mut self, block_size: usize) -> Self {
        self.raw.block_size = to_i32(block_size);
        self
    }

    pub fn vocab_size(mut self, vocab_size: usize) -> Self {
        self.raw.vocab_size = to_i32(vocab_size);
        self
    }

    /// MLP hidden width; 0 means 4 * width.
    pub fn mlp_hidden(mut self, mlp_hidden: usize) -> Self {
        self.raw.mlp_hidden = to_i32(mlp_hidden);
        self
    }

    pub fn norm(mut self, norm: Norm) -> Self {
        self.raw.norm = match norm {
            Norm::LayerNorm => sys::MOAS_NORM_LAYERNORM,
            Norm::RmsNorm => sys::MOAS_NORM_RMSNORM,
        } as i32;
        self
    }

    pub fn mlp(mut self, mlp: Mlp) -> Self {
        self.raw.mlp = match mlp {
            Mlp::Gelu => sys::MOAS_MLP_GELU,
            Mlp::SwiGlu => sys::MOAS_MLP_SWIGLU,
        } as i32;
        self
    }
}

/// The configuration of a standalone attention [`Layer`](crate::Layer), starting from the library's defaults
/// (`moas_layer_config_default`: RustGPT's attention, width 128, 8 heads over 4 kv heads, sequences up to 80,
/// learned positions left to the caller, residual inside) and edited with builder-style setters. The library
/// validates it when the layer is created.
///
/// ```no_run
/// use moas::{HeadSelectionStrategy, LayerConfig, Position};
/// let config = LayerConfig::new().width(64).max_seq_len(32).position(Position::Cope { max_pos: 16 })
///     .window_size(Some(8))
///     .head_selection(HeadSelectionStrategy::MixtureOfHeads {
///         num_shared_heads: 2, num_active_routed_heads: 4, load_balance_weight: 0.01,
///     });
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LayerConfig {
    raw: sys::moas_layer_config,
}

impl Default for LayerConfig {
    fn default() -> Self {
        let mut raw =
            sys::moas_layer_config { struct_size: size_of::<sys::moas_layer_config>() as u32, ..Default::default() };
        // Fails only for a null pointer or a struct_size below 4 bytes, neither possible here.
        let status = unsafe { sys::moas_layer_config_default(&mut raw) };
        debug_assert_eq!(status, sys::MOAS_OK);
        LayerConfig { raw }
    }
}

impl LayerConfig {
    /// The library's defaults (RustGPT's attention shape).
    pub fn new() -> LayerConfig {
        LayerConfig::default()
    }

    /// What `moas_layer_get_config` filled in. The struct is taken whole, reserved fields included, so a config read
    /// back from a layer passes through `as_raw` to the library exactly as the library wrote it.
    pub(crate) fn from_raw(raw: sys::moas_layer_config) -> LayerConfig {
        LayerConfig { raw }
    }

    /// The C struct, for fields without a setter and for reading values back.
    pub fn as_raw(&self) -> &sys::moas_layer_config {
        &self.raw
    }

    /// The C struct, mutable: fields without a setter (rope_base).
    pub fn as_raw_mut(&mut self) -> &mut sys::moas_layer_config {
        &mut self.raw
    }

    shared_settings!();

    /// Query heads H (the kv heads stay as set: the default 4 must divide H).
    pub fn heads(mut self, n_head: usize) -> Self {
        self.raw.n_head = to_i32(n_head);
        self
    }

    /// Key/value heads of the one-scheme and MoH attention; must divide `heads` (MHA: = heads, MQA: 1).
    pub fn kv_heads(mut self, n_kv_head: usize) -> Self {
        self.raw.n_kv_head = to_i32(n_kv_head);
        self
    }

    /// The longest sequence a forward accepts.
    pub fn max_seq_len(mut self, max_seq_len: usize) -> Self {
        self.raw.max_seq_len = to_i32(max_seq_len);
        self
    }

    /// `true` (the default): the layer returns x + Attn(x), as RustGPT's attention does; `false`: Attn(x).
    pub fn residual(mut self, residual: bool) -> Self {
        self.raw.residual = residual as i32;
        self
    }
}

pub(crate) fn attention_to_raw(attention: Attention) -> i32 {
    (match attention {
        Attention::Scheme => sys::MOAS_ATTENTION_SCHEME,
        Attention::Moas => sys::MOAS_ATTENTION_MOAS,
        Attention::Moh => sys::MOAS_ATTENTION_MOH,
    }) as i32
}

pub(crate) fn attention_from_raw(value: i32) -> Option<Attention> {
    match u32::try_from(value).ok()? {
        sys::MOAS_ATTENTION_SCHEME => Some(Attention::Scheme),
        sys::MOAS_ATTENTION_MOAS => Some(Attention::Moas),
        sys::MOAS_ATTENTION_MOH => Some(Attention::Moh),
        _ => None,
    }
}

/// AdamW settings for [`Model::step`](crate::Model::step) and [`Layer::step`](crate::Layer::step).
///
/// Two starting points, and they differ:
///
/// - [`AdamW::default()`] is the library's AdamW default (`moas_adamw_config_default`), tuned for the MoAS paper's
///   models: lr 1e-3, beta1 0.9, **beta2 0.99**, eps 1e-8, **weight decay 0.1**, **gradient clipping at norm 1.0**.
///   `AdamW { lr: 3e-4, ..Default::default() }` starts from this one.
/// - [`AdamW::rustgpt()`] is RustGPT's optimiser (`moas_adamw_config_rustgpt`): plain Adam with lr 1e-3, beta1 0.9,
///   beta2 0.999, eps 1e-8, no weight decay and no clipping (PyTorch's `torch.optim.Adam`).
///   `AdamW { lr: 3e-4, ..AdamW::rustgpt() }` starts from this one.
///
/// Start from the one you mean rather than editing the other's fields: a RustGPT port that writes
/// `..Default::default()` silently trains with weight decay and clipping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled, on tensors of rank >= 2 only.
    pub weight_decay: f32,
    /// Global L2 norm bound on the gradient; 0 turns clipping off.
    pub grad_clip: f32,
}

impl Default for AdamW {
    /// The library's AdamW default: beta2 0.99, weight decay 0.1, clipping at 1.0 (not RustGPT's Adam: see
    /// [`AdamW::rustgpt`]).
    fn default() -> Self {
        AdamW::filled_by(sys::moas_adamw_config_default)
    }
}

impl AdamW {
    /// RustGPT's Adam: lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0, no clipping. It is *not*
    /// [`AdamW::default()`] (beta2 0.99, weight decay 0.1, clip 1.0), and `..Default::default()` fills the fields
    /// you leave out from that default, not from this.
    pub fn rustgpt() -> AdamW {
        AdamW::filled_by(sys::moas_adamw_config_rustgpt)
    }

    fn filled_by(fill: unsafe extern "C" fn(*mut sys::moas_adamw_config) -> sys::moas_status) -> AdamW {
        let mut raw =
            sys::moas_adamw_config { struct_size: size_of::<sys::moas_adamw_config>() as u32, ..Default::default() };
        // Fails only for a null pointer or a struct_size below 4 bytes, neither possible here.
        let status = unsafe { fill(&mut raw) };
        debug_assert_eq!(status, sys::MOAS_OK);
        AdamW {
            lr: raw.lr,
            beta1: raw.beta1,
            beta2: raw.beta2,
            eps: raw.eps,
            weight_decay: raw.weight_decay,
            grad_clip: raw.grad_clip,
        }
    }

    pub(crate) fn to_raw(self) -> sys::moas_adamw_config {
        sys::moas_adamw_config {
            struct_size: size_of::<sys::moas_adamw_config>() as u32,
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
        }
    }
}
