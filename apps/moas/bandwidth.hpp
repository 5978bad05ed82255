// The machine's memory read bandwidth, measured in a fraction of a second: what `moas generate` sets its decode
// steps' bytes per second against (a decode step of a small model reads its weights from memory, so this bounds it).
#pragma once

namespace moas_cli {

// Bytes per second of `threads` threads each summing its part of a buffer far larger than the caches (the best of a
// few passes).
double read_bandwidth(int threads);

}  // namespace moas_cli
