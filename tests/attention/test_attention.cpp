// Tiled causal attention (src/attention/attention.cpp) against a naive full-matrix float64 reference, finite differences,
// causality, dropout and thread-count determinism, for dense queries and for routed row subsets (MoAS top-1, MoH),
// with and without a sliding window (SPEC §7);
// and the per-row arithmetic the CUDA kernels share (attention_math.hpp, routing.hpp). Shapes are small so the
// file stays fast under sanitizers.
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "attention/attention.hpp"
#include "attention/attention_math.hpp"
#include "attention/routing.hpp"
#include "base/error.hpp"

using AttentionShape = moas::AttentionDims;
using moas::Dropout;
using moas::QueryHead;
using moas::QueryHeadGrad;
using moas::RowSet;

namespace {

// q, k, v live as column blocks of one fused [B*T, (H + 2*Hkv)*d] buffer, as in the model.
struct Layout {
  AttentionShape s;
  int64_t stride() const { return (s.heads + 2 * s.kv_heads) * s.head_dim; }
  int64_t rows() const { return s.batch * s.seq; }
  int64_t k_off() const { return s.heads * s.head_dim; }
  int64_t v_off() const { return (s.heads + s.kv_heads) * s.head_dim; }
  int64_t out_cols() const { return s.heads * s.head_dim; }
  template <typename T>
  moas::KeyValues<T> kv(const std::vector<T> &qkv) const {
    return {qkv.data() + k_off(), stride(), qkv.data() + v_off(), stride(), s.seq};
  }
  // Every head over `rows` (compact: row r of a head is token rows.row[r]); q read in place from the fused buffer
  // when the rows are all tokens, else from the gathered copy q_rows [m, H d].
  template <typename T>
  std::vector<QueryHead<T>> heads(const RowSet &rows, const T *q, int64_t q_stride, T *out, int64_t out_stride,
                                  T *lse) const {
    std::vector<QueryHead<T>> h;
    for (int64_t i = 0; i < s.heads; ++i)
      h.push_back({i, &rows, q + i * s.head_dim, q_stride, out + i * s.head_dim, out_stride, lse + i * rows.size()});
    return h;
  }
};

RowSet all_rows(const AttentionShape &s) {
  RowSet r;
  r.set_all(s.batch, s.seq);
  return r;
}

std::vector<double> random_vec(size_t n, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto &x : v) x = u(rng);
  return v;
}

template <typename T>
std::vector<T> cast(const std::vector<double> &v) {
  return std::vector<T>(v.begin(), v.end());
}

// Full T x T softmax per (b, h) in double over the keys i - w .. i (0 .. i without a window); the dropout mask is
// applied after normalisation.
void naive_forward(const Layout &L, const std::vector<double> &qkv, const Dropout &drop, std::vector<double> &out,
                   std::vector<double> &lse) {
  const auto &s = L.s;
  const int64_t n = s.seq, d = s.head_dim, group = s.heads / s.kv_heads;
  out.assign(L.rows() * L.out_cols(), 0.0);
  lse.assign(s.batch * s.heads * n, 0.0);
  std::vector<double> a(n);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < n; ++i) {
        const double *q = &qkv[(b * n + i) * L.stride() + h * d];
        const int64_t first = s.window > 0 ? std::max<int64_t>(0, i - s.window) : 0;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = first; j <= i; ++j) {
          const double *k = &qkv[(b * n + j) * L.stride() + L.k_off() + g * d];
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += q[c] * k[c];
          a[j] = dot / std::sqrt((double)d);
          mx = std::max(mx, a[j]);
        }
        double sum = 0;
        for (int64_t j = first; j <= i; ++j) sum += (a[j] = std::exp(a[j] - mx));
        lse[h * s.batch * n + b * n + i] = mx + std::log(sum);  // [H, B*T]: per head, like the kernel
        double *o = &out[(b * n + i) * L.out_cols() + h * d];
        for (int64_t j = first; j <= i; ++j) {
          double p = a[j] / sum;
          if (drop.active()) p *= drop.factor<double>((uint64_t)(((b * s.heads + h) * n + i) * n + j));
          const double *v = &qkv[(b * n + j) * L.stride() + L.v_off() + g * d];
          for (int64_t c = 0; c < d; ++c) o[c] += p * v[c];
        }
      }
    }
}

// Runs the tiled forward with a padded out row stride (the padding must stay untouched).
template <typename T>
void tiled_forward(const Layout &L, const std::vector<T> &qkv, const Dropout &drop, std::vector<T> &out,
                   std::vector<T> &lse, int64_t pad = 0) {
  const int64_t os = L.out_cols() + pad;
  out.assign(L.rows() * os, T(7));
  lse.assign(L.s.batch * L.s.heads * L.s.seq, T(0));
  const RowSet rows = all_rows(L.s);
  moas::attention_forward(L.s, L.kv(qkv), L.heads(rows, qkv.data(), L.stride(), out.data(), os, lse.data()), drop);
  if (pad) {
    for (int64_t r = 0; r < L.rows(); ++r)
      for (int64_t c = L.out_cols(); c < os; ++c) REQUIRE(out[r * os + c] == T(7));
    std::vector<T> packed(L.rows() * L.out_cols());
    for (int64_t r = 0; r < L.rows(); ++r)
      std::copy_n(&out[r * os], L.out_cols(), &packed[r * L.out_cols()]);
    out.swap(packed);
  }
}

// Gradients into a fused [B*T, stride] buffer pre-filled with NaN: every slot must be overwritten.
template <typename T>
std::vector<T> tiled_backward(const Layout &L, const std::vector<T> &qkv, const std::vector<T> &out,
                              const std::vector<T> &lse, const std::vector<T> &dout, const Dropout &drop) {
  std::vector<T> g(qkv.size(), std::numeric_limits<T>::quiet_NaN());
  const RowSet rows = all_rows(L.s);
  auto out_rw = out;
  auto lse_rw = lse;
  std::vector<QueryHeadGrad<T>> grads;
  for (int64_t h = 0; h < L.s.heads; ++h)
    grads.push_back({dout.data() + h * L.s.head_dim, L.out_cols(), g.data() + h * L.s.head_dim, L.stride()});
  moas::attention_backward(L.s, L.kv(qkv),
                           L.heads(rows, qkv.data(), L.stride(), out_rw.data(), L.out_cols(), lse_rw.data()), grads,
                           moas::KeyValueGrads<T>{g.data() + L.k_off(), L.stride(), g.data() + L.v_off(), L.stride()},
                           drop);
  for (T x : g) REQUIRE(std::isfinite(x));
  return g;
}

template <typename T>
double max_abs(const std::vector<T> &a) {
  double m = 0;
  for (T x : a) m = std::max(m, std::fabs((double)x));
  return m;
}

// SPEC §9: max|a - b| <= tol * max|b|.
template <typename A>
void require_close(const std::vector<A> &a, const std::vector<double> &b, double tol) {
  REQUIRE(a.size() == b.size());
  double err = 0;
  for (size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs((double)a[i] - b[i]));
  INFO("max abs err " << err << ", max|ref| " << max_abs(b));
  REQUIRE(err <= tol * max_abs(b));
}

// The windowed shapes put window starts inside, at and across the 64-key tiles; w = 1 sees exactly two keys.
const std::vector<AttentionShape> kForwardShapes = {
    {2, 37, 12, 12, 8},    {2, 37, 12, 4, 8},    {2, 37, 12, 3, 8},  {2, 37, 12, 2, 8},     {2, 37, 12, 1, 8},
    {1, 130, 6, 2, 64},    {2, 1, 4, 2, 16},     {1, 64, 2, 1, 4},   {1, 129, 3, 3, 3},     {1, 65, 2, 1, 1},
    {2, 150, 4, 2, 8, 1},  {1, 200, 3, 1, 16, 64}, {2, 140, 6, 3, 8, 70}, {1, 37, 2, 1, 4, 36}, {1, 130, 2, 2, 4, 5},
};

std::string describe(const AttentionShape &s) {
  return "B=" + std::to_string(s.batch) + " T=" + std::to_string(s.seq) + " H=" + std::to_string(s.heads) +
         " Hkv=" + std::to_string(s.kv_heads) + " d=" + std::to_string(s.head_dim) +
         " window=" + std::to_string(s.window);
}

// Central differences of loss = sum(out o W) at the given indices of qkv (all of them when idx is empty).
void check_gradients(const Layout &L, const Dropout &drop, uint64_t seed, size_t samples) {
  const auto qkv = random_vec(L.rows() * L.stride(), seed);
  const auto W = random_vec(L.rows() * L.out_cols(), seed + 1, -1.0, 1.0);
  std::vector<double> out, lse;
  tiled_forward(L, qkv, drop, out, lse);
  const auto grad = tiled_backward(L, qkv, out, lse, W, drop);

  auto loss = [&](const std::vector<double> &x) {
    std::vector<double> o, l;
    tiled_forward(L, x, drop, o, l);
    double sum = 0;
    for (size_t i = 0; i < o.size(); ++i) sum += o[i] * W[i];
    return sum;
  };
  std::vector<size_t> idx;
  if (samples == 0) {
    for (size_t i = 0; i < qkv.size(); ++i) idx.push_back(i);
  } else {
    // Spread samples over q, k and v columns and over early and late (multi-tile) rows.
    std::mt19937_64 rng(seed + 2);
    std::uniform_int_distribution<size_t> row(0, (size_t)L.rows() - 1);
    for (int64_t block = 0; block < 3; ++block) {
      const int64_t lo = block == 0 ? 0 : block == 1 ? L.k_off() : L.v_off();
      const int64_t hi = block == 0 ? L.k_off() : block == 1 ? L.v_off() : L.stride();
      std::uniform_int_distribution<int64_t> col(lo, hi - 1);
      for (size_t t = 0; t < samples; ++t) idx.push_back(row(rng) * L.stride() + col(rng));
    }
  }
  const double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
  auto x = qkv;
  for (size_t i : idx) {
    x[i] = qkv[i] + eps;
    const double up = loss(x);
    x[i] = qkv[i] - eps;
    const double down = loss(x);
    x[i] = qkv[i];
    const double fd = (up - down) / (2 * eps);
    INFO(describe(L.s) << " index " << i << " analytic " << grad[i] << " fd " << fd);
    REQUIRE(std::fabs(grad[i] - fd) <= atol + rtol * std::fabs(fd));
  }
}

}  // namespace

TEST_CASE("attention forward matches the naive reference for MHA, GQA and MQA, with and without a window",
          "[attention]") {
  for (const auto &s : kForwardShapes) {
    INFO(describe(s));
    const Layout L{s};
    const auto qkv = random_vec(L.rows() * L.stride(), 11 + s.seq + s.kv_heads);
    std::vector<double> ref, ref_lse;
    naive_forward(L, qkv, Dropout{}, ref, ref_lse);

    std::vector<double> out, lse;
    tiled_forward(L, qkv, Dropout{}, out, lse, 3);
    require_close(out, ref, 1e-12);
    require_close(lse, ref_lse, 1e-12);

    std::vector<float> outf, lsef;
    tiled_forward(L, cast<float>(qkv), Dropout{}, outf, lsef);
    require_close(outf, ref, 1e-5);
    require_close(lsef, ref_lse, 1e-5);
  }
}

TEST_CASE("attention forward with dropout matches the naive reference with the same mask", "[attention]") {
  const Dropout drop = Dropout::at(0.3f, 1234, 7, 2, moas::DropoutSiteId::AttentionProbs);
  for (const AttentionShape &s : {AttentionShape{2, 70, 6, 2, 8}, AttentionShape{1, 33, 4, 1, 64}}) {
    INFO(describe(s));
    const Layout L{s};
    const auto qkv = random_vec(L.rows() * L.stride(), 5);
    std::vector<double> ref, ref_lse, plain, plain_lse;
    naive_forward(L, qkv, drop, ref, ref_lse);
    naive_forward(L, qkv, Dropout{}, plain, plain_lse);
    REQUIRE(ref != plain);         // the mask drops something
    REQUIRE(ref_lse == plain_lse);  // and the normaliser ignores it

    std::vector<double> out, lse;
    tiled_forward(L, qkv, drop, out, lse);
    require_close(out, ref, 1e-12);
    require_close(lse, ref_lse, 1e-12);
    std::vector<float> outf, lsef;
    tiled_forward(L, cast<float>(qkv), drop, outf, lsef);
    require_close(outf, ref, 1e-5);
  }
}

TEST_CASE("attention gradients match central finite differences", "[attention][gradcheck]") {
  const Dropout none{};
  const Dropout drop = Dropout::at(0.3f, 99, 3, 1, moas::DropoutSiteId::AttentionProbs);
  // Every element on tiny shapes, H = 12 with Hkv = 12, 4, 3, 2, 1 included.
  const std::vector<AttentionShape> tiny = {{1, 5, 4, 2, 3},    {2, 4, 6, 3, 2},    {1, 3, 3, 1, 4},  {1, 1, 2, 1, 3},
                                            {1, 4, 12, 12, 2},  {1, 4, 12, 4, 2},   {1, 4, 12, 3, 2}, {1, 4, 12, 2, 2},
                                            {1, 4, 12, 1, 2},   {2, 6, 4, 2, 3, 1}, {1, 7, 3, 1, 2, 3}};
  for (const auto &s : tiny) {
    check_gradients(Layout{s}, none, 21, 0);
    check_gradients(Layout{s}, drop, 22, 0);
  }
  // Sampled elements where several query and key tiles meet (T > tile size), windows starting inside them.
  for (const AttentionShape &s : {AttentionShape{1, 70, 4, 2, 4}, AttentionShape{2, 130, 3, 1, 3},
                                  AttentionShape{1, 140, 4, 2, 4, 66}, AttentionShape{1, 130, 2, 1, 3, 2}}) {
    check_gradients(Layout{s}, none, 31, 12);
    check_gradients(Layout{s}, drop, 32, 12);
  }
}

TEST_CASE("GQA equals MHA over explicitly repeated K/V, gradients summed over the group", "[attention]") {
  const AttentionShape gs{2, 130, 6, 2, 8}, ms{2, 130, 6, 6, 8};
  const Layout G{gs}, M{ms};
  const int64_t d = gs.head_dim, group = gs.heads / gs.kv_heads;
  const auto qkv = random_vec(G.rows() * G.stride(), 77);
  std::vector<double> qkv_m(M.rows() * M.stride());
  for (int64_t r = 0; r < G.rows(); ++r) {
    std::copy_n(&qkv[r * G.stride()], G.k_off(), &qkv_m[r * M.stride()]);
    for (int64_t h = 0; h < gs.heads; ++h) {
      const int64_t g = h / group;
      std::copy_n(&qkv[r * G.stride() + G.k_off() + g * d], d, &qkv_m[r * M.stride() + M.k_off() + h * d]);
      std::copy_n(&qkv[r * G.stride() + G.v_off() + g * d], d, &qkv_m[r * M.stride() + M.v_off() + h * d]);
    }
  }
  const auto W = random_vec(G.rows() * G.out_cols(), 78, -1.0, 1.0);
  for (const Dropout &drop : {Dropout{}, Dropout::at(0.3f, 5, 1, 0, moas::DropoutSiteId::AttentionProbs)}) {
    std::vector<double> og, lg, om, lm;
    tiled_forward(G, qkv, drop, og, lg);
    tiled_forward(M, qkv_m, drop, om, lm);
    require_close(og, om, 1e-13);
    const auto gg = tiled_backward(G, qkv, og, lg, W, drop);
    const auto gm = tiled_backward(M, qkv_m, om, lm, W, drop);
    std::vector<double> summed(gg.size(), 0.0);
    for (int64_t r = 0; r < G.rows(); ++r) {
      std::copy_n(&gm[r * M.stride()], G.k_off(), &summed[r * G.stride()]);
      for (int64_t h = 0; h < gs.heads; ++h)
        for (int64_t c = 0; c < d; ++c) {
          const int64_t g = h / group;
          summed[r * G.stride() + G.k_off() + g * d + c] += gm[r * M.stride() + M.k_off() + h * d + c];
          summed[r * G.stride() + G.v_off() + g * d + c] += gm[r * M.stride() + M.v_off() + h * d + c];
        }
    }
    require_close(gg, summed, 1e-12);
  }
}

TEST_CASE("attention is causal: changing k/v at position j leaves earlier outputs unchanged", "[attention]") {
  const Layout L{{2, 100, 4, 2, 8}};
  const auto qkv = random_vec(L.rows() * L.stride(), 3);
  std::vector<float> base, lse;
  tiled_forward(L, cast<float>(qkv), Dropout{}, base, lse);
  for (int64_t j : {1, 63, 64, 70, 99}) {
    auto changed = cast<float>(qkv);
    for (int64_t b = 0; b < L.s.batch; ++b)
      for (int64_t c = L.k_off(); c < L.stride(); ++c) changed[(b * L.s.seq + j) * L.stride() + c] += 1.5f;
    std::vector<float> out, lse2;
    tiled_forward(L, changed, Dropout{}, out, lse2);
    for (int64_t b = 0; b < L.s.batch; ++b) {
      const size_t before = (size_t)(b * L.s.seq + j) * L.out_cols(), row = L.out_cols();
      INFO("j " << j << " b " << b);
      REQUIRE(std::memcmp(&out[(size_t)b * L.s.seq * row], &base[(size_t)b * L.s.seq * row],
                          (before - (size_t)b * L.s.seq * row) * sizeof(float)) == 0);
      REQUIRE(std::memcmp(&out[before], &base[before], row * sizeof(float)) != 0);  // position j itself sees it
    }
  }
}

TEST_CASE("float backward agrees with the float64 backward", "[attention]") {
  const Layout L{{2, 150, 6, 2, 64}};
  const auto qkv = random_vec(L.rows() * L.stride(), 8);
  const auto W = random_vec(L.rows() * L.out_cols(), 9, -1.0, 1.0);
  std::vector<double> out, lse;
  tiled_forward(L, qkv, Dropout{}, out, lse);
  const auto ref = tiled_backward(L, qkv, out, lse, W, Dropout{});
  std::vector<float> outf, lsef;
  tiled_forward(L, cast<float>(qkv), Dropout{}, outf, lsef);
  const auto got = tiled_backward(L, cast<float>(qkv), outf, lsef, cast<float>(W), Dropout{});
  require_close(got, ref, 1e-4);
}

TEST_CASE("attention results are bit-identical with 1 and 2 threads", "[attention][determinism]") {
  const Layout L{{2, 150, 6, 2, 16}};
  const auto qkv = cast<float>(random_vec(L.rows() * L.stride(), 10));
  const auto W = cast<float>(random_vec(L.rows() * L.out_cols(), 11, -1.0, 1.0));
  const Dropout drop = Dropout::at(0.3f, 42, 1, 0, moas::DropoutSiteId::AttentionProbs);
  const int saved = omp_get_max_threads();
  std::vector<float> out[2], lse[2], grad[2];
  for (int run = 0; run < 2; ++run) {
    omp_set_num_threads(run + 1);
    tiled_forward(L, qkv, drop, out[run], lse[run]);
    grad[run] = tiled_backward(L, qkv, out[run], lse[run], W, drop);
  }
  omp_set_num_threads(saved);
  REQUIRE(std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(lse[0].data(), lse[1].data(), lse[0].size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(grad[0].data(), grad[1].data(), grad[0].size() * sizeof(float)) == 0);
}

TEST_CASE("attention rejects inconsistent shapes", "[attention]") {
  const Layout L{{1, 4, 6, 4, 2}};  // 6 heads cannot share 4 kv heads
  std::vector<float> qkv(L.rows() * L.stride()), out(L.rows() * L.out_cols()), lse(24);
  const RowSet rows = all_rows(L.s);
  REQUIRE_THROWS_AS(moas::attention_forward(L.s, L.kv(qkv), L.heads(rows, qkv.data(), L.stride(), out.data(),
                                                                     L.out_cols(), lse.data()),
                                            Dropout{}),
                    moas::Error);
}

TEST_CASE("routed query rows equal dense attention at those rows, forward and backward", "[attention][routing]") {
  // Each head keeps its own subset of tokens (MoH), including an empty head and a sequence with no rows for a head;
  // keys and values stay those of every token; windows (SPEC §7) mask by each row's original position.
  for (int64_t window : {0, 3, 66}) {
    INFO("window " << window);
    const Layout L{{2, 70, 4, 2, 8, window}};
    const int64_t H = L.s.heads, d = L.s.head_dim, N = L.rows();
    const auto qkv = random_vec(N * L.stride(), 41);
    const auto W = random_vec(N * L.out_cols(), 42, -1.0, 1.0);
    for (const Dropout &drop : {Dropout{}, Dropout::at(0.25f, 3, 1, 0, moas::DropoutSiteId::AttentionProbs)}) {
      std::vector<double> dense_out, dense_lse;
      tiled_forward(L, qkv, drop, dense_out, dense_lse);

      std::vector<RowSet> rows((size_t)H);
      for (int64_t h = 0; h < H; ++h)
        rows[(size_t)h].select(L.s.batch, L.s.seq, [&](int64_t n) {
          if (h == 3) return false;                    // a head no token chose
          if (h == 2 && n < L.s.seq) return false;     // no rows in sequence 0
          return ((n * 7 + h * 13) % 5) < 2 + h % 2;  // a scattered subset
        });
      // Compact q per head, gathered from the fused buffer.
      std::vector<std::vector<double>> q(H), out(H), lse(H), dout(H), dq(H);
      std::vector<QueryHead<double>> heads;
      std::vector<QueryHeadGrad<double>> grads;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t m = rows[(size_t)h].size();
        q[h].resize(m * d);
        moas::gather_rows(q[h].data(), d, qkv.data() + h * d, L.stride(), rows[(size_t)h].row, d);
        out[h].assign(m * d, 0.0);
        lse[h].assign(m, 0.0);
        dout[h].resize(m * d);
        moas::gather_rows(dout[h].data(), d, W.data() + h * d, L.out_cols(), rows[(size_t)h].row, d);
        dq[h].assign(m * d, std::numeric_limits<double>::quiet_NaN());
      }
      for (int64_t h = 0; h < H; ++h) {
        heads.push_back({h, &rows[(size_t)h], q[h].data(), d, out[h].data(), d, lse[h].data()});
        grads.push_back({dout[h].data(), d, dq[h].data(), d});
      }
      moas::attention_forward(L.s, L.kv(qkv), heads, drop);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = 0; r < rows[(size_t)h].size(); ++r) {
          const int64_t n = rows[(size_t)h].row[(size_t)r];
          for (int64_t c = 0; c < d; ++c)
            REQUIRE(out[h][r * d + c] == Approx(dense_out[n * L.out_cols() + h * d + c]).epsilon(1e-12).margin(1e-14));
          REQUIRE(lse[h][r] == Approx(dense_lse[h * N + n]).epsilon(1e-12));
        }

      // Backward: the dense pass with dout zero on unselected (token, head) pairs gives the same dq rows and dk/dv.
      std::vector<double> dense_dout(N * L.out_cols(), 0.0);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = 0; r < rows[(size_t)h].size(); ++r)
          std::copy_n(&dout[h][r * d], d, &dense_dout[rows[(size_t)h].row[(size_t)r] * L.out_cols() + h * d]);
      const auto dense_grad = tiled_backward(L, qkv, dense_out, dense_lse, dense_dout, drop);
      std::vector<double> dkv(N * L.stride(), std::numeric_limits<double>::quiet_NaN());
      moas::attention_backward(L.s, L.kv(qkv), heads, grads,
                               moas::KeyValueGrads<double>{dkv.data() + L.k_off(), L.stride(), dkv.data() + L.v_off(),
                                                           L.stride()},
                               drop);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = L.k_off(); c < L.stride(); ++c)
          REQUIRE(dkv[n * L.stride() + c] == Approx(dense_grad[n * L.stride() + c]).epsilon(1e-12).margin(1e-13));
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = 0; r < rows[(size_t)h].size(); ++r)
          for (int64_t c = 0; c < d; ++c)
            REQUIRE(dq[h][r * d + c] == Approx(dense_grad[rows[(size_t)h].row[(size_t)r] * L.stride() + h * d + c])
                                            .epsilon(1e-12)
                                            .margin(1e-13));
    }
  }
}

TEST_CASE("a window of w: changing key j changes exactly the outputs of queries j .. j + w", "[attention][window]") {
  for (int64_t w : {1, 5, 64}) {
    const Layout L{{2, 150, 4, 2, 8, w}};
    const auto qkv = random_vec(L.rows() * L.stride(), 4);
    std::vector<float> base, lse;
    tiled_forward(L, cast<float>(qkv), Dropout{}, base, lse);
    for (int64_t j : {0, 63, 64, 100}) {
      auto changed = cast<float>(qkv);
      for (int64_t b = 0; b < L.s.batch; ++b)
        for (int64_t c = L.k_off(); c < L.stride(); ++c) changed[(b * L.s.seq + j) * L.stride() + c] += 1.5f;
      std::vector<float> out, lse2;
      tiled_forward(L, changed, Dropout{}, out, lse2);
      for (int64_t n = 0; n < L.rows(); ++n) {
        const int64_t i = n % L.s.seq;
        INFO("w " << w << " j " << j << " query " << i);
        const bool same = std::memcmp(&out[n * L.out_cols()], &base[n * L.out_cols()],
                                      L.out_cols() * sizeof(float)) == 0;
        REQUIRE(same == (i < j || i > j + w));
      }
    }
  }
}

TEST_CASE("key tiles wholly before every window are never read, forward or backward", "[attention][window]") {
  // Routed rows at positions >= 128 with w = 10 see keys from 118 on: keys and values 0 .. 63 (tile 0) are NaN, which
  // any visit of that tile would spread (0 * NaN) into the outputs or the gradients.
  const Layout L{{1, 200, 4, 2, 8, 10}};
  const int64_t H = L.s.heads, d = L.s.head_dim, N = L.rows();
  const auto clean = random_vec(N * L.stride(), 91);
  const auto W = random_vec(N * L.out_cols(), 92, -1.0, 1.0);
  auto poisoned = clean;
  for (int64_t n = 0; n < 64; ++n)
    for (int64_t c = L.k_off(); c < L.stride(); ++c) poisoned[n * L.stride() + c] = std::nan("");
  RowSet rows;
  rows.select(1, L.s.seq, [](int64_t n) { return n >= 128; });
  const int64_t m = rows.size();
  std::vector<double> q(m * H * d), out(m * H * d), lse(H * m), dout(m * H * d), dq(m * H * d);
  moas::gather_rows(q.data(), H * d, poisoned.data(), L.stride(), rows.row, H * d);
  moas::gather_rows(dout.data(), H * d, W.data(), L.out_cols(), rows.row, H * d);
  const auto heads = L.heads(rows, q.data(), H * d, out.data(), H * d, lse.data());
  moas::attention_forward(L.s, L.kv(poisoned), heads, Dropout{});
  std::vector<QueryHeadGrad<double>> grads;
  for (int64_t h = 0; h < H; ++h) grads.push_back({dout.data() + h * d, H * d, dq.data() + h * d, H * d});
  std::vector<double> dkv(N * L.stride(), std::numeric_limits<double>::quiet_NaN());
  moas::attention_backward(L.s, L.kv(poisoned), heads, grads,
                           moas::KeyValueGrads<double>{dkv.data() + L.k_off(), L.stride(), dkv.data() + L.v_off(),
                                                       L.stride()},
                           Dropout{});

  // The same rows of dense attention on the clean inputs, dout zero elsewhere.
  std::vector<double> ref, ref_lse;
  naive_forward(L, clean, Dropout{}, ref, ref_lse);
  std::vector<double> dense_out, dense_lse, dense_dout(N * L.out_cols(), 0.0);
  tiled_forward(L, clean, Dropout{}, dense_out, dense_lse);
  for (int64_t r = 0; r < m; ++r) std::copy_n(&dout[r * H * d], H * d, &dense_dout[rows.row[(size_t)r] * L.out_cols()]);
  const auto dense_grad = tiled_backward(L, clean, dense_out, dense_lse, dense_dout, Dropout{});
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < H * d; ++c) {
      const int64_t n = rows.row[(size_t)r];
      REQUIRE(out[r * H * d + c] == Approx(ref[n * L.out_cols() + c]).epsilon(1e-12).margin(1e-14));
      REQUIRE(dq[r * H * d + c] == Approx(dense_grad[n * L.stride() + c]).epsilon(1e-12).margin(1e-13));
    }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = L.k_off(); c < L.stride(); ++c) {
      INFO("key " << n);
      REQUIRE(dkv[n * L.stride() + c] == Approx(dense_grad[n * L.stride() + c]).epsilon(1e-12).margin(1e-13));
    }
}
