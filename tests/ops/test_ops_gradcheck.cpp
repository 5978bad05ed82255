// Finite-difference checks of every op's backward against its forward, in double (SPEC §6.5, §9).
#include <catch2/catch.hpp>

#include <numeric>

#include "gradcheck.hpp"
#include "ops/dropout.hpp"
#include "ops/embedding.hpp"
#include "ops/linear.hpp"
#include "ops/loss.hpp"
#include "ops/mlp.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"

using namespace moas;
using moas_test::check_gradient;
using moas_test::dot;
using moas_test::random_vector;

TEST_CASE("linear: gradients of input, weight and bias", "[ops][gradcheck]") {
  const int64_t N = 5, in = 7, out = 4;
  auto x = random_vector(N * in, 1), w = random_vector(out * in, 2), b = random_vector(out, 3);
  const auto r = random_vector(N * out, 4);
  std::vector<double> y(N * out);
  auto loss = [&] {
    linear_forward(y.data(), out, x.data(), w.data(), b.data(), N, in, out);
    return dot(y, r);
  };
  std::vector<double> dx(N * in, NAN), dw(out * in, 0.0), db(out, 0.0);
  linear_backward(dx.data(), false, dw.data(), db.data(), r.data(), x.data(), w.data(), N, in, out);
  check_gradient("dx", x.data(), x.size(), dx.data(), loss);
  check_gradient("dw", w.data(), w.size(), dw.data(), loss);
  check_gradient("db", b.data(), b.size(), db.data(), loss);
}

TEST_CASE("norms: LayerNorm (with and without bias) and RMSNorm gradients", "[ops][gradcheck]") {
  const int64_t N = 4, C = 9;
  for (bool rms : {false, true}) {
    for (bool with_bias : {false, true}) {
      if (rms && with_bias) continue;
      DYNAMIC_SECTION((rms ? "rmsnorm" : "layernorm") << (with_bias ? " with bias" : "")) {
        auto x = random_vector(N * C, 5), w = random_vector(C, 6), b = random_vector(C, 7);
        const auto r = random_vector(N * C, 8);
        std::vector<double> y(N * C), mean(N), rstd(N), scratch(N * C);
        const double *bias = with_bias ? b.data() : nullptr;
        auto loss = [&] {
          norm_forward(rms, y.data(), mean.data(), rstd.data(), x.data(), w.data(), bias, N, C);
          return dot(y, r);
        };
        loss();
        std::vector<double> dx(N * C, 0.0), dw(C, 0.0), db(C, 0.0);
        norm_backward(rms, dx.data(), dw.data(), with_bias ? db.data() : nullptr, scratch.data(), r.data(), x.data(),
                      w.data(), mean.data(), rstd.data(), N, C);
        check_gradient("dx", x.data(), x.size(), dx.data(), loss);
        check_gradient("dw", w.data(), w.size(), dw.data(), loss);
        if (with_bias) check_gradient("db", b.data(), b.size(), db.data(), loss);
      }
    }
  }
}

TEST_CASE("GELU and SwiGLU gradients", "[ops][gradcheck]") {
  const int64_t N = 3, h = 11;
  SECTION("gelu") {
    auto x = random_vector(N * h, 9, 2.0);
    const auto r = random_vector(N * h, 10);
    std::vector<double> y(N * h), dx(N * h);
    auto loss = [&] {
      gelu_forward(y.data(), x.data(), N * h);
      return dot(y, r);
    };
    gelu_backward(dx.data(), r.data(), x.data(), N * h);
    check_gradient("dx", x.data(), x.size(), dx.data(), loss);
  }
  SECTION("swiglu") {
    auto pre = random_vector(N * 2 * h, 11, 2.0);
    const auto r = random_vector(N * h, 12);
    std::vector<double> y(N * h), dpre(N * 2 * h, NAN);
    auto loss = [&] {
      swiglu_forward(y.data(), pre.data(), N, h);
      return dot(y, r);
    };
    swiglu_backward(dpre.data(), r.data(), pre.data(), N, h);
    check_gradient("dpre", pre.data(), pre.size(), dpre.data(), loss);
  }
}

TEST_CASE("float GELU, SiLU and exp stay within float resolution of the exact functions", "[ops]") {
  for (double x = -12.0; x <= 12.0; x += 0.01) {
    const float xf = (float)x;
    const double exact_gelu = 0.5 * xf * (1.0 + std::erf(xf / std::sqrt(2.0)));
    float gelu = 0;
    gelu_forward(&gelu, &xf, 1);
    REQUIRE(std::fabs(gelu - exact_gelu) <= 4e-7 * std::max(1.0, std::fabs(exact_gelu)));
    const double exact_exp = std::exp((double)xf);
    REQUIRE(std::fabs(fast_exp(xf) - exact_exp) <= 3e-7 * exact_exp);
  }
  REQUIRE(fast_exp(-200.0f) == 0.0f);
  REQUIRE(std::isnan(fast_exp(NAN)));
}

TEST_CASE("RoPE: rotation gradient and inverse", "[ops][gradcheck]") {
  const int64_t B = 2, Tn = 5, heads = 3, d = 4, stride = heads * d + 2;
  RopeTable<double> table;
  table.build(8, d, 10000.0);
  auto x = random_vector(B * Tn * stride, 13);
  const auto r = random_vector(B * Tn * stride, 14);
  std::vector<int32_t> pos(B * Tn);
  for (int64_t n = 0; n < B * Tn; n++) pos[(size_t)n] = (int32_t)(n % Tn);
  auto loss = [&] {
    std::vector<double> y = x;
    rope_rotate(y.data(), stride, 1, heads, B * Tn, pos.data(), table, +1);
    return dot(y, r);
  };
  std::vector<double> dx = r;
  rope_rotate(dx.data(), stride, 1, heads, B * Tn, pos.data(), table, -1);
  check_gradient("dx", x.data(), x.size(), dx.data(), loss);

  std::vector<double> y = x;
  rope_rotate(y.data(), stride, 1, heads, B * Tn, pos.data(), table, +1);
  rope_rotate(y.data(), stride, 1, heads, B * Tn, pos.data(), table, -1);
  REQUIRE(moas_test::close(y, x, 1e-12));
  // Position 0 is not rotated; position 1 rotates pair 0 by exactly 1 radian.
  std::vector<double> one(stride * Tn, 0.0);
  one[stride + 1] = 1.0;
  rope_rotate(one.data(), stride, 1, heads, Tn, pos.data(), table, +1);
  REQUIRE(one[stride + 1] == Approx(std::cos(1.0)));
  REQUIRE(one[stride + 2] == Approx(std::sin(1.0)));
}

TEST_CASE("cross-entropy: value, ignored targets and gradient", "[ops][gradcheck]") {
  const int64_t N = 4, V = 6;
  auto logits = random_vector(N * V, 15, 3.0);
  const std::vector<int32_t> targets{2, -1, 5, 0};
  std::vector<double> lse(N);
  int64_t counted = 0;
  auto loss = [&] { return cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V, &counted); };
  const double value = loss();
  REQUIRE(counted == 3);
  double expected = 0;
  for (int64_t n : {0, 2, 3}) {
    double z = 0;
    for (int64_t v = 0; v < V; v++) z += std::exp(logits[n * V + v]);
    expected += std::log(z) - logits[n * V + targets[n]];
  }
  REQUIRE(value == Approx(expected / 3).epsilon(1e-12));
  std::vector<double> dlogits(N * V, NAN);
  cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V, 1.0 / 3);
  for (int64_t v = 0; v < V; v++) REQUIRE(dlogits[1 * V + v] == 0.0);
  check_gradient("dlogits", logits.data(), logits.size(), dlogits.data(), loss);
}

TEST_CASE("embedding: gradients of wte and wpe with repeated tokens", "[ops][gradcheck]") {
  const int64_t B = 2, Tn = 3, C = 4, V = 5;
  auto wte = random_vector(V * C, 16), wpe = random_vector(Tn * C, 17);
  const std::vector<int32_t> tokens{1, 3, 1, 4, 1, 0};
  const auto r = random_vector(B * Tn * C, 18);
  std::vector<double> y(B * Tn * C);
  auto loss = [&] {
    embedding_forward(y.data(), tokens.data(), wte.data(), wpe.data(), B, Tn, C);
    return dot(y, r);
  };
  std::vector<double> dwte(V * C, 0.0), dwpe(Tn * C, 0.0);
  embedding_backward(dwte.data(), dwpe.data(), r.data(), tokens.data(), B, Tn, C);
  check_gradient("dwte", wte.data(), wte.size(), dwte.data(), loss);
  check_gradient("dwpe", wpe.data(), wpe.size(), dwpe.data(), loss);
}

TEST_CASE("dropout: masks are a pure function of the key and keep about 1 - p", "[ops]") {
  const Dropout a = Dropout::at(0.25f, 42, 3, 1, DropoutSiteId::MlpOut);
  const Dropout same = Dropout::at(0.25f, 42, 3, 1, DropoutSiteId::MlpOut);
  const Dropout other_step = Dropout::at(0.25f, 42, 4, 1, DropoutSiteId::MlpOut);
  int kept = 0, differ = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    kept += a.keep(i);
    REQUIRE(a.keep(i) == same.keep(i));
    differ += a.keep(i) != other_step.keep(i);
  }
  REQUIRE(std::fabs((double)kept / n - 0.75) < 0.01);
  REQUIRE(differ > n / 10);
  std::vector<double> x(1000, 1.0);
  dropout_apply(x.data(), (int64_t)x.size(), a);
  for (size_t i = 0; i < x.size(); i++) REQUIRE(x[i] == (a.keep(i) ? 1.0 / 0.75 : 0.0));
}
