// The CUDA kernels' block functions (cuda/*.cuh) run on the host: every block of the grid on fresh shared memory
// filled with NaN, its threads one after the other in both orders, against the CPU kernels. No GPU is needed, so
// this runs in every build, the sanitizer build included: it checks the device code's indexing, tiling, masks and
// arithmetic where no CUDA device exists (test_cuda_kernels.cpp runs the same cases on a device when there is one).
// Here: attention and CoPE attention, with and without dropout, row selection and the router; test_cuda_ops.cpp does
// the same for the model's other ops.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "attention.cuh"
#include "attention/attention_cases.hpp"
#include "attention_emulation.hpp"
#include "block_emulation.hpp"
#include "cope_attention.cuh"
#include "routing.cuh"
#include "rows.cuh"

namespace {

using cuda_test::AttentionCase;
using cuda_test::CaseSpec;
using moas::cuda::AttentionHostBlock;
using moas::cuda::CopeHostBlock;

void emulate_attention(const AttentionCase &c, std::vector<float> &arena, bool reverse) {
  using namespace moas::cuda;
  const cuda_test::EmulatedAttention launch(c, arena);
  const AttentionArgs &a = launch.args;
  const int64_t d = a.dims.head_dim;
  cuda_test::emulate<AttentionHostBlock>(
      query_grid(a), forward_shared_bytes(d), reverse,
      [&](const AttentionHostBlock &block, unsigned char *shared, int64_t x, int64_t y, int64_t z) {
        attention_forward_block(block, a, shared, x, y, z);
      });
  if (!c.has_backward()) return;
  cuda_test::emulate<AttentionHostBlock>(query_grid(a), dq_shared_bytes(d), reverse,
                                         [&](const AttentionHostBlock &block, unsigned char *shared, int64_t x,
                                             int64_t y, int64_t z) { attention_dq_block(block, a, shared, x, y, z); });
  cuda_test::emulate<AttentionHostBlock>(
      key_grid(a), dkdv_shared_bytes(d), reverse,
      [&](const AttentionHostBlock &block, unsigned char *shared, int64_t x, int64_t y, int64_t z) {
        attention_dkdv_block(block, a, shared, x, y, z);
      });
}

void emulate_cope_attention(const AttentionCase &c, std::vector<float> &arena, bool reverse) {
  using namespace moas::cuda;
  const cuda_test::EmulatedAttention launch(c, arena);
  std::vector<float> scratch((size_t)c.cope_scratch_size(), std::nanf(""));
  const CopeArgs args{launch.args, c.cope_e(arena.data()), c.max_pos(), c.cope_de(arena.data()), scratch.data()};
  cuda_test::emulate<CopeHostBlock>(cope_forward_grid(args), cope_shared_bytes(args, false), reverse,
                                    [&](const CopeHostBlock &block, unsigned char *shared, int64_t x, int64_t y,
                                        int64_t z) { cope_forward_block(block, args, shared, x, y, z); });
  if (!c.has_backward()) return;
  cuda_test::emulate<CopeHostBlock>(cope_backward_grid(args), cope_shared_bytes(args, true), reverse,
                                    [&](const CopeHostBlock &block, unsigned char *shared, int64_t x, int64_t y,
                                        int64_t) { cope_backward_block(block, args, shared, x, y); });
  cuda_test::emulate<CopeHostBlock>(cope_embedding_grad_grid(args), 0, reverse,
                                    [&](const CopeHostBlock &block, unsigned char *, int64_t x, int64_t, int64_t) {
                                      cope_embedding_grad_block(block, args, x);
                                    });
}

// Every attention case, threads in both orders, against the CPU kernel: SPEC §9's CPU tolerance (both sides fp32 on
// the CPU, summing in different orders).
template <class Emulate>
void check_attention_cases(float dropout, int64_t cope_max_pos, Emulate &&emulate) {
  for (const CaseSpec &spec : cuda_test::attention_cases())
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION(spec.name << (reverse ? ", threads in reverse" : "")) {
        const AttentionCase c(spec, 17, dropout, cope_max_pos);
        std::vector<float> ref = c.arena;
        c.cpu_forward(ref);
        if (c.has_backward()) c.cpu_backward(ref);
        std::vector<float> emulated = c.arena;
        emulate(c, emulated, reverse);
        for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(emulated, ref, t, 1e-5);
        if (c.has_backward())
          for (const cuda_test::Tensor &t : c.backward_outputs) cuda_test::require_close(emulated, ref, t, 1e-5);
      }
    }
}

}  // namespace

TEST_CASE("CUDA attention blocks emulated on the host equal the CPU kernel", "[cuda][emulated][attention]") {
  check_attention_cases(0.0f, 0, emulate_attention);
}

TEST_CASE("CUDA attention blocks with dropout on the probabilities draw the CPU's mask",
          "[cuda][emulated][attention]") {
  check_attention_cases(0.3f, 0, emulate_attention);
}

// P = 5 clamps most positions at P - 1 (the clamp and its zero slope); P = 40 keeps long rows' positions apart.
TEST_CASE("CUDA CoPE attention blocks emulated on the host equal the CPU kernel", "[cuda][emulated][cope]") {
  for (const int64_t max_pos : {5, 40}) DYNAMIC_SECTION("max_pos " << max_pos) {
      check_attention_cases(0.0f, max_pos, emulate_cope_attention);
    }
}

TEST_CASE("CUDA CoPE attention blocks with dropout draw the CPU's mask", "[cuda][emulated][cope]") {
  check_attention_cases(0.3f, 16, emulate_cope_attention);
}

TEST_CASE("CUDA select_rows block emulated on the host builds the CPU's RowSet", "[cuda][emulated][routing]") {
  // 300 positions span two 256-token chunks; sequence 1 selects nothing; positions start at `past`.
  const int64_t batch = 3, seq = 300, E = 4, past = 5;
  std::mt19937_64 rng(3);
  std::vector<uint8_t> flags((size_t)(batch * seq * E));
  for (size_t i = 0; i < flags.size(); ++i) flags[i] = (i / (seq * E)) == 1 ? 0 : (uint8_t)(rng() % 3 == 0);
  for (const bool reverse : {false, true})
    for (int64_t head = 0; head < E; ++head) {
      moas::RowSet expected;
      expected.select(
          batch, seq, [&](int64_t n) { return flags[(size_t)(n * E + head)] != 0; }, past);
      std::vector<int64_t> row((size_t)(batch * seq), -1), begin((size_t)batch + 1, -1);
      std::vector<int32_t> pos((size_t)(batch * seq), -1);
      const moas::cuda::SelectArgs a{row.data(), pos.data(), begin.data(), flags.data() + head, E, batch, seq, past};
      moas::cuda::SelectHostBlock block;
      block.reverse = reverse;
      std::vector<unsigned char> shared(moas::cuda::select_shared_bytes(), 0xFF);
      moas::cuda::select_rows_block(block, a, shared.data());
      REQUIRE(begin == expected.begin);
      row.resize((size_t)expected.size());
      pos.resize((size_t)expected.size());
      REQUIRE(row == expected.row);
      REQUIRE(pos == expected.pos);
    }
}

TEST_CASE("The CUDA router's per-token function is the CPU's softmax, argmax and top-k", "[cuda][emulated][routing]") {
  const int64_t N = 50, width = 6, k = 2;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> logits((size_t)(N * width));
  for (float &x : logits) x = u(rng);
  std::vector<float> expected(logits.size()), probs(logits.size());
  moas::softmax_rows(expected.data(), width, logits.data(), width, N, width);
  for (int64_t n = 0; n < N; ++n) {
    int32_t choice = -1;
    uint8_t selected[width], want[width];
    moas::cuda::router_token(probs.data() + n * width, logits.data() + n * width, width, &choice, selected, k);
    moas::top_k_lower(expected.data() + n * width, width, k, want);
    REQUIRE(choice == moas::argmax_lower(expected.data() + n * width, width));
    REQUIRE(std::memcmp(selected, want, width) == 0);
  }
  REQUIRE(probs == expected);
}
