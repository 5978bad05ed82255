// The comparison figure, written as SVG by hand: validation loss against step for every variant, and the last
// layer's routing shares of the routed variants as grouped bars.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace moas_cli {

struct LossCurve {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (step, loss)
};

struct ShareBars {
  std::string variant;
  int color = 0;                    // the variant's index, so its label matches its curve
  std::vector<std::string> routes;  // one bar each
  std::vector<double> shares;       // in [0, 1]
};

std::string comparison_svg(const std::vector<LossCurve> &curves, const std::vector<ShareBars> &bars);

}  // namespace moas_cli
