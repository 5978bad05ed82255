/*
 * libmoas — GPT-style transformers with mixtures of attention schemes, behind a C ABI.
 *
 * Conventions (see also docs/ABI.md):
 *  - Every struct begins with `struct_size`; the caller sets it to `sizeof(struct)` before passing the struct in,
 *    and the library never reads or writes past it. No struct crosses the ABI by value.
 *  - Every call returns a `moas_status`; on failure `moas_last_error()` holds a message for the calling thread
 *    that says what to fix. A failed call leaves the model as it was.
 *  - Enumerations travel as `int32_t` fields; their values are only ever appended, never reused.
 *  - Ownership: every `*_create` has a `*_destroy`. Pointers the library returns are borrowed and stay valid as
 *    long as the documented owner lives. Buffers the caller passes are borrowed for the duration of the call only.
 *    Undefined (as for any C handle): destroying a handle twice, using it after its destroy, passing a handle not
 *    made by libmoas, and buffers shorter than the lengths passed with them. Everything else is checked.
 *  - No call returns MOAS_OK with a non-finite result: a forward, prefill or optimiser step whose result would hold
 *    NaN/Inf fails with MOAS_ERR_NON_FINITE and, like every failed call, changes nothing.
 *  - Thread safety: a model is used by one thread at a time; distinct models may be used concurrently.
 *    Calls marked "thread-safe" may be made from any thread at any time.
 *  - Tensors are row-major float32; linear weights have PyTorch `nn.Linear` layout [out, in].
 */
#ifndef MOAS_H
#define MOAS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(MOAS_BUILDING_LIBRARY)
#    define MOAS_API __declspec(dllexport)
#  else
#    define MOAS_API __declspec(dllimport)
#  endif
#else
#  define MOAS_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct layout or a function signature changes incompatibly (see CHANGELOG.md). */
#define MOAS_ABI_VERSION 1u

/* ---------------------------------------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------------------------------------- */

typedef enum moas_status {
  MOAS_OK = 0,
  /* A required pointer argument was NULL. */
  MOAS_ERR_NULL_ARGUMENT = 1,
  /* A config field is out of range or inconsistent (the message names the field). */
  MOAS_ERR_INVALID_CONFIG = 2,
  /* The caller was built against another ABI version, or passed a struct_size the library cannot accept. */
  MOAS_ERR_ABI_MISMATCH = 3,
  /* A buffer length or a shape argument does not match what the model needs. */
  MOAS_ERR_SIZE_MISMATCH = 4,
  /* An input token id is outside [0, vocab_size). */
  MOAS_ERR_TOKEN_OUT_OF_RANGE = 5,
  /* A target id is outside [-1, vocab_size) (-1 means "ignore"). */
  MOAS_ERR_TARGET_OUT_OF_RANGE = 6,
  /* The sequence is longer than the model's context (block_size). */
  MOAS_ERR_CONTEXT_TOO_LONG = 7,
  /* moas_backward was called without a preceding training-mode forward. */
  MOAS_ERR_NO_FORWARD = 8,
  /* A NaN or infinity was found in caller data, weights, or the gradient (the step was not applied). */
  MOAS_ERR_NON_FINITE = 9,
  /* No parameter of that name exists in this model. */
  MOAS_ERR_UNKNOWN_PARAMETER = 10,
  /* A file could not be opened, read, written or renamed. */
  MOAS_ERR_IO = 11,
  /* The checkpoint file ends before its header or data say it should. */
  MOAS_ERR_CHECKPOINT_TRUNCATED = 12,
  /* The checkpoint header is not valid safetensors JSON (the message gives the reason). */
  MOAS_ERR_CHECKPOINT_HEADER = 13,
  /* Tensor byte spans overlap, leave gaps or trailing bytes, or disagree with shape x dtype. */
  MOAS_ERR_CHECKPOINT_LAYOUT = 14,
  /* A tensor the model needs is not in the checkpoint. */
  MOAS_ERR_CHECKPOINT_MISSING_TENSOR = 15,
  /* The checkpoint holds a tensor this model does not have. */
  MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR = 16,
  /* A tensor's shape differs from the model's. */
  MOAS_ERR_CHECKPOINT_SHAPE = 17,
  /* A tensor's dtype is not F32, F16 or BF16. */
  MOAS_ERR_CHECKPOINT_DTYPE = 18,
  /* The checkpoint's config metadata is missing, unreadable or describes another model. */
  MOAS_ERR_CHECKPOINT_CONFIG = 19,
  /* The model (or that layer) has no router: router statistics do not apply. */
  MOAS_ERR_NO_ROUTER = 20,
  /* The requested device cannot be used here (no CUDA backend, driver or device). */
  MOAS_ERR_DEVICE_UNAVAILABLE = 21,
  /* An allocation failed. */
  MOAS_ERR_OUT_OF_MEMORY = 22,
  /* An index argument (layer, parameter index) is out of range. */
  MOAS_ERR_INDEX_OUT_OF_RANGE = 23,
  /* A bug in libmoas: please report it with the message. */
  MOAS_ERR_INTERNAL = 24,
  /* The KV cache has no room for more positions (its capacity, at most the model's block_size): reset it. */
  MOAS_ERR_CONTEXT_FULL = 25,
  /* Two buffers of one call overlap in a way it does not allow (e.g. a layer's x and y partly overlapping), or a
   * handle was made for another device (a KV cache of a CPU model given with a CUDA model). */
  MOAS_ERR_INVALID_ARGUMENT = 26,
  /* A checkpoint tensor holds a value its role cannot have (a negative AdamW second moment). */
  MOAS_ERR_CHECKPOINT_VALUE = 27
} moas_status;

/* A static, human-readable name for a status ("MOAS_ERR_SIZE_MISMATCH: ..."). Thread-safe. Never NULL. */
MOAS_API const char *moas_status_string(moas_status status);

/* The message of the last failed call on this thread, or "" if none failed. Thread-safe; the string is owned by
 * the library and valid until the next libmoas call on the same thread. Never NULL. */
MOAS_API const char *moas_last_error(void);

/* MOAS_ABI_VERSION of the loaded library; bindings compare it with the header they were built from. Thread-safe. */
MOAS_API uint32_t moas_abi_version(void);

/* The library version, e.g. "0.1.0". Thread-safe; static storage. */
MOAS_API const char *moas_version_string(void);

/* How this library was built, for reports that must be reproducible: version, the library serving
 * float matrix products, the instruction set the CPU kernels were compiled for, and the CPU threads available,
 * e.g. "libmoas 0.2.0; float GEMM oneDNN; kernels AVX-512; 2 CPU threads". Thread-safe; static storage. */
MOAS_API const char *moas_build_info(void);

/* ---------------------------------------------------------------------------------------------------------------
 * Model configuration
 * ------------------------------------------------------------------------------------------------------------- */

/* moas_model_config.norm */
enum {
  MOAS_NORM_LAYERNORM = 0,
  MOAS_NORM_RMSNORM = 1
};

/* moas_model_config.mlp */
enum {
  MOAS_MLP_GELU = 0,  /* c_proj(GELU(c_fc(x))), exact erf GELU */
  MOAS_MLP_SWIGLU = 1 /* c_proj(SiLU(c_fc(x)) * c_up(x)) */
};

/* moas_model_config.position */
enum {
  MOAS_POSITION_LEARNED = 0, /* wte + wpe */
  MOAS_POSITION_ROPE = 1,    /* rotary q/k, base rope_base, no wpe */
  MOAS_POSITION_COPE = 2     /* contextual positions (docs/math.md): per head cope_max_pos embeddings, no wpe */
};

/* moas_model_config.attention */
enum {
  MOAS_ATTENTION_SCHEME = 0, /* one scheme: MHA (n_kv_head = n_head), GQA, MQA (n_kv_head = 1) */
  MOAS_ATTENTION_MOAS = 1,   /* Mixture of Attention Schemes (docs/math.md): moas_mode, moas_branch_kv_heads */
  MOAS_ATTENTION_MOH = 2     /* one scheme with per-token head selection (docs/math.md): head_selection */
};

/* moas_model_config.moas_mode */
enum {
  MOAS_MODE_STATIC = 0, /* y = mean of the branches; no router */
  MOAS_MODE_SOFT = 1,   /* y = sum_k g_k o_k (reference-faithful "dynamic") */
  MOAS_MODE_TOP1 = 2    /* y = g_k* o_k*: only the argmax branch is computed for each query token */
};

#define MOAS_MAX_BRANCHES 4

/* moas_head_selection.strategy (the names of RustGPT's HeadSelectionStrategy) */
enum {
  MOAS_HEADS_ALL = 0,           /* AllHeads: plain attention, every gate 1 */
  MOAS_HEADS_MIXTURE = 1,       /* MixtureOfHeads: h_s shared heads + top-K of the E = H - h_s routed heads */
  MOAS_HEADS_STATIC_PRUNING = 2 /* StaticPruning: heads 0..k-1 active with gate 1, no router */
};

/* moas_head_selection.gate_variant (recorded in checkpoints, so a model never runs with the wrong gating) */
enum {
  MOAS_MOH_GATES_REFERENCE = 0, /* the public MoH code: normalised, rescaled so uniform routing gives gates of 1 */
  MOAS_MOH_GATES_PAPER = 1      /* the MoH paper's Eq. 5: a1 * s_i for shared, a2 * r_i for selected routed heads */
};

/* Mixture-of-Heads settings, embedded in moas_model_config. Which fields apply depends on `strategy`.
 * Heads 0..num_shared_heads-1 are shared, the E = n_head - num_shared_heads after them are routed. Checkpoint names
 * (those of the public MoH code): the scheme's projections as for one scheme (attn.c_attn or attn.q_proj/k_proj/
 * v_proj, attn.c_proj), the routed-head router attn.wg.weight [E, C], the shared/routed weighting attn.wg_0.weight
 * [2, C] (when both kinds exist) and the shared-head router attn.wg_1.weight [num_shared_heads, C] (when more than
 * one shared head). No biases. */
typedef struct moas_head_selection {
  int32_t strategy;                /* MOAS_HEADS_* (default MOAS_HEADS_ALL) */
  int32_t num_shared_heads;        /* MixtureOfHeads: h_s, heads 0..h_s-1, always active (default 0) */
  int32_t num_active_routed_heads; /* MixtureOfHeads: K active among the routed heads, per token (default 0) */
  int32_t num_active_heads;        /* StaticPruning: k (default 0) */
  float load_balance_weight;       /* MixtureOfHeads: weight of the load-balance loss (default 0.01) */
  int32_t gate_variant;            /* MixtureOfHeads: MOAS_MOH_GATES_* (default REFERENCE) */
} moas_head_selection;

/* moas_model_config.device. MOAS_DEVICE_CUDA loads libmoas_cuda.so on first use (beside libmoas.so, then the library
 * path; the environment variable MOAS_CUDA_LIBRARY names another file) and runs forward, backward and the optimiser
 * there, with the weights, gradients and optimiser state in device memory; parameter reads and writes, checkpoints
 * and moas_logits copy between host and device. Without the library, a driver or a device: MOAS_ERR_DEVICE_UNAVAILABLE
 * with the reason; also for a device this build has no code for, or attention needing more shared memory per block
 * than the device has (a very large head_dim; CoPE over a long context without a window). The CUDA model runs every
 * attention kind (one scheme, MoAS, MoH; aux loss and router statistics as on the CPU) with any position encoding and
 * windows, and decodes with a KV cache in device memory; the layer API runs on CUDA too (moas_layer_config.device). */
enum {
  MOAS_DEVICE_CPU = 0,
  MOAS_DEVICE_CUDA = 1
};

/* moas_model_config.matmul_precision and moas_layer_config.matmul_precision: how a CUDA device computes the matrix
 * products; the weights, gradients and optimiser state stay fp32 and every sum accumulates in fp32. The CPU backend
 * always computes in fp32, so one config serves both devices. */
enum {
  MOAS_MATMUL_FP32 = 0, /* full fp32 (default): the CPU backend's results to 1e-4 (docs/math.md) */
  MOAS_MATMUL_TF32 = 1, /* the projections, MLP, LM head and routers on tensor cores, their inputs rounded to TF32
                           (10-bit mantissas); attention in fp32 */
  MOAS_MATMUL_BF16 = 2  /* those products with inputs rounded to bfloat16 (7-bit mantissas) or TF32, as cuBLAS
                           chooses, and attention's products (not CoPE's) on bfloat16 tensor cores where the device
                           (compute capability 8.0+) and head_dim allow, its softmax in fp32: fastest, least exact */
};

typedef struct moas_model_config {
  uint32_t struct_size; /* sizeof(moas_model_config), set by the caller */
  uint32_t abi_version; /* MOAS_ABI_VERSION, set by moas_model_config_default */
  int32_t vocab_size;   /* V (default 65: the character vocabulary of tiny Shakespeare) */
  int32_t block_size;   /* maximum context T (default 256) */
  int32_t n_layer;      /* L (default 6) */
  int32_t n_head;       /* H query heads (default 6) */
  int32_t n_kv_head;    /* key/value heads, divides n_head (default = n_head: MHA) */
  int32_t n_embd;       /* C, divisible by n_head (default 384) */
  int32_t mlp_hidden;   /* MLP hidden width; 0 = 4 * n_embd */
  int32_t norm;         /* MOAS_NORM_* */
  int32_t mlp;          /* MOAS_MLP_* */
  int32_t position;     /* MOAS_POSITION_* */
  int32_t attention;    /* MOAS_ATTENTION_* */
  int32_t bias;         /* 1: Linear and LayerNorm biases (default 0, reference-faithful) */
  float dropout;        /* p in [0, 1) for every dropout site (default 0.2) */
  int32_t attn_dropout; /* 1: also drop attention probabilities (default 1, as nanoGPT) */
  float rope_base;      /* RoPE base (default 10000) */
  uint64_t seed;        /* initialisation and dropout seed (default 1337) */
  int32_t n_threads;    /* CPU threads; 0 = all cores */
  int32_t device;       /* MOAS_DEVICE_* (default CPU) */
  int32_t device_index; /* which GPU when device is CUDA */
  int32_t reserved0;    /* keep 0: pads the struct to 8 bytes on every platform */
  /* Appended in libmoas 0.2.0. A caller whose struct_size ends before a field gets its default. */
  int32_t moas_mode;                               /* MOAS_MODE_* (default MOAS_MODE_SOFT) */
  int32_t moas_n_branches;                         /* S in [1, MOAS_MAX_BRANCHES] (default 3) */
  int32_t moas_branch_kv_heads[MOAS_MAX_BRANCHES]; /* kv heads of branch k, dividing n_head; 0 means n_head (MHA).
                                                      Default {0, 2, 1, 0}: MHA, GQA-2, MQA */
  float moas_aux_weight;                           /* lambda on the MoAS load-balance loss (default 0.01) */
  moas_head_selection head_selection;              /* MoH settings (default AllHeads) */
  int32_t reserved1;                               /* keep 0 */
  /* Appended in libmoas 0.3.0. */
  int32_t cope_max_pos; /* CoPE: P, the positions each head can tell apart (default 64); used with
                           MOAS_POSITION_COPE. Checkpoint name attn.cope.weight [n_head, P, head_dim]; a MoAS
                           branch has its own, attn.{branch}.cope.weight */
  int32_t window_size;  /* sliding window w: query i attends to keys i-w .. i; 0 = full causal (default 0) */
  /* Appended in libmoas 0.5.0. */
  int32_t matmul_precision; /* MOAS_MATMUL_* (default MOAS_MATMUL_FP32); a run-time choice, not saved in checkpoints */
  int32_t reserved2;        /* keep 0 */
} moas_model_config;

/* Fills every field within cfg->struct_size with the defaults above (the paper's model).
 * The caller sets cfg->struct_size = sizeof *cfg first. Thread-safe. */
MOAS_API moas_status moas_model_config_default(moas_model_config *cfg);

/* ---------------------------------------------------------------------------------------------------------------
 * Model lifetime
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct moas_model moas_model;

/* Validates cfg and creates a model with reference-faithful (GPT-2) initialisation from cfg->seed.
 * On success *out owns a model the caller must pass to moas_model_destroy. Thread-safe. */
MOAS_API moas_status moas_model_create(const moas_model_config *cfg, moas_model **out);

/* Frees the model and everything it owns; NULL is a no-op. Using the model afterwards, or destroying it again, is
 * undefined. */
MOAS_API void moas_model_destroy(moas_model *model);

/* Copies the model's config into *out (up to out->struct_size, which the caller sets). */
MOAS_API moas_status moas_model_get_config(const moas_model *model, moas_model_config *out);

/* Number of trainable scalars (tied embeddings counted once). */
MOAS_API moas_status moas_model_num_parameters(const moas_model *model, uint64_t *out);

/* ---------------------------------------------------------------------------------------------------------------
 * Training and inference
 * ------------------------------------------------------------------------------------------------------------- */

/* Runs the model on tokens [batch, seq_len] (int32, each in [0, vocab_size)).
 * targets: NULL, or [batch, seq_len] ids in [-1, vocab_size) where -1 is ignored.
 * training: 1 keeps activations for moas_backward and applies dropout (mask keyed by seed and step);
 *           0 keeps nothing and is deterministic.
 * loss_out (nullable): mean cross-entropy over targets != -1 (0 when there are none or targets is NULL).
 * aux_out (nullable): the unweighted auxiliary (load-balance) loss, mean over routed layers; 0 without routers.
 * The logits stay readable through moas_logits until the next forward.
 * MOAS_ERR_NON_FINITE when the loss or any logit is NaN/Inf (weights that diverged or overflow): the forward then
 * counts for nothing (no moas_backward, no dropout draw: the next training forward draws the masks this one would
 * have); loss_out still receives the loss for diagnosis. */
MOAS_API moas_status moas_forward(moas_model *model, const int32_t *tokens, const int32_t *targets, int32_t batch,
                                  int32_t seq_len, int32_t training, float *loss_out, float *aux_out);

/* Copies the last forward's logits [batch, seq_len, vocab_size] into out, whose length (in floats) is out_len and
 * must equal batch * seq_len * vocab_size. */
MOAS_API moas_status moas_logits(const moas_model *model, float *out, size_t out_len);

/* Accumulates into the parameter gradients the gradient of CE + lambda * aux of the last training forward
 * (which must have had targets). Gradients accumulate across calls until moas_zero_grad. One backward per forward:
 * a second one (which would add the same gradients again), or one after a parameter write, load or optimiser step,
 * is MOAS_ERR_NO_FORWARD and changes nothing. */
MOAS_API moas_status moas_backward(moas_model *model);

/* Sets every parameter gradient to zero. */
MOAS_API moas_status moas_zero_grad(moas_model *model);

typedef struct moas_adamw_config {
  uint32_t struct_size;
  float lr;           /* in [0, 1] (default 1e-3); lr * weight_decay <= 1 */
  float beta1;        /* default 0.9 */
  float beta2;        /* default 0.99 */
  float eps;          /* default 1e-8 */
  float weight_decay; /* decoupled, only on tensors of rank >= 2 (default 0.1) */
  float grad_clip;    /* global L2 norm bound; 0 = no clipping (default 1.0) */
} moas_adamw_config;

/* Fills cfg (up to cfg->struct_size) with the defaults above. Thread-safe. */
MOAS_API moas_status moas_adamw_config_default(moas_adamw_config *cfg);

/* RustGPT's optimiser by name: Adam with lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8, no weight decay and no
 * clipping (Kingma & Ba's Adam, PyTorch's torch.optim.Adam). It is not the AdamW default above (beta2 0.99, weight
 * decay 0.1, clip 1.0): start from the one you mean rather than editing the other's fields. Fills cfg up to
 * cfg->struct_size. Thread-safe. (Appended in libmoas 0.6.0.) */
MOAS_API moas_status moas_adamw_config_rustgpt(moas_adamw_config *cfg);

/* One AdamW step (PyTorch semantics, bias-corrected) on the accumulated gradients, after clipping them to
 * cfg->grad_clip. grad_norm_out (nullable) receives the global gradient L2 norm before clipping; with grad_clip 0
 * and grad_norm_out NULL no norm is computed. If any gradient is not finite, or the step would leave a weight or a
 * moment non-finite (a gradient whose square overflows, moments loaded from a file that do not belong together),
 * the step is skipped, nothing changes (weights, moments, step count), and MOAS_ERR_NON_FINITE is returned.
 * MOAS_ERR_INVALID_CONFIG for settings out of range (see moas_adamw_config). The gradients stay as they are: they
 * keep accumulating over later backward calls until moas_zero_grad. */
MOAS_API moas_status moas_optimizer_step(moas_model *model, const moas_adamw_config *cfg, float *grad_norm_out);

/* Number of optimizer steps taken (it keys dropout masks and AdamW bias correction). */
MOAS_API moas_status moas_optimizer_steps(const moas_model *model, uint64_t *out);

/* ---------------------------------------------------------------------------------------------------------------
 * Parameters: enumeration, read, write (names are those of the reference PyTorch model)
 * ------------------------------------------------------------------------------------------------------------- */

#define MOAS_MAX_DIMS 4

typedef struct moas_parameter_info {
  uint32_t struct_size;
  int32_t ndim;
  const char *name;            /* borrowed; valid while the model lives */
  int64_t shape[MOAS_MAX_DIMS]; /* unused dimensions are 0 */
  uint64_t numel;
} moas_parameter_info;

/* Number of named parameter tensors. */
MOAS_API moas_status moas_parameter_count(const moas_model *model, size_t *out);

/* Describes parameter `index` (0 <= index < count), in checkpoint order. */
MOAS_API moas_status moas_parameter_info_at(const moas_model *model, size_t index, moas_parameter_info *out);

/* Copies parameter `name` into out (len = numel floats). */
MOAS_API moas_status moas_parameter_read(const moas_model *model, const char *name, float *out, size_t len);

/* Overwrites parameter `name` from values (len = numel floats, all finite). */
MOAS_API moas_status moas_parameter_write(moas_model *model, const char *name, const float *values, size_t len);

/* Copies the accumulated gradient of parameter `name` into out (len = numel floats). */
MOAS_API moas_status moas_gradient_read(const moas_model *model, const char *name, float *out, size_t len);

/* All parameter gradients as one buffer of len = moas_model_num_parameters floats: the tensors in the order of
 * moas_parameter_info_at, each row-major, one after another. read copies them out; write replaces them (all
 * finite, else MOAS_ERR_NON_FINITE and nothing changes), e.g. with the mean of several threads' or processes'
 * gradients before moas_optimizer_step. (Appended in libmoas 0.6.0.) */
MOAS_API moas_status moas_gradients_read(const moas_model *model, float *out, size_t len);
MOAS_API moas_status moas_gradients_write(moas_model *model, const float *values, size_t len);

/* ---------------------------------------------------------------------------------------------------------------
 * Checkpoints (safetensors; tensor names load into the reference PyTorch model with load_state_dict)
 * ------------------------------------------------------------------------------------------------------------- */

/* Writes the weights and the config (metadata "config", JSON) to path, through a temporary file (path + ".tmp",
 * synced) and a rename: a crash leaves the old file or the new one, never half of one. user_metadata (nullable, UTF-8
 * text, else MOAS_ERR_INVALID_ARGUMENT) is stored verbatim under the metadata key "user" (e.g. the vocabulary as
 * JSON). Saving a model and its optimiser state is two calls: a caller that must never lose a matching pair writes
 * both under new names and switches to them afterwards (as moas train does). */
MOAS_API moas_status moas_model_save(const moas_model *model, const char *path, const char *user_metadata);

/* Replaces the model's weights with those in path. The whole file is validated before anything is copied: the
 * safetensors format as strictly as its reference implementation (MOAS_ERR_CHECKPOINT_TRUNCATED, _HEADER, _LAYOUT,
 * _DTYPE), the config (every field that changes the math must equal the model's, wrong types and ranges refused:
 * MOAS_ERR_CHECKPOINT_CONFIG), each tensor's presence and shape (_MISSING_TENSOR, _UNEXPECTED_TENSOR, _SHAPE) and
 * every value (NaN/Inf: MOAS_ERR_NON_FINITE). Only regular files are read (MOAS_ERR_IO for a directory, pipe or
 * device). On any failure the model is unchanged. */
MOAS_API moas_status moas_model_load(moas_model *model, const char *path);

/* Creates a model from the config stored in a checkpoint and loads its weights. device, device_index, n_threads,
 * seed and (when its struct_size reaches it) matmul_precision come from `overrides` when it is non-NULL (its other
 * fields are ignored). The file's tensors are checked against its config before the model is allocated, so a
 * small file that claims a large model costs no more than reading its header. *out is NULL on failure. */
MOAS_API moas_status moas_model_create_from_file(const char *path, const moas_model_config *overrides,
                                                 moas_model **out);

/* Copies the "user" metadata of a checkpoint into buf (NUL-terminated); *needed receives its length + 1.
 * buf may be NULL (with buf_len 0) to query the length. MOAS_ERR_SIZE_MISMATCH when buf is too small. */
MOAS_API moas_status moas_checkpoint_user_metadata(const char *path, char *buf, size_t buf_len, size_t *needed);

/* Writes the AdamW state ({param}.exp_avg, {param}.exp_avg_sq, step) to path (temporary file and rename). */
MOAS_API moas_status moas_optimizer_save(const moas_model *model, const char *path);

/* Restores the AdamW state written by moas_optimizer_save for this model, validated as moas_model_load validates
 * weights; a negative second moment is MOAS_ERR_CHECKPOINT_VALUE. Unchanged on failure. */
MOAS_API moas_status moas_optimizer_load(moas_model *model, const char *path);

/* ---------------------------------------------------------------------------------------------------------------
 * Decoding with a key/value cache (docs/math.md): logits equal those of a full forward over the whole prefix
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct moas_kv_cache moas_kv_cache;

/* Creates an empty cache for `batch` sequences of up to `capacity` positions (1 <= capacity <= block_size), laid
 * out for `model`'s architecture: per layer and per MoAS branch, only the kv heads that scheme has. With a sliding
 * window (window_size > 0) it keeps only the positions the window can still see, in a ring buffer of at most
 * 2 * window_size + chunk positions per sequence (chunk: the longest seq_len given to moas_prefill), whatever
 * `capacity`; capacity still bounds the positions in total. The cache lives where `model` runs (host memory, or
 * the CUDA device's) and may be used with any model of the same architecture on the same device; it does not keep
 * `model` alive. The caller owns *out and frees it with moas_kv_cache_destroy.
 * Thread-safe. */
MOAS_API moas_status moas_kv_cache_create(const moas_model *model, int32_t batch, int32_t capacity,
                                          moas_kv_cache **out);

/* Frees the cache; NULL is a no-op. Using the cache afterwards, or destroying it again, is undefined. */
MOAS_API void moas_kv_cache_destroy(moas_kv_cache *cache);

/* Forgets every cached position (the memory stays allocated). */
MOAS_API moas_status moas_kv_cache_reset(moas_kv_cache *cache);

/* Positions cached so far (the same for every sequence of the batch). */
MOAS_API moas_status moas_kv_cache_length(const moas_kv_cache *cache, int32_t *out);

/* Bytes of keys and values one position of one sequence occupies, summed over layers and branches: the figure to
 * compare attention schemes by (MQA < GQA < MHA). */
MOAS_API moas_status moas_kv_cache_bytes_per_token(const moas_kv_cache *cache, uint64_t *out);

/* What the next decode step of one sequence must read from memory, for a float32 model of the cache's architecture
 * at the cache's current length (docs/decoding.md): *weight_bytes, every weight its token uses, once (MoH's inactive
 * heads' and top-1 MoAS's unchosen branches' query and output projections left out, top-1 taken as routing
 * uniformly), and *cache_bytes, the cached keys and values its attention reads (the positions its window sees). A
 * step of B sequences reads the weights once and the cache B times, so B / (weights + B * cache) times the memory
 * bandwidth bounds its tokens/s. (Appended in libmoas 0.8.0.) */
MOAS_API moas_status moas_decode_read_bytes(const moas_kv_cache *cache, uint64_t *weight_bytes,
                                            uint64_t *cache_bytes);

/* Runs the model in eval mode on tokens [batch, seq_len] that continue the cached sequences (at position
 * moas_kv_cache_length), appends their keys and values to the cache, and copies the logits of each sequence's
 * last new position into last_logits [batch, vocab_size] (last_logits_len floats; NULL to skip). All new logits
 * stay readable through moas_logits. MOAS_ERR_CONTEXT_FULL when the positions would pass the cache's capacity;
 * MOAS_ERR_INVALID_ARGUMENT when the cache was made by a model on another device (a CPU model's cache for a CUDA
 * model, or the reverse: it is the wrong handle, not a wrong size); MOAS_ERR_NON_FINITE when a new logit is NaN/Inf
 * (the new positions are dropped again: the cache keeps its length and the positions it held). On any failure the
 * cache and the model are unchanged and last_logits is untouched. The model and the cache are used by one thread at a
 * time. */
MOAS_API moas_status moas_prefill(moas_model *model, moas_kv_cache *cache, const int32_t *tokens, int32_t seq_len,
                                  float *last_logits, size_t last_logits_len);

/* moas_prefill of one token per sequence: tokens [batch] -> logits [batch, vocab_size].
 * On the CPU, a call with at most 8 tokens in all reads the weight matrices from a copy re-laid for products with
 * few rows (docs/decoding.md), made on first use: as much memory again as the matrices it uses, kept until the
 * weights change (moas_parameter_write, moas_optimizer_step, moas_model_load) or the model is destroyed. */
MOAS_API moas_status moas_decode_step(moas_model *model, moas_kv_cache *cache, const int32_t *tokens, float *logits,
                                      size_t logits_len);

/* ---------------------------------------------------------------------------------------------------------------
 * Router statistics (filled by every forward of a model with routed attention)
 * ------------------------------------------------------------------------------------------------------------- */

#define MOAS_MAX_ROUTES 64

typedef struct moas_layer_router_stats {
  uint32_t struct_size;
  int32_t n_routes;               /* branches (MoAS) or routed heads (MoH) */
  float share[MOAS_MAX_ROUTES];   /* f-hat per route; sums to 1 */
  float mean_gate[MOAS_MAX_ROUTES];
  float balance;                  /* 1 / (N * sum f-hat^2): 1 uniform, 1/N collapsed */
  float max_over_mean;            /* N * max f-hat */
  int32_t collapsed;              /* max f-hat > 0.9 */
  float entropy;                  /* mean routing entropy (nats) */
  float aux_loss;                 /* the layer's unweighted load-balance loss */
  /* Appended in libmoas 0.2.0. */
  float top_share[MOAS_MAX_ROUTES]; /* MoAS: fraction of tokens whose argmax is this branch; MoH: f_i, the fraction
                                       of tokens that activate routed head i (sums to K) */
  float mean_shared_weight;       /* MoH: mean a1 of the head-type router (1 without one); MoAS: 0 */
  float mean_routed_weight;       /* MoH: mean a2 (1 without a head-type router); MoAS: 0 */
  int32_t attention;              /* MOAS_ATTENTION_MOAS or MOAS_ATTENTION_MOH: what the routes are */
} moas_layer_router_stats;

/* Router statistics of `layer` from the last forward (training or eval). share is f-hat (docs/math.md): MoAS
 * top-1 the argmax shares, soft and static the mean gates; MoH f_i / K over the routed heads. MOAS_ERR_NO_ROUTER
 * when that layer routes nothing (one scheme, MoH AllHeads or StaticPruning); MOAS_ERR_NO_FORWARD before the first
 * forward. */
MOAS_API moas_status moas_router_stats(const moas_model *model, int32_t layer, moas_layer_router_stats *out);

/* The statistics of every layer at once: out[l] for l in [0, n_layers), each with its struct_size set by the
 * caller; n_layers must equal the model's n_layer. All entries are written, or (on failure) none. */
MOAS_API moas_status moas_router_stats_all(const moas_model *model, moas_layer_router_stats *out, size_t n_layers);

/* Layer `layer`'s per-token gates of the last forward [batch * seq_len, *width], as moas_layer_gates: MoAS the
 * router's softmax over its branches, MoH every head's gate (0 where inactive). *width is always written (0 without
 * routing); out may be NULL to ask for it, else out_len must be batch * seq_len * *width. MOAS_ERR_NO_FORWARD before
 * the first forward. (Appended in libmoas 0.7.0.) */
MOAS_API moas_status moas_gates(const moas_model *model, int32_t layer, float *out, size_t out_len, int32_t *width);

/* ---------------------------------------------------------------------------------------------------------------
 * The attention layer alone, on caller-owned buffers (for programs that compose their own network, e.g. RustGPT).
 * It is the same attention block a model's layers run (docs/math.md); the caller owns embeddings and norms.
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct moas_layer moas_layer;

typedef struct moas_layer_config {
  uint32_t struct_size;  /* sizeof(moas_layer_config), set by the caller */
  uint32_t abi_version;  /* MOAS_ABI_VERSION, set by moas_layer_config_default */
  int32_t n_embd;        /* C, divisible by n_head (default 128) */
  int32_t n_head;        /* H query heads (default 8) */
  int32_t n_kv_head;     /* key/value heads of a single scheme or MoH, dividing n_head (default 4) */
  int32_t max_seq_len;   /* the longest sequence a forward accepts (default 80) */
  int32_t attention;     /* MOAS_ATTENTION_* (default MOAS_ATTENTION_SCHEME) */
  int32_t position;      /* MOAS_POSITION_LEARNED: no position inside attention (the caller's embeddings carry it);
                            MOAS_POSITION_ROPE or MOAS_POSITION_COPE (default LEARNED) */
  float rope_base;       /* RoPE base (default 10000) */
  int32_t cope_max_pos;  /* CoPE positions per head (default 64) */
  int32_t window_size;   /* sliding window; 0 = full causal (default 0) */
  int32_t residual;      /* 1: y = x + Attn(x) (default 1) */
  int32_t bias;          /* 1: projection biases (default 0) */
  float dropout;         /* p for attention probabilities and the output projection in training (default 0) */
  int32_t moas_mode;                               /* as moas_model_config (default MOAS_MODE_SOFT) */
  int32_t moas_n_branches;                         /* default 3 */
  int32_t moas_branch_kv_heads[MOAS_MAX_BRANCHES]; /* default {0, 2, 1, 0}: MHA, GQA-2, MQA */
  float moas_aux_weight;                           /* default 0.01 */
  moas_head_selection head_selection;              /* default AllHeads */
  int32_t n_threads;     /* CPU threads for this layer's calls; 0 = all cores */
  uint64_t seed;         /* initialisation and dropout seed (default 1337) */
  int32_t device;        /* MOAS_DEVICE_* (default CPU) */
  int32_t device_index;
  /* Appended in libmoas 0.5.0. */
  int32_t matmul_precision; /* MOAS_MATMUL_* (default MOAS_MATMUL_FP32) */
  int32_t reserved0;        /* keep 0 */
} moas_layer_config;

/* Fills every field within cfg->struct_size with the defaults above (RustGPT's attention shape). Thread-safe. */
MOAS_API moas_status moas_layer_config_default(moas_layer_config *cfg);

/* Validates cfg and creates a layer with the model's initialisation (weights N(0, 0.02), the output projection
 * N(0, 0.02 / sqrt(2)), CoPE embeddings 0). The caller owns *out and frees it with moas_layer_destroy. Distinct
 * layers may be used from different threads at once; one layer is used by one thread at a time. */
MOAS_API moas_status moas_layer_create(const moas_layer_config *cfg, moas_layer **out);

/* Frees the layer; NULL is a no-op. Using the layer afterwards, or destroying it again, is undefined. */
MOAS_API void moas_layer_destroy(moas_layer *layer);

/* The layer's config (up to out->struct_size), e.g. of a layer made by moas_layer_create_from_file; MoAS branch kv
 * heads come back resolved (n_head where 0 was given). (Appended in libmoas 0.6.0.) */
MOAS_API moas_status moas_layer_get_config(const moas_layer *layer, moas_layer_config *out);

/* y = Attn(x) (plus x with residual) for x [batch, seq_len, n_embd], batch >= 1, 1 <= seq_len <= max_seq_len;
 * x and y each hold len = batch * seq_len * n_embd floats and stay owned by the caller; y may be x itself (in place)
 * but must not otherwise overlap it (MOAS_ERR_INVALID_ARGUMENT). Non-finite x gives MOAS_ERR_NON_FINITE.
 * training: 1 keeps what moas_layer_backward needs and applies dropout; 0 keeps nothing.
 * aux_out (nullable): the unweighted load-balance loss (0 without a router). MOAS_ERR_NON_FINITE when y would hold
 * NaN/Inf (weights that diverged, or an x so large its projections overflow). On failure y is untouched and the
 * layer is as before (no backward, no dropout draw). */
MOAS_API moas_status moas_layer_forward(moas_layer *layer, const float *x, float *y, size_t len, int32_t batch,
                                        int32_t seq_len, int32_t training, float *aux_out);

/* Given dy = dLoss/dy of the last training forward (len floats), writes dx = dLoss/dx (overwritten; the residual's
 * identity included) and adds the parameter gradients, with the load-balance loss's gradient weighted by its
 * lambda. dx may be dy itself. MOAS_ERR_NO_FORWARD without a training forward since the last backward (or after a
 * parameter write or optimiser step). */
MOAS_API moas_status moas_layer_backward(moas_layer *layer, const float *dy, float *dx, size_t len);

/* Sets every parameter gradient to zero. Gradients accumulate over backward calls until then: a training loop that
 * steps after every backward must zero them after every step (RustGPT's backward(grads, lr) is backward, step,
 * zero_grad). */
MOAS_API moas_status moas_layer_zero_grad(moas_layer *layer);

/* One AdamW step on the layer's accumulated gradients, as moas_optimizer_step (weight_decay 0 and grad_clip 0
 * give plain Adam). The layer keeps its own moments. */
MOAS_API moas_status moas_layer_optimizer_step(moas_layer *layer, const moas_adamw_config *cfg,
                                               float *grad_norm_out);

/* The layer's parameter tensors, named as in a model without the "transformer.h.{l}." prefix ("attn.c_attn.weight",
 * "attn.cope.weight", ...): count, description, read, write, and the accumulated gradient read and write (so a
 * caller can run its own optimiser or scale gradients). len is the tensor's numel. */
MOAS_API moas_status moas_layer_parameter_count(const moas_layer *layer, size_t *out);
MOAS_API moas_status moas_layer_parameter_info_at(const moas_layer *layer, size_t index, moas_parameter_info *out);
MOAS_API moas_status moas_layer_parameter_read(const moas_layer *layer, const char *name, float *out, size_t len);
MOAS_API moas_status moas_layer_parameter_write(moas_layer *layer, const char *name, const float *values,
                                                size_t len);
MOAS_API moas_status moas_layer_gradient_read(const moas_layer *layer, const char *name, float *out, size_t len);
MOAS_API moas_status moas_layer_gradient_write(moas_layer *layer, const char *name, const float *values,
                                               size_t len);

/* The layer's gradients as one buffer, as moas_gradients_read / moas_gradients_write: len =
 * moas_layer_num_parameters floats, the tensors in moas_layer_parameter_info_at order. A caller that computes
 * several sequences' gradients (on several layers, or one after another with moas_layer_zero_grad between) sums or
 * averages them itself, writes the result and takes one moas_layer_optimizer_step. (Appended in libmoas 0.6.0.) */
MOAS_API moas_status moas_layer_num_parameters(const moas_layer *layer, uint64_t *out);
MOAS_API moas_status moas_layer_gradients_read(const moas_layer *layer, float *out, size_t len);
MOAS_API moas_status moas_layer_gradients_write(moas_layer *layer, const float *values, size_t len);

/* Layer checkpoints, with the model checkpoints' rules: safetensors named as moas_layer_parameter_info_at, the
 * layer's config in the metadata ("config", plus "layer" with its residual flag), written to a temporary file and
 * renamed over path. load validates the whole file against this layer first and leaves the layer unchanged on any
 * failure; create_from_file builds the layer the file describes (device, device_index, n_threads and
 * matmul_precision from `overrides` when it is non-NULL, its other fields ignored). The optimiser state (Adam
 * moments and step count) is its own file, as for models; saving it needs one step taken. After a save and a
 * load of both files, training continues bit for bit as if never interrupted. (Appended in libmoas 0.6.0.) */
MOAS_API moas_status moas_layer_save(const moas_layer *layer, const char *path, const char *user_metadata);
MOAS_API moas_status moas_layer_load(moas_layer *layer, const char *path);
MOAS_API moas_status moas_layer_create_from_file(const char *path, const moas_layer_config *overrides,
                                                 moas_layer **out);
MOAS_API moas_status moas_layer_optimizer_save(const moas_layer *layer, const char *path);
MOAS_API moas_status moas_layer_optimizer_load(moas_layer *layer, const char *path);
MOAS_API moas_status moas_layer_optimizer_steps(const moas_layer *layer, uint64_t *out);

/* Router statistics of the last forward, as moas_router_stats. */
MOAS_API moas_status moas_layer_get_router_stats(const moas_layer *layer, moas_layer_router_stats *out);

/* The last forward's per-token gates [batch * seq_len, *width]: MoAS the router's softmax over its branches, MoH
 * every head's gate (0 where inactive). *width is always written (0 without routing); out may be NULL to ask for
 * it, else out_len must be batch * seq_len * *width. */
MOAS_API moas_status moas_layer_gates(const moas_layer *layer, float *out, size_t out_len, int32_t *width);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOAS_H */
