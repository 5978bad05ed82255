// DIR/train.svg: the figure of one run, drawn from its whole metrics.jsonl (a resumed run's included).
#pragma once

#include <string>

namespace moas_cli {

// Reads the run's metrics log and replaces svg_path with its loss and routing figure (svg_plot.hpp). Lines the
// log cannot parse are skipped: the figure is a view, and the log is what a reader trusts.
void write_training_plot(const std::string &metrics_path, const std::string &svg_path);

}  // namespace moas_cli
