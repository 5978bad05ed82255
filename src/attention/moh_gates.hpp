// The per-token gates of Mixture-of-Heads (SPEC §4), forward and backward, shared by the CPU backend and the CUDA
// kernels. Heads 0 .. h_s-1 are shared, the E routed heads follow. Inputs per token: r (softmax over the routed
// heads), m (its top-K indicator), s (softmax over the shared heads; null when h_s <= 1, meaning s = 1) and a (the
// head-type softmax (a1, a2); null unless both kinds exist).
//
// Reference gates (the public MoH code): shared h_s s_i (x 2 a1), routed K r_i m_i / max(sum_j r_j m_j, eps)
// (x 2 a2), so uniform routing gives every active head a gate of exactly 1. Paper gates (MoH Eq. 5): shared s_i
// (x a1), routed r_i m_i (x a2).
#pragma once

#include <cstdint>

#include "base/hd.hpp"

namespace moas {

struct MohGateSpec {
  int64_t shared;  // h_s
  int64_t routed;  // E
  int64_t active;  // K
  bool reference;  // reference gates, else the paper's

  MOAS_HD bool head_type_router() const { return shared > 0 && active > 0; }
  MOAS_HD double shared_scale() const { return reference ? (double)shared : 1.0; }
  MOAS_HD double routed_scale() const { return reference ? (double)active : 1.0; }
  MOAS_HD double type_scale() const { return reference ? 2.0 : 1.0; }
};

constexpr double kMohNormEps = 1e-9;

// gate[0, h_s + E) of one token.
template <typename T>
MOAS_HD inline void moh_gates_token(const MohGateSpec &g, const T *r, const uint8_t *m, const T *s, const T *a,
                                    T *gate) {
  const T c_shared = a ? T(g.type_scale()) * a[0] : T(1), c_routed = a ? T(g.type_scale()) * a[1] : T(1);
  for (int64_t i = 0; i < g.shared; ++i) gate[i] = T(g.shared_scale()) * (s ? s[i] : T(1)) * c_shared;
  T z = T(1);
  if (g.reference) {
    z = T(0);
    for (int64_t j = 0; j < g.routed; ++j) z += m[j] ? r[j] : T(0);
    z = z > T(kMohNormEps) ? z : T(kMohNormEps);
  }
  for (int64_t j = 0; j < g.routed; ++j)
    gate[g.shared + j] = m[j] ? T(g.routed_scale()) * r[j] / z * c_routed : T(0);
}

// Given dgate of one token, writes dr [E] (through the selected r and the normaliser; the mask is piecewise
// constant), ds [h_s] (when s is not null) and da [2] (when a is not null). All outputs are overwritten.
template <typename T>
MOAS_HD inline void moh_gates_token_backward(const MohGateSpec &g, const T *r, const uint8_t *m, const T *s,
                                             const T *a, const T *dgate, T *dr, T *ds, T *da) {
  const T c_shared = a ? T(g.type_scale()) * a[0] : T(1), c_routed = a ? T(g.type_scale()) * a[1] : T(1);
  T d_c_shared = 0, d_c_routed = 0;
  for (int64_t i = 0; i < g.shared; ++i) {
    const T si = s ? s[i] : T(1);
    d_c_shared += dgate[i] * T(g.shared_scale()) * si;
    if (s) ds[i] = dgate[i] * T(g.shared_scale()) * c_shared;
  }
  T z = T(1), weighted = T(0);  // weighted = sum_j dgate_j r_j m_j
  if (g.reference) {
    z = T(0);
    for (int64_t j = 0; j < g.routed; ++j) z += m[j] ? r[j] : T(0);
    z = z > T(kMohNormEps) ? z : T(kMohNormEps);
  }
  for (int64_t j = 0; j < g.routed; ++j) weighted += m[j] ? dgate[g.shared + j] * r[j] : T(0);
  d_c_routed = T(g.routed_scale()) * weighted / z;
  // gate_j = k r_j m_j / z c with z = sum_l r_l m_l: d/dr_l = k c m_l (dgate_l / z - weighted / z^2).
  const T k = T(g.routed_scale()) * c_routed;
  const bool normalised = g.reference && z > T(kMohNormEps);
  for (int64_t j = 0; j < g.routed; ++j)
    dr[j] = m[j] ? k * (dgate[g.shared + j] / z - (normalised ? weighted / (z * z) : T(0))) : T(0);
  if (a) {
    da[0] = d_c_shared * T(g.type_scale());
    da[1] = d_c_routed * T(g.type_scale());
  }
}

// y_t = c_proj(concat_i gate_t,i head_i(t)): one (token, head) pair's head_dim values through its gate.
template <typename T>
MOAS_HD inline void moh_gate_head(T *gated, T gate, const T *head, int64_t head_dim) {
  for (int64_t c = 0; c < head_dim; ++c) gated[c] = gate * head[c];
}

// Its backward: dhead = gate dgated (overwritten); returns the gate's gradient <dgated, head>, summed in column order.
template <typename T>
MOAS_HD inline T moh_gate_head_backward(T *dhead, T gate, const T *dgated, const T *head, int64_t head_dim) {
  T dot = 0;
  for (int64_t c = 0; c < head_dim; ++c) {
    dot += dgated[c] * head[c];
    dhead[c] = gate * dgated[c];
  }
  return dot;
}

}  // namespace moas
