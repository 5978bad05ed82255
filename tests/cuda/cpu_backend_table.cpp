#include "cpu_backend_table.hpp"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "attention/cope_attention.hpp"
#include "attention/moas_mix.hpp"
#include "attention/moh_gates.hpp"
#include "attention/routing.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "ops/adamw.hpp"
#include "ops/dropout.hpp"
#include "ops/embedding.hpp"
#include "ops/loss.hpp"
#include "ops/mlp.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"
#include "ops/rows.hpp"
#include "ops/softmax.hpp"

namespace {

using namespace moas;

thread_local std::string error_message;

// Every entry returns 0, or 1 with the CPU function's exception message.
template <class F>
int32_t guarded(F &&f) {
  try {
    f();
    return 0;
  } catch (const std::exception &e) {
    error_message = e.what();
    return 1;
  }
}

Dropout dropout_of(const moas_cuda_dropout *d) { return d ? Dropout{d->p, d->key} : Dropout{}; }

AttentionDims dims_of(const moas_cuda_attention_dims *d) {
  return {d->batch, d->seq, d->heads, d->kv_heads, d->head_dim, d->window};
}

KeyValues<float> kv_of(const moas_cuda_key_values *kv) {
  return {kv->k, kv->k_stride, kv->v, kv->v_stride, kv->seq_stride, kv->first_key};
}

// The descriptors' rows as RowSets (rows are compact: the kernels read positions and sequence bounds, not token
// indices) and the QueryHeads over them.
struct Heads {
  std::vector<RowSet> rows;
  std::vector<QueryHead<float>> heads;
  Heads(const moas_cuda_attention_dims *dims, const moas_cuda_query_head *in, int64_t n) : rows((size_t)n) {
    for (int64_t i = 0; i < n; i++) {
      const moas_cuda_query_head &h = in[i];
      RowSet &rs = rows[(size_t)i];
      rs.begin.assign(h.begin, h.begin + dims->batch + 1);
      const int64_t m = rs.begin.back();
      rs.pos.assign(h.pos, h.pos + m);
      for (int64_t r = 0; r < m; r++) rs.row.push_back(r);
      rs.all = m == dims->batch * dims->seq;
      heads.push_back({h.head, &rs, h.q, h.q_stride, h.out, h.out_stride, h.lse});
    }
  }
};

std::vector<QueryHeadGrad<float>> grads_of(const moas_cuda_query_head_grad *in, int64_t n) {
  std::vector<QueryHeadGrad<float>> grads;
  for (int64_t i = 0; i < n; i++) grads.push_back({in[i].dout, in[i].dout_stride, in[i].dq, in[i].dq_stride});
  return grads;
}

int32_t probe(char *, size_t) { return 1; }
const char *last_error() { return error_message.c_str(); }
int32_t set_device(int32_t index) {
  return guarded([&] { MOAS_REQUIRE(index == 0, MOAS_ERR_DEVICE_UNAVAILABLE, "the CPU table has one device"); });
}
// Host memory has no per-block limit: every shape fits the one device.
int32_t check_device(int32_t index, int64_t, int64_t, int64_t, int64_t) { return set_device(index); }
void *alloc(size_t bytes) { return std::malloc(bytes > 0 ? bytes : 1); }
void release(void *p) { std::free(p); }
int32_t copy(void *dst, const void *src, size_t bytes, void *) {
  std::memmove(dst, src, bytes);
  return 0;
}
int32_t zero(void *dst, size_t bytes, void *) {
  std::memset(dst, 0, bytes);
  return 0;
}
int32_t copy_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t width, int64_t rows,
                  void *) {
  for (int64_t r = 0; r < rows; r++)
    std::memcpy(dst + r * dst_stride, src + r * src_stride, (size_t)width * sizeof(float));
  return 0;
}
int32_t synchronize(void *) { return 0; }

thread_local int32_t matmul_precision = MOAS_MATMUL_FP32;

// A tensor core's view of a row-major fp32 matrix [rows, cols] of stride ld: each element rounded to `kept` mantissa
// bits (the gaps between rows too, which the product never reads).
std::vector<float> rounded(const float *m, int64_t rows, int64_t cols, int64_t ld, int kept) {
  std::vector<float> out(m, m + (rows - 1) * ld + cols);
  for (float &x : out) x = moas_test::round_mantissa(x, kept);
  return out;
}

// TF32 and BF16 as the GPU's tensor cores compute them, for the tests of those modes: the inputs rounded (to
// bfloat16 for BF16, the coarser of cuBLAS's two choices there), the products and sums in fp32.
int32_t gemm_entry(int32_t ta, int32_t tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc, void *) {
  return guarded([&] {
    const Trans trans_a = ta ? Trans::Yes : Trans::No, trans_b = tb ? Trans::Yes : Trans::No;
    if (matmul_precision == MOAS_MATMUL_FP32 || M == 0 || N == 0 || K == 0)
      return gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const int kept = matmul_precision == MOAS_MATMUL_TF32 ? 10 : 7;
    const std::vector<float> a = rounded(A, ta ? K : M, ta ? M : K, lda, kept);
    const std::vector<float> b = rounded(B, tb ? N : K, tb ? K : N, ldb, kept);
    gemm(trans_a, trans_b, M, N, K, alpha, a.data(), lda, b.data(), ldb, beta, C, ldc);
  });
}
int32_t set_matmul_precision(int32_t precision) {
  return guarded([&] {
    MOAS_REQUIRE(precision >= MOAS_MATMUL_FP32 && precision <= MOAS_MATMUL_BF16, MOAS_ERR_INTERNAL,
            "set_matmul_precision: not a MOAS_MATMUL_* value");
    matmul_precision = precision;
  });
}

int32_t add(float *out, const float *a, const float *b, int64_t n, void *) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
  return 0;
}
int32_t fill_rows(float *out, int64_t stride, const float *values, int64_t N, int64_t width, void *) {
  for (int64_t r = 0; r < N; r++) std::memcpy(out + r * stride, values, (size_t)width * sizeof(float));
  return 0;
}
int32_t column_sums(float *sums, const float *x, int64_t stride, int64_t N, int64_t width, void *) {
  return guarded([&] {
    MOAS_REQUIRE(stride == width, MOAS_ERR_INTERNAL, "the CPU column sums need stride == width");
    column_sum_accumulate(sums, x, N, width);
  });
}

int32_t attention_fwd(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                      const moas_cuda_query_head *heads, int64_t n_heads, const moas_cuda_dropout *dropout, void *) {
  return guarded([&] {
    const Heads h(dims, heads, n_heads);
    attention_forward(dims_of(dims), kv_of(kv), h.heads, dropout_of(dropout));
  });
}
int32_t attention_bwd(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                      const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads, int64_t n_heads,
                      const moas_cuda_key_value_grads *dkv, const moas_cuda_dropout *dropout, void *) {
  return guarded([&] {
    const Heads h(dims, heads, n_heads);
    attention_backward(dims_of(dims), kv_of(kv), h.heads, grads_of(grads, n_heads),
                       KeyValueGrads<float>{dkv->dk, dkv->dk_stride, dkv->dv, dkv->dv_stride}, dropout_of(dropout));
  });
}
int32_t cope_fwd(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                 const moas_cuda_query_head *heads, int64_t n_heads, const float *e, int64_t max_pos,
                 const moas_cuda_dropout *dropout, void *) {
  return guarded([&] {
    const Heads h(dims, heads, n_heads);
    cope_attention_forward(dims_of(dims), kv_of(kv), h.heads, CopeEmbeddings<float>{e, max_pos}, dropout_of(dropout));
  });
}
int32_t cope_bwd(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                 const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads, int64_t n_heads,
                 const moas_cuda_key_value_grads *dkv, const float *e, int64_t max_pos, float *de, float *,
                 const moas_cuda_dropout *dropout, void *) {
  return guarded([&] {
    const Heads h(dims, heads, n_heads);
    cope_attention_backward(dims_of(dims), kv_of(kv), h.heads, grads_of(grads, n_heads),
                            KeyValueGrads<float>{dkv->dk, dkv->dk_stride, dkv->dv, dkv->dv_stride},
                            CopeEmbeddings<float>{e, max_pos}, de, dropout_of(dropout));
  });
}

int32_t router(float *probs, int64_t probs_stride, const float *logits, int64_t logits_stride, int64_t N,
               int64_t width, int32_t *choice, uint8_t *selected, int64_t k, void *) {
  softmax_rows(probs, probs_stride, logits, logits_stride, N, width);
  for (int64_t n = 0; n < N; n++) {
    if (choice) choice[n] = (int32_t)argmax_lower(probs + n * probs_stride, width);
    if (selected) top_k_lower(probs + n * probs_stride, width, k, selected + n * width);
  }
  return 0;
}
MohGateSpec spec_of(const moas_cuda_moh_gate_spec *s) { return {s->shared, s->routed, s->active, s->reference != 0}; }
int32_t gates(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s, const float *a,
              float *gate, int64_t gate_stride, int64_t N, void *) {
  const MohGateSpec g = spec_of(spec);
  const int64_t E = g.routed, S = g.shared;
  for (int64_t n = 0; n < N; n++)
    moh_gates_token(g, r + n * E, m + n * E, s ? s + n * S : nullptr, a ? a + 2 * n : nullptr, gate + n * gate_stride);
  return 0;
}
int32_t gates_bwd(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s,
                  const float *a, const float *dgate, int64_t dgate_stride, float *dr, float *ds, float *da, int64_t N,
                  void *) {
  const MohGateSpec g = spec_of(spec);
  const int64_t E = g.routed, S = g.shared;
  for (int64_t n = 0; n < N; n++)
    moh_gates_token_backward(g, r + n * E, m + n * E, s ? s + n * S : nullptr, a ? a + 2 * n : nullptr,
                             dgate + n * dgate_stride, dr + n * E, s ? ds + n * S : nullptr, a ? da + 2 * n : nullptr);
  return 0;
}
int32_t gate_heads(float *gated, const float *gate, const float *att, int64_t N, int64_t heads, int64_t head_dim,
                   void *) {
  for (int64_t pair = 0; pair < N * heads; pair++)
    moh_gate_head(gated + pair * head_dim, gate[pair], att + pair * head_dim, head_dim);
  return 0;
}
int32_t gate_heads_bwd(float *datt, float *dgate, const float *dgated, const float *gate, const float *att, int64_t N,
                       int64_t heads, int64_t head_dim, void *) {
  for (int64_t pair = 0; pair < N * heads; pair++)
    dgate[pair] = moh_gate_head_backward(datt + pair * head_dim, gate[pair], dgated + pair * head_dim,
                                         att + pair * head_dim, head_dim);
  return 0;
}
int32_t router_bwd(float *dlogits, int64_t dlogits_stride, const float *dp, const float *p, int64_t N, int64_t width,
                   void *) {
  softmax_rows_backward(dlogits, dlogits_stride, dp, p, N, width);
  return 0;
}
int32_t select(int64_t *row, int32_t *pos, int64_t *begin, const uint8_t *flags, int64_t flag_stride, int64_t batch,
               int64_t seq, int64_t past, void *) {
  RowSet rows;
  rows.select(batch, seq, [&](int64_t n) { return flags[n * flag_stride] != 0; }, past);
  std::copy(rows.row.begin(), rows.row.end(), row);
  std::copy(rows.pos.begin(), rows.pos.end(), pos);
  std::copy(rows.begin.begin(), rows.begin.end(), begin);
  return 0;
}
int32_t gather(float *out, int64_t out_stride, const float *src, int64_t src_stride, const int64_t *row,
               const int64_t *count, int64_t, int64_t width, void *) {
  gather_rows(out, out_stride, src, src_stride, std::vector<int64_t>(row, row + *count), width);
  return 0;
}
int32_t scatter(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, const int64_t *row,
                const float *scale, const int64_t *count, int64_t, int64_t width, void *) {
  scatter_add_rows(dst, dst_stride, src, src_stride, std::vector<int64_t>(row, row + *count), width, scale);
  return 0;
}

int32_t embedding_fwd(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B, int64_t T,
                      int64_t C, int64_t past, void *) {
  embedding_forward(out, tokens, wte, wpe, B, T, C, past);
  return 0;
}
int32_t embedding_bwd(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B, int64_t T,
                      int64_t C, int64_t, void *) {
  embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
  return 0;
}
int32_t norm_fwd(int32_t rms, float *out, float *mean, float *rstd, const float *inp, const float *weight,
                 const float *bias, int64_t N, int64_t C, void *) {
  norm_forward(rms != 0, out, mean, rstd, inp, weight, bias, N, C);
  return 0;
}
int32_t norm_bwd(int32_t rms, float *dinp, float *dweight, float *dbias, float *, const float *dout, const float *inp,
                 const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C, void *) {
  std::vector<float> scratch((size_t)(N * C));  // the CPU function's own scratch layout
  norm_backward(rms != 0, dinp, dweight, dbias, scratch.data(), dout, inp, weight, mean, rstd, N, C);
  return 0;
}
int32_t gelu_fwd(float *out, const float *inp, int64_t n, void *) {
  gelu_forward(out, inp, n);
  return 0;
}
int32_t gelu_bwd(float *dinp, const float *dout, const float *inp, int64_t n, void *) {
  gelu_backward(dinp, dout, inp, n);
  return 0;
}
int32_t swiglu_fwd(float *out, const float *pre, int64_t N, int64_t h, void *) {
  swiglu_forward(out, pre, N, h);
  return 0;
}
int32_t swiglu_bwd(float *dpre, const float *dout, const float *pre, int64_t N, int64_t h, void *) {
  swiglu_backward(dpre, dout, pre, N, h);
  return 0;
}
int32_t ce_fwd(float *lse, double *loss, int64_t *n_counted, const float *logits, const int32_t *targets, int64_t N,
               int64_t V, void *) {
  int64_t counted = 0;
  const double mean = cross_entropy_forward(lse, logits, targets, N, V, &counted);
  if (targets) {
    *loss = mean;
    *n_counted = counted;
  }
  return 0;
}
int32_t ce_bwd(float *dlogits, const float *logits, const float *lse, const int32_t *targets, int64_t N, int64_t V,
               float scale, void *) {
  cross_entropy_backward(dlogits, logits, lse, targets, N, V, scale);
  return 0;
}
int32_t grad_norm(double *norm, double *, const float *grads, int64_t n, void *) {
  *norm = gradient_norm(std::vector<float>(grads, grads + n));
  return 0;
}
int32_t adamw(const moas_cuda_adamw_settings *s, uint64_t step, double norm, float *params, const float *grads,
              float *exp_avg, float *exp_avg_sq, int64_t, const int64_t *segment_begin, const uint8_t *segment_decay,
              int64_t n_segments, void *) {
  const AdamWSettings settings{s->lr, s->beta1, s->beta2, s->eps, s->weight_decay, s->grad_clip};
  const AdamWFactors<float> f = adamw_factors<float>(settings, step, norm);
  for (int64_t seg = 0; seg < n_segments; seg++)
    adamw_update_span(params, exp_avg, exp_avg_sq, grads, segment_begin[seg], segment_begin[seg + 1], f,
                      segment_decay[seg] != 0);
  return 0;
}
int32_t rope(float *buf, int64_t stride, int64_t col0, int64_t n_heads, int64_t m, const int32_t *pos,
             const float *cos, const float *sin, int64_t half, int32_t direction, void *) {
  int32_t last = 0;
  for (int64_t r = 0; r < m; r++) last = pos[r] > last ? pos[r] : last;
  RopeTable<float> table;
  table.half = half;
  table.cos.assign(cos, cos + (last + 1) * half);
  table.sin.assign(sin, sin + (last + 1) * half);
  rope_rotate(buf, stride, col0, n_heads, m, pos, table, direction);
  return 0;
}
int32_t dropout(float *x, int64_t m, int64_t width, const int64_t *row, const moas_cuda_dropout *d, void *) {
  if (row) dropout_apply_rows(x, m, width, row, dropout_of(d));
  else dropout_apply(x, m * width, dropout_of(d));
  return 0;
}
// moas.cpp's per-row loop of the mixing backward.
int32_t mix_bwd(float *d_mix, float *dz, const float *z, const float *mix, const int64_t *row, const int64_t *count,
                int64_t, int64_t width, int64_t n_branches, int64_t branch, void *) {
  for (int64_t r = 0; r < *count; r++) {
    const int64_t slot = row[r] * n_branches + branch;
    d_mix[slot] = moas_mix_row_backward(dz + r * width, z + r * width, mix[slot], width);
  }
  return 0;
}

moas_cuda_backend make_table() {
  moas_cuda_backend t{};
  t.version = MOAS_CUDA_BACKEND_VERSION;
  t.probe = probe;
  t.last_error = last_error;
  t.set_device = set_device;
  t.check_device = check_device;
  t.alloc = alloc;
  t.free = release;
  t.copy = copy;
  t.zero = zero;
  t.copy_rows = copy_rows;
  t.synchronize = synchronize;
  t.gemm = gemm_entry;
  t.set_matmul_precision = set_matmul_precision;
  t.add = add;
  t.fill_rows = fill_rows;
  t.column_sum_accumulate = column_sums;
  t.attention_forward = attention_fwd;
  t.router_softmax = router;
  t.moh_gates = gates;
  t.moh_gates_backward = gates_bwd;
  t.select_rows = select;
  t.gather_rows = gather;
  t.scatter_add_rows = scatter;
  t.attention_backward = attention_bwd;
  t.embedding_forward = embedding_fwd;
  t.embedding_backward = embedding_bwd;
  t.norm_forward = norm_fwd;
  t.norm_backward = norm_bwd;
  t.gelu_forward = gelu_fwd;
  t.gelu_backward = gelu_bwd;
  t.swiglu_forward = swiglu_fwd;
  t.swiglu_backward = swiglu_bwd;
  t.cross_entropy_forward = ce_fwd;
  t.cross_entropy_backward = ce_bwd;
  t.gradient_norm = grad_norm;
  t.adamw_step = adamw;
  t.rope_rotate = rope;
  t.dropout_apply = dropout;
  t.cope_attention_forward = cope_fwd;
  t.cope_attention_backward = cope_bwd;
  // MoAS on the device.
  t.moas_mix_backward = mix_bwd;
  // MoH on the device.
  t.moh_gate_heads = gate_heads;
  t.moh_gate_heads_backward = gate_heads_bwd;
  t.router_softmax_backward = router_bwd;
  return t;
}

}  // namespace

namespace moas_test {

const moas_cuda_backend *cpu_backend_table() {
  static const moas_cuda_backend table = make_table();
  return &table;
}

}  // namespace moas_test

#ifdef MOAS_CPU_TABLE_EXPORT
static_assert(MOAS_CUDA_BACKEND_VERSION == 7, "export the table under the new version's symbol");
extern "C" __attribute__((visibility("default"))) const moas_cuda_backend *moas_cuda_backend_v7(void) {
  return moas_test::cpu_backend_table();
}
#endif
