// Attention of one query row per sequence and head (src/attention/attention_decode.cpp, which attention_forward
// takes for decoding shapes) against a naive float64 softmax: MHA, GQA and MQA, windows, caches whose keys start
// past 0, heads without a row in some sequence and heads at different positions, key ranges split into several parts;
// and the same bits whatever the thread count or the rest of the batch.
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "attention/attention.hpp"
#include "attention/attention_decode.hpp"

using moas::AttentionDims;
using moas::QueryHead;
using moas::RowSet;

namespace {

struct DecodeCase {
  const char *name;
  int64_t batch, keys, heads, kv_heads, head_dim, window, first_key;
  int present_percent;  // about this share of (head, sequence) pairs has a row
  bool same_position;   // every row of a sequence at its last key (decoding); else anywhere its window allows
};

// keys: positions per sequence (key first_key .. keys - 1 held); 1300 and 4096 keys make 3 and 8 parts of 512.
std::vector<DecodeCase> decode_cases() {
  return {
      {"MHA, one sequence", 1, 40, 4, 4, 16, 0, 0, 100, true},
      {"GQA 6/2, batch 3", 3, 300, 6, 2, 8, 0, 0, 100, true},
      {"MQA, 8 heads, 4096 keys", 2, 4096, 8, 1, 16, 0, 0, 100, true},
      {"GQA 6/3, 1300 keys, routed rows at any position", 3, 1300, 6, 3, 8, 0, 0, 60, false},
      {"MHA, window 100, cache from key 700", 2, 1300, 4, 4, 8, 100, 700, 100, true},
      {"MQA, window 600, routed, cache from key 200", 2, 1300, 6, 1, 8, 600, 200, 50, false},
      {"head_dim 64, keys not a multiple of the tile", 1, 517, 2, 1, 64, 0, 0, 100, true},
      // decode_tile.hpp's kernels: 6 and 8 rows per kv head (value rows in fours and ones, in twos at 8 vectors),
      // key blocks cut short, head_dim 8 taking the general products instead.
      {"MQA 6 heads, head_dim 32, window 50", 2, 300, 6, 1, 32, 50, 0, 100, true},
      {"GQA 8/2, head_dim 128, 77 keys", 2, 77, 8, 2, 128, 0, 0, 100, true},
      {"GQA 8/1, head_dim 48, 1100 keys, routed", 2, 1100, 8, 1, 48, 0, 0, 70, false},
  };
}

// Data of a case: K/V [B, held, Hkv d] for the held keys, q [B, H d], and one RowSet per head.
template <typename T>
struct DecodeData {
  DecodeCase c;
  std::vector<T> k, v, q, out, lse;
  std::vector<RowSet> rows;  // per head

  int64_t held() const { return c.keys - c.first_key; }
  AttentionDims dims() const { return {c.batch, c.keys, c.heads, c.kv_heads, c.head_dim, c.window}; }
  moas::KeyValues<T> kv() const {
    const int64_t w = c.kv_heads * c.head_dim;
    return {k.data(), w, v.data(), w, held(), c.first_key};
  }
  std::vector<QueryHead<T>> heads() {
    std::vector<QueryHead<T>> h;
    const int64_t W = c.heads * c.head_dim;
    for (int64_t i = 0; i < c.heads; ++i)
      h.push_back({i, &rows[(size_t)i], q.data() + i * c.head_dim, W, out.data() + i * c.head_dim, W,
                   lse.data() + i * c.batch});
    return h;
  }
};

// q, out and lse are laid out by each head's compact row (row r of head h: q[r, h]), as the model lays out routed rows.
template <typename T>
DecodeData<T> make_case(const DecodeCase &c, uint64_t seed) {
  DecodeData<T> d;
  d.c = c;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.5, 1.5);
  std::uniform_int_distribution<int> percent(0, 99);
  const int64_t kvw = c.kv_heads * c.head_dim;
  d.k.resize((size_t)(c.batch * d.held() * kvw));
  d.v.resize(d.k.size());
  for (auto &x : d.k) x = (T)u(rng);
  for (auto &x : d.v) x = (T)u(rng);
  d.q.resize((size_t)(c.batch * c.heads * c.head_dim));
  for (auto &x : d.q) x = (T)u(rng);
  d.out.assign(d.q.size(), T(0));
  d.lse.assign((size_t)(c.batch * c.heads), T(0));
  // The lowest position whose window stays inside the held keys.
  const int64_t lowest = c.window > 0 ? std::min(c.keys - 1, c.first_key + c.window) : c.first_key;
  std::uniform_int_distribution<int64_t> position(lowest, c.keys - 1);
  for (int64_t h = 0; h < c.heads; ++h) {
    RowSet r;
    r.begin.assign((size_t)c.batch + 1, 0);
    for (int64_t b = 0; b < c.batch; ++b) {
      if (percent(rng) < c.present_percent || (b == 0 && h == 0)) {
        r.row.push_back(b);
        r.pos.push_back((int32_t)(c.same_position ? c.keys - 1 : position(rng)));
      }
      r.begin[(size_t)b + 1] = (int64_t)r.row.size();
    }
    d.rows.push_back(r);
  }
  return d;
}

// out and lse of compact row r of head h, in float64, over keys max(first_key, pos - w) .. pos.
void naive(const DecodeData<double> &d, int64_t h, int64_t r, std::vector<double> &o, double &lse) {
  const DecodeCase &c = d.c;
  const RowSet &rows = d.rows[(size_t)h];
  int64_t b = 0;
  while (rows.begin[(size_t)b + 1] <= r) ++b;
  const int64_t pos = rows.pos[(size_t)r], dh = c.head_dim, g = h / (c.heads / c.kv_heads), kvw = c.kv_heads * dh;
  const int64_t first = c.window > 0 && pos > c.window ? pos - c.window : 0;
  const double *q = &d.q[(size_t)(r * c.heads * dh + h * dh)];
  std::vector<double> s;
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = first; j <= pos; ++j) {
    const double *k = &d.k[(size_t)((b * d.held() + j - c.first_key) * kvw + g * dh)];
    double dot = 0;
    for (int64_t x = 0; x < dh; ++x) dot += q[x] * k[x];
    s.push_back(dot / std::sqrt((double)dh));
    mx = std::max(mx, s.back());
  }
  double sum = 0;
  for (double &x : s) sum += (x = std::exp(x - mx));
  o.assign((size_t)dh, 0.0);
  for (int64_t j = first; j <= pos; ++j) {
    const double *v = &d.v[(size_t)((b * d.held() + j - c.first_key) * kvw + g * dh)];
    for (int64_t x = 0; x < dh; ++x) o[(size_t)x] += s[(size_t)(j - first)] / sum * v[x];
  }
  lse = mx + std::log(sum);
}

template <typename T>
void run(DecodeData<T> &d) {
  auto heads = d.heads();
  REQUIRE(moas::one_row_per_sequence(d.dims(), heads));
  moas::attention_forward(d.dims(), d.kv(), heads, moas::Dropout{});
}

template <typename T>
DecodeData<T> cast_case(const DecodeData<double> &d) {
  DecodeData<T> f;
  f.c = d.c;
  f.rows = d.rows;
  f.k.assign(d.k.begin(), d.k.end());
  f.v.assign(d.v.begin(), d.v.end());
  f.q.assign(d.q.begin(), d.q.end());
  f.out.assign(d.out.size(), T(0));
  f.lse.assign(d.lse.size(), T(0));
  return f;
}

}  // namespace

TEST_CASE("decode attention matches the naive reference in double and float", "[attention][decode]") {
  for (const DecodeCase &c : decode_cases()) {
    DYNAMIC_SECTION(c.name) {
      DecodeData<double> d = make_case<double>(c, 11);
      DecodeData<float> f = cast_case<float>(d);
      run(d);
      run(f);
      std::vector<double> o;
      double lse = 0;
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t r = 0; r < d.rows[(size_t)h].size(); ++r) {
          naive(d, h, r, o, lse);
          const size_t at = (size_t)(r * c.heads * c.head_dim + h * c.head_dim);
          for (int64_t x = 0; x < c.head_dim; ++x) {
            REQUIRE(std::abs(d.out[at + (size_t)x] - o[(size_t)x]) < 1e-12);
            REQUIRE(std::abs(f.out[at + (size_t)x] - o[(size_t)x]) < 2e-5);
          }
          REQUIRE(std::abs(d.lse[(size_t)(h * c.batch + r)] - lse) < 1e-12);
          REQUIRE(std::abs(f.lse[(size_t)(h * c.batch + r)] - lse) < 2e-5 * std::max(1.0, std::abs(lse)));
        }
    }
  }
}

TEST_CASE("decode attention gives the same bits with 1 and 2 threads and for a sequence alone",
          "[attention][decode][determinism]") {
  const DecodeCase c = {"GQA 12/2, 4096 keys", 3, 4096, 12, 2, 64, 0, 0, 70, false};  // up to 6 rows a kv head
  const DecodeData<double> d = make_case<double>(c, 5);
  DecodeData<float> one = cast_case<float>(d), two = cast_case<float>(d);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  run(one);
  omp_set_num_threads(2);
  run(two);
  omp_set_num_threads(saved);
  REQUIRE(one.out == two.out);
  REQUIRE(one.lse == two.lse);

  // Sequence 1 alone: its keys and each head's row (if any) at the same position.
  DecodeCase alone_case = c;
  alone_case.batch = 1;
  DecodeData<float> alone;
  alone.c = alone_case;
  const int64_t kvw = c.kv_heads * c.head_dim, per_seq = c.keys * kvw;
  alone.k.assign(two.k.begin() + per_seq, two.k.begin() + 2 * per_seq);
  alone.v.assign(two.v.begin() + per_seq, two.v.begin() + 2 * per_seq);
  alone.q.assign((size_t)(c.heads * c.head_dim), 0.0f);
  alone.out.assign(alone.q.size(), 0.0f);
  alone.lse.assign((size_t)c.heads, 0.0f);
  for (int64_t h = 0; h < c.heads; ++h) {
    const RowSet &rows = two.rows[(size_t)h];
    RowSet r;
    r.begin = {0, 0};
    const int64_t first = rows.begin[1], end = rows.begin[2];
    if (end > first) {
      r.row.push_back(0);
      r.pos.push_back(rows.pos[(size_t)first]);
      r.begin[1] = 1;
      std::copy_n(two.q.begin() + first * c.heads * c.head_dim + h * c.head_dim, c.head_dim,
                  alone.q.begin() + h * c.head_dim);
    }
    alone.rows.push_back(r);
  }
  run(alone);
  for (int64_t h = 0; h < c.heads; ++h) {
    const RowSet &rows = two.rows[(size_t)h];
    if (rows.begin[2] == rows.begin[1]) continue;
    const int64_t r = rows.begin[1], at = r * c.heads * c.head_dim + h * c.head_dim;
    for (int64_t x = 0; x < c.head_dim; ++x)
      REQUIRE(alone.out[(size_t)(h * c.head_dim + x)] == two.out[(size_t)(at + x)]);
    REQUIRE(alone.lse[(size_t)h] == two.lse[(size_t)(h * c.batch + r)]);
  }
}

TEST_CASE("two rows of one sequence in a head take the tiled kernel", "[attention][decode]") {
  DecodeData<float> d = cast_case<float>(make_case<double>({"MHA", 2, 40, 2, 2, 8, 0, 0, 100, true}, 3));
  auto heads = d.heads();
  REQUIRE(moas::one_row_per_sequence(d.dims(), heads));
  RowSet two;
  two.set_all(2, 2, 38);  // positions 38 and 39 of both sequences
  heads[1].rows = &two;
  REQUIRE_FALSE(moas::one_row_per_sequence(d.dims(), heads));
}
