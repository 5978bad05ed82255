// libmoas_cuda.so's kernels on a CUDA device against the CPU functions of src/, to SPEC §9's CPU-vs-CUDA tolerance
// (1e-4 of the largest reference value, per tensor) with routing decisions compared exactly: attention forward and
// backward (the cases of attention_cases.hpp: dense, routed subsets, GQA 6/2, MQA, windows, T not a multiple of the
// tile), the router softmax with argmax / top-k, MoH gates forward and backward, and the row kernels.
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

#include "attention_cases.hpp"
#include "cuda_backend.h"
#include "moh_gates.hpp"
#include "routing_math.hpp"
#include "rows.hpp"
#include "softmax.hpp"

extern "C" const moas_cuda_backend *moas_cuda_backend_v1(void);

namespace {

constexpr const char *kSkipped = "MOAS_CUDA_SKIPPED";  // tests/CMakeLists.txt: SKIP_REGULAR_EXPRESSION
constexpr double kTol = 1e-4;

const moas_cuda_backend &backend() { return *moas_cuda_backend_v1(); }

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

template <typename T>
void require_close(const std::vector<T> &a, const std::vector<T> &b, double tol, const char *what) {
  REQUIRE(a.size() == b.size());
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs((double)a[i] - (double)b[i]));
    ref = std::max(ref, std::fabs((double)b[i]));
  }
  INFO(what << ": max abs err " << err << ", max|ref| " << ref);
  REQUIRE(err <= tol * ref);
}

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
  REQUIRE(backend().attention_forward(&dims, &kv, nullptr, 0, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("multiple of kv_heads"));
  REQUIRE(backend().router_softmax(nullptr, 3, nullptr, 3, 4, 3, nullptr, nullptr, 0, nullptr) == 1);
  REQUIRE_THAT(std::string(backend().last_error()), Catch::Matchers::Contains("null argument"));
}

TEST_CASE("CUDA attention forward and backward equal the CPU kernel", "[cuda][device][attention]") {
  if (!have_device()) return;
  for (const cuda_test::CaseSpec &spec : cuda_test::attention_cases()) {
    DYNAMIC_SECTION(spec.name) {
      const cuda_test::AttentionCase c(spec, 23);
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
      BACKEND_REQUIRE(backend().attention_forward(&dims, &kv, heads.get(), n_heads, nullptr));
      if (!c.has_backward()) {
        const std::vector<float> got = arena.download();
        for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(got, ref, t, kTol);
        REQUIRE(backend().attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, nullptr) == 1);
        return;
      }
      BACKEND_REQUIRE(backend().attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, nullptr));
      const std::vector<float> got = arena.download();
      for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(got, ref, t, kTol);
      for (const cuda_test::Tensor &t : c.backward_outputs) cuda_test::require_close(got, ref, t, kTol);

      // Deterministic: a second backward gives the same bits.
      BACKEND_REQUIRE(backend().attention_backward(&dims, &kv, heads.get(), grads.get(), n_heads, &dkv, nullptr));
      REQUIRE(arena.download() == got);
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
