#include "svg_plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>

namespace moas_cli {

namespace {

const char *const kCurveColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                    "#7f7f7f", "#bcbd22", "#17becf"};
const char *const kBarColors[] = {"#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
                                  "#8c8c8c"};
constexpr int kWidth = 1060, kHeight = 450;

struct Panel {
  double left, right, top, bottom;
  double x_min, x_max, y_min, y_max;
  double x(double v) const { return left + (v - x_min) / (x_max - x_min) * (right - left); }
  double y(double v) const { return bottom - (v - y_min) / (y_max - y_min) * (bottom - top); }
};

// Round steps of 1, 2 or 5 times a power of ten, about `count` of them across [low, high].
double tick_step(double low, double high, int count) {
  const double raw = std::max(high - low, 1e-12) / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double normalised = raw / magnitude;
  return (normalised < 1.5 ? 1 : normalised < 3 ? 2 : normalised < 7 ? 5 : 10) * magnitude;
}

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", std::fabs(v) < 1e-12 ? 0.0 : v);
  return text;
}

std::string escaped(const std::string &text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

void text_at(std::ostringstream &svg, double x, double y, const std::string &text, const char *anchor,
             int size = 11, const char *color = "#333") {
  svg << "<text x=\"" << x << "\" y=\"" << y << "\" font-size=\"" << size << "\" text-anchor=\"" << anchor
      << "\" fill=\"" << color << "\">" << escaped(text) << "</text>\n";
}

// Frame, grid lines and tick labels; x ticks only when x_step > 0.
void axes(std::ostringstream &svg, const Panel &p, double x_step, double y_step, const std::string &x_label,
          const std::string &y_label, const std::string &title) {
  svg << "<rect x=\"" << p.left << "\" y=\"" << p.top << "\" width=\"" << p.right - p.left << "\" height=\""
      << p.bottom - p.top << "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (double v = p.y_min; v <= p.y_max + y_step * 1e-6; v += y_step) {
    svg << "<line x1=\"" << p.left << "\" x2=\"" << p.right << "\" y1=\"" << p.y(v) << "\" y2=\"" << p.y(v)
        << "\" stroke=\"#ddd\"/>\n";
    text_at(svg, p.left - 6, p.y(v) + 4, number(v), "end");
  }
  if (x_step > 0) {
    for (double v = p.x_min; v <= p.x_max + x_step * 1e-6; v += x_step) {
      svg << "<line x1=\"" << p.x(v) << "\" x2=\"" << p.x(v) << "\" y1=\"" << p.bottom << "\" y2=\"" << p.bottom + 5
          << "\" stroke=\"#444\"/>\n";
      text_at(svg, p.x(v), p.bottom + 18, number(v), "middle");
    }
  }
  if (!x_label.empty()) text_at(svg, (p.left + p.right) / 2, p.bottom + 36, x_label, "middle", 12);
  svg << "<text transform=\"translate(" << p.left - 48 << "," << (p.top + p.bottom) / 2
      << ") rotate(-90)\" font-size=\"12\" text-anchor=\"middle\" fill=\"#333\">" << escaped(y_label) << "</text>\n";
  text_at(svg, (p.left + p.right) / 2, p.top - 14, title, "middle", 14, "#111");
}

// Where a curve panel sits and what it shows. A fixed y range (y_low < y_high) suits shares; otherwise the range
// fits the curves.
struct CurveFrame {
  double left, right;
  std::string id, title, y_label;
  double y_low = 0, y_high = 0;
};

void curve_panel(std::ostringstream &svg, const CurveFrame &f, const std::vector<LossCurve> &curves) {
  // A fitted range leaves out the first point of each curve (the untrained model, far above the rest) when there
  // are later ones: the differences between variants are in the tail. Lines and bands are clipped to the frame.
  double x_max = 1, y_low = 1e30, y_high = -1e30;
  for (const LossCurve &c : curves)
    for (size_t i = 0; i < c.points.size(); i++) {
      x_max = std::max(x_max, c.points[i].first);
      if (i == 0 && c.points.size() > 2) continue;
      const double spread = i < c.spread.size() ? c.spread[i] : 0;
      y_low = std::min(y_low, c.points[i].second - spread);
      y_high = std::max(y_high, c.points[i].second + spread);
    }
  if (f.y_low < f.y_high) y_low = f.y_low, y_high = f.y_high;
  if (y_low > y_high) y_low = 0, y_high = 1;
  const double y_step = tick_step(y_low, y_high, 6), x_step = tick_step(0, x_max, 6);
  Panel p{f.left, f.right, 50, 380, 0, std::ceil(x_max / x_step) * x_step, std::floor(y_low / y_step) * y_step,
          std::ceil(y_high / y_step) * y_step};
  if (p.y_max <= p.y_min) p.y_max = p.y_min + y_step;
  svg << "<clipPath id=\"" << f.id << "\"><rect x=\"" << p.left << "\" y=\"" << p.top << "\" width=\""
      << p.right - p.left << "\" height=\"" << p.bottom - p.top << "\"/></clipPath>\n";
  axes(svg, p, x_step, y_step, "step", f.y_label, f.title);
  for (size_t i = 0; i < curves.size(); i++) {
    const LossCurve &c = curves[i];
    const char *color = kCurveColors[i % 10];
    if (c.spread.size() == c.points.size() && !c.points.empty()) {
      svg << "<polygon clip-path=\"url(#" << f.id << ")\" fill=\"" << color << "\" fill-opacity=\"0.18\" points=\"";
      for (size_t j = 0; j < c.points.size(); j++)
        svg << p.x(c.points[j].first) << "," << p.y(c.points[j].second + c.spread[j]) << " ";
      for (size_t j = c.points.size(); j-- > 0;)
        svg << p.x(c.points[j].first) << "," << p.y(c.points[j].second - c.spread[j]) << " ";
      svg << "\"/>\n";
    }
    svg << "<polyline clip-path=\"url(#" << f.id << ")\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\""
        << (c.thin ? "1\" stroke-opacity=\"0.45" : "1.8") << "\" points=\"";
    for (const auto &[step, value] : c.points) svg << p.x(step) << "," << p.y(value) << " ";
    svg << "\"/>\n";
  }
  // Legend, top right over a light box, one row per curve.
  svg << "<rect x=\"" << p.right - 128 << "\" y=\"" << p.top + 4 << "\" width=\"122\" height=\""
      << 16 * (double)curves.size() + 6 << "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n";
  for (size_t i = 0; i < curves.size(); i++) {
    const double ly = p.top + 20 + 16 * (double)i;
    svg << "<line x1=\"" << p.right - 120 << "\" x2=\"" << p.right - 100 << "\" y1=\"" << ly - 4 << "\" y2=\""
        << ly - 4 << "\" stroke=\"" << kCurveColors[i % 10] << "\" stroke-width=\"2.5\"/>\n";
    text_at(svg, p.right - 94, ly, curves[i].name, "start");
  }
}

void share_panel(std::ostringstream &svg, const std::vector<ShareBars> &groups) {
  Panel p{680, 1040, 50, 380, 0, 1, 0, 1};
  axes(svg, p, 0, 0.25, "", "share of tokens", "Routing shares, last layer");
  if (groups.empty()) {
    text_at(svg, (p.left + p.right) / 2, (p.top + p.bottom) / 2, "no routed variants", "middle", 12);
    return;
  }
  size_t total_bars = 0;
  for (const ShareBars &g : groups) total_bars += g.shares.size();
  const double gap = 18, usable = p.right - p.left - gap * (double)(groups.size() + 1);
  const double bar_width = usable / (double)std::max<size_t>(total_bars, 1);
  double x = p.left + gap;
  for (const ShareBars &g : groups) {
    const double group_left = x;
    for (size_t r = 0; r < g.shares.size(); r++) {
      const double share = std::clamp(g.shares[r], 0.0, 1.0);
      svg << "<rect x=\"" << x + 1 << "\" y=\"" << p.y(share) << "\" width=\"" << bar_width - 2 << "\" height=\""
          << p.bottom - p.y(share) << "\" fill=\"" << kBarColors[r % 8] << "\"><title>" << escaped(g.variant) << " "
          << escaped(g.routes[r]) << ": " << number(std::round(share * 1000) / 10) << "%</title></rect>\n";
      if (r < g.spread.size()) {
        const double mid = x + bar_width / 2, high = p.y(std::min(1.0, share + g.spread[r]));
        const double low = p.y(std::max(0.0, share - g.spread[r]));
        svg << "<line x1=\"" << mid << "\" x2=\"" << mid << "\" y1=\"" << high << "\" y2=\"" << low
            << "\" stroke=\"#222\"/>\n";
      }
      text_at(svg, x + bar_width / 2, p.bottom + 14, g.routes[r], "middle", 9);
      x += bar_width;
    }
    if (!g.shares.empty()) {
      // The share every route would have under perfectly balanced routing.
      const double uniform = p.y(1.0 / (double)g.shares.size());
      svg << "<line x1=\"" << group_left << "\" x2=\"" << x << "\" y1=\"" << uniform << "\" y2=\"" << uniform
          << "\" stroke=\"#222\" stroke-dasharray=\"4 3\"/>\n";
    }
    text_at(svg, (group_left + x) / 2, p.bottom + 30, g.variant, "middle", 11, kCurveColors[g.color % 10]);
    x += gap;
  }
  const bool whiskers = std::any_of(groups.begin(), groups.end(), [](const ShareBars &g) { return !g.spread.empty(); });
  text_at(svg, (p.left + p.right) / 2, p.bottom + 48,
          whiskers ? "dashed: uniform share; whiskers: +-1 std over seeds" : "dashed: uniform share", "middle", 10,
          "#666");
}

std::string figure(const std::vector<LossCurve> &left, const CurveFrame &left_frame,
                   const std::function<void(std::ostringstream &)> &right) {
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << " " << kHeight << "\" font-family=\"sans-serif\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  curve_panel(svg, left_frame, left);
  right(svg);
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace

std::string comparison_svg(const std::vector<LossCurve> &curves, const std::vector<ShareBars> &bars) {
  const bool bands = std::any_of(curves.begin(), curves.end(), [](const LossCurve &c) { return !c.spread.empty(); });
  const std::string title = bands ? "Validation loss (band: +-1 std over seeds)" : "Validation loss";
  return figure(curves, {75, 575, "loss-frame", title, "validation loss"},
                [&](std::ostringstream &svg) { share_panel(svg, bars); });
}

std::string training_svg(const std::vector<LossCurve> &losses, const std::vector<LossCurve> &routes) {
  return figure(losses, {75, 575, "loss-frame", "Loss", "loss"}, [&](std::ostringstream &svg) {
    if (!routes.empty()) {
      curve_panel(svg, {610, 1040, "route-frame", "Routing shares, last layer", "share of tokens", 0, 1}, routes);
      return;
    }
    const Panel p{610, 1040, 50, 380, 0, 1, 0, 1};
    axes(svg, p, 0, 0.25, "", "share of tokens", "Routing shares, last layer");
    text_at(svg, (p.left + p.right) / 2, (p.top + p.bottom) / 2, "no routed attention", "middle", 12);
  });
}

}  // namespace moas_cli
