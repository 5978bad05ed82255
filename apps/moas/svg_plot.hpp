// The figures of `moas compare` and `moas train`, written as SVG by hand: curves against step on the left, routing
// on the right.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace moas_cli {

struct LossCurve {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (step, loss)
  std::vector<double> spread;  // empty, or a standard deviation per point, drawn as a band of +-1 around the curve
  bool thin = false;           // a noisy curve (per-step training loss) drawn light behind the others
};

struct ShareBars {
  std::string variant;
  int color = 0;                    // the variant's index, so its label matches its curve
  std::vector<std::string> routes;  // one bar each
  std::vector<double> shares;       // in [0, 1]
  std::vector<double> spread;       // empty, or a standard deviation per bar, drawn as a whisker
};

// compare.svg: each variant's validation loss against step (mean with a +-1 std band over seeds), and the last
// layer's routing shares of the routed variants as grouped bars.
std::string comparison_svg(const std::vector<LossCurve> &curves, const std::vector<ShareBars> &bars);

// train.svg: training and validation loss against step, and the last layer's share of each route at every
// validation (empty `routes`: the model routes nothing).
std::string training_svg(const std::vector<LossCurve> &losses, const std::vector<LossCurve> &routes);

}  // namespace moas_cli
