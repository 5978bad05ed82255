// libmoas_cuda.so's kernels on a CUDA device against the CPU functions of src/, to SPEC §9's CPU-vs-CUDA tolerance
// (1e-4 of the largest reference value, per tensor) with routing decisions and dropout masks compared exactly:
// attention and CoPE attention forward and backward, with and without dropout (the cases of attention_cases.hpp:
// dense, routed subsets, GQA 6/2, MQA, windows, T not a multiple of the tile), the router softmax with argmax / top-k
// and its backward, MoH gates forward and backward (per token, and on the heads' outputs), the row kernels, and the
// model's other ops (embedding, norms, GELU / SwiGLU, cross-entropy, gradient norm and AdamW, RoPE, dropout). Also
// the table's memory entries, its cuBLAS GEMM (against moas::gemm to 1e-5: both in full fp32) and its elementwise
// steps (the same bits as the CPU).
// Without a device each such test prints kSkipped, which ctest registers as SKIPPED (Catch2 2.13 has no skip).
// The argument checks of the table run everywhere: they fail before touching CUDA.
#include <cuda_runtime.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "attention/attention_cases.hpp"
#include "attention/moas_mix.hpp"
#include "attention/moh_gates.hpp"
#include "attention/routing.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "cuda_host/cuda_backend.h"
#include "cuda_inputs.hpp"
#include "moas.h"
#include "ops/adamw.hpp"
#include "ops/dropout.hpp"
#include "ops/embedding.hpp"
#include "ops/loss.hpp"
#include "ops/mlp.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"
#include "ops/rows.hpp"
#include "ops/softmax.hpp"

extern "C" const moas_cuda_backend *moas_cuda_backend_v7(void);

namespace {

using cuda_test::require_close;
using cuda_test::require_same_bits;
using cuda_test::tokens_below;
using cuda_test::uniform;

constexpr const char *kSkipped = "MOAS_CUDA_SKIPPED";  // tests/CMakeLists.txt: SKIP_REGULAR_EXPRESSION
constexpr double kTol = 1e-4;

const moas_cuda_backend &backend() { return *moas_cuda_backend_v7(); }

// True when a device can run the kernels; otherwise prints the skip marker with CUDA's reason.
bool have_device() {
  char why[256] = "";
  if (backend().probe(why, sizeof why) > 0) return true;
  std::cout << kSkipped << ": no CUDA device (" << why << ")\n";
  return false;
}

#define CUDA_REQUIRE(call)                         \
  do {                                             \
    const cudaError_t e_ = (call);                 \
    INFO(#call << ": " << cudaGetErrorString(e_)); \
    REQUIRE(e_ == cudaSuccess);                    \
  } while (0)

#define BACKEND_REQUIRE(call)                      \
  do {                                             \
    const int32_t s_ = (call);                     \
    INFO(#call << ": " << backend().last_error()); \
    REQUIRE(s_ == 0);                              \
  } while (0)

// A device copy of a host vector, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T> &host) : n_(host.size()) {
    CUDA_REQUIRE(cudaMalloc(&ptr_, bytes() > 0 ? bytes() : 1));
    if (n_ > 0) CUDA_REQUIRE(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  ~DeviceArray() { cudaFree(ptr_); }
  T *get() const { return ptr_; }
  std::vector<T> download() const {
    CUDA_REQUIRE(cudaDeviceSynchronize());
    std::vector<T> host(n_);
    if (n_ > 0) CUDA_REQUIRE(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t bytes() const { return n_ * sizeof(T); }
  T *ptr_ = nullptr;
  size_t n_;
};

// A device output's initial contents: NaN, so a value the kernel does not write fails the comparison.
std::vector<float> unwritten(size_t n) { return std::vector<float>(n, std::nanf("")); }

// Router logits whose top entries are at least 0.3 apart, so no decision can flip between backends.
std::vector<float> separated_logits(int64_t N, int64_t width, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> noise(-0.1f, 0.1f);
  std::vector<float> logits((size_t)(N * width));
  std::vector<int> order((size_t)width);
  for (int64_t n = 0; n < N; ++n) {
    for (int i = 0; i < (int)width; ++i) order[(size_t)i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t i = 0; i < width; ++i) logits[(size_t)(n * width + i)] = 0.5f * (float)order[(size_t)i] + noise(rng);
  }
  return logits;
}

}  // namespace

TEST_CASE("CUDA backend table: version, probe and argument checks", "[cuda]") {
  REQUIRE(backend().version == MOAS_CUDA_BACKEND_VERSION);
  char why[256] = "";
  const int32_t devices = backend().probe(why, sizeof why);
  INFO(why);
  REQUIRE(devices >= 0);
  if (devices == 0) REQUIRE(std::strlen(why) > 0);
  const moas_cuda_attention_dims dims{1, 8, 6, 4, 8, 0};  // 4 kv heads do not divide 6 heads
  const moas_cuda_key_values kv{nullptr, 0, nullptr, 0, 8, 0};
  REQUIRE(backend().attention_forward(&dims, &kv, nullptr, 0, nullptr, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("multiple of kv_heads"));
  REQUIRE(backend().cope_attention_forward(&dims, &kv, nullptr, 0, nullptr, 4, nullptr, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("multiple of kv_heads"));
  REQUIRE(backend().router_softmax(nullptr, 3, nullptr, 3, 4, 3, nullptr, nullptr, 0, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("null argument"));
  REQUIRE(backend().norm_forward(0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 0, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("C >= 1"));
  const moas_cuda_dropout certain{1.0f, 0};
  REQUIRE(backend().dropout_apply(nullptr, 2, 2, nullptr, &certain, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("p must be in [0, 1)"));
  const moas_cuda_adamw_settings settings{1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0};
  REQUIRE(backend().adamw_step(&settings, 0, 1.0, nullptr, nullptr, nullptr, nullptr, 4, nullptr, nullptr, 1,
                               nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("step >= 1"));

  REQUIRE(backend().set_device(-1) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("index must be >= 0"));
  REQUIRE(backend().alloc(0) == nullptr);
  REQUIRE(backend().copy(nullptr, nullptr, 4, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("null argument"));
  float host[64] = {};  // the checks fail before reading it
  REQUIRE(backend().gemm(0, 0, 0, 5, 3, 1.0f, nullptr, 3, nullptr, 5, 0.0f, nullptr, 5, nullptr) == 0);  // M = 0
  REQUIRE(backend().gemm(0, 0, 4, 5, 3, 1.0f, host, 3, host, 5, 0.0f, host, 4, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("ldc is 4"));
  REQUIRE(backend().gemm(1, 0, 4, 5, 3, 1.0f, host, 3, host, 5, 0.0f, host, 5, nullptr) == 1);  // A^T: lda >= M
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("lda is 3"));
  REQUIRE(backend().gemm(0, 1, 4, 5, 3, 1.0f, host, 3, host, 2, 0.0f, host, 5, nullptr) == 1);  // B^T: ldb >= K
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("ldb is 2"));
  const int64_t too_many = (int64_t)1 << 31;
  REQUIRE(backend().gemm(0, 0, too_many, 1, 1, 1.0f, host, 1, host, 1, 0.0f, host, 1, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("exceeds cuBLAS's int"));
  REQUIRE(backend().add(nullptr, nullptr, nullptr, -1, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("n must be >= 0"));
  REQUIRE(backend().fill_rows(host, 3, host, 2, 4, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("stride 3 is below width 4"));
  REQUIRE(backend().column_sum_accumulate(nullptr, host, 3, 2, 3, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("null argument"));
}

namespace {

// Every attention case on the device against the CPU kernel, with and without dropout, then a second backward for
// determinism.
void check_device_attention(double forward_tol, double backward_tol) {
  for (const float p : {0.0f, 0.3f})
    for (const cuda_test::CaseSpec &spec : cuda_test::attention_cases()) {
      DYNAMIC_SECTION(spec.name << (p > 0 ? ", dropout 0.3" : "")) {
        const cuda_test::AttentionCase c(spec, 23, p);
        std::vector<float> ref = c.arena;
        c.cpu_forward(ref);
        if (c.has_backward()) c.cpu_backward(ref);

        DeviceArray<float> arena(c.arena);
        DeviceArray<int32_t> pos(c.positions);
        DeviceArray<int64_t> begin(c.begins);
        DeviceArray<moas_cuda_query_head> heads(c.heads(arena.get(), pos.get(), begin.get()));
        DeviceArray<moas_cuda_query_head_grad> grads(c.grads(arena.get()));
        const int64_t n_heads = (int64_t)c.grads(arena.get()).size();
        const moas_cuda_attention_dims dims = c.cuda_dims();
        const moas_cuda_key_values kv = c.key_values(arena.get());
        const moas_cuda_key_value_grads dkv = c.key_value_grads(arena.get());
        const moas_cuda_dropout dropout = c.cuda_dropout();
        BACKEND_REQUIRE(backend().attention_forward(&dims, &kv, heads.get(), n_heads, &dropout, nullptr));
        if (!c.has_backward()) {
          const std::vector<float> got = arena.download();
          for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(got, ref, t, forward_tol);
          REQUIRE(backend().attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, &dropout,
                                               nullptr) == 1);
          return;
        }
        BACKEND_REQUIRE(
            backend().attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, &dropout, nullptr));
        const std::vector<float> got = arena.download();
        for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(got, ref, t, forward_tol);
        for (const cuda_test::Tensor &t : c.backward_outputs) cuda_test::require_close(got, ref, t, backward_tol);

        // Deterministic: a second backward gives the same bits.
        BACKEND_REQUIRE(
            backend().attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, &dropout, nullptr));
        REQUIRE(arena.download() == got);
      }
    }
}

// The calling thread's matmul precision for a scope, FP32 again after it.
struct MatmulPrecision {
  explicit MatmulPrecision(int32_t precision) { BACKEND_REQUIRE(backend().set_matmul_precision(precision)); }
  ~MatmulPrecision() { backend().set_matmul_precision(MOAS_MATMUL_FP32); }
};

}  // namespace

TEST_CASE("CUDA attention forward and backward equal the CPU kernel", "[cuda][device][attention]") {
  if (!have_device()) return;
  check_device_attention(kTol, kTol);
}

TEST_CASE("CUDA check_device accepts the paper's model and refuses attention wider than the device's shared memory",
          "[cuda][device]") {
  if (!have_device()) return;
  BACKEND_REQUIRE(backend().check_device(0, 64, 256, 0, 0));
  REQUIRE(backend().check_device(0, 4096, 256, 0, 0) == 1);
  REQUIRE_THAT(backend().last_error(), Catch::Contains("head_dim 4096") && Catch::Contains("shared memory"));
  int current = -1;
  CUDA_REQUIRE(cudaGetDevice(&current));
  REQUIRE(current == 0);  // left as it was
}

// BF16 mode runs attention on tensor cores (attention_tc.cuh) where the device allows: bfloat16's precision, the
// host emulation's bounds (test_cuda_attention_tc.cpp), and still deterministic.
TEST_CASE("CUDA attention in BF16 mode equals the CPU kernel to bfloat16's precision", "[cuda][device][attention]") {
  if (!have_device()) return;
  const MatmulPrecision bf16(MOAS_MATMUL_BF16);
  check_device_attention(1.5e-2, 4e-2);
}

// TF32 and BF16 products round their inputs (to 10 and 7 mantissa bits; cuBLAS may also use TF32 for BF16) and sum
// in fp32: within those roundings of the fp32 product, and not all equal to it (the mode reached cuBLAS).
TEST_CASE("CUDA gemm in TF32 and BF16 modes stays within its inputs' rounding", "[cuda][device][gemm]") {
  if (!have_device()) return;
  const int64_t M = 64, N = 96, K = 256;
  const std::vector<float> A = uniform((size_t)(M * K), 161), B = uniform((size_t)(K * N), 162);
  std::vector<float> ref((size_t)(M * N), 0.0f);
  moas::gemm(moas::Trans::No, moas::Trans::No, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, ref.data(), N);
  for (const auto &[precision, tol] : {std::pair<int32_t, double>{MOAS_MATMUL_TF32, 4e-3},
                                       std::pair<int32_t, double>{MOAS_MATMUL_BF16, 3e-2}}) {
    DYNAMIC_SECTION("precision " << precision) {
      const MatmulPrecision mode(precision);
      DeviceArray<float> d_A(A), d_B(B), d_C(unwritten((size_t)(M * N)));
      BACKEND_REQUIRE(backend().gemm(0, 0, M, N, K, 1.0f, d_A.get(), K, d_B.get(), N, 0.0f, d_C.get(), N, nullptr));
      const std::vector<float> got = d_C.download();
      require_close(got, ref, tol, "C");
      REQUIRE(got != ref);
    }
  }
}

TEST_CASE("CUDA CoPE attention forward and backward equal the CPU kernel", "[cuda][device][cope]") {
  if (!have_device()) return;
  for (const float p : {0.0f, 0.3f})
    for (const cuda_test::CaseSpec &spec : cuda_test::attention_cases()) {
      DYNAMIC_SECTION(spec.name << (p > 0 ? ", dropout 0.3" : "")) {
        const cuda_test::AttentionCase c(spec, 29, p, 40);
        std::vector<float> ref = c.arena;
        c.cpu_forward(ref);
        if (c.has_backward()) c.cpu_backward(ref);

        DeviceArray<float> arena(c.arena), scratch(std::vector<float>((size_t)c.cope_scratch_size()));
        DeviceArray<int32_t> pos(c.positions);
        DeviceArray<int64_t> begin(c.begins);
        DeviceArray<moas_cuda_query_head> heads(c.heads(arena.get(), pos.get(), begin.get()));
        DeviceArray<moas_cuda_query_head_grad> grads(c.grads(arena.get()));
        const int64_t n_heads = (int64_t)c.grads(arena.get()).size();
        const moas_cuda_attention_dims dims = c.cuda_dims();
        const moas_cuda_key_values kv = c.key_values(arena.get());
        const moas_cuda_key_value_grads dkv = c.key_value_grads(arena.get());
        const moas_cuda_dropout dropout = c.cuda_dropout();
        const float *e = c.cope_e(arena.get());
        BACKEND_REQUIRE(
            backend().cope_attention_forward(&dims, &kv, heads.get(), n_heads, e, c.max_pos(), &dropout, nullptr));
        if (c.has_backward())
          BACKEND_REQUIRE(backend().cope_attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, e,
                                                            c.max_pos(), c.cope_de(arena.get()), scratch.get(),
                                                            &dropout, nullptr));
        const std::vector<float> got = arena.download();
        for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(got, ref, t, kTol);
        if (!c.has_backward()) return;
        for (const cuda_test::Tensor &t : c.backward_outputs) cuda_test::require_close(got, ref, t, kTol);

        // Deterministic: a second backward overwrites dq, dk and dv with the same bits (de accumulates again).
        BACKEND_REQUIRE(backend().cope_attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, e,
                                                          c.max_pos(), c.cope_de(arena.get()), scratch.get(), &dropout,
                                                          nullptr));
        const std::vector<float> again = arena.download();
        for (const cuda_test::Tensor &t : c.backward_outputs)
          if (t.name != "de")
            REQUIRE(std::equal(again.begin() + t.offset, again.begin() + t.offset + t.size, got.begin() + t.offset));
      }
    }
}

TEST_CASE("CUDA router softmax, argmax and top-k equal the CPU's", "[cuda][device][routing]") {
  if (!have_device()) return;
  const int64_t N = 300;
  for (const int64_t width : {3, 6}) {
    const int64_t k = width == 3 ? 1 : 2;
    DYNAMIC_SECTION("width " << width << ", top " << k) {
      const std::vector<float> logits = separated_logits(N, width, 7 + width);
      std::vector<float> probs(logits.size());
      std::vector<int32_t> choice((size_t)N);
      std::vector<uint8_t> selected(logits.size());
      moas::softmax_rows(probs.data(), width, logits.data(), width, N, width);
      for (int64_t n = 0; n < N; ++n) {
        choice[(size_t)n] = (int32_t)moas::argmax_lower(probs.data() + n * width, width);
        moas::top_k_lower(probs.data() + n * width, width, k, selected.data() + n * width);
      }
      DeviceArray<float> d_logits(logits), d_probs(std::vector<float>(logits.size()));
      DeviceArray<int32_t> d_choice(std::vector<int32_t>((size_t)N, -1));
      DeviceArray<uint8_t> d_selected(std::vector<uint8_t>(logits.size(), 9));
      BACKEND_REQUIRE(backend().router_softmax(d_probs.get(), width, d_logits.get(), width, N, width, d_choice.get(),
                                               d_selected.get(), k, nullptr));
      require_close(d_probs.download(), probs, kTol, "probs");
      REQUIRE(d_choice.download() == choice);
      REQUIRE(d_selected.download() == selected);
    }
  }
}

TEST_CASE("CUDA MoH gates forward and backward equal the CPU's", "[cuda][device][routing]") {
  if (!have_device()) return;
  const int64_t N = 200;
  const moas_cuda_moh_gate_spec specs[] = {{2, 4, 2, 1}, {1, 5, 3, 1}, {0, 6, 3, 0}, {3, 3, 1, 0}};
  for (const moas_cuda_moh_gate_spec &spec : specs) {
    DYNAMIC_SECTION("shared " << spec.shared << ", " << spec.active << " of " << spec.routed << " routed") {
      const moas::MohGateSpec g{spec.shared, spec.routed, spec.active, spec.reference != 0};
      const int64_t E = g.routed, S = g.shared, H = S + E;
      const bool has_s = S > 1, has_a = g.head_type_router();
      std::vector<float> r = separated_logits(N, E, 11), s = separated_logits(N, S, 12), a = separated_logits(N, 2, 13);
      moas::softmax_rows(r.data(), E, r.data(), E, N, E);
      if (has_s) moas::softmax_rows(s.data(), S, s.data(), S, N, S);
      moas::softmax_rows(a.data(), 2, a.data(), 2, N, 2);
      std::vector<uint8_t> m((size_t)(N * E));
      for (int64_t n = 0; n < N; ++n) moas::top_k_lower(r.data() + n * E, E, g.active, m.data() + n * E);
      std::vector<float> dgate = separated_logits(N, H, 14);
      std::vector<float> gate((size_t)(N * H)), dr((size_t)(N * E)), ds((size_t)(N * S)), da((size_t)(N * 2));
      for (int64_t n = 0; n < N; ++n) {
        const float *sn = has_s ? s.data() + n * S : nullptr, *an = has_a ? a.data() + 2 * n : nullptr;
        moas::moh_gates_token(g, r.data() + n * E, m.data() + n * E, sn, an, gate.data() + n * H);
        moas::moh_gates_token_backward(g, r.data() + n * E, m.data() + n * E, sn, an, dgate.data() + n * H,
                                       dr.data() + n * E, has_s ? ds.data() + n * S : nullptr,
                                       has_a ? da.data() + 2 * n : nullptr);
      }
      DeviceArray<float> d_r(r), d_s(s), d_a(a), d_dgate(dgate), d_gate(std::vector<float>(gate.size())),
          d_dr(std::vector<float>(dr.size())), d_ds(std::vector<float>(ds.size())), d_da(std::vector<float>(da.size()));
      DeviceArray<uint8_t> d_m(m);
      const float *s_arg = has_s ? d_s.get() : nullptr, *a_arg = has_a ? d_a.get() : nullptr;
      BACKEND_REQUIRE(backend().moh_gates(&spec, d_r.get(), d_m.get(), s_arg, a_arg, d_gate.get(), H, N, nullptr));
      BACKEND_REQUIRE(backend().moh_gates_backward(&spec, d_r.get(), d_m.get(), s_arg, a_arg, d_dgate.get(), H,
                                                   d_dr.get(), has_s ? d_ds.get() : nullptr,
                                                   has_a ? d_da.get() : nullptr, N, nullptr));
      require_close(d_gate.download(), gate, kTol, "gate");
      require_close(d_dr.download(), dr, kTol, "dr");
      if (has_s) require_close(d_ds.download(), ds, kTol, "ds");
      if (has_a) require_close(d_da.download(), da, kTol, "da");
    }
  }
}

TEST_CASE("CUDA select, gather and scatter-add of routed rows equal the CPU's", "[cuda][device][routing]") {
  if (!have_device()) return;
  const int64_t batch = 3, seq = 300, E = 3, width = 24, past = 2, N = batch * seq;
  std::mt19937_64 rng(29);
  std::vector<uint8_t> flags((size_t)(N * E));
  for (auto &f : flags) f = (uint8_t)(rng() % 2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> src((size_t)(N * width)), dst((size_t)(N * width)), scale((size_t)N);
  for (float &x : src) x = u(rng);
  for (float &x : dst) x = u(rng);
  for (float &x : scale) x = u(rng);
  DeviceArray<uint8_t> d_flags(flags);
  DeviceArray<float> d_src(src);
  for (int64_t head = 0; head < E; ++head) {
    DYNAMIC_SECTION("head " << head) {
      moas::RowSet rows;
      rows.select(
          batch, seq, [&](int64_t n) { return flags[(size_t)(n * E + head)] != 0; }, past);
      DeviceArray<int64_t> d_row(std::vector<int64_t>((size_t)N, -1)),
          d_begin(std::vector<int64_t>((size_t)batch + 1, -1));
      DeviceArray<int32_t> d_pos(std::vector<int32_t>((size_t)N, -1));
      BACKEND_REQUIRE(backend().select_rows(d_row.get(), d_pos.get(), d_begin.get(), d_flags.get() + head, E, batch,
                                            seq, past, nullptr));
      std::vector<int64_t> row = d_row.download();
      std::vector<int32_t> pos = d_pos.download();
      REQUIRE(d_begin.download() == rows.begin);
      row.resize((size_t)rows.size());
      pos.resize((size_t)rows.size());
      REQUIRE(row == rows.row);
      REQUIRE(pos == rows.pos);

      // Compact rows of src, then dst[row] += scale * compact: the device count is begin[batch].
      const int64_t *count = d_begin.get() + batch;
      std::vector<float> gathered((size_t)(rows.size() * width)), expected_dst = dst;
      moas::gather_rows(gathered.data(), width, src.data(), width, rows.row, width);
      std::vector<float> compact_scale((size_t)rows.size());
      for (int64_t r = 0; r < rows.size(); ++r) compact_scale[(size_t)r] = scale[(size_t)r];
      moas::scatter_add_rows(expected_dst.data(), width, gathered.data(), width, rows.row, width, compact_scale.data());
      DeviceArray<float> d_gathered(std::vector<float>((size_t)(N * width), 0.0f)), d_dst(dst), d_scale(scale);
      BACKEND_REQUIRE(
          backend().gather_rows(d_gathered.get(), width, d_src.get(), width, d_row.get(), count, N, width, nullptr));
      BACKEND_REQUIRE(backend().scatter_add_rows(d_dst.get(), width, d_gathered.get(), width, d_row.get(),
                                                 d_scale.get(), count, N, width, nullptr));
      std::vector<float> got = d_gathered.download();
      got.resize(gathered.size());
      REQUIRE(got == gathered);
      require_close(d_dst.download(), expected_dst, 1e-6, "scatter-add");
    }
  }
}

TEST_CASE("CUDA embedding forward and backward equal the CPU's", "[cuda][device][embedding]") {
  if (!have_device()) return;
  const int64_t B = 3, T = 33, C = 130, V = 200, past = 2, N = B * T;
  const std::vector<int32_t> tokens = tokens_below((size_t)N, 90, 71);  // repeats within vocabulary bands
  const std::vector<float> wte = uniform((size_t)(V * C), 72), wpe = uniform((size_t)((past + T) * C), 73);
  const std::vector<float> dout = uniform((size_t)(N * C), 74), dwte0 = uniform((size_t)(V * C), 75),
                           dwpe0 = uniform((size_t)(T * C), 76);
  std::vector<float> out((size_t)(N * C)), dwte = dwte0, dwpe = dwpe0;
  moas::embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, past);
  moas::embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);

  DeviceArray<int32_t> d_tokens(tokens);
  DeviceArray<float> d_wte(wte), d_wpe(wpe), d_dout(dout), d_out(unwritten(out.size())), d_dwte(dwte0), d_dwpe(dwpe0);
  BACKEND_REQUIRE(
      backend().embedding_forward(d_out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, T, C, past, nullptr));
  BACKEND_REQUIRE(
      backend().embedding_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_tokens.get(), B, T, C, V, nullptr));
  require_close(d_out.download(), out, kTol, "out");
  require_close(d_dwte.download(), dwte, kTol, "dwte");
  require_close(d_dwpe.download(), dwpe, kTol, "dwpe");
}

TEST_CASE("CUDA LayerNorm and RMSNorm forward and backward equal the CPU's", "[cuda][device][norm]") {
  if (!have_device()) return;
  const int64_t N = 520, C = 130;
  for (const bool rms : {false, true}) {
    DYNAMIC_SECTION((rms ? "RMSNorm" : "LayerNorm with bias")) {
      const std::vector<float> inp = uniform((size_t)(N * C), 81, -1.0f, 3.0f), dout = uniform((size_t)(N * C), 82);
      const std::vector<float> weight = uniform((size_t)C, 83, 0.5f, 1.5f), bias = uniform((size_t)C, 84);
      const std::vector<float> dinp0 = uniform((size_t)(N * C), 85), dweight0 = uniform((size_t)C, 86),
                               dbias0 = uniform((size_t)C, 87);
      std::vector<float> out((size_t)(N * C)), mean((size_t)N), rstd((size_t)N), scratch((size_t)(N * C));
      std::vector<float> dinp = dinp0, dweight = dweight0, dbias = dbias0;
      const float *bias_ptr = rms ? nullptr : bias.data();
      moas::norm_forward(rms, out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias_ptr, N, C);
      moas::norm_backward(rms, dinp.data(), dweight.data(), rms ? nullptr : dbias.data(), scratch.data(), dout.data(),
                          inp.data(), weight.data(), mean.data(), rstd.data(), N, C);

      DeviceArray<float> d_inp(inp), d_dout(dout), d_weight(weight), d_bias(bias), d_out(unwritten(out.size())),
          d_mean(unwritten(mean.size())), d_rstd(unwritten(rstd.size())), d_dinp(dinp0), d_dweight(dweight0),
          d_dbias(dbias0), d_scratch(std::vector<float>((size_t)moas_cuda_norm_backward_scratch(N, C)));
      BACKEND_REQUIRE(backend().norm_forward(rms, d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_weight.get(),
                                             rms ? nullptr : d_bias.get(), N, C, nullptr));
      BACKEND_REQUIRE(backend().norm_backward(rms, d_dinp.get(), d_dweight.get(), rms ? nullptr : d_dbias.get(),
                                              d_scratch.get(), d_dout.get(), d_inp.get(), d_weight.get(), d_mean.get(),
                                              d_rstd.get(), N, C, nullptr));
      require_close(d_out.download(), out, kTol, "out");
      require_close(d_mean.download(), mean, kTol, "mean");
      require_close(d_rstd.download(), rstd, kTol, "rstd");
      require_close(d_dinp.download(), dinp, kTol, "dinp");
      require_close(d_dweight.download(), dweight, kTol, "dweight");
      require_close(d_dbias.download(), dbias, kTol, "dbias");
    }
  }
}

TEST_CASE("CUDA GELU and SwiGLU forward and backward equal the CPU's", "[cuda][device][mlp]") {
  if (!have_device()) return;
  const int64_t N = 33, h = 130, n = N * h;
  const std::vector<float> x = uniform((size_t)n, 91, -6.0f, 6.0f), pre = uniform((size_t)(2 * n), 92, -6.0f, 6.0f),
                           dout = uniform((size_t)n, 93);
  std::vector<float> gelu((size_t)n), dgelu((size_t)n), swiglu((size_t)n), dpre((size_t)(2 * n));
  moas::gelu_forward(gelu.data(), x.data(), n);
  moas::gelu_backward(dgelu.data(), dout.data(), x.data(), n);
  moas::swiglu_forward(swiglu.data(), pre.data(), N, h);
  moas::swiglu_backward(dpre.data(), dout.data(), pre.data(), N, h);

  DeviceArray<float> d_x(x), d_pre(pre), d_dout(dout), d_gelu(unwritten(gelu.size())), d_dgelu(unwritten(dgelu.size())),
      d_swiglu(unwritten(swiglu.size())), d_dpre(unwritten(dpre.size()));
  BACKEND_REQUIRE(backend().gelu_forward(d_gelu.get(), d_x.get(), n, nullptr));
  BACKEND_REQUIRE(backend().gelu_backward(d_dgelu.get(), d_dout.get(), d_x.get(), n, nullptr));
  BACKEND_REQUIRE(backend().swiglu_forward(d_swiglu.get(), d_pre.get(), N, h, nullptr));
  BACKEND_REQUIRE(backend().swiglu_backward(d_dpre.get(), d_dout.get(), d_pre.get(), N, h, nullptr));
  require_close(d_gelu.download(), gelu, kTol, "gelu");
  require_close(d_dgelu.download(), dgelu, kTol, "gelu backward");
  require_close(d_swiglu.download(), swiglu, kTol, "swiglu");
  require_close(d_dpre.download(), dpre, kTol, "swiglu backward");
}

TEST_CASE("CUDA cross-entropy forward and backward equal the CPU's", "[cuda][device][loss]") {
  if (!have_device()) return;
  const int64_t N = 600, V = 1000;
  const std::vector<float> logits = uniform((size_t)(N * V), 101, 20.0f, 28.0f);
  std::vector<int32_t> targets = tokens_below((size_t)N, (int32_t)V, 102);
  for (int64_t n = 4; n < N; n += 7) targets[(size_t)n] = -1;
  std::vector<float> lse((size_t)N), dlogits((size_t)(N * V));
  int64_t counted = 0;
  const double loss = moas::cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V, &counted);
  const float scale = 1.0f / (float)counted;
  moas::cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V, scale);

  DeviceArray<float> d_logits(logits), d_lse(unwritten(lse.size())), d_dlogits(unwritten(dlogits.size()));
  DeviceArray<int32_t> d_targets(targets);
  DeviceArray<double> d_loss(std::vector<double>(1, std::nan("")));
  DeviceArray<int64_t> d_counted(std::vector<int64_t>(1, -1));
  BACKEND_REQUIRE(backend().cross_entropy_forward(d_lse.get(), d_loss.get(), d_counted.get(), d_logits.get(),
                                                  d_targets.get(), N, V, nullptr));
  BACKEND_REQUIRE(backend().cross_entropy_backward(d_dlogits.get(), d_logits.get(), d_lse.get(), d_targets.get(), N, V,
                                                   scale, nullptr));
  require_close(d_lse.download(), lse, kTol, "lse");
  REQUIRE(d_counted.download()[0] == counted);
  require_close(d_loss.download(), std::vector<double>{loss}, kTol, "loss");
  require_close(d_dlogits.download(), dlogits, kTol, "dlogits");
}

TEST_CASE("CUDA gradient norm and AdamW steps equal the CPU's", "[cuda][device][adamw]") {
  if (!have_device()) return;
  moas::ParamTable<float> params;
  params.add("w", {64, 33});
  params.add("b", {33});
  params.add("long", {20000});
  params.allocate();
  const int64_t n = params.total();
  const moas::ParamSegments segments = moas::param_segments(params);
  params.values = uniform((size_t)n, 111);
  const moas::AdamWSettings s{1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0};
  const moas_cuda_adamw_settings settings{s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.grad_clip};
  moas::AdamWState<float> state;
  DeviceArray<float> d_params(params.values), d_m(std::vector<float>((size_t)n, 0.0f)),
      d_v(std::vector<float>((size_t)n, 0.0f));
  DeviceArray<int64_t> d_begin(segments.begin);
  DeviceArray<uint8_t> d_decay(segments.decay);
  DeviceArray<double> d_norm(std::vector<double>(1, std::nan(""))),
      d_scratch(std::vector<double>((size_t)moas_cuda_gradient_norm_scratch(n)));
  for (uint64_t step = 1; step <= 3; ++step) {
    params.grads = uniform((size_t)n, 112 + step);
    const double norm = moas::gradient_norm(params.grads);
    moas::adamw_step(params, state, s, norm);
    DeviceArray<float> d_grads(params.grads);
    BACKEND_REQUIRE(backend().gradient_norm(d_norm.get(), d_scratch.get(), d_grads.get(), n, nullptr));
    const double device_norm = d_norm.download()[0];
    require_close(std::vector<double>{device_norm}, std::vector<double>{norm}, 1e-12, "gradient norm");
    BACKEND_REQUIRE(backend().adamw_step(&settings, step, device_norm, d_params.get(), d_grads.get(), d_m.get(),
                                         d_v.get(), n, d_begin.get(), d_decay.get(), (int64_t)segments.decay.size(),
                                         nullptr));
  }
  require_close(d_params.download(), params.values, kTol, "parameters");
  require_close(d_m.download(), state.exp_avg, kTol, "exp_avg");
  require_close(d_v.download(), state.exp_avg_sq, kTol, "exp_avg_sq");
}

TEST_CASE("CUDA RoPE rotates as the CPU, forward and backward", "[cuda][device][rope]") {
  if (!have_device()) return;
  const int64_t block_size = 100, d = 16, n_heads = 6, m = 150, col0 = 16, stride = 8 * d + 3;
  moas::RopeTable<float> table;
  table.build(block_size, d, 10000.0);
  std::vector<int32_t> pos((size_t)m);
  for (int64_t r = 0; r < m; ++r) pos[(size_t)r] = (int32_t)(moas::mix64((uint64_t)r) % block_size);
  const std::vector<float> buf = uniform((size_t)(m * stride), 121);
  DeviceArray<int32_t> d_pos(pos);
  DeviceArray<float> d_cos(table.cos), d_sin(table.sin);
  for (const int direction : {1, -1}) {
    DYNAMIC_SECTION("direction " << direction) {
      std::vector<float> ref = buf;
      moas::rope_rotate(ref.data(), stride, col0, n_heads, m, pos.data(), table, direction);
      DeviceArray<float> d_buf(buf);
      BACKEND_REQUIRE(backend().rope_rotate(d_buf.get(), stride, col0, n_heads, m, d_pos.get(), d_cos.get(),
                                            d_sin.get(), table.half, direction, nullptr));
      require_close(d_buf.download(), ref, kTol, "rotated rows");
    }
  }
}

TEST_CASE("CUDA dropout draws the CPU's mask, whole tensors and routed rows", "[cuda][device][dropout]") {
  if (!have_device()) return;
  const moas::Dropout dropout = moas::Dropout::at(0.3f, 7, 11, 2, moas::DropoutSiteId::MlpOut);
  const moas_cuda_dropout cuda_dropout{dropout.p, dropout.key};
  const int64_t N = 300, width = 70;
  std::vector<int64_t> row;
  for (int64_t n = 0; n < N; ++n)
    if (moas::mix64((uint64_t)n) % 3 == 0) row.push_back(n);
  const int64_t m = (int64_t)row.size();
  const std::vector<float> x = uniform((size_t)(N * width), 131);
  std::vector<float> whole = x, rows(x.begin(), x.begin() + m * width);
  moas::dropout_apply(whole.data(), N * width, dropout);
  moas::dropout_apply_rows(rows.data(), m, width, row.data(), dropout);
  DeviceArray<float> d_whole(x), d_rows(std::vector<float>(x.begin(), x.begin() + m * width));
  DeviceArray<int64_t> d_row(row);
  BACKEND_REQUIRE(backend().dropout_apply(d_whole.get(), N, width, nullptr, &cuda_dropout, nullptr));
  BACKEND_REQUIRE(backend().dropout_apply(d_rows.get(), m, width, d_row.get(), &cuda_dropout, nullptr));
  REQUIRE(d_whole.download() == whole);  // the same bits
  REQUIRE(d_rows.download() == rows);
}

TEST_CASE("CUDA memory entries: set_device, alloc, copy both ways and on the device, zero, synchronize",
          "[cuda][device][memory]") {
  if (!have_device()) return;
  BACKEND_REQUIRE(backend().set_device(0));
  cudaStream_t stream = nullptr;
  CUDA_REQUIRE(cudaStreamCreate(&stream));
  const std::vector<float> host = uniform(1000, 141);
  const size_t bytes = host.size() * sizeof(float);
  float *first = static_cast<float *>(backend().alloc(bytes)), *second = static_cast<float *>(backend().alloc(bytes));
  INFO(backend().last_error());
  REQUIRE(first != nullptr);
  REQUIRE(second != nullptr);
  BACKEND_REQUIRE(backend().copy(first, host.data(), bytes, stream));
  BACKEND_REQUIRE(backend().copy(second, first, bytes, stream));
  std::vector<float> back(host.size(), std::nanf(""));
  BACKEND_REQUIRE(backend().copy(back.data(), second, bytes, stream));
  require_same_bits(back, host, "round trip");

  BACKEND_REQUIRE(backend().zero(second + 100, 200 * sizeof(float), stream));
  BACKEND_REQUIRE(backend().synchronize(stream));
  BACKEND_REQUIRE(backend().copy(back.data(), second, bytes, stream));
  std::vector<float> zeroed = host;
  std::fill(zeroed.begin() + 100, zeroed.begin() + 300, 0.0f);
  require_same_bits(back, zeroed, "after zero");

  // A failed allocation says so, and leaves no stale CUDA error for the next launch to report.
  REQUIRE(backend().alloc((size_t)1 << 62) == nullptr);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("alloc of"));
  BACKEND_REQUIRE(backend().add(second, second, first, (int64_t)host.size(), stream));
  BACKEND_REQUIRE(backend().synchronize(stream));

  backend().free(nullptr);
  backend().free(first);
  backend().free(second);
  CUDA_REQUIRE(cudaStreamDestroy(stream));
}

TEST_CASE("CUDA gemm equals moas::gemm for every transpose, with and without beta", "[cuda][device][gemm]") {
  if (!have_device()) return;
  cudaStream_t stream = nullptr;
  CUDA_REQUIRE(cudaStreamCreate(&stream));
  const int64_t M = 37, N = 45;
  for (const int64_t K : {29, 300})
    for (const int32_t ta : {0, 1})
      for (const int32_t tb : {0, 1})
        for (const float beta : {0.0f, 0.5f}) {
          DYNAMIC_SECTION("K " << K << (ta ? ", A^T" : "") << (tb ? ", B^T" : "") << ", beta " << beta) {
            // Stored row-major with padded leading dimensions; C's padding must stay as it was.
            const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
            const std::vector<float> A = uniform((size_t)((ta ? K : M) * lda), 151),
                                     B = uniform((size_t)((tb ? N : K) * ldb), 152);
            std::vector<float> c_start = uniform((size_t)(M * ldc), 153), ref = c_start;
            if (beta == 0.0f)  // C is only written: NaN there must not reach the result
              for (int64_t r = 0; r < M; ++r) std::fill_n(c_start.begin() + r * ldc, N, std::nanf(""));
            moas::gemm(ta ? moas::Trans::Yes : moas::Trans::No, tb ? moas::Trans::Yes : moas::Trans::No, M, N, K, 1.5f,
                       A.data(), lda, B.data(), ldb, beta, ref.data(), ldc);
            DeviceArray<float> d_A(A), d_B(B), d_C(c_start);
            BACKEND_REQUIRE(
                backend().gemm(ta, tb, M, N, K, 1.5f, d_A.get(), lda, d_B.get(), ldb, beta, d_C.get(), ldc, stream));
            require_close(d_C.download(), ref, 1e-5, "C");
          }
        }
  SECTION("K = 0: C = beta C, without reading A or B") {
    const int64_t ldc = N + 5;
    for (const float beta : {0.0f, 0.5f, 1.0f}) {
      std::vector<float> c_start = uniform((size_t)(M * ldc), 154);
      if (beta == 0.0f) c_start[0] = std::nanf("");
      std::vector<float> ref = c_start;
      moas::gemm(moas::Trans::No, moas::Trans::No, M, N, 0, 1.5f, nullptr, 1, nullptr, N, beta, ref.data(), ldc);
      DeviceArray<float> d_C(c_start);
      BACKEND_REQUIRE(backend().gemm(0, 0, M, N, 0, 1.5f, nullptr, 1, nullptr, N, beta, d_C.get(), ldc, stream));
      INFO("beta " << beta);
      require_same_bits(d_C.download(), ref, "C");
    }
  }
  CUDA_REQUIRE(cudaStreamDestroy(stream));
}

TEST_CASE("CUDA add, fill_rows and column sums give the CPU's bits", "[cuda][device][elementwise]") {
  if (!have_device()) return;
  SECTION("add, also in place") {
    const int64_t n = 70001;
    const std::vector<float> a = uniform((size_t)n, 161), b = uniform((size_t)n, 162);
    std::vector<float> sum((size_t)n);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = a[i] + b[i];
    DeviceArray<float> d_a(a), d_b(b), d_out(unwritten(sum.size()));
    BACKEND_REQUIRE(backend().add(d_out.get(), d_a.get(), d_b.get(), n, nullptr));
    BACKEND_REQUIRE(backend().add(d_a.get(), d_a.get(), d_b.get(), n, nullptr));
    require_same_bits(d_out.download(), sum, "out");
    require_same_bits(d_a.download(), sum, "out = a");
  }
  const int64_t N = 1000, width = 300, stride = 310;
  SECTION("fill_rows") {
    const std::vector<float> values = uniform((size_t)width, 163), start = uniform((size_t)(N * stride), 164);
    std::vector<float> ref = start;
    for (int64_t r = 0; r < N; ++r) std::copy(values.begin(), values.end(), ref.begin() + r * stride);
    DeviceArray<float> d_values(values), d_out(start);
    BACKEND_REQUIRE(backend().fill_rows(d_out.get(), stride, d_values.get(), N, width, nullptr));
    require_same_bits(d_out.download(), ref, "out");
  }
  SECTION("column_sum_accumulate") {
    std::vector<float> x = uniform((size_t)(N * stride), 165);
    for (size_t i = 0; i < x.size(); i += 3) x[i] *= 1e4f;  // mixed magnitudes: another order rounds differently
    const std::vector<float> start = uniform((size_t)width, 166);
    std::vector<float> compact((size_t)(N * width)), ref = start;
    for (int64_t r = 0; r < N; ++r) std::copy_n(x.begin() + r * stride, width, compact.begin() + r * width);
    moas::column_sum_accumulate(ref.data(), compact.data(), N, width);
    DeviceArray<float> d_x(x), d_sums(start);
    BACKEND_REQUIRE(backend().column_sum_accumulate(d_sums.get(), d_x.get(), stride, N, width, nullptr));
    require_same_bits(d_sums.download(), ref, "sums");
  }
}

TEST_CASE("CUDA MoAS mixing backward equals moas.cpp's per-row dot and scaling", "[cuda][device][moas]") {
  if (!have_device()) return;
  const int64_t N = 3000, S = 3, branch = 1, width = 200;
  std::vector<int64_t> row;
  for (int64_t n = 0; n < N; n += 3) row.push_back(n + 1);  // a top-1 branch's tokens
  const int64_t m = (int64_t)row.size(), capacity = m + 7;
  row.resize((size_t)capacity, -1);
  const std::vector<float> z = uniform((size_t)(capacity * width), 171),
                           mix = uniform((size_t)(N * S), 172, 0.0f, 1.5f);
  const std::vector<float> dz = uniform((size_t)(capacity * width), 173), d_mix = uniform((size_t)(N * S), 174);
  std::vector<float> want_dz = dz, want_d_mix = d_mix;
  for (int64_t r = 0; r < m; ++r) {
    const int64_t slot = row[(size_t)r] * S + branch;
    want_d_mix[(size_t)slot] =
        moas::moas_mix_row_backward(want_dz.data() + r * width, z.data() + r * width, mix[(size_t)slot], width);
  }
  DeviceArray<float> d_z(z), d_mix_in(mix), d_dz(dz), d_dmix(d_mix);
  DeviceArray<int64_t> d_row(row), d_count(std::vector<int64_t>{m});
  BACKEND_REQUIRE(backend().moas_mix_backward(d_dmix.get(), d_dz.get(), d_z.get(), d_mix_in.get(), d_row.get(),
                                              d_count.get(), capacity, width, S, branch, nullptr));
  require_same_bits(d_dz.download(), want_dz, "dz");  // one product per element: exact
  require_close(d_dmix.download(), want_d_mix, kTol, "d_mix");  // the device may fuse the dot's multiply-adds
  REQUIRE(backend().moas_mix_backward(d_dmix.get(), d_dz.get(), d_z.get(), d_mix_in.get(), d_row.get(),
                                      d_count.get(), capacity, width, S, S, nullptr) != 0);
}

TEST_CASE("CUDA MoH gate-heads and router softmax backward entries check their arguments", "[cuda][moh]") {
  float x = 0.0f;
  REQUIRE(backend().moh_gate_heads(&x, &x, &x, -1, 1, 1, nullptr) != 0);
  REQUIRE(std::string(backend().last_error()).find("moh_gate_heads") != std::string::npos);
  REQUIRE(backend().moh_gate_heads(nullptr, &x, &x, 1, 1, 1, nullptr) != 0);
  REQUIRE(backend().moh_gate_heads_backward(&x, nullptr, &x, &x, &x, 1, 1, 1, nullptr) != 0);
  REQUIRE(backend().router_softmax_backward(&x, 1, &x, &x, 1, 2, nullptr) != 0);
  REQUIRE(std::string(backend().last_error()).find("stride") != std::string::npos);
  REQUIRE(backend().moh_gate_heads(nullptr, nullptr, nullptr, 0, 4, 8, nullptr) == 0);  // nothing to do
}

TEST_CASE("CUDA MoH gate-heads forward and backward, and the router softmax backward, equal the CPU's",
          "[cuda][device][moh]") {
  if (!have_device()) return;
  SECTION("gates on heads") {
    const int64_t N = 1000, H = 6, d = 16, pairs = N * H;
    std::vector<float> gate = uniform((size_t)pairs, 171, 0.0f, 2.0f), att = uniform((size_t)(pairs * d), 172);
    for (int64_t pair = 0; pair < pairs; pair += 3) {  // inactive pairs: gate 0, output 0
      gate[(size_t)pair] = 0.0f;
      std::fill_n(att.begin() + pair * d, d, 0.0f);
    }
    const std::vector<float> dgated = uniform((size_t)(pairs * d), 173);
    std::vector<float> gated((size_t)(pairs * d)), datt((size_t)(pairs * d)), dgate((size_t)pairs);
    for (int64_t pair = 0; pair < pairs; ++pair) {
      moas::moh_gate_head(gated.data() + pair * d, gate[(size_t)pair], att.data() + pair * d, d);
      dgate[(size_t)pair] = moas::moh_gate_head_backward(datt.data() + pair * d, gate[(size_t)pair],
                                                         dgated.data() + pair * d, att.data() + pair * d, d);
    }
    DeviceArray<float> d_gate(gate), d_att(att), d_dgated(dgated), d_gated(unwritten(gated.size())),
        d_datt(unwritten(datt.size())), d_dgate(unwritten(dgate.size()));
    BACKEND_REQUIRE(backend().moh_gate_heads(d_gated.get(), d_gate.get(), d_att.get(), N, H, d, nullptr));
    BACKEND_REQUIRE(backend().moh_gate_heads_backward(d_datt.get(), d_dgate.get(), d_dgated.get(), d_gate.get(),
                                                      d_att.get(), N, H, d, nullptr));
    require_same_bits(d_gated.download(), gated, "gated");  // one product per value
    require_same_bits(d_datt.download(), datt, "datt");
    require_close(d_dgate.download(), dgate, kTol, "dgate");
  }
  SECTION("router softmax backward into a shared logits row") {
    const int64_t N = 777, width = 5, column = 2, stride = 9;
    std::vector<float> p = separated_logits(N, width, 174);
    moas::softmax_rows(p.data(), width, p.data(), width, N, width);
    const std::vector<float> dp = uniform((size_t)(N * width), 175);
    std::vector<float> dlogits = uniform((size_t)(N * stride), 176), ref = dlogits;
    moas::softmax_rows_backward(ref.data() + column, stride, dp.data(), p.data(), N, width);
    DeviceArray<float> d_p(p), d_dp(dp), d_dlogits(dlogits);
    BACKEND_REQUIRE(backend().router_softmax_backward(d_dlogits.get() + column, stride, d_dp.get(), d_p.get(), N,
                                                      width, nullptr));
    require_close(d_dlogits.download(), ref, kTol, "dlogits");
  }
}
