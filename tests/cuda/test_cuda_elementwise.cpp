// The block functions of cuda/elementwise.cuh on the host, as test_cuda_ops.cpp runs the other ops': every block of
// the launcher's grid on NaN-filled shared memory, threads in both orders, against the CPU on the same inputs. Every
// comparison is of bits: add and fill_rows are exact; column_sum_accumulate must add in parallel.hpp's order; and
// scale_rows is src/base/gemm.cpp's product with K = 0. Strides wider than the rows check that the padding stays
// untouched; shapes span one and several blocks. test_cuda_kernels.cpp runs the launched kernels on a device.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attention/attention_cases.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "block_emulation.hpp"
#include "cuda_inputs.hpp"
#include "elementwise.cuh"

namespace {

using cuda_test::emulate;
using cuda_test::require_same_bits;
using cuda_test::uniform;
namespace mc = moas::cuda;
using Block = mc::ElementwiseHostBlock;

struct Rows {
  int64_t N, width, stride;
};
// One row and one column; odd sizes within a block; rows wider than a block; many rows of one block's columns; no
// rows (the column sums still add 0).
const Rows kRows[] = {{1, 1, 1}, {7, 5, 9}, {3, 300, 300}, {300, 33, 40}, {0, 6, 6}};

}  // namespace

TEST_CASE("CUDA add block equals elementwise addition, also in place", "[cuda][emulated][elementwise]") {
  for (const int64_t n : {1, 255, 256, 1000})
    for (const bool in_place : {false, true})
      for (const bool reverse : {false, true}) {
        DYNAMIC_SECTION("n " << n << (in_place ? ", out = a" : "") << (reverse ? ", threads in reverse" : "")) {
          std::vector<float> a = uniform((size_t)n, 1), want((size_t)n);
          const std::vector<float> b = uniform((size_t)n, 2);
          for (size_t i = 0; i < want.size(); ++i) want[i] = a[i] + b[i];
          std::vector<float> out((size_t)n, std::nanf(""));
          const mc::AddArgs args{in_place ? a.data() : out.data(), a.data(), b.data(), n};
          emulate<Block>(
              mc::add_grid(args), 0, reverse,
              [&](const Block &block, unsigned char *, int64_t x, int64_t, int64_t) { mc::add_block(block, args, x); });
          require_same_bits(in_place ? a : out, want, "out");
        }
      }
}

TEST_CASE("CUDA fill_rows block writes the values into every row", "[cuda][emulated][elementwise]") {
  for (const Rows &s : kRows)
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", width " << s.width << ", stride " << s.stride
                           << (reverse ? ", threads in reverse" : "")) {
        const std::vector<float> values = uniform((size_t)s.width, 3);
        std::vector<float> out = uniform((size_t)(s.N * s.stride), 4), want = out;
        for (int64_t r = 0; r < s.N; ++r)
          for (int64_t c = 0; c < s.width; ++c) want[(size_t)(r * s.stride + c)] = values[(size_t)c];
        const mc::FillRowsArgs a{out.data(), s.stride, values.data(), s.N, s.width};
        emulate<Block>(mc::fill_rows_grid(a), 0, reverse,
                       [&](const Block &block, unsigned char *, int64_t x, int64_t, int64_t) {
                         mc::fill_rows_block(block, a, x);
                       });
        require_same_bits(out, want, "out");
      }
    }
}

TEST_CASE("CUDA column sum block gives parallel.hpp's column_sum_accumulate bit for bit",
          "[cuda][emulated][elementwise]") {
  for (const Rows &s : kRows)
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", width " << s.width << ", stride " << s.stride
                           << (reverse ? ", threads in reverse" : "")) {
        // Values of mixed magnitude, so that another order of the additions rounds differently; sums start at -0
        // where the CPU's += 0 of no rows gives +0.
        std::vector<float> x = uniform((size_t)(s.N * s.stride), 5);
        for (size_t i = 0; i < x.size(); i += 3) x[i] *= 1e4f;
        std::vector<float> sums = uniform((size_t)s.width, 6);
        sums[0] = -0.0f;
        std::vector<float> compact((size_t)(s.N * s.width)), want = sums;
        for (int64_t r = 0; r < s.N; ++r)
          for (int64_t c = 0; c < s.width; ++c) compact[(size_t)(r * s.width + c)] = x[(size_t)(r * s.stride + c)];
        moas::column_sum_accumulate(want.data(), compact.data(), s.N, s.width);
        const mc::ColumnSumArgs a{sums.data(), x.data(), s.stride, s.N, s.width};
        emulate<Block>(mc::column_sum_grid(a), 0, reverse,
                       [&](const Block &block, unsigned char *, int64_t bx, int64_t, int64_t) {
                         mc::column_sum_block(block, a, bx);
                       });
        require_same_bits(sums, want, "sums");
      }
    }
}

TEST_CASE("CUDA scale_rows block is gemm.cpp's product with K = 0", "[cuda][emulated][elementwise]") {
  for (const float beta : {0.0f, 0.5f, -3.0f})
    for (const Rows &s : kRows)
      for (const bool reverse : {false, true}) {
        DYNAMIC_SECTION("beta " << beta << ", N " << s.N << ", width " << s.width << ", stride " << s.stride
                                << (reverse ? ", threads in reverse" : "")) {
          // beta = 0 must overwrite NaN, as BLAS does.
          std::vector<float> x = uniform((size_t)(s.N * s.stride), 7);
          if (beta == 0.0f)
            for (int64_t r = 0; r < s.N; ++r) x[(size_t)(r * s.stride)] = std::nanf("");
          std::vector<float> want = x;
          moas::gemm(moas::Trans::No, moas::Trans::No, s.N, s.width, 0, 1.0f, nullptr, 1, nullptr, s.width, beta,
                     want.data(), s.stride);
          const mc::ScaleRowsArgs a{x.data(), s.stride, beta, s.N, s.width};
          emulate<Block>(mc::scale_rows_grid(a), 0, reverse,
                         [&](const Block &block, unsigned char *, int64_t bx, int64_t, int64_t) {
                           mc::scale_rows_block(block, a, bx);
                         });
          require_same_bits(x, want, "x");
        }
      }
}
