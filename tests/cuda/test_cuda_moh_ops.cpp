// The block functions of MoH's own kernels on the host (cuda/moh_heads.cuh, cuda/moh_router.cuh), as
// test_cuda_elementwise.cpp runs the elementwise ones: every block of the launcher's grid, threads in both orders,
// against the CPU functions the table's entries mirror (moh_gate_head / moh_gate_head_backward per (token, head) pair,
// softmax_rows_backward), compared bit for bit. Inactive pairs (gate 0, zero outputs) are among the inputs; shapes
// span one and several blocks; the softmax gradient goes into a wider logits row, whose other columns must stay
// untouched. test_cuda_kernels.cpp runs the launched kernels on a device.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attention/attention_cases.hpp"
#include "attention/moh_gates.hpp"
#include "block_emulation.hpp"
#include "cuda_inputs.hpp"
#include "moh_heads.cuh"
#include "moh_router.cuh"
#include "ops/softmax.hpp"

namespace {

using cuda_test::emulate;
using cuda_test::require_same_bits;
using cuda_test::uniform;
namespace mc = moas::cuda;

struct HeadShape {
  int64_t N, heads, head_dim;
};
// One pair; a block's worth of elements not dividing evenly; pairs spanning several blocks (backward's grid).
const HeadShape kHeadShapes[] = {{1, 1, 1}, {5, 3, 7}, {130, 4, 8}, {300, 6, 4}};

// Gates with every third pair inactive (0), whose head outputs are then 0 too, as CudaMoh's att_ has them.
void deactivate_pairs(std::vector<float> &gate, std::vector<float> &att, int64_t head_dim) {
  for (size_t pair = 0; pair < gate.size(); pair += 3) {
    gate[pair] = 0.0f;
    for (int64_t c = 0; c < head_dim; ++c) att[pair * (size_t)head_dim + (size_t)c] = 0.0f;
  }
}

}  // namespace

TEST_CASE("CUDA MoH gate-heads block scales each head by its gate, as moh_gate_head", "[cuda][emulated][moh]") {
  using Block = mc::MohHeadHostBlock;
  for (const HeadShape &s : kHeadShapes)
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", heads " << s.heads << ", head_dim " << s.head_dim
                           << (reverse ? ", threads in reverse" : "")) {
        const int64_t pairs = s.N * s.heads, d = s.head_dim;
        std::vector<float> gate = uniform((size_t)pairs, 1, 0.0f, 2.0f), att = uniform((size_t)(pairs * d), 2);
        deactivate_pairs(gate, att, d);
        std::vector<float> want((size_t)(pairs * d)), gated((size_t)(pairs * d), std::nanf(""));
        for (int64_t pair = 0; pair < pairs; ++pair)
          moas::moh_gate_head(want.data() + pair * d, gate[(size_t)pair], att.data() + pair * d, d);
        const mc::MohGateHeadsArgs a{gated.data(), gate.data(), att.data(), s.N, s.heads, d};
        emulate<Block>(mc::moh_gate_heads_grid(a), 0, reverse,
                       [&](const Block &block, unsigned char *, int64_t x, int64_t, int64_t) {
                         mc::moh_gate_heads_block(block, a, x);
                       });
        require_same_bits(gated, want, "gated");
      }
    }
}

TEST_CASE("CUDA MoH gate-heads backward block gives moh_gate_head_backward's bits", "[cuda][emulated][moh]") {
  using Block = mc::MohHeadHostBlock;
  for (const HeadShape &s : kHeadShapes)
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", heads " << s.heads << ", head_dim " << s.head_dim
                           << (reverse ? ", threads in reverse" : "")) {
        const int64_t pairs = s.N * s.heads, d = s.head_dim;
        std::vector<float> gate = uniform((size_t)pairs, 3, 0.0f, 2.0f), att = uniform((size_t)(pairs * d), 4);
        deactivate_pairs(gate, att, d);
        std::vector<float> dgated = uniform((size_t)(pairs * d), 5);
        for (size_t i = 0; i < dgated.size(); i += 4) dgated[i] *= 1e4f;  // another order of the dot would round apart
        std::vector<float> want_datt((size_t)(pairs * d)), want_dgate((size_t)pairs);
        for (int64_t pair = 0; pair < pairs; ++pair)
          want_dgate[(size_t)pair] = moas::moh_gate_head_backward(want_datt.data() + pair * d, gate[(size_t)pair],
                                                                  dgated.data() + pair * d, att.data() + pair * d, d);
        std::vector<float> datt((size_t)(pairs * d), std::nanf("")), dgate((size_t)pairs, std::nanf(""));
        const mc::MohGateHeadsBackwardArgs a{datt.data(), dgate.data(), dgated.data(), gate.data(), att.data(),
                                             s.N,         s.heads,      d};
        emulate<Block>(mc::moh_gate_heads_backward_grid(a), 0, reverse,
                       [&](const Block &block, unsigned char *, int64_t x, int64_t, int64_t) {
                         mc::moh_gate_heads_backward_block(block, a, x);
                       });
        require_same_bits(datt, want_datt, "datt");
        require_same_bits(dgate, want_dgate, "dgate");
      }
    }
}

TEST_CASE("CUDA router softmax backward block gives softmax_rows_backward's bits in its columns of the logits",
          "[cuda][emulated][moh]") {
  using Block = mc::MohRouterHostBlock;
  struct Rows {
    int64_t N, width, column, stride;
  };
  // A router alone; the head-type router (width 2) between others in a shared logits row; rows over several blocks.
  const Rows cases[] = {{1, 1, 0, 1}, {7, 2, 3, 8}, {300, 5, 0, 9}, {129, 3, 6, 9}};
  for (const Rows &s : cases)
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", width " << s.width << " at column " << s.column << " of " << s.stride
                           << (reverse ? ", threads in reverse" : "")) {
        std::vector<float> p = uniform((size_t)(s.N * s.width), 6);
        moas::softmax_rows(p.data(), s.width, p.data(), s.width, s.N, s.width);
        const std::vector<float> dp = uniform((size_t)(s.N * s.width), 7);
        std::vector<float> dlogits = uniform((size_t)(s.N * s.stride), 8), want = dlogits;
        moas::softmax_rows_backward(want.data() + s.column, s.stride, dp.data(), p.data(), s.N, s.width);
        const mc::RouterSoftmaxBackwardArgs a{dlogits.data() + s.column, s.stride, dp.data(), p.data(), s.N, s.width};
        emulate<Block>(mc::router_softmax_backward_grid(a), 0, reverse,
                       [&](const Block &block, unsigned char *, int64_t x, int64_t, int64_t) {
                         mc::router_softmax_backward_block(block, a, x);
                       });
        require_same_bits(dlogits, want, "dlogits");
      }
    }
}
