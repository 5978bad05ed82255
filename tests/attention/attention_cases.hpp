// Attention cases for the CUDA kernels' tests: the host emulation of the block functions (test_cuda_blocks.cpp)
// and the device run (test_cuda_kernels.cpp) both compare with the CPU kernel (src/attention/attention.cpp, or
// src/attention/cope_attention.cpp for a CoPE case) on the same data, with or without dropout on the probabilities.
// A case keeps every float (q/k/v, CoPE embeddings, outputs, gradients) in one arena and the positions and row starts
// in two more, so a test runs it on host memory or copies the arenas to the device and back; descriptors are built
// for either.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "attention/cope_attention.hpp"
#include "cuda_host/cuda_backend.h"
#include "ops/dropout.hpp"
#include "ops/rows.hpp"

namespace cuda_test {

struct CaseSpec {
  const char *name;
  int64_t batch, seq, heads, kv_heads, head_dim, window;
  int keep_percent;  // 100: every query row (dense); else about this share of them per head (routed)
  // Queries at positions past .. seq - 1; keys held from position first_key (> 0: a windowed KV cache, whose
  // oldest keys no window reaches; forward only). Dense with both 0: q read in place from the fused qkv rows.
  int64_t past, first_key;
  std::vector<int64_t> listed;  // the heads listed, in this order; empty: all, in order
};

// Dense, routed (MoAS top-1 / MoH row subsets), GQA 6/2, MQA, windows, T not a multiple of the 32-row tiles, one
// head with no row in a sequence, listed heads out of order with a kv head nobody reads (its dk/dv stay untouched),
// head_dim 64 (over 48 KiB of shared memory in the dk/dv kernel), and windowed caches whose keys start past 0.
inline std::vector<CaseSpec> attention_cases() {
  return {
      {"dense MHA", 2, 37, 4, 4, 16, 0, 100, 0, 0, {}},
      {"dense GQA 6/2", 2, 70, 6, 2, 8, 0, 100, 0, 0, {}},
      {"dense MQA", 1, 45, 4, 1, 8, 0, 100, 0, 0, {}},
      {"dense GQA 6/2, window 9", 2, 70, 6, 2, 8, 9, 100, 0, 0, {}},
      {"dense MQA, window 40, head_dim 64", 1, 100, 2, 1, 64, 40, 100, 0, 0, {}},
      {"routed MHA (MoAS top-1)", 2, 37, 4, 4, 16, 0, 40, 0, 0, {}},
      {"routed GQA 6/2 (MoH)", 2, 70, 6, 2, 8, 0, 60, 0, 0, {}},
      {"routed MQA, window 5", 1, 90, 3, 1, 8, 5, 50, 0, 0, {}},
      {"routed GQA 6/3, listed 5 and 0, window 33", 2, 77, 6, 3, 8, 33, 70, 0, 0, {5, 0}},
      {"T = 2", 3, 2, 2, 1, 4, 0, 100, 0, 0, {}},
      {"cache: keys 30 .. 49, queries 40 .. 49, window 8", 2, 50, 6, 2, 8, 8, 100, 40, 30, {}},
      {"cache, routed: keys 25 .. 99, queries 37 .. 99, window 12", 2, 100, 4, 1, 8, 12, 60, 37, 25, {}},
  };
}

struct Tensor {
  std::string name;
  int64_t offset, size;
};

class AttentionCase {
 public:
  moas::AttentionDims dims;
  std::vector<float> arena;        // every float of the case
  std::vector<int32_t> positions;  // every listed head's RowSet positions
  std::vector<int64_t> begins;     // every listed head's row starts
  std::vector<Tensor> forward_outputs, backward_outputs;

  // dropout: p on the probabilities (0: none); cope_max_pos: CoPE with this many positions per head (0: plain).
  AttentionCase(const CaseSpec &spec, uint64_t seed, float dropout = 0.0f, int64_t cope_max_pos = 0)
      : dims{spec.batch, spec.seq, spec.heads, spec.kv_heads, spec.head_dim, spec.window},
        dropout_(dropout > 0.0f ? moas::Dropout::at(dropout, seed, 3, 1, moas::DropoutSiteId::AttentionProbs)
                                : moas::Dropout{}),
        max_pos_(cope_max_pos) {
    const int64_t H = spec.heads, Hkv = spec.kv_heads, d = spec.head_dim;
    const int64_t queries = spec.seq - spec.past, keys = spec.seq - spec.first_key;  // per sequence
    const int64_t N = spec.batch * keys;  // fused q/k/v rows: the held keys' tokens
    first_key_ = spec.first_key;
    seq_stride_ = keys;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    auto take = [&](int64_t n, float fill) {
      const int64_t at = (int64_t)arena.size();
      arena.resize((size_t)(at + n), fill);
      return at;
    };
    auto randomize = [&](int64_t at, int64_t n) {
      for (int64_t i = 0; i < n; ++i) arena[(size_t)(at + i)] = u(rng);
    };
    constexpr float kSentinel = 7.0f;  // outputs nobody may write keep it; written ones must not

    qkv_stride_ = (H + 2 * Hkv) * d;
    qkv_ = take(N * qkv_stride_, 0.0f);
    randomize(qkv_, N * qkv_stride_);
    dkv_stride_ = Hkv * d;
    dk_ = take(N * dkv_stride_, kSentinel);
    dv_ = take(N * dkv_stride_, kSentinel);
    const bool dense = spec.keep_percent >= 100 && spec.past == 0 && spec.first_key == 0;
    int64_t dense_out = 0, dense_dout = 0, dense_dq = 0;
    if (dense) {  // dense heads share [N, H d] outputs, as in the model
      dense_out = take(N * H * d, kSentinel);
      dense_dout = take(N * H * d, 0.0f);
      randomize(dense_dout, N * H * d);
      dense_dq = take(N * H * d, kSentinel);
    }

    std::vector<int64_t> listed = spec.listed;
    if (listed.empty())
      for (int64_t h = 0; h < H; ++h) listed.push_back(h);
    entries_.resize(listed.size());
    for (size_t e = 0; e < listed.size(); ++e) {
      Entry &en = entries_[e];
      en.head = listed[e];
      if (spec.keep_percent >= 100) {
        en.rows.set_all(spec.batch, queries, spec.past);
      } else {
        // About keep_percent of the tokens; the second listed head has no row in sequence 0.
        en.rows.select(
            spec.batch, queries,
            [&](int64_t n) {
              if (e == 1 && n < queries) return false;
              return moas::mix64(seed ^ (uint64_t)(n * 64 + en.head)) % 100 < (uint64_t)spec.keep_percent;
            },
            spec.past);
      }
      const int64_t m = en.rows.size();
      if (dense) {
        en.q = qkv_ + en.head * d;
        en.q_stride = qkv_stride_;
        en.out = dense_out + en.head * d;
        en.dout = dense_dout + en.head * d;
        en.dq = dense_dq + en.head * d;
        en.out_stride = en.dout_stride = en.dq_stride = H * d;
      } else {  // compact rows: q gathered from the fused row of the query's token
        en.q = take(m * d, 0.0f);
        for (int64_t r = 0; r < m; ++r) {
          const int64_t b = en.rows.row[(size_t)r] / queries, token = b * keys + en.rows.pos[(size_t)r] - first_key_;
          std::copy_n(&arena[(size_t)(qkv_ + token * qkv_stride_ + en.head * d)], d, &arena[(size_t)(en.q + r * d)]);
        }
        en.out = take(m * d, kSentinel);
        en.dout = take(m * d, 0.0f);
        randomize(en.dout, m * d);
        en.dq = take(m * d, kSentinel);
        en.q_stride = en.out_stride = en.dout_stride = en.dq_stride = d;
      }
      en.lse = take(m, kSentinel);
      en.pos = (int64_t)positions.size();
      positions.insert(positions.end(), en.rows.pos.begin(), en.rows.pos.end());
      en.begin = (int64_t)begins.size();
      begins.insert(begins.end(), en.rows.begin.begin(), en.rows.begin.end());
      const std::string name = "head " + std::to_string(en.head);
      if (!dense) {
        forward_outputs.push_back({name + " out", en.out, m * d});
        backward_outputs.push_back({name + " dq", en.dq, m * d});
      }
      forward_outputs.push_back({name + " lse", en.lse, m});
    }
    if (dense) {
      forward_outputs.push_back({"out", dense_out, N * H * d});
      backward_outputs.push_back({"dq", dense_dq, N * H * d});
    }
    backward_outputs.push_back({"dk", dk_, N * dkv_stride_});
    backward_outputs.push_back({"dv", dv_, N * dkv_stride_});
    if (max_pos_ > 0) {  // small embeddings, so position terms and scores are of a size; de accumulates onto 7
      e_ = take(H * max_pos_ * d, 0.0f);
      randomize(e_, H * max_pos_ * d);
      for (int64_t i = 0; i < H * max_pos_ * d; ++i) arena[(size_t)(e_ + i)] *= 0.25f;
      de_ = take(H * max_pos_ * d, kSentinel);
      backward_outputs.push_back({"de", de_, H * max_pos_ * d});
    }
  }

  moas_cuda_attention_dims cuda_dims() const {
    return {dims.batch, dims.seq, dims.heads, dims.kv_heads, dims.head_dim, dims.window};
  }
  moas_cuda_key_values key_values(const float *base) const {
    return {base + qkv_ + dims.heads * dims.head_dim,
            qkv_stride_,
            base + qkv_ + (dims.heads + dims.kv_heads) * dims.head_dim,
            qkv_stride_,
            seq_stride_,
            first_key_};
  }
  bool has_backward() const { return first_key_ == 0; }  // the backward needs every key (src/attention/attention.hpp)
  bool cope() const { return max_pos_ > 0; }
  int64_t max_pos() const { return max_pos_; }
  const float *cope_e(const float *base) const { return base + e_; }  // [H, P, d]
  float *cope_de(float *base) const { return base + de_; }
  int64_t cope_scratch_size() const { return dims.batch * dims.heads * max_pos_ * dims.head_dim; }
  moas_cuda_dropout cuda_dropout() const { return {dropout_.p, dropout_.key}; }
  moas_cuda_key_value_grads key_value_grads(float *base) const {
    return {base + dk_, dkv_stride_, base + dv_, dkv_stride_};
  }
  // Descriptors over arenas at these addresses (host or device).
  std::vector<moas_cuda_query_head> heads(float *base, const int32_t *pos, const int64_t *begin) const {
    std::vector<moas_cuda_query_head> out;
    for (const Entry &e : entries_)
      out.push_back(
          {e.head, pos + e.pos, begin + e.begin, base + e.q, e.q_stride, base + e.out, e.out_stride, base + e.lse});
    return out;
  }
  std::vector<moas_cuda_query_head_grad> grads(float *base) const {
    std::vector<moas_cuda_query_head_grad> out;
    for (const Entry &e : entries_) out.push_back({base + e.dout, e.dout_stride, base + e.dq, e.dq_stride});
    return out;
  }

  // The CPU kernel on a copy of the arena: forward, then backward from its own out and lse.
  void cpu_forward(std::vector<float> &a) const {
    if (cope())
      moas::cope_attention_forward(dims, cpu_key_values(a), cpu_heads(a),
                                   moas::CopeEmbeddings<float>{a.data() + e_, max_pos_}, dropout_);
    else
      moas::attention_forward(dims, cpu_key_values(a), cpu_heads(a), dropout_);
  }
  void cpu_backward(std::vector<float> &a) const {
    std::vector<moas::QueryHeadGrad<float>> g;
    for (const Entry &e : entries_) g.push_back({a.data() + e.dout, e.dout_stride, a.data() + e.dq, e.dq_stride});
    const moas::KeyValueGrads<float> dkv{a.data() + dk_, dkv_stride_, a.data() + dv_, dkv_stride_};
    if (cope())
      moas::cope_attention_backward(dims, cpu_key_values(a), cpu_heads(a), g, dkv,
                                    moas::CopeEmbeddings<float>{a.data() + e_, max_pos_}, a.data() + de_, dropout_);
    else
      moas::attention_backward(dims, cpu_key_values(a), cpu_heads(a), g, dkv, dropout_);
  }

 private:
  struct Entry {
    int64_t head;
    moas::RowSet rows;
    int64_t q, q_stride, out, out_stride, lse, dout, dout_stride, dq, dq_stride, pos, begin;  // offsets, strides
  };
  std::vector<Entry> entries_;
  moas::Dropout dropout_;
  int64_t max_pos_ = 0;
  int64_t qkv_ = 0, qkv_stride_ = 0, dk_ = 0, dv_ = 0, dkv_stride_ = 0, seq_stride_ = 0, first_key_ = 0, e_ = 0,
          de_ = 0;

  moas::KeyValues<float> cpu_key_values(const std::vector<float> &a) const {
    const moas_cuda_key_values kv = key_values(a.data());
    return {kv.k, kv.k_stride, kv.v, kv.v_stride, kv.seq_stride, kv.first_key};
  }
  std::vector<moas::QueryHead<float>> cpu_heads(std::vector<float> &a) const {
    std::vector<moas::QueryHead<float>> out;
    for (const Entry &e : entries_)
      out.push_back({e.head, &e.rows, a.data() + e.q, e.q_stride, a.data() + e.out, e.out_stride, a.data() + e.lse});
    return out;
  }
};

// SPEC §9 on the values [offset, offset + size) of a against the reference b: max|a - b| <= tol * max|b|, every value
// of a finite.
template <typename V>
void require_close(const std::vector<V> &a, const std::vector<V> &b, int64_t offset, int64_t size, double tol,
                   const std::string &what) {
  REQUIRE(a.size() == b.size());
  double err = 0, ref = 0;
  bool finite = true;
  for (int64_t i = offset; i < offset + size; ++i) {
    finite = finite && std::isfinite((double)a[(size_t)i]);
    err = std::max(err, std::fabs((double)a[(size_t)i] - (double)b[(size_t)i]));
    ref = std::max(ref, std::fabs((double)b[(size_t)i]));
  }
  INFO(what << ": max abs err " << err << ", max|ref| " << ref);
  REQUIRE(finite);
  REQUIRE(err <= tol * ref);
}

// Per tensor of a case; sentinels (untouched on both sides) compare equal.
inline void require_close(const std::vector<float> &a, const std::vector<float> &b, const Tensor &t, double tol) {
  require_close(a, b, t.offset, t.size, tol, t.name);
}

// Whole vectors.
template <typename V>
void require_close(const std::vector<V> &a, const std::vector<V> &b, double tol, const std::string &what) {
  REQUIRE(a.size() == b.size());
  require_close(a, b, 0, (int64_t)b.size(), tol, what);
}

// Bit for bit (== on floats would take -0 for +0).
template <typename V>
void require_same_bits(const std::vector<V> &a, const std::vector<V> &b, const std::string &what) {
  INFO(what);
  REQUIRE(a.size() == b.size());
  if (a.empty()) return;  // data() may be null, which memcmp must not see
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(V)) == 0);
}

}  // namespace cuda_test
