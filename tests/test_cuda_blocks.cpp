// The CUDA kernels' block functions (cuda/*.cuh) run on the host: every block of the grid on fresh shared memory
// filled with NaN, its threads one after the other in both orders, against the CPU kernels. No GPU is needed, so
// this runs in every build, the sanitizer build included: it checks the device code's indexing, tiling, masks and
// arithmetic where no CUDA device exists (test_cuda_kernels.cpp runs the same cases on a device when there is one).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "attention.cuh"
#include "attention_cases.hpp"
#include "routing.cuh"
#include "rows.cuh"

namespace {

using cuda_test::AttentionCase;
using cuda_test::CaseSpec;

// Runs block(shared, x, y, z) for every block of the grid, one after the other.
template <class BlockFn>
void run_grid(const moas::cuda::AttentionGrid &grid, size_t shared_bytes, BlockFn &&block) {
  std::unique_ptr<unsigned char[]> shared(new unsigned char[shared_bytes]);
  for (int64_t z = 0; z < grid.z; ++z)
    for (int64_t y = 0; y < grid.y; ++y)
      for (int64_t x = 0; x < grid.x; ++x) {
        std::memset(shared.get(), 0xFF, shared_bytes);  // NaN: a read of anything not written this block shows
        block(shared.get(), x, y, z);
      }
}

void emulate_attention(const AttentionCase &c, std::vector<float> &arena, bool reverse) {
  using namespace moas::cuda;
  const auto heads = c.heads(arena.data(), c.positions.data(), c.begins.data());
  const auto grads = c.grads(arena.data());
  AttentionArgs a{};
  a.dims = c.cuda_dims();
  a.kv = c.key_values(arena.data());
  a.heads = heads.data();
  a.grads = grads.data();
  a.n_heads = (int64_t)heads.size();
  a.dkv = c.key_value_grads(arena.data());
  a.scale = 1.0f / std::sqrt((float)a.dims.head_dim);
  AttentionHostBlock block;
  block.reverse = reverse;
  const int64_t d = a.dims.head_dim;
  run_grid(query_grid(a), forward_shared_bytes(d), [&](unsigned char *shared, int64_t x, int64_t y, int64_t z) {
    attention_forward_block(block, a, shared, x, y, z);
  });
  if (!c.has_backward()) return;
  run_grid(query_grid(a), dq_shared_bytes(d), [&](unsigned char *shared, int64_t x, int64_t y, int64_t z) {
    attention_dq_block(block, a, shared, x, y, z);
  });
  run_grid(key_grid(a), dkdv_shared_bytes(d), [&](unsigned char *shared, int64_t x, int64_t y, int64_t z) {
    attention_dkdv_block(block, a, shared, x, y, z);
  });
}

}  // namespace

TEST_CASE("CUDA attention blocks emulated on the host equal the CPU kernel", "[cuda][emulated][attention]") {
  for (const CaseSpec &spec : cuda_test::attention_cases())
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION(spec.name << (reverse ? ", threads in reverse" : "")) {
        const AttentionCase c(spec, 17);
        std::vector<float> ref = c.arena;
        c.cpu_forward(ref);
        if (c.has_backward()) c.cpu_backward(ref);
        std::vector<float> emulated = c.arena;
        emulate_attention(c, emulated, reverse);
        // Both sides are fp32 on the CPU, summing in different orders: SPEC §9's CPU tolerance.
        for (const cuda_test::Tensor &t : c.forward_outputs) cuda_test::require_close(emulated, ref, t, 1e-5);
        if (c.has_backward())
          for (const cuda_test::Tensor &t : c.backward_outputs) cuda_test::require_close(emulated, ref, t, 1e-5);
      }
    }
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
