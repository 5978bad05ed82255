// Router statistics (moas_router_stats_all) averaged over forwards, and the short texts that report them.
#pragma once

#include <moas.h>

#include <string>
#include <vector>

namespace moas_cli {

struct LayerRouting {
  std::vector<double> share;      // f-hat: top-1 argmax shares, soft/static mean gates, MoH f_i / K
  std::vector<double> top_share;  // MoAS: argmax shares; MoH: f_i (sums to K)
  std::vector<double> mean_gate;  // MoAS: mean softmax gate (sums to 1); MoH: mean gate weight, 0 where inactive
  double balance = 0;             // 1 / (N sum f-hat^2): 1 uniform, 1/N collapsed
  bool collapsed = false;         // some forward had max f-hat > 0.9
};

struct RoutingSummary {
  int attention = MOAS_ATTENTION_SCHEME;  // MOAS_ATTENTION_MOAS or _MOH when there are routes
  std::vector<std::string> route_names;   // "mha", "gqa2", "mqa" per branch; "h1".. per routed head
  std::vector<LayerRouting> layers;       // empty: the model routes nothing
  bool routed() const { return !layers.empty(); }
};

// What each route of this architecture is: "mha", "gqa2", "mqa" per MoAS branch; "h1".. per MoH routed head.
std::vector<std::string> route_names(const moas_model_config &config);

// Averages the statistics of the forwards it is shown.
class RoutingAccumulator {
 public:
  explicit RoutingAccumulator(const moas_model_config &config);
  // Reads the statistics of the model's last forward (nothing for a model without routers).
  void add(const moas_model *model);
  RoutingSummary summary() const;

 private:
  moas_model_config config_;
  RoutingSummary sum_;
  int forwards_ = 0;
  bool has_router_ = true;
};

// "mha/gqa2/mqa L0 40/31/29 b0.95 L1 ...": f-hat in percent and the balance of each layer, for a progress line.
std::string compact_routing(const RoutingSummary &routing);

// Every layer's routing, for the validation lines: MoAS argmax and mean-gate shares in percent; MoH shares of the
// active routed slots in percent and mean gate weights as plain numbers (a weight, not a share, may exceed 1).
std::string detailed_routing(const RoutingSummary &routing);

// The last layer's shares and balance, for the comparison table ("-" when nothing is routed).
std::string last_layer_routing(const RoutingSummary &routing);

}  // namespace moas_cli
