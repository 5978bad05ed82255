// Router statistics of one layer (SPEC §8, LESSONS.md 4): the shares f-hat, a balance figure that is 1 for uniform
// routing and 1/N when routing collapsed onto one route, the max/mean load, a collapse flag, the mean routing
// entropy and the layer's unweighted load-balance loss. Reported separately from the weighted loss in the objective.
#pragma once

#include <cstdint>
#include <vector>

namespace moas {

struct RouterStats {
  int attention = 0;                 // MOAS_ATTENTION_MOAS or MOAS_ATTENTION_MOH
  std::vector<double> share;         // f-hat per route, sums to 1
  std::vector<double> mean_gate;     // per route
  std::vector<double> top_share;     // MoAS: argmax shares; MoH: f_i (sums to K)
  double entropy = 0;                // mean over tokens, nats
  double aux_loss = 0;               // unweighted load-balance loss
  double mean_shared_weight = 0, mean_routed_weight = 0;  // MoH head-type weights a1, a2

  double balance() const {
    double sq = 0;
    for (double f : share) sq += f * f;
    return sq > 0 ? 1.0 / ((double)share.size() * sq) : 0.0;
  }
  double max_share() const {
    double mx = 0;
    for (double f : share) mx = f > mx ? f : mx;
    return mx;
  }
  double max_over_mean() const { return (double)share.size() * max_share(); }
  bool collapsed() const { return max_share() > 0.9; }
};

}  // namespace moas
