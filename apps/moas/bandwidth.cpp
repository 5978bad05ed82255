#include "bandwidth.hpp"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

namespace moas_cli {

double read_bandwidth(int threads) {
  constexpr size_t kFloats = size_t(64) << 20;  // 256 MiB
  threads = std::max(1, threads);
  std::vector<float> data(kFloats, 1.0f);  // written once, so every page is mapped before the passes
  std::vector<float> sums((size_t)threads);
  double best = 0;
  for (int pass = 0; pass < 3; pass++) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> team;
    for (int t = 0; t < threads; t++)
      team.emplace_back([&, t] {
        const size_t begin = kFloats * (size_t)t / (size_t)threads, end = kFloats * (size_t)(t + 1) / (size_t)threads;
        // 16 independent partial sums (a cache line per step): the compiler makes them vector lanes, so the adds keep
        // up with memory, which one scalar chain of adds would not.
        float lanes[16] = {};
        for (size_t i = begin; i + 16 <= end; i += 16)
          for (size_t j = 0; j < 16; j++) lanes[j] += data[i + j];
        float sum = 0;
        for (float lane : lanes) sum += lane;
        sums[(size_t)t] = sum;
      });
    for (std::thread &t : team) t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, (double)kFloats * sizeof(float) / seconds);
  }
  volatile float keep = sums[0];  // the sums must be computed
  (void)keep;
  return best;
}

}  // namespace moas_cli
