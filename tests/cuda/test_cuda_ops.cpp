// The block functions of the model's other CUDA ops (cuda/embedding, norm, mlp, loss, adamw, rope, dropout .cuh) run
// on the host, as test_cuda_blocks.cpp runs the attention kernels': every block of the launcher's grid on NaN-filled
// shared memory, threads in both orders, against the CPU function of src/ on the same inputs, to SPEC §9's CPU
// tolerance (1e-5 of the largest reference value per tensor). Shapes include 1s, odd sizes and sizes that span
// several blocks, bands or chunks; accumulating outputs start from nonzero values. test_cuda_kernels.cpp runs the
// launched kernels on a device.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "adamw.cuh"
#include "attention/attention_cases.hpp"
#include "block_emulation.hpp"
#include "cuda_inputs.hpp"
#include "dropout.cuh"
#include "embedding.cuh"
#include "loss.cuh"
#include "mlp.cuh"
#include "norm.cuh"
#include "ops/embedding.hpp"
#include "ops/loss.hpp"
#include "rope.cuh"

namespace {

using cuda_test::emulate;
using cuda_test::require_close;
using cuda_test::tokens_below;
using cuda_test::uniform;
namespace mc = moas::cuda;

constexpr double kTol = 1e-5;

}  // namespace

TEST_CASE("CUDA embedding blocks equal the CPU's forward and backward", "[cuda][emulated][embedding]") {
  struct Shape {
    int64_t B, T, C, V, past;
    int32_t token_range;  // tokens below this: small ranges repeat tokens within a vocabulary band
  };
  for (const Shape &s :
       {Shape{1, 1, 1, 1, 0, 1}, Shape{2, 5, 7, 11, 3, 4}, Shape{3, 33, 130, 200, 0, 200}, Shape{2, 70, 9, 300, 1, 90}})
    for (const bool positions : {true, false})
      for (const bool reverse : {false, true}) {
        DYNAMIC_SECTION("B " << s.B << ", T " << s.T << ", C " << s.C << ", V " << s.V << (positions ? "" : ", no wpe")
                             << (reverse ? ", threads in reverse" : "")) {
          const int64_t N = s.B * s.T;
          const std::vector<int32_t> tokens = tokens_below((size_t)N, s.token_range, 1 + s.V);
          const std::vector<float> wte = uniform((size_t)(s.V * s.C), 2),
                                   wpe = uniform((size_t)((s.past + s.T) * s.C), 3);
          const std::vector<float> dout = uniform((size_t)(N * s.C), 4);
          const float *wpe_ptr = positions ? wpe.data() : nullptr;

          std::vector<float> out_ref((size_t)(N * s.C)), out((size_t)(N * s.C), 9.0f);
          moas::embedding_forward(out_ref.data(), tokens.data(), wte.data(), wpe_ptr, s.B, s.T, s.C, s.past);
          mc::EmbeddingArgs a{};
          a.out = out.data();
          a.tokens = tokens.data();
          a.wte = wte.data();
          a.wpe = wpe_ptr;
          a.B = s.B;
          a.T = s.T;
          a.C = s.C;
          a.past = s.past;
          emulate<mc::EmbeddingHostBlock>(mc::embedding_forward_grid(a), 0, reverse,
                                          [&](const mc::EmbeddingHostBlock &block, unsigned char *, int64_t x, int64_t,
                                              int64_t) { mc::embedding_forward_block(block, a, x); });
          require_close(out, out_ref, kTol, "out");

          // Gradients accumulate onto what is there.
          std::vector<float> dwte_ref = uniform((size_t)(s.V * s.C), 5), dwpe_ref = uniform((size_t)(s.T * s.C), 6);
          std::vector<float> dwte = dwte_ref, dwpe = dwpe_ref;
          moas::embedding_backward(dwte_ref.data(), positions ? dwpe_ref.data() : nullptr, dout.data(), tokens.data(),
                                   s.B, s.T, s.C);
          mc::EmbeddingArgs g{};
          g.dwte = dwte.data();
          g.dwpe = positions ? dwpe.data() : nullptr;
          g.dout = dout.data();
          g.tokens = tokens.data();
          g.B = s.B;
          g.T = s.T;
          g.C = s.C;
          g.V = s.V;
          emulate<mc::EmbeddingHostBlock>(
              mc::embedding_backward_wte_grid(g), mc::embedding_backward_shared_bytes(), reverse,
              [&](const mc::EmbeddingHostBlock &block, unsigned char *shared, int64_t x, int64_t y, int64_t) {
                mc::embedding_backward_wte_block(block, g, shared, x, y);
              });
          emulate<mc::EmbeddingHostBlock>(mc::embedding_backward_wpe_grid(g), 0, reverse,
                                          [&](const mc::EmbeddingHostBlock &block, unsigned char *, int64_t x, int64_t,
                                              int64_t) { mc::embedding_backward_wpe_block(block, g, x); });
          require_close(dwte, dwte_ref, kTol, "dwte");
          require_close(dwpe, dwpe_ref, kTol, "dwpe");
        }
      }
}

TEST_CASE("CUDA norm blocks equal the CPU's LayerNorm and RMSNorm, forward and backward", "[cuda][emulated][norm]") {
  struct Kind {
    const char *name;
    bool rms, bias;
  };
  // 300 and 520 rows span two and three bands of the weight gradients' column sums.
  const int64_t shapes[][2] = {{1, 1}, {7, 5}, {300, 33}, {520, 130}, {3, 257}};
  for (const Kind &k :
       {Kind{"LayerNorm", false, true}, Kind{"LayerNorm without bias", false, false}, Kind{"RMSNorm", true, false}})
    for (const auto &shape : shapes)
      for (const bool reverse : {false, true}) {
        const int64_t N = shape[0], C = shape[1];
        DYNAMIC_SECTION(k.name << ", N " << N << ", C " << C << (reverse ? ", threads in reverse" : "")) {
          // An offset mean, so LayerNorm's centring matters.
          const std::vector<float> inp = uniform((size_t)(N * C), 11, -1.0f, 3.0f), dout = uniform((size_t)(N * C), 12);
          const std::vector<float> weight = uniform((size_t)C, 13, 0.5f, 1.5f), bias = uniform((size_t)C, 14);
          const float *bias_ptr = k.bias ? bias.data() : nullptr;
          std::vector<float> out_ref((size_t)(N * C)), mean_ref((size_t)N), rstd_ref((size_t)N);
          moas::norm_forward(k.rms, out_ref.data(), mean_ref.data(), rstd_ref.data(), inp.data(), weight.data(),
                             bias_ptr, N, C);
          std::vector<float> out((size_t)(N * C), 9.0f), mean((size_t)N, 9.0f), rstd((size_t)N, 9.0f);
          mc::NormArgs a{};
          a.rms = k.rms;
          a.out = out.data();
          a.mean_out = mean.data();
          a.rstd_out = rstd.data();
          a.inp = inp.data();
          a.weight = weight.data();
          a.bias = bias_ptr;
          a.N = N;
          a.C = C;
          emulate<mc::NormHostBlock>(mc::norm_row_grid(a), mc::norm_shared_bytes(), reverse,
                                     [&](const mc::NormHostBlock &block, unsigned char *shared, int64_t x, int64_t,
                                         int64_t) { mc::norm_forward_block(block, a, shared, x); });
          require_close(out, out_ref, kTol, "out");
          require_close(mean, mean_ref, kTol, "mean");
          require_close(rstd, rstd_ref, kTol, "rstd");

          std::vector<float> dinp_ref = uniform((size_t)(N * C), 15), dweight_ref = uniform((size_t)C, 16),
                             dbias_ref = uniform((size_t)C, 17), scratch_ref((size_t)(N * C));
          std::vector<float> dinp = dinp_ref, dweight = dweight_ref, dbias = dbias_ref;
          std::vector<float> scratch((size_t)moas_cuda_norm_backward_scratch(N, C), std::nanf(""));
          moas::norm_backward(k.rms, dinp_ref.data(), dweight_ref.data(), k.bias ? dbias_ref.data() : nullptr,
                              scratch_ref.data(), dout.data(), inp.data(), weight.data(), mean_ref.data(),
                              rstd_ref.data(), N, C);
          mc::NormArgs g{};
          g.rms = k.rms;
          g.dinp = dinp.data();
          g.dweight = dweight.data();
          g.dbias = k.bias ? dbias.data() : nullptr;
          g.scratch = scratch.data();
          g.dout = dout.data();
          g.inp = inp.data();
          g.weight = weight.data();
          g.mean = mean.data();
          g.rstd = rstd.data();
          g.N = N;
          g.C = C;
          emulate<mc::NormHostBlock>(mc::norm_row_grid(g), mc::norm_shared_bytes(), reverse,
                                     [&](const mc::NormHostBlock &block, unsigned char *shared, int64_t x, int64_t,
                                         int64_t) { mc::norm_backward_row_block(block, g, shared, x); });
          emulate<mc::NormHostBlock>(mc::norm_band_grid(g), 0, reverse,
                                     [&](const mc::NormHostBlock &block, unsigned char *, int64_t x, int64_t y,
                                         int64_t) { mc::norm_backward_band_block(block, g, x, y); });
          emulate<mc::NormHostBlock>(mc::norm_column_grid(g), 0, reverse,
                                     [&](const mc::NormHostBlock &block, unsigned char *, int64_t x, int64_t, int64_t) {
                                       mc::norm_backward_column_block(block, g, x);
                                     });
          require_close(dinp, dinp_ref, kTol, "dinp");
          require_close(dweight, dweight_ref, kTol, "dweight");
          require_close(dbias, dbias_ref, kTol, "dbias");  // untouched on both sides without a bias
        }
      }
}

TEST_CASE("CUDA GELU and SwiGLU blocks equal the CPU's, forward and backward", "[cuda][emulated][mlp]") {
  for (const bool reverse : {false, true}) {
    for (const int64_t n : {1, 257, 1000}) {
      DYNAMIC_SECTION("GELU, n " << n << (reverse ? ", threads in reverse" : "")) {
        // [-6, 6] reaches erf's saturation and the polynomial's whole range.
        const std::vector<float> inp = uniform((size_t)n, 21, -6.0f, 6.0f), dout = uniform((size_t)n, 22);
        std::vector<float> out_ref((size_t)n), dinp_ref((size_t)n), out((size_t)n, 9.0f), dinp((size_t)n, 9.0f);
        moas::gelu_forward(out_ref.data(), inp.data(), n);
        moas::gelu_backward(dinp_ref.data(), dout.data(), inp.data(), n);
        const mc::MlpArgs a{out.data(), nullptr, inp.data(), n, 1}, g{dinp.data(), dout.data(), inp.data(), n, 1};
        emulate<mc::MlpHostBlock>(mc::mlp_grid(a), 0, reverse,
                                  [&](const mc::MlpHostBlock &block, unsigned char *, int64_t x, int64_t, int64_t) {
                                    mc::gelu_forward_block(block, a, x);
                                    mc::gelu_backward_block(block, g, x);
                                  });
        require_close(out, out_ref, kTol, "out");
        require_close(dinp, dinp_ref, kTol, "dinp");
      }
    }
    const int64_t shapes[][2] = {{1, 1}, {5, 7}, {33, 130}};
    for (const auto &shape : shapes) {
      const int64_t N = shape[0], h = shape[1];
      DYNAMIC_SECTION("SwiGLU, N " << N << ", h " << h << (reverse ? ", threads in reverse" : "")) {
        const std::vector<float> pre = uniform((size_t)(N * 2 * h), 23, -6.0f, 6.0f),
                                 dout = uniform((size_t)(N * h), 24);
        std::vector<float> out_ref((size_t)(N * h)), dpre_ref((size_t)(N * 2 * h));
        std::vector<float> out((size_t)(N * h), 9.0f), dpre((size_t)(N * 2 * h), 9.0f);
        moas::swiglu_forward(out_ref.data(), pre.data(), N, h);
        moas::swiglu_backward(dpre_ref.data(), dout.data(), pre.data(), N, h);
        const mc::MlpArgs a{out.data(), nullptr, pre.data(), N * h, h},
            g{dpre.data(), dout.data(), pre.data(), N * h, h};
        emulate<mc::MlpHostBlock>(mc::mlp_grid(a), 0, reverse,
                                  [&](const mc::MlpHostBlock &block, unsigned char *, int64_t x, int64_t, int64_t) {
                                    mc::swiglu_forward_block(block, a, x);
                                    mc::swiglu_backward_block(block, g, x);
                                  });
        require_close(out, out_ref, kTol, "out");
        require_close(dpre, dpre_ref, kTol, "dpre");
      }
    }
  }
}

TEST_CASE("CUDA cross-entropy blocks equal the CPU's loss, lse and gradient", "[cuda][emulated][loss]") {
  struct Shape {
    int64_t N, V;
    int ignored_every;  // every k-th row has target -1 (1: all of them)
  };
  for (const Shape &s :
       {Shape{1, 1, 2}, Shape{7, 3, 3}, Shape{9, 300, 4}, Shape{13, 1000, 5}, Shape{600, 37, 7}, Shape{4, 50, 1}})
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION("N " << s.N << ", V " << s.V << ", every " << s.ignored_every << "th row ignored"
                           << (reverse ? ", threads in reverse" : "")) {
        // Logits far from 0, so the max subtraction matters.
        const std::vector<float> logits = uniform((size_t)(s.N * s.V), 31, 20.0f, 28.0f);
        std::vector<int32_t> targets = tokens_below((size_t)s.N, (int32_t)s.V, 32);
        for (int64_t n = s.ignored_every - 1; n < s.N; n += s.ignored_every) targets[(size_t)n] = -1;
        std::vector<float> lse_ref((size_t)s.N), lse((size_t)s.N, 9.0f);
        int64_t counted_ref = -1, counted = -1;
        const double loss_ref =
            moas::cross_entropy_forward(lse_ref.data(), logits.data(), targets.data(), s.N, s.V, &counted_ref);
        double loss = -1.0;
        mc::LossArgs a{};
        a.lse_out = lse.data();
        a.lse = lse.data();
        a.loss = &loss;
        a.counted = &counted;
        a.logits = logits.data();
        a.targets = targets.data();
        a.N = s.N;
        a.V = s.V;
        emulate<mc::LossHostBlock>(mc::loss_row_grid(a), mc::loss_row_shared_bytes(), reverse,
                                   [&](const mc::LossHostBlock &block, unsigned char *shared, int64_t x, int64_t,
                                       int64_t) { mc::cross_entropy_lse_block(block, a, shared, x); });
        emulate<mc::LossHostBlock>(mc::Grid{1, 1, 1}, mc::loss_mean_shared_bytes(), reverse,
                                   [&](const mc::LossHostBlock &block, unsigned char *shared, int64_t, int64_t,
                                       int64_t) { mc::cross_entropy_mean_block(block, a, shared); });
        require_close(lse, lse_ref, kTol, "lse");
        REQUIRE(counted == counted_ref);
        require_close(std::vector<double>{loss}, std::vector<double>{loss_ref}, kTol, "loss");

        const float scale = counted_ref > 0 ? 1.0f / (float)counted_ref : 1.0f;
        std::vector<float> dlogits_ref((size_t)(s.N * s.V)), dlogits((size_t)(s.N * s.V), 9.0f);
        moas::cross_entropy_backward(dlogits_ref.data(), logits.data(), lse_ref.data(), targets.data(), s.N, s.V,
                                     scale);
        a.dlogits = dlogits.data();
        a.scale = scale;
        emulate<mc::LossHostBlock>(mc::loss_row_grid(a), 0, reverse,
                                   [&](const mc::LossHostBlock &block, unsigned char *, int64_t x, int64_t, int64_t) {
                                     mc::cross_entropy_backward_block(block, a, x);
                                   });
        require_close(dlogits, dlogits_ref, kTol, "dlogits");
      }
    }
}

TEST_CASE("CUDA gradient-norm and AdamW blocks equal the CPU's steps", "[cuda][emulated][adamw]") {
  // Rank-1 and rank-3 tensors, and one that spans chunks of the norm; steps with new gradients each time.
  moas::ParamTable<float> params;
  params.add("w", {5, 7});
  params.add("b", {13});
  params.add("cube", {3, 4, 5});
  params.add("long", {2 * moas::cuda::kGradNormChunk + 3});
  params.add("last", {1});
  params.allocate();
  const int64_t n = params.total();
  const moas::ParamSegments segments = moas::param_segments(params);
  const moas::AdamWSettings clipped{1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0}, unclipped{3e-3, 0.8, 0.99, 1e-6, 0.0, 0.0};
  for (const moas::AdamWSettings &settings : {clipped, unclipped})
    for (const bool reverse : {false, true}) {
      DYNAMIC_SECTION((settings.grad_clip > 0 ? "clipped, decayed" : "no clipping, no decay")
                      << (reverse ? ", threads in reverse" : "")) {
        params.values = uniform((size_t)n, 41);
        moas::AdamWState<float> state;
        std::vector<float> values = params.values, exp_avg((size_t)n, 0.0f), exp_avg_sq((size_t)n, 0.0f);
        std::vector<double> partial((size_t)moas_cuda_gradient_norm_scratch(n), std::nan(""));
        for (uint64_t step = 1; step <= 3; ++step) {
          params.grads = uniform((size_t)n, 42 + step);
          const double norm_ref = moas::gradient_norm(params.grads);
          moas::adamw_step(params, state, settings, norm_ref);

          double norm = -1.0;
          const mc::GradNormArgs g{&norm, partial.data(), params.grads.data(), n};
          emulate<mc::AdamWHostBlock>(mc::grad_norm_chunk_grid(g), mc::grad_norm_shared_bytes(), reverse,
                                      [&](const mc::AdamWHostBlock &block, unsigned char *shared, int64_t x, int64_t,
                                          int64_t) { mc::grad_norm_chunk_block(block, g, shared, x); });
          emulate<mc::AdamWHostBlock>(mc::Grid{1, 1, 1}, mc::grad_norm_shared_bytes(), reverse,
                                      [&](const mc::AdamWHostBlock &block, unsigned char *shared, int64_t, int64_t,
                                          int64_t) { mc::grad_norm_total_block(block, g, shared); });
          require_close(std::vector<double>{norm}, std::vector<double>{norm_ref}, 1e-12, "gradient norm");

          const mc::AdamWArgs a{moas::adamw_factors<float>(settings, step, norm),
                                values.data(),
                                exp_avg.data(),
                                exp_avg_sq.data(),
                                params.grads.data(),
                                n,
                                segments.begin.data(),
                                segments.decay.data(),
                                (int64_t)segments.decay.size()};
          emulate<mc::AdamWHostBlock>(mc::adamw_grid(a), 0, reverse,
                                      [&](const mc::AdamWHostBlock &block, unsigned char *, int64_t x, int64_t,
                                          int64_t) { mc::adamw_step_block(block, a, x); });
        }
        require_close(values, params.values, kTol, "parameters");
        require_close(exp_avg, state.exp_avg, kTol, "exp_avg");
        require_close(exp_avg_sq, state.exp_avg_sq, kTol, "exp_avg_sq");
      }
    }
}

TEST_CASE("CUDA RoPE blocks rotate as the CPU, forward and backward", "[cuda][emulated][rope]") {
  struct Shape {
    int64_t head_dim, n_heads, m, col0, stride;
  };
  const int64_t block_size = 50;
  for (const Shape &s : {Shape{2, 1, 1, 0, 2}, Shape{8, 3, 23, 8, 43}, Shape{6, 5, 40, 0, 30}})
    for (const int direction : {1, -1})
      for (const bool reverse : {false, true}) {
        DYNAMIC_SECTION("head_dim " << s.head_dim << ", " << s.n_heads << " heads, " << s.m << " rows, direction "
                                    << direction << (reverse ? ", threads in reverse" : "")) {
          moas::RopeTable<float> table;
          table.build(block_size, s.head_dim, 10000.0);
          std::vector<int32_t> pos((size_t)s.m);  // routed rows: any positions
          std::mt19937_64 rng(51);
          for (int32_t &p : pos) p = (int32_t)(rng() % block_size);
          std::vector<float> ref = uniform((size_t)(s.m * s.stride), 52), buf = ref;
          moas::rope_rotate(ref.data(), s.stride, s.col0, s.n_heads, s.m, pos.data(), table, direction);
          const mc::RopeArgs a{buf.data(), s.stride,         s.col0,           s.n_heads,  s.m,
                               pos.data(), table.cos.data(), table.sin.data(), table.half, (float)direction};
          emulate<mc::RopeHostBlock>(mc::rope_grid(a), 0, reverse,
                                     [&](const mc::RopeHostBlock &block, unsigned char *, int64_t x, int64_t, int64_t) {
                                       mc::rope_rotate_block(block, a, x);
                                     });
          require_close(buf, ref, kTol, "rotated rows");  // columns outside the heads untouched on both sides
        }
      }
}

TEST_CASE("CUDA dropout blocks draw the CPU's mask, whole tensors and routed rows", "[cuda][emulated][dropout]") {
  const moas::Dropout dropout = moas::Dropout::at(0.3f, 7, 11, 2, moas::DropoutSiteId::MlpOut);
  for (const bool reverse : {false, true}) {
    DYNAMIC_SECTION("whole tensor" << (reverse ? ", threads in reverse" : "")) {
      const int64_t m = 37, width = 29;
      std::vector<float> ref = uniform((size_t)(m * width), 61), x = ref;
      moas::dropout_apply(ref.data(), m * width, dropout);
      const mc::DropoutArgs a{x.data(), m, width, nullptr, dropout};
      emulate<mc::DropoutHostBlock>(mc::dropout_grid(a), 0, reverse,
                                    [&](const mc::DropoutHostBlock &block, unsigned char *, int64_t bx, int64_t,
                                        int64_t) { mc::dropout_apply_block(block, a, bx); });
      REQUIRE(x == ref);  // the same bits
    }
    DYNAMIC_SECTION("routed rows" << (reverse ? ", threads in reverse" : "")) {
      const int64_t N = 100, width = 24;
      std::vector<int64_t> row;
      for (int64_t n = 0; n < N; ++n)
        if (moas::mix64((uint64_t)n) % 3 == 0) row.push_back(n);
      const int64_t m = (int64_t)row.size();
      std::vector<float> ref = uniform((size_t)(m * width), 62), x = ref;
      moas::dropout_apply_rows(ref.data(), m, width, row.data(), dropout);
      const mc::DropoutArgs a{x.data(), m, width, row.data(), dropout};
      emulate<mc::DropoutHostBlock>(mc::dropout_grid(a), 0, reverse,
                                    [&](const mc::DropoutHostBlock &block, unsigned char *, int64_t bx, int64_t,
                                        int64_t) { mc::dropout_apply_block(block, a, bx); });
      REQUIRE(x == ref);
    }
  }
}
