// The block function of cuda/moas_mix.cuh on the host, as test_cuda_elementwise.cpp runs the elementwise ones: every
// block of the launcher's grid, threads in both orders, against moas.cpp's mixing backward written out (the dot in
// column order, then the scaling), compared bit for bit. Rows are a routed subset of the tokens, with capacity beyond
// the device count: rows past the count, other branches' columns and unlisted tokens' entries must stay untouched.
// test_cuda_kernels.cpp runs the launched kernel on a device.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attention/attention_cases.hpp"
#include "block_emulation.hpp"
#include "cuda_inputs.hpp"
#include "moas_mix.cuh"

namespace {

using cuda_test::emulate;
using cuda_test::require_same_bits;
using cuda_test::uniform;
namespace mc = moas::cuda;
using Block = mc::MoasMixHostBlock;

struct MixShape {
  int64_t N, S, branch, width, every;  // the branch's tokens: n % every == 0
};
// One token; a branch of a few tokens over one block; more rows than a block, wide rows; every token (soft, static).
const MixShape kShapes[] = {{1, 3, 0, 1, 1}, {20, 3, 2, 33, 3}, {300, 4, 1, 300, 2}, {257, 2, 1, 8, 1}};

}  // namespace

TEST_CASE("CUDA MoAS mixing backward block equals moas.cpp's per-row dot and scaling", "[cuda][emulated][moas]") {
  for (const MixShape &s : kShapes)
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", S " << s.S << ", branch " << s.branch << ", width " << s.width << ", every "
                           << s.every << (reverse ? ", threads in reverse" : "")) {
        std::vector<int64_t> row;
        for (int64_t n = 0; n < s.N; n += s.every) row.push_back(n);
        const int64_t m = (int64_t)row.size(), capacity = m + 5;
        row.resize((size_t)capacity, -1);  // beyond the count: never read
        const std::vector<float> z = uniform((size_t)(capacity * s.width), 1);
        const std::vector<float> mix = uniform((size_t)(s.N * s.S), 2, 0.0f, 1.5f);
        std::vector<float> dz = uniform((size_t)(capacity * s.width), 3);
        std::vector<float> d_mix = uniform((size_t)(s.N * s.S), 4);

        std::vector<float> want_dz = dz, want_d_mix = d_mix;
        for (int64_t r = 0; r < m; r++) {
          const int64_t slot = row[(size_t)r] * s.S + s.branch;
          float dot = 0;
          for (int64_t c = 0; c < s.width; c++)
            dot += want_dz[(size_t)(r * s.width + c)] * z[(size_t)(r * s.width + c)];
          want_d_mix[(size_t)slot] = dot;
          for (int64_t c = 0; c < s.width; c++) want_dz[(size_t)(r * s.width + c)] *= mix[(size_t)slot];
        }

        const int64_t count = m;
        const mc::MoasMixArgs args{d_mix.data(), dz.data(), z.data(), mix.data(), row.data(),
                                   &count,       capacity,  s.width,  s.S,        s.branch};
        emulate<Block>(mc::moas_mix_grid(args), 0, reverse,
                       [&](const Block &block, unsigned char *, int64_t x, int64_t, int64_t) {
                         mc::moas_mix_backward_block(block, args, x);
                       });
        require_same_bits(d_mix, want_d_mix, "d_mix");
        require_same_bits(dz, want_dz, "dz");
      }
    }
}
