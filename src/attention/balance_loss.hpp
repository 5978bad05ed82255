// The load-balance losses of SPEC §3 and §4, from one forward's routing (LESSONS.md 4: P over the full softmax, not
// only the selected entries). Sums run in token order, so the value is the same for any thread count.
#pragma once

#include <cstdint>
#include <vector>

namespace moas {

// MoAS: mean_k (mean_n g_nk - 1/S)^2 over gates [N, S]; mean_gate [S] receives mean_n g_nk. 0 at perfect balance.
template <typename T>
double moas_balance_loss(const T *gates, int64_t N, int64_t S, std::vector<double> *mean_gate) {
  mean_gate->assign((size_t)S, 0.0);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < S; k++) (*mean_gate)[(size_t)k] += (double)gates[n * S + k];
  double loss = 0;
  for (int64_t k = 0; k < S; k++) {
    (*mean_gate)[(size_t)k] /= (double)N;
    const double gap = (*mean_gate)[(size_t)k] - 1.0 / (double)S;
    loss += gap * gap / (double)S;
  }
  return loss;
}

// The gradient of aux_scale times that loss with respect to g_nk, the same for every token n, per column k:
// 2 aux_scale (mean_gate_k - 1/S) / (S N). The CUDA block adds these rows on the device, the CPU below.
template <typename T>
std::vector<T> moas_balance_gradient_row(int64_t N, int64_t S, const std::vector<double> &mean_gate, double aux_scale) {
  std::vector<T> row((size_t)S);
  for (int64_t k = 0; k < S; k++)
    row[(size_t)k] = (T)(aux_scale * 2.0 * (mean_gate[(size_t)k] - 1.0 / (double)S) / ((double)S * (double)N));
  return row;
}

// Adds that gradient onto d_gates [N, S].
template <typename T>
void moas_balance_loss_backward(T *d_gates, int64_t N, int64_t S, const std::vector<double> &mean_gate,
                                double aux_scale) {
  const std::vector<T> row = moas_balance_gradient_row<T>(N, S, mean_gate, aux_scale);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < S; k++) d_gates[n * S + k] += row[(size_t)k];
}

// MoH: E sum_i P_i f_i over the routed softmax r [N, E] and its top-K indicator [N, E]; P [E] receives the mean of
// r, f [E] the fraction of tokens selecting head i. Equals K at perfectly uniform routing.
template <typename T>
double moh_balance_loss(const T *r, const uint8_t *selected, int64_t N, int64_t E, std::vector<double> *P,
                        std::vector<double> *f) {
  P->assign((size_t)E, 0.0);
  f->assign((size_t)E, 0.0);
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < E; i++) {
      (*P)[(size_t)i] += (double)r[n * E + i] / (double)N;
      (*f)[(size_t)i] += selected[n * E + i] ? 1.0 / (double)N : 0.0;
    }
  double loss = 0;
  for (int64_t i = 0; i < E; i++) loss += (double)E * (*P)[(size_t)i] * (*f)[(size_t)i];
  return loss;
}

// The gradient of aux_scale times that loss with respect to r_ni (f is held constant: a count), the same for every
// token n, per routed head i: aux_scale E f_i / N, into row (kept by the caller).
template <typename T>
void moh_balance_gradient_row(int64_t N, int64_t E, const std::vector<double> &f, double aux_scale,
                              std::vector<T> &row) {
  row.resize((size_t)E);
  for (int64_t i = 0; i < E; i++) row[(size_t)i] = (T)(aux_scale * (double)E * f[(size_t)i] / (double)N);
}

}  // namespace moas
