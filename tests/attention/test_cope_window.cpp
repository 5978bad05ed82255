// CoPE and sliding windows (SPEC §7). The CoPE kernel (src/attention/cope_attention.cpp) against a naive per-pair float64
// implementation that materialises e(p) for every (query, key): outputs, and every gradient (dq, dk, dv, de) against
// finite differences of the naive loss that assert no position crosses an integer or the clamp; its per-row
// arithmetic (cope_math.hpp); determinism. Whole double models with CoPE and windows: gradients for every attention
// kind, a window of at least T being full causal attention bit for bit, and batch invariance.
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention/cope_attention.hpp"
#include "attention/cope_math.hpp"
#include "gradcheck.hpp"
#include "model/model.hpp"
#include "model/model_fixtures.hpp"
#include "model/model_gradcheck.hpp"

using moas::AttentionDims;
using moas::Dropout;
using moas::QueryHead;
using moas::QueryHeadGrad;
using moas::RowSet;

namespace {

// q [B T, H d]; k, v [B T, Hkv d]; e [H, P, d].
struct CopeProblem {
  AttentionDims s;
  int64_t max_pos;
  std::vector<double> q, k, v, e;
  int64_t tokens() const { return s.batch * s.seq; }
  int64_t q_width() const { return s.heads * s.head_dim; }
  int64_t kv_width() const { return s.kv_heads * s.head_dim; }
};

CopeProblem random_problem(const AttentionDims &s, int64_t max_pos, uint64_t seed) {
  CopeProblem c{s, max_pos, {}, {}, {}, {}};
  c.q = moas_test::random_vector((size_t)(c.tokens() * c.q_width()), seed);
  c.k = moas_test::random_vector((size_t)(c.tokens() * c.kv_width()), seed + 1);
  c.v = moas_test::random_vector((size_t)(c.tokens() * c.kv_width()), seed + 2);
  c.e = moas_test::random_vector((size_t)(s.heads * max_pos * s.head_dim), seed + 3);
  return c;
}

struct NaiveCope {
  std::vector<double> out, lse;   // [B T, H d], [H, B T]
  std::vector<int64_t> segments;  // per visible (b, h, i, j): floor(p) and whether the clamp applied
};

// SPEC §7 pair by pair: e(p) formed for each (query, key), a plain softmax over the row, dropout after it.
NaiveCope naive_cope(const CopeProblem &c, const Dropout &drop) {
  const AttentionDims &s = c.s;
  const int64_t T = s.seq, H = s.heads, d = s.head_dim, P = c.max_pos, group = s.heads / s.kv_heads;
  NaiveCope r;
  r.out.assign((size_t)(c.tokens() * c.q_width()), 0.0);
  r.lse.assign((size_t)(H * c.tokens()), 0.0);
  std::vector<double> raw((size_t)T), gate((size_t)T), logit((size_t)T), ep((size_t)d);
  for (int64_t b = 0; b < s.batch; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < T; i++) {
        const int64_t g = h / group, first = s.window > 0 ? std::max<int64_t>(0, i - s.window) : 0;
        const double *q = &c.q[(size_t)((b * T + i) * c.q_width() + h * d)];
        auto key = [&](const std::vector<double> &kv, int64_t j) {
          return &kv[(size_t)((b * T + j) * c.kv_width() + g * d)];
        };
        for (int64_t j = first; j <= i; j++) {
          raw[(size_t)j] = moas_test::dot(std::vector<double>(q, q + d),
                                          std::vector<double>(key(c.k, j), key(c.k, j) + d)) /
                           std::sqrt((double)d);
          gate[(size_t)j] = 1.0 / (1.0 + std::exp(-raw[(size_t)j]));
        }
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = first; j <= i; j++) {
          double count = 0;
          for (int64_t t = j; t <= i; t++) count += gate[(size_t)t];
          const double p = std::min(count, (double)(P - 1)), lo = std::floor(p), hi = std::ceil(p);
          for (int64_t x = 0; x < d; x++)
            ep[(size_t)x] = (p - lo) * c.e[(size_t)((h * P + (int64_t)hi) * d + x)] +
                            (1 - p + lo) * c.e[(size_t)((h * P + (int64_t)lo) * d + x)];
          logit[(size_t)j] = raw[(size_t)j] + moas_test::dot(std::vector<double>(q, q + d), ep);
          mx = std::max(mx, logit[(size_t)j]);
          r.segments.push_back((int64_t)lo);
          r.segments.push_back(count > (double)(P - 1));
        }
        double sum = 0;
        for (int64_t j = first; j <= i; j++) sum += std::exp(logit[(size_t)j] - mx);
        r.lse[(size_t)(h * c.tokens() + b * T + i)] = mx + std::log(sum);
        double *o = &r.out[(size_t)((b * T + i) * c.q_width() + h * d)];
        for (int64_t j = first; j <= i; j++) {
          double a = std::exp(logit[(size_t)j] - mx) / sum;
          if (drop.active()) a *= drop.factor<double>((uint64_t)(((b * H + h) * T + i) * T + j));
          for (int64_t x = 0; x < d; x++) o[x] += a * key(c.v, j)[x];
        }
      }
  return r;
}

// The kernel on every head's rows (q gathered compact per head), its results scattered back to the dense layout:
// out [B T, H d] and dq likewise (zero where a head has no row), lse [H, B T], dk, dv [B T, Hkv d], de [H, P, d].
template <typename T>
struct KernelRun {
  std::vector<T> out, lse, dq, dk, dv, de;
};

template <typename T>
KernelRun<T> run_kernel(const CopeProblem &c, const std::vector<RowSet> &rows, const std::vector<double> &dout,
                        const Dropout &drop) {
  const AttentionDims &s = c.s;
  const int64_t H = s.heads, d = s.head_dim, N = c.tokens();
  auto cast = [](const std::vector<double> &x) { return std::vector<T>(x.begin(), x.end()); };
  const std::vector<T> k = cast(c.k), v = cast(c.v), e = cast(c.e), q = cast(c.q), w = cast(dout);
  std::vector<std::vector<T>> q_rows((size_t)H), out((size_t)H), lse((size_t)H), go((size_t)H), dq((size_t)H);
  std::vector<QueryHead<T>> heads;
  std::vector<QueryHeadGrad<T>> grads;
  for (int64_t h = 0; h < H; h++) {
    const RowSet &r = rows[(size_t)h];
    const int64_t m = r.size();
    q_rows[(size_t)h].resize((size_t)(m * d));
    go[(size_t)h].resize((size_t)(m * d));
    moas::gather_rows(q_rows[(size_t)h].data(), d, q.data() + h * d, c.q_width(), r.row, d);
    moas::gather_rows(go[(size_t)h].data(), d, w.data() + h * d, c.q_width(), r.row, d);
    out[(size_t)h].assign((size_t)(m * d), T(0));
    lse[(size_t)h].assign((size_t)m, T(0));
    dq[(size_t)h].assign((size_t)(m * d), std::numeric_limits<T>::quiet_NaN());
    heads.push_back({h, &r, q_rows[(size_t)h].data(), d, out[(size_t)h].data(), d, lse[(size_t)h].data()});
    grads.push_back({go[(size_t)h].data(), d, dq[(size_t)h].data(), d});
  }
  const moas::KeyValues<T> kv{k.data(), c.kv_width(), v.data(), c.kv_width(), s.seq};
  const moas::CopeEmbeddings<T> cope{e.data(), c.max_pos};
  moas::cope_attention_forward(s, kv, heads, cope, drop);

  KernelRun<T> run;
  run.dk.assign(k.size(), std::numeric_limits<T>::quiet_NaN());
  run.dv.assign(v.size(), std::numeric_limits<T>::quiet_NaN());
  run.de.assign(e.size(), T(0.5));  // backward adds to what is there
  moas::cope_attention_backward(s, kv, heads, grads, moas::KeyValueGrads<T>{run.dk.data(), c.kv_width(), run.dv.data(),
                                                                            c.kv_width()},
                                cope, run.de.data(), drop);
  for (T &x : run.de) x -= T(0.5);
  run.out.assign((size_t)(N * c.q_width()), T(0));
  run.dq.assign((size_t)(N * c.q_width()), T(0));
  run.lse.assign((size_t)(H * N), T(0));
  for (int64_t h = 0; h < H; h++) {
    const RowSet &r = rows[(size_t)h];
    for (int64_t i = 0; i < r.size(); i++) {
      const int64_t n = r.row[(size_t)i];
      std::copy_n(&out[(size_t)h][(size_t)(i * d)], d, &run.out[(size_t)(n * c.q_width() + h * d)]);
      std::copy_n(&dq[(size_t)h][(size_t)(i * d)], d, &run.dq[(size_t)(n * c.q_width() + h * d)]);
      run.lse[(size_t)(h * N + n)] = lse[(size_t)h][(size_t)i];
    }
  }
  return run;
}

// Every token for each head, or (routed) a scattered subset per head that leaves one head with no row in sequence 0,
// as MoH and MoAS top-1 hand the kernel.
std::vector<RowSet> head_rows(const AttentionDims &s, bool routed) {
  std::vector<RowSet> rows((size_t)s.heads);
  for (int64_t h = 0; h < s.heads; h++) {
    if (!routed) {
      rows[(size_t)h].set_all(s.batch, s.seq);
      continue;
    }
    rows[(size_t)h].select(s.batch, s.seq, [&](int64_t n) {
      if (h == 1 && n < s.seq) return false;
      return ((n * 7 + h * 13) % 5) < 3;
    });
  }
  return rows;
}

// sum over the computed (token, head) rows of out . W, the loss whose gradients the kernel's backward gives.
double selected_loss(const CopeProblem &c, const std::vector<RowSet> &rows, const std::vector<double> &out,
                     const std::vector<double> &W) {
  const int64_t d = c.s.head_dim;
  double loss = 0;
  for (int64_t h = 0; h < c.s.heads; h++)
    for (int64_t n : rows[(size_t)h].row)
      for (int64_t x = 0; x < d; x++) {
        const size_t at = (size_t)(n * c.q_width() + h * d + x);
        loss += out[at] * W[at];
      }
  return loss;
}

std::string describe(const AttentionDims &s, int64_t P) {
  return "B=" + std::to_string(s.batch) + " T=" + std::to_string(s.seq) + " H=" + std::to_string(s.heads) +
         " Hkv=" + std::to_string(s.kv_heads) + " d=" + std::to_string(s.head_dim) +
         " window=" + std::to_string(s.window) + " P=" + std::to_string(P);
}

// Every gradient element the kernel gave (every one, or about max_checks per input spread over it with an odd stride,
// so they fall on different heads and columns) against central differences of the naive loss, with every floor(p)
// and clamp unchanged between the two evaluations.
void require_gradients_match(CopeProblem &c, const std::vector<RowSet> &rows, const std::vector<double> &W,
                             const Dropout &drop, const KernelRun<double> &run, const NaiveCope &ref,
                             size_t max_checks = 0) {
  const double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
  struct Input {
    const char *name;
    std::vector<double> *x;
    const std::vector<double> *grad;
  };
  for (const Input &in : {Input{"q", &c.q, &run.dq}, Input{"k", &c.k, &run.dk}, Input{"v", &c.v, &run.dv},
                          Input{"e", &c.e, &run.de}}) {
    const size_t size = in.x->size(), stride = max_checks > 0 && size > max_checks ? (size / max_checks) | 1 : 1;
    for (size_t i = 0; i < size; i += stride) {
      const double saved = (*in.x)[i];
      (*in.x)[i] = saved + eps;
      const NaiveCope plus = naive_cope(c, drop);
      (*in.x)[i] = saved - eps;
      const NaiveCope minus = naive_cope(c, drop);
      (*in.x)[i] = saved;
      INFO(in.name << "[" << i << "]");
      REQUIRE(plus.segments == ref.segments);  // no position crossed an integer or the clamp
      REQUIRE(minus.segments == ref.segments);
      const double fd = (selected_loss(c, rows, plus.out, W) - selected_loss(c, rows, minus.out, W)) / (2 * eps);
      INFO("analytic " << (*in.grad)[i] << " numeric " << fd);
      REQUIRE(std::fabs((*in.grad)[i] - fd) <= atol + rtol * std::fabs(fd));
    }
  }
}

// Forward against the naive reference, element by element at every computed row, then every gradient element
// against central differences.
void check_against_naive(const AttentionDims &s, int64_t P, const Dropout &drop, bool routed, uint64_t seed) {
  INFO(describe(s, P) << (routed ? " routed" : " dense") << (drop.active() ? " dropout" : ""));
  CopeProblem c = random_problem(s, P, seed);
  const std::vector<RowSet> rows = head_rows(s, routed);
  const auto W = moas_test::random_vector((size_t)(c.tokens() * c.q_width()), seed + 5);
  const NaiveCope ref = naive_cope(c, drop);
  const KernelRun<double> run = run_kernel<double>(c, rows, W, drop);
  for (int64_t h = 0; h < s.heads; h++)
    for (int64_t n : rows[(size_t)h].row) {
      for (int64_t x = 0; x < s.head_dim; x++) {
        const size_t at = (size_t)(n * c.q_width() + h * s.head_dim + x);
        REQUIRE(run.out[at] == Approx(ref.out[at]).epsilon(1e-12).margin(1e-13));
      }
      REQUIRE(run.lse[(size_t)(h * c.tokens() + n)] == Approx(ref.lse[(size_t)(h * c.tokens() + n)]).epsilon(1e-12));
    }
  require_gradients_match(c, rows, W, drop, run, ref);
}

// The computed rows' outputs [rows, d] and log-sum-exps [rows], head after head, out of the dense layouts: what the
// kernel and the naive reference (which computes every row) must agree on.
struct ComputedRows {
  std::vector<double> out, lse;
};

template <typename T>
ComputedRows computed_rows(const CopeProblem &c, const std::vector<RowSet> &rows, const std::vector<T> &out,
                           const std::vector<T> &lse) {
  const int64_t d = c.s.head_dim;
  ComputedRows r;
  for (int64_t h = 0; h < c.s.heads; h++)
    for (int64_t n : rows[(size_t)h].row) {
      r.out.insert(r.out.end(), &out[(size_t)(n * c.q_width() + h * d)], &out[(size_t)(n * c.q_width() + h * d + d)]);
      r.lse.push_back(lse[(size_t)(h * c.tokens() + n)]);
    }
  return r;
}

}  // namespace

TEST_CASE("CoPE position arithmetic: suffix sums of gates, clamp, interpolation and their derivatives",
          "[cope][math]") {
  const double gates[4] = {0.5, 0.25, 0.75, 1.0};
  double p[4];
  moas::cope_positions(gates, 4, 3, p);  // suffix sums 2.5, 2, 1.75, 1; clamp at P - 1 = 2
  REQUIRE(std::vector<double>(p, p + 4) == std::vector<double>{2.0, 2.0, 1.75, 1.0});
  const double z[3] = {1.0, 10.0, 30.0};
  REQUIRE(moas::cope_interpolate(z, 1.75) == Approx(0.75 * 30.0 + 0.25 * 10.0));
  REQUIRE(moas::cope_interpolate(z, 1.0) == 10.0);
  REQUIRE(moas::cope_slope(z, 1.75) == 20.0);
  REQUIRE(moas::cope_slope(z, 2.0) == 0.0);  // on an integer (and so at the clamp)
  double dz[3] = {0, 0, 0};
  moas::cope_interpolate_backward(2.0, 0.25, dz);
  REQUIRE(std::vector<double>(dz, dz + 3) == std::vector<double>{1.5, 0.5, 0.0});
  // The backward of the suffix sums is the prefix sum of dL/dp: check it on sum_j w_j p_j below the clamp.
  const double w[4] = {0.3, -1.0, 2.0, 0.5};
  double dg[4];
  moas::cope_positions_backward(w, 4, dg);
  std::vector<double> g(gates, gates + 4);
  auto loss = [&] {
    double q[4], sum = 0;
    moas::cope_positions(g.data(), 4, 100, q);
    for (int j = 0; j < 4; j++) sum += w[j] * q[j];
    return sum;
  };
  moas_test::check_gradient("gates", g.data(), 4, dg, loss);
}

TEST_CASE("CoPE attention matches the naive per-pair reference: outputs and every gradient", "[cope][gradcheck]") {
  const Dropout none{};
  const Dropout drop = Dropout::at(0.3f, 77, 2, 1, moas::DropoutSiteId::AttentionProbs);
  // P = 3 with six keys: late queries count past P - 1, so the clamp is exercised alongside interpolation.
  for (const AttentionDims &s : {AttentionDims{2, 6, 4, 2, 3}, AttentionDims{2, 6, 4, 2, 3, 2},
                                 AttentionDims{1, 7, 3, 1, 4, 1}, AttentionDims{1, 5, 2, 2, 3, 9}}) {
    for (bool routed : {false, true}) {
      check_against_naive(s, 3, none, routed, 40 + (uint64_t)s.window);
      check_against_naive(s, 3, drop, routed, 50 + (uint64_t)s.window);
    }
  }
  check_against_naive(AttentionDims{1, 6, 2, 1, 3}, 8, none, false, 61);  // P beyond every count: no clamp
}

TEST_CASE("CoPE attention on longer sequences: double against the naive reference, float against double",
          "[cope]") {
  for (const AttentionDims &s : {AttentionDims{2, 40, 6, 2, 8}, AttentionDims{2, 40, 6, 3, 8, 9},
                                 AttentionDims{1, 70, 4, 1, 16, 1}}) {
    for (int64_t P : {16, 64}) {
      INFO(describe(s, P));
      const CopeProblem c = random_problem(s, P, 7 + (uint64_t)P);
      const std::vector<RowSet> rows = head_rows(s, false);
      const auto W = moas_test::random_vector((size_t)(c.tokens() * c.q_width()), 8);
      const NaiveCope ref = naive_cope(c, Dropout{});
      const KernelRun<double> run = run_kernel<double>(c, rows, W, Dropout{});
      REQUIRE(moas_test::close(run.out, ref.out, 1e-12));
      REQUIRE(moas_test::close(run.lse, ref.lse, 1e-12));
      const KernelRun<float> f = run_kernel<float>(c, rows, W, Dropout{});
      REQUIRE(moas_test::close(f.out, ref.out, 1e-5));
      REQUIRE(moas_test::close(f.lse, ref.lse, 1e-5));
      REQUIRE(moas_test::close(f.dq, run.dq, 1e-4));
      REQUIRE(moas_test::close(f.dk, run.dk, 1e-4));
      REQUIRE(moas_test::close(f.dv, run.dv, 1e-4));
      REQUIRE(moas_test::close(f.de, run.de, 1e-4));
    }
  }
}

// The kernel's chunks are the rows in one band of 64 positions against every key they see: T = 140 gives chunks whose
// keys span several bands (dk, dv and de summed over chunks), windows narrower than a chunk (9) and wider (70), P
// below the keys a row sees (16) and beyond them (200); routed rows give chunks with gaps. Float is held to 1e-4 of
// double here: a position sums up to 140 float gates, and its rounding reaches the logit times the slope of z, which
// these unit-scale embeddings make steep.
TEST_CASE("CoPE attention across chunks: double against the naive reference, float against double", "[cope]") {
  const Dropout drop = Dropout::at(0.2f, 78, 2, 1, moas::DropoutSiteId::AttentionProbs);
  for (const AttentionDims &s :
       {AttentionDims{1, 140, 4, 2, 8}, AttentionDims{2, 140, 2, 1, 8, 9}, AttentionDims{1, 140, 4, 4, 8, 70}}) {
    for (const auto &[P, routed] : {std::pair<int64_t, bool>{16, false}, {64, false}, {64, true}, {200, true}}) {
      const Dropout dropout = routed ? drop : Dropout{};
      INFO(describe(s, P) << (routed ? " routed, dropout" : " dense"));
      const CopeProblem c = random_problem(s, P, 7 + (uint64_t)P);
      const std::vector<RowSet> rows = head_rows(s, routed);
      const auto W = moas_test::random_vector((size_t)(c.tokens() * c.q_width()), 8);
      const NaiveCope ref = naive_cope(c, dropout);
      const KernelRun<double> run = run_kernel<double>(c, rows, W, dropout);
      const ComputedRows got = computed_rows(c, rows, run.out, run.lse);
      const ComputedRows want = computed_rows(c, rows, ref.out, ref.lse);
      REQUIRE(moas_test::close(got.out, want.out, 1e-12));
      REQUIRE(moas_test::close(got.lse, want.lse, 1e-12));
      const KernelRun<float> f = run_kernel<float>(c, rows, W, dropout);
      REQUIRE(moas_test::close(f.out, run.out, 1e-4));
      REQUIRE(moas_test::close(f.lse, run.lse, 1e-4));
      REQUIRE(moas_test::close(f.dq, run.dq, 1e-4));
      REQUIRE(moas_test::close(f.dk, run.dk, 1e-4));
      REQUIRE(moas_test::close(f.dv, run.dv, 1e-4));
      REQUIRE(moas_test::close(f.de, run.de, 1e-4));
    }
  }
}

TEST_CASE("CoPE attention gradients across chunks match finite differences of the naive reference",
          "[cope][gradcheck]") {
  const Dropout drop = Dropout::at(0.2f, 79, 2, 1, moas::DropoutSiteId::AttentionProbs);
  struct Case {
    AttentionDims s;
    int64_t P;
    bool routed;
    Dropout drop;
  };
  for (const Case &k : {Case{AttentionDims{1, 140, 2, 1, 4}, 64, false, Dropout{}},
                        Case{AttentionDims{1, 140, 2, 2, 4, 70}, 200, true, drop},
                        Case{AttentionDims{2, 140, 2, 1, 4, 9}, 16, false, drop}}) {
    INFO(describe(k.s, k.P) << (k.routed ? " routed" : " dense") << (k.drop.active() ? " dropout" : ""));
    CopeProblem c = random_problem(k.s, k.P, 70 + (uint64_t)k.P);
    const std::vector<RowSet> rows = head_rows(k.s, k.routed);
    const auto W = moas_test::random_vector((size_t)(c.tokens() * c.q_width()), 9);
    const NaiveCope ref = naive_cope(c, k.drop);
    const KernelRun<double> run = run_kernel<double>(c, rows, W, k.drop);
    require_gradients_match(c, rows, W, k.drop, run, ref, 16);
  }
}

TEST_CASE("CoPE attention is bit-identical with 1 and 2 threads, forward and backward", "[cope][determinism]") {
  const Dropout drop = Dropout::at(0.3f, 42, 1, 0, moas::DropoutSiteId::AttentionProbs);
  for (int64_t window : {0, 40}) {
    const AttentionDims s{2, 150, 6, 2, 16, window};
    const CopeProblem c = random_problem(s, 64, 12);
    const std::vector<RowSet> rows = head_rows(s, window > 0);
    const auto W = moas_test::random_vector((size_t)(c.tokens() * c.q_width()), 13);
    const int saved = omp_get_max_threads();
    KernelRun<float> runs[2];
    for (int t = 0; t < 2; t++) {
      omp_set_num_threads(t + 1);
      runs[t] = run_kernel<float>(c, rows, W, drop);
    }
    omp_set_num_threads(saved);
    for (auto member : {&KernelRun<float>::out, &KernelRun<float>::lse, &KernelRun<float>::dq, &KernelRun<float>::dk,
                        &KernelRun<float>::dv, &KernelRun<float>::de}) {
      const std::vector<float> &a = runs[0].*member, &b = runs[1].*member;
      REQUIRE(a.size() == b.size());
      REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("models with CoPE and windows: every parameter gradient matches finite differences", "[cope][gradcheck]") {
  for (const auto &[name, config] : moas_test::position_configs()) {
    DYNAMIC_SECTION(name) { moas_test::check_model_gradients(config, 2, 6); }
  }
}

TEST_CASE("a window of at least T is full causal attention bit for bit (window 0 = off); window 1 is not",
          "[window]") {
  moas::ModelConfig cope_moh = moas_test::moh_config(4, 2, 16, 1, 2);
  cope_moh.position = moas::PositionKind::Cope;
  cope_moh.cope_max_pos = 4;
  for (const moas::ModelConfig &base :
       {moas_test::tiny_config(4, 2, 16), moas_test::moas_config(moas::MoasMode::Top1, {4, 2, 1}), cope_moh}) {
    const int64_t B = 2, Tn = base.block_size;
    const auto tokens = moas_test::tokens_for(B * Tn, base.vocab_size, 5);
    const auto targets = moas_test::tokens_for(B * Tn, base.vocab_size, 6);
    auto run = [&](int64_t window) {
      moas::ModelConfig config = base;
      config.window = window;
      moas::Model<double> model(config);
      moas_test::randomise_cope_embeddings(model.params);
      model.forward(tokens.data(), targets.data(), B, Tn, true);
      model.backward();
      return std::make_pair(model.logits(), model.params.grads);
    };
    const auto full = run(0);
    for (int64_t window : {Tn, Tn - 1, int64_t(1000)}) {
      INFO("window " << window);
      const auto windowed = run(window);
      REQUIRE(std::memcmp(windowed.first.data(), full.first.data(), full.first.size() * sizeof(double)) == 0);
      REQUIRE(std::memcmp(windowed.second.data(), full.second.data(), full.second.size() * sizeof(double)) == 0);
    }
    REQUIRE(run(1).first != full.first);
  }
}

TEST_CASE("CoPE and windows keep a sequence's logits independent of the rest of the batch", "[cope][invariant]") {
  for (const auto &[name, config] : moas_test::position_configs()) {
    DYNAMIC_SECTION(name) {
      moas::Model<double> model(config);
      moas_test::randomise_cope_embeddings(model.params);
      for (const moas::ParamInfo &info : model.params.infos())  // routing margins far above rounding differences
        if (moas_test::is_router_weight(info.name))
          for (int64_t i = 0; i < info.numel; i++) model.params.values[(size_t)(info.offset + i)] *= 40.0;
      const int64_t Tn = config.block_size, V = config.vocab_size;
      const auto batch = moas_test::tokens_for(3 * Tn, V, 8);
      model.forward(batch.data(), nullptr, 3, Tn, false);
      const std::vector<double> all = model.logits();
      for (int64_t b = 0; b < 3; b++) {
        const std::vector<int32_t> one(batch.begin() + b * Tn, batch.begin() + (b + 1) * Tn);
        model.forward(one.data(), nullptr, 1, Tn, false);
        const std::vector<double> slice(all.begin() + b * Tn * V, all.begin() + (b + 1) * Tn * V);
        REQUIRE(moas_test::close(model.logits(), slice, 1e-12));
      }
    }
  }
}
