// The tensor-core attention (cuda/attention_tc.cuh, BF16 mode) run on the host: its bfloat16 rounding, its tile
// products (block_mma's index maps, transposes and strides, against a product written out independently) and its
// block functions on every attention case against the CPU's fp32 kernel, to bfloat16's precision. The two thread
// orders must give the same bits: a phase whose result depends on the order would be a race on the device.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "attention/attention_cases.hpp"
#include "attention_emulation.hpp"
#include "attention_tc.cuh"
#include "block_emulation.hpp"
#include "cpu_backend_table.hpp"

namespace {

using namespace moas::cuda;
using cuda_test::AttentionCase;
using cuda_test::CaseSpec;

void emulate_tc_attention(const AttentionCase &c, std::vector<float> &arena, bool reverse) {
  const cuda_test::EmulatedAttention launch(c, arena);
  const AttentionArgs &a = launch.args;
  const int64_t d = a.dims.head_dim;
  cuda_test::emulate<TcHostBlock>(
      tc_query_grid(a), tc_forward_shared_bytes(d), reverse,
      [&](const TcHostBlock &block, unsigned char *shared, int64_t x, int64_t y, int64_t z) {
        attention_tc_forward_block(block, a, shared, x, y, z);
      });
  if (!c.has_backward()) return;
  cuda_test::emulate<TcHostBlock>(tc_query_grid(a), tc_dq_shared_bytes(d), reverse,
                                  [&](const TcHostBlock &block, unsigned char *shared, int64_t x, int64_t y,
                                      int64_t z) { attention_tc_dq_block(block, a, shared, x, y, z); });
  cuda_test::emulate<TcHostBlock>(tc_key_grid(a), tc_dkdv_shared_bytes(d), reverse,
                                  [&](const TcHostBlock &block, unsigned char *shared, int64_t x, int64_t y,
                                      int64_t z) { attention_tc_dkdv_block(block, a, shared, x, y, z); });
}

}  // namespace

TEST_CASE("to_bf16 rounds to nearest, ties to even, as the CPU table's tensor-core model does", "[cuda][tensor-core]") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1e4f, 1e4f);
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f + 0x1p-20f),
                               FLT_MIN / 3, FLT_MAX, -FLT_MAX, INFINITY, -INFINITY};
  for (int i = 0; i < 10000; ++i) values.push_back(u(rng) * (i % 2 ? 1.0f : 1e-30f));
  for (const float x : values) {
    INFO("x = " << x);
    const float rounded = from_bf16(to_bf16(x));
    const float expected = moas_test::round_mantissa(x, 7);
    REQUIRE(std::memcmp(&rounded, &expected, sizeof rounded) == 0);
  }
  REQUIRE(std::isnan(from_bf16(to_bf16(NAN))));
  REQUIRE(std::isinf(from_bf16(to_bf16(FLT_MAX))));  // past bfloat16's largest finite value
}

TEST_CASE("block_mma's tiles, transposes and strides give the product of the stored matrices", "[cuda][tensor-core]") {
  const int64_t M = 32, N = 48, K = 64, lda_pad = 8, ldb_pad = 8, ldc = N + 4;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto check = [&](auto trans_a, auto trans_b, bool accumulate) {
    constexpr bool kTransA = decltype(trans_a)::value, kTransB = decltype(trans_b)::value;
    INFO("A " << (kTransA ? "transposed" : "as stored") << ", B " << (kTransB ? "transposed" : "as stored")
              << (accumulate ? ", accumulating" : ""));
    // Stored shapes: A [M, K] or [K, M]; B [K, N] or [N, K]; each row padded past its length.
    const int64_t a_rows = kTransA ? K : M, a_cols = kTransA ? M : K, b_rows = kTransB ? N : K,
                  b_cols = kTransB ? K : N, lda = a_cols + lda_pad, ldb = b_cols + ldb_pad;
    std::vector<bf16_bits> A((size_t)(a_rows * lda)), B((size_t)(b_rows * ldb));
    for (auto &x : A) x = to_bf16(u(rng));
    for (auto &x : B) x = to_bf16(u(rng));
    std::vector<float> C((size_t)(M * ldc));
    for (auto &x : C) x = u(rng);
    std::vector<float> expected = C;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float sum = accumulate ? C[(size_t)(i * ldc + j)] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const bf16_bits a = kTransA ? A[(size_t)(k * lda + i)] : A[(size_t)(i * lda + k)];
          const bf16_bits b = kTransB ? B[(size_t)(j * ldb + k)] : B[(size_t)(k * ldb + j)];
          sum += from_bf16(a) * from_bf16(b);
        }
        expected[(size_t)(i * ldc + j)] = sum;
      }
    for (const bool reverse : {false, true}) {
      std::vector<float> got = C;
      TcHostBlock block;
      block.reverse = reverse;
      block_mma<kTransA, kTransB>(block, M, N, K, A.data(), lda, B.data(), ldb, got.data(), ldc, accumulate);
      REQUIRE(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
    }
  };
  for (const bool accumulate : {false, true}) {
    check(std::false_type{}, std::false_type{}, accumulate);
    check(std::false_type{}, std::true_type{}, accumulate);
    check(std::true_type{}, std::false_type{}, accumulate);
    check(std::true_type{}, std::true_type{}, accumulate);
  }
}

TEST_CASE("tensor-core attention blocks emulated on the host equal the CPU kernel to bfloat16's precision",
          "[cuda][emulated][attention][tensor-core]") {
  // Measured here: forward at most ~3e-3 of the largest output, gradients ~1.4e-2 (inputs and probabilities rounded
  // to 8 significant bits, sums in fp32).
  const double forward_tol = 1.5e-2, backward_tol = 4e-2;
  // Besides the fp32 kernel's cases: a head_dim padded to the tiles (40 -> 48) and one that fills them (128), over
  // several 64-key tiles.
  std::vector<CaseSpec> cases = cuda_test::attention_cases();
  cases.push_back({"dense GQA 4/2, head_dim 40, 150 positions", 1, 150, 4, 2, 40, 0, 100, 0, 0, {}});
  cases.push_back({"routed MHA, head_dim 128, 130 positions, window 70", 1, 130, 2, 2, 128, 70, 50, 0, 0, {}});
  for (const float dropout : {0.0f, 0.3f})
    for (const CaseSpec &spec : cases) {
      DYNAMIC_SECTION(spec.name << ", dropout " << dropout) {
        const AttentionCase c(spec, 17, dropout);
        std::vector<float> ref = c.arena;
        c.cpu_forward(ref);
        if (c.has_backward()) c.cpu_backward(ref);
        std::vector<float> emulated = c.arena, reversed = c.arena;
        emulate_tc_attention(c, emulated, false);
        emulate_tc_attention(c, reversed, true);
        cuda_test::require_same_bits(emulated, reversed, "threads in order and in reverse");
        for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(emulated, ref, t, forward_tol);
        if (c.has_backward())
          for (const cuda_test::Tensor &t : c.backward_outputs)
            cuda_test::require_close(emulated, ref, t, backward_tol);
      }
    }
}
