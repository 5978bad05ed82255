#include "routing.hpp"

#include <cstdio>

#include "errors.hpp"
#include "number_text.hpp"

namespace moas_cli {

std::vector<std::string> route_names(const moas_model_config &c) {
  std::vector<std::string> names;
  if (c.attention == MOAS_ATTENTION_MOAS) {
    for (int k = 0; k < c.moas_n_branches; k++) {
      const int kv = c.moas_branch_kv_heads[k] == 0 ? c.n_head : c.moas_branch_kv_heads[k];
      names.push_back(kv == c.n_head ? "mha" : kv == 1 ? "mqa" : "gqa" + std::to_string(kv));
    }
  } else if (c.attention == MOAS_ATTENTION_MOH) {
    for (int h = c.head_selection.num_shared_heads; h < c.n_head; h++) names.push_back("h" + std::to_string(h));
  }
  return names;
}

namespace {

std::string percentages(const std::vector<double> &values, const char *separator) {
  std::string text;
  char number[16];
  for (size_t i = 0; i < values.size(); i++) {
    std::snprintf(number, sizeof number, "%.0f", 100.0 * values[i]);
    text += (i ? separator : "") + std::string(number);
  }
  return text;
}

// MoH gates are weights that scale a head's output, not shares that sum to 1: as percentages they read as 120-176%,
// so they are printed as plain numbers.
std::string weights(const std::vector<double> &values) {
  std::string text;
  for (size_t i = 0; i < values.size(); i++) text += (i ? "/" : "") + fixed(values[i], "%.2f");
  return text;
}

std::string joined_names(const RoutingSummary &routing) {
  std::string text;
  for (size_t i = 0; i < routing.route_names.size(); i++) text += (i ? "/" : "") + routing.route_names[i];
  return text;
}

}  // namespace

RoutingAccumulator::RoutingAccumulator(const moas_model_config &config) : config_(config) {
  sum_.attention = config.attention;
  sum_.route_names = route_names(config);
}

void RoutingAccumulator::add(const moas_model *model) {
  if (!has_router_) return;
  std::vector<moas_layer_router_stats> stats((size_t)config_.n_layer);
  for (moas_layer_router_stats &s : stats) s.struct_size = sizeof s;
  const moas_status status = moas_router_stats_all(model, stats.data(), stats.size());
  if (status == MOAS_ERR_NO_ROUTER) {
    has_router_ = false;
    return;
  }
  check_status(status, "moas_router_stats_all");
  if (sum_.layers.empty()) sum_.layers.resize(stats.size());
  for (size_t l = 0; l < stats.size(); l++) {
    LayerRouting &layer = sum_.layers[l];
    const int n = stats[l].n_routes;
    layer.share.resize((size_t)n);
    layer.top_share.resize((size_t)n);
    layer.mean_gate.resize((size_t)n);
    for (int r = 0; r < n; r++) {
      layer.share[(size_t)r] += stats[l].share[r];
      layer.top_share[(size_t)r] += stats[l].top_share[r];
      layer.mean_gate[(size_t)r] += stats[l].mean_gate[r];
    }
    layer.balance += stats[l].balance;
    layer.collapsed = layer.collapsed || stats[l].collapsed;
  }
  forwards_++;
}

RoutingSummary RoutingAccumulator::summary() const {
  RoutingSummary mean = sum_;
  if (forwards_ == 0) {
    mean.layers.clear();
    return mean;
  }
  for (LayerRouting &layer : mean.layers) {
    for (double &v : layer.share) v /= forwards_;
    for (double &v : layer.top_share) v /= forwards_;
    for (double &v : layer.mean_gate) v /= forwards_;
    layer.balance /= forwards_;
  }
  return mean;
}

std::string compact_routing(const RoutingSummary &routing) {
  if (!routing.routed()) return "";
  std::string text = joined_names(routing);
  for (size_t l = 0; l < routing.layers.size(); l++)
    text += " L" + std::to_string(l) + " " + percentages(routing.layers[l].share, "/") + " b" +
            fixed(routing.layers[l].balance, "%.2f") + (routing.layers[l].collapsed ? "!" : "");
  return text;
}

std::string detailed_routing(const RoutingSummary &routing) {
  if (!routing.routed()) return "";
  const bool moas = routing.attention == MOAS_ATTENTION_MOAS;
  std::string text =
      "routing " + joined_names(routing) + (moas ? " (argmax% | gate%)" : " (share% | mean gate weight)") + ":";
  for (size_t l = 0; l < routing.layers.size(); l++) {
    const LayerRouting &layer = routing.layers[l];
    text += " L" + std::to_string(l) + " " + percentages(moas ? layer.top_share : layer.share, "/") + " | " +
            (moas ? percentages(layer.mean_gate, "/") : weights(layer.mean_gate)) + " balance " +
            fixed(layer.balance, "%.2f") +
            (layer.collapsed ? " COLLAPSED" : "") + (l + 1 < routing.layers.size() ? ";" : "");
  }
  return text;
}

std::string last_layer_routing(const RoutingSummary &routing) {
  if (!routing.routed()) return "-";
  const LayerRouting &layer = routing.layers.back();
  std::string text;
  for (size_t r = 0; r < layer.share.size(); r++)
    text += (r ? " " : "") + routing.route_names[r] + " " + fixed(100.0 * layer.share[r], "%.0f") + "%";
  text += ", balance " + fixed(layer.balance, "%.2f");
  if (layer.collapsed) text += " (collapsed)";
  return text;
}

}  // namespace moas_cli
