/* The function table between libmoas.so and libmoas_cuda.so. libmoas never links CUDA: it dlopens libmoas_cuda.so
 * (src/cuda_host/cuda_loader.cpp), looks up the one entry point MOAS_CUDA_BACKEND_SYMBOL and calls it for this table. Plain C
 * so that both sides agree on the layout whatever compiled them. Internal: not installed, not the public ABI; bump
 * MOAS_CUDA_BACKEND_VERSION (and the symbol's suffix) whenever anything below changes.
 *
 * Every tensor pointer is device memory, fp32, row-major; every stride counts elements. The kernel entries enqueue
 * on `stream` (a cudaStream_t; NULL = the default stream), return 0 when the launch succeeded and 1 otherwise, with
 * the reason in last_error() (per calling thread, valid until that thread's next failing call). They do not
 * synchronise: errors of the kernels themselves surface at the caller's next synchronisation. */
#ifndef MOAS_CUDA_BACKEND_H
#define MOAS_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOAS_CUDA_BACKEND_VERSION 7
#define MOAS_CUDA_BACKEND_SYMBOL "moas_cuda_backend_v7"

/* As moas::AttentionDims (src/attention/attention.hpp). */
typedef struct moas_cuda_attention_dims {
  int64_t batch, seq, heads, kv_heads, head_dim;
  int64_t window; /* sliding window w (SPEC §7); 0 = every earlier key */
} moas_cuda_attention_dims;

/* As moas::KeyValues: key (b, j) of kv head g is at k + (b * seq_stride + j - first_key) * k_stride + g * head_dim;
 * values likewise. A sequence holds keys first_key .. first_key + seq_stride - 1 (first_key > 0: a windowed KV
 * cache, forward only). */
typedef struct moas_cuda_key_values {
  const float *k;
  int64_t k_stride;
  const float *v;
  int64_t v_stride;
  int64_t seq_stride;
  int64_t first_key;
} moas_cuda_key_values;

typedef struct moas_cuda_key_value_grads { /* laid out like moas_cuda_key_values, same seq_stride, first_key 0 */
  float *dk;
  int64_t dk_stride;
  float *dv;
  int64_t dv_stride;
} moas_cuda_key_value_grads;

/* The queries of one head, as moas::QueryHead over a RowSet: compact row r (of sequence b when
 * begin[b] <= r < begin[b + 1], in position order) sits at position pos[r]; q, out and lse are compact. */
typedef struct moas_cuda_query_head {
  int64_t head;         /* h in [0, heads) */
  const int32_t *pos;   /* [rows] */
  const int64_t *begin; /* [batch + 1] */
  const float *q;
  int64_t q_stride;
  float *out;
  int64_t out_stride;
  float *lse; /* [rows] */
} moas_cuda_query_head;

typedef struct moas_cuda_query_head_grad { /* compact like its query head */
  const float *dout;
  int64_t dout_stride;
  float *dq;
  int64_t dq_stride;
} moas_cuda_query_head_grad;

/* As moas::Dropout (src/ops/dropout.hpp): drop probability p, and the key of moas::Dropout::at(p, seed, step, layer,
 * site), so a kernel draws the CPU's mask bits for the same element. */
typedef struct moas_cuda_dropout {
  float p;
  uint64_t key;
} moas_cuda_dropout;

/* As moas::AdamWSettings (src/ops/adamw.hpp). */
typedef struct moas_cuda_adamw_settings {
  double lr, beta1, beta2, eps, weight_decay, grad_clip;
} moas_cuda_adamw_settings;

/* Scratch sizes, in elements: norm_backward's partial column sums (dweight and dbias over bands of
 * MOAS_CUDA_NORM_ROW_BAND rows) and gradient_norm's partial sums (over chunks of MOAS_CUDA_GRAD_NORM_CHUNK values). */
#define MOAS_CUDA_NORM_ROW_BAND 256
#define MOAS_CUDA_GRAD_NORM_CHUNK 4096
static inline int64_t moas_cuda_norm_backward_scratch(int64_t N, int64_t C) {
  return 2 * ((N + MOAS_CUDA_NORM_ROW_BAND - 1) / MOAS_CUDA_NORM_ROW_BAND) * C; /* floats */
}
static inline int64_t moas_cuda_gradient_norm_scratch(int64_t n) {
  return (n + MOAS_CUDA_GRAD_NORM_CHUNK - 1) / MOAS_CUDA_GRAD_NORM_CHUNK; /* doubles */
}

/* As moas::MohGateSpec (src/attention/moh_gates.hpp). */
typedef struct moas_cuda_moh_gate_spec {
  int64_t shared, routed, active;
  int32_t reference; /* 1: the public MoH code's gates, 0: the paper's */
} moas_cuda_moh_gate_spec;

typedef struct moas_cuda_backend {
  int32_t version; /* MOAS_CUDA_BACKEND_VERSION of the side that built the table */

  /* The number of CUDA devices; 0 with the reason (cudaGetErrorString of cudaGetDeviceCount, or "no device") written
   * to why[0, why_len) otherwise. Thread-safe. */
  int32_t (*probe)(char *why, size_t why_len);
  const char *(*last_error)(void);
  /* 0 when device `index` can run a model with these shapes, else 1 with the reason in last_error(): this build has
   * code for its architecture, and the attention kernels' shared memory fits its per-block limit (head_dim; with
   * CoPE, cope_max_pos > 0, the keys a row sees: seq, or window + 1). Leaves the current device as it was. */
  int32_t (*check_device)(int32_t index, int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos);

  /* Memory of the calling thread's current device (set_device chooses it). alloc returns NULL (the reason in
   * last_error()) when it cannot, and NULL without an error for 0 bytes; free(NULL) does nothing. copy moves `bytes`
   * between any two of host and device memory (unified addressing) after everything enqueued on `stream`, and
   * returns once they are there. zero sets `bytes` bytes to 0 on `stream`. synchronize waits for `stream` and returns
   * 1, with the reason, when anything enqueued on it failed. */
  int32_t (*set_device)(int32_t index); /* makes device `index` the calling thread's current device */
  void *(*alloc)(size_t bytes);
  void (*free)(void *ptr);
  int32_t (*copy)(void *dst, const void *src, size_t bytes, void *stream);
  int32_t (*zero)(void *dst, size_t bytes, void *stream);
  int32_t (*synchronize)(void *stream);
  /* dst[r * dst_stride + c] = src[r * src_stride + c] for r < rows, c < width, in floats, on `stream` (the KV cache's
   * moves, cuda_kv_cache.cpp); the two regions must not overlap. */
  int32_t (*copy_rows)(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t width,
                       int64_t rows, void *stream);

  /* gemm.hpp's moas::gemm on device matrices: row-major C [M, N] = alpha op(A) op(B) + beta C (trans_a / trans_b:
   * 1 = transposed), leading dimensions in elements; M, N or K of 0 as there (K = 0 gives C = beta C). Through cuBLAS
   * in the calling thread's matmul precision: MOAS_MATMUL_FP32 (moas.h; the default) keeps every product in fp32,
   * within the CPU backend's tolerance; TF32 / BF16 let tensor cores round the inputs, accumulating in fp32. */
  int32_t (*gemm)(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, void *stream);
  /* Sets the calling thread's matmul precision (a MOAS_MATMUL_* value) for its later gemm calls; per thread, as the
   * current device is, so a model sets it with its device at every entry. */
  int32_t (*set_matmul_precision)(int32_t precision);

  /* The model's elementwise steps. add: out[i] = a[i] + b[i] for i < n (out may alias a or b). fill_rows: out[r *
   * stride + c] = values[c] for r < N, c < width (a linear layer's bias before its product adds onto it).
   * column_sum_accumulate: sums[c] += (the sum over r < N of x[r * stride + c], taken in row order from 0), as
   * parallel.hpp's column_sum_accumulate does, so the bits equal the CPU's. */
  int32_t (*add)(float *out, const float *a, const float *b, int64_t n, void *stream);
  int32_t (*fill_rows)(float *out, int64_t stride, const float *values, int64_t N, int64_t width, void *stream);
  int32_t (*column_sum_accumulate)(float *sums, const float *x, int64_t stride, int64_t N, int64_t width,
                                   void *stream);

  /* attention_forward / attention_backward: src/attention/attention.hpp's semantics, dropout on the probabilities included
   * (NULL or p = 0: none). `heads` and `grads` are device arrays of n_heads descriptors (the model keeps them
   * resident; their rows may change between calls). Every row must see only held keys (src/attention/attention.cpp checks this
   * on the host; here it is the caller's to keep). Backward needs kv->first_key == 0 and overwrites every listed
   * head's dq and, for each kv head some listed head reads, dk/dv of every key of every sequence (summed over the
   * group's listed heads in list order: deterministic, no atomics). */
  int32_t (*attention_forward)(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                               const moas_cuda_query_head *heads, int64_t n_heads, const moas_cuda_dropout *dropout,
                               void *stream);
  int32_t (*attention_backward)(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                                const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads,
                                int64_t n_heads, const moas_cuda_key_value_grads *dkv,
                                const moas_cuda_dropout *dropout, void *stream);

  /* Router decisions per token n < N: probs[n, :width] = softmax(logits[n, :width]) (probs may be logits); then,
   * where not NULL, choice[n] = argmax (ties to the lower index) and selected[n * width + i] = 1 for the top k (k in
   * [1, width]; ties to the lower index), else 0. */
  int32_t (*router_softmax)(float *probs, int64_t probs_stride, const float *logits, int64_t logits_stride, int64_t N,
                            int64_t width, int32_t *choice, uint8_t *selected, int64_t k, void *stream);

  /* MoH gates of N tokens (src/attention/moh_gates.hpp): r, m [N, routed]; s [N, shared] or NULL (h_s <= 1); a [N, 2] or
   * NULL (unless both head kinds exist); gate [N, gate_stride] gets columns [0, shared + routed). */
  int32_t (*moh_gates)(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s,
                       const float *a, float *gate, int64_t gate_stride, int64_t N, void *stream);
  /* Overwrites dr [N, routed], ds [N, shared] (when s is not NULL) and da [N, 2] (when a is not NULL). */
  int32_t (*moh_gates_backward)(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s,
                                const float *a, const float *dgate, int64_t dgate_stride, float *dr, float *ds,
                                float *da, int64_t N, void *stream);

  /* A RowSet on the device (src/ops/rows.hpp's select): the tokens n = b * seq + t with flags[n * flag_stride] != 0,
   * in order: row [<= batch * seq], pos (= past + t) and begin [batch + 1]; begin[batch] is the count. */
  int32_t (*select_rows)(int64_t *row, int32_t *pos, int64_t *begin, const uint8_t *flags, int64_t flag_stride,
                         int64_t batch, int64_t seq, int64_t past, void *stream);
  /* out[r, :width] = src[row[r], :width] for r < *count (a device value, e.g. begin + batch; capacity >= it). */
  int32_t (*gather_rows)(float *out, int64_t out_stride, const float *src, int64_t src_stride, const int64_t *row,
                         const int64_t *count, int64_t capacity, int64_t width, void *stream);
  /* dst[row[r], :width] += scale[r] * src[r, :width] (scale NULL: 1) for r < *count; rows are distinct. */
  int32_t (*scatter_add_rows)(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, const int64_t *row,
                              const float *scale, const int64_t *count, int64_t capacity, int64_t width, void *stream);

  /* The model's other ops, each the CPU function of the same name in src/ (same arguments, outputs first, shapes as
   * there; every reduction in a fixed order, no float atomics, so results are deterministic). */
  /* embedding.hpp: out [B*T, C] = wte[tokens] + wpe[past + t] (wpe NULL: no positions). */
  int32_t (*embedding_forward)(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                               int64_t T, int64_t C, int64_t past, void *stream);
  /* dwte [V, C] += per token row, dwpe [T, C] += per position (NULL: none), each in token order; tokens in [0, V). */
  int32_t (*embedding_backward)(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B,
                                int64_t T, int64_t C, int64_t V, void *stream);
  /* norm.hpp (rms != 0: RMSNorm): out [N, C], mean and rstd [N]; bias may be NULL. */
  int32_t (*norm_forward)(int32_t rms, float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, int64_t N, int64_t C, void *stream);
  /* dinp, dweight, dbias (may be NULL) accumulate (+=); scratch holds moas_cuda_norm_backward_scratch(N, C) floats. */
  int32_t (*norm_backward)(int32_t rms, float *dinp, float *dweight, float *dbias, float *scratch, const float *dout,
                           const float *inp, const float *weight, const float *mean, const float *rstd, int64_t N,
                           int64_t C, void *stream);
  /* mlp.hpp: GELU (exact erf) over n values; backward overwrites dinp (may be dout). */
  int32_t (*gelu_forward)(float *out, const float *inp, int64_t n, void *stream);
  int32_t (*gelu_backward)(float *dinp, const float *dout, const float *inp, int64_t n, void *stream);
  /* mlp.hpp: pre [N, 2h] = [c_fc | c_up], out [N, h] = SiLU(c_fc) * c_up; backward overwrites dpre [N, 2h]. */
  int32_t (*swiglu_forward)(float *out, const float *pre, int64_t N, int64_t h, void *stream);
  int32_t (*swiglu_backward)(float *dpre, const float *dout, const float *pre, int64_t N, int64_t h, void *stream);
  /* loss.hpp: lse [N]; with targets (not NULL; -1 ignores a row) also *loss, the mean over the counted rows (0 when
   * none), and *n_counted, their number: device values, written in a fixed order of summation. */
  int32_t (*cross_entropy_forward)(float *lse, double *loss, int64_t *n_counted, const float *logits,
                                   const int32_t *targets, int64_t N, int64_t V, void *stream);
  /* dlogits [N, V] (overwritten) = (softmax - onehot) * scale, 0 on ignored rows. */
  int32_t (*cross_entropy_backward)(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                    int64_t N, int64_t V, float scale, void *stream);
  /* adamw.hpp: *norm = the L2 norm of grads [n] (a device double); scratch holds
   * moas_cuda_gradient_norm_scratch(n) doubles. */
  int32_t (*gradient_norm)(double *norm, double *scratch, const float *grads, int64_t n, void *stream);
  /* One AdamW step, number `step` (1 for the first), over the flat buffers [n] of the parameters, their gradients and
   * moments, clipped by grad_norm (the pre-clip norm, a host value the caller has checked is finite). The tensors are
   * n_segments spans: segment s covers [segment_begin[s], segment_begin[s + 1]) (device arrays; segment_begin[0] = 0,
   * segment_begin[n_segments] = n) and decays when segment_decay[s] != 0 (rank >= 2). */
  int32_t (*adamw_step)(const moas_cuda_adamw_settings *settings, uint64_t step, double grad_norm, float *params,
                        const float *grads, float *exp_avg, float *exp_avg_sq, int64_t n, const int64_t *segment_begin,
                        const uint8_t *segment_decay, int64_t n_segments, void *stream);
  /* rope.hpp: rotates n_heads head vectors of head_dim 2 * half from column col0 of rows [0, m) of buf (row stride
   * `stride`), row r at position pos[r]; cos, sin [positions, half] as moas::RopeTable builds them; direction +1
   * forward, -1 backward (on the gradient). */
  int32_t (*rope_rotate)(float *buf, int64_t stride, int64_t col0, int64_t n_heads, int64_t m, const int32_t *pos,
                         const float *cos, const float *sin, int64_t half, int32_t direction, void *stream);
  /* dropout.hpp: x [m, width] *= keep / (1 - p) in place, element r * width + c (dropout_apply), or, with row not
   * NULL, row[r] * width + c (dropout_apply_rows); the same call on a gradient is the backward. */
  int32_t (*dropout_apply)(float *x, int64_t m, int64_t width, const int64_t *row, const moas_cuda_dropout *dropout,
                           void *stream);
  /* cope_attention.hpp: attention_forward / attention_backward with CoPE's logits; e [heads, max_pos, head_dim]. The
   * backward also accumulates de [heads, max_pos, head_dim] (+=) for every listed head, summed over sequences in
   * order through scratch [batch, heads, max_pos, head_dim]. */
  int32_t (*cope_attention_forward)(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                                    const moas_cuda_query_head *heads, int64_t n_heads, const float *e,
                                    int64_t max_pos, const moas_cuda_dropout *dropout, void *stream);
  int32_t (*cope_attention_backward)(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                                     const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads,
                                     int64_t n_heads, const moas_cuda_key_value_grads *dkv, const float *e,
                                     int64_t max_pos, float *de, float *scratch, const moas_cuda_dropout *dropout,
                                     void *stream);

  /* MoAS on the device. */
  /* moas.cpp's mixing backward for branch `branch` of n_branches (y = sum_k mix[n, k] z_k): for each compact row
   * r < *count (a device value, capacity >= it) of token row[r], with slot = row[r] * n_branches + branch,
   * d_mix[slot] = sum_c dz[r, c] z[r, c] (summed over c in order, moas_mix_row_backward), then dz[r, :] *= mix[slot].
   * dz, z [capacity, width]; d_mix, mix [N, n_branches]; other entries of d_mix are left as they are. */
  int32_t (*moas_mix_backward)(float *d_mix, float *dz, const float *z, const float *mix, const int64_t *row,
                               const int64_t *count, int64_t capacity, int64_t width, int64_t n_branches,
                               int64_t branch, void *stream);

  /* MoH on the device. */
  /* moh_gates.hpp's moh_gate_head for every (token n, head h) pair: gated [N, heads * head_dim] = gate[n, h] times
   * head h's head_dim columns of att [N, heads * head_dim]; gate [N, heads]. moh_gate_heads_backward overwrites
   * datt = gate times dgated and dgate [N, heads] = <dgated, att> per pair (moh_gate_head_backward: column order). */
  int32_t (*moh_gate_heads)(float *gated, const float *gate, const float *att, int64_t N, int64_t heads,
                            int64_t head_dim, void *stream);
  int32_t (*moh_gate_heads_backward)(float *datt, float *dgate, const float *dgated, const float *gate,
                                     const float *att, int64_t N, int64_t heads, int64_t head_dim, void *stream);
  /* softmax.hpp's softmax_rows_backward: dlogits[n, :width] (row stride dlogits_stride, overwritten) from the router
   * softmax p [N, width] and its gradient dp [N, width]. */
  int32_t (*router_softmax_backward)(float *dlogits, int64_t dlogits_stride, const float *dp, const float *p,
                                     int64_t N, int64_t width, void *stream);
} moas_cuda_backend;

/* The type of MOAS_CUDA_BACKEND_SYMBOL: returns a table that lives as long as the library stays loaded. */
typedef const moas_cuda_backend *(*moas_cuda_backend_entry)(void);

#ifdef __cplusplus
}
#endif

#endif /* MOAS_CUDA_BACKEND_H */
