// What one decode step of one sequence must read from memory, the figure its speed is bounded by (bytes over the
// machine's bandwidth): every weight its token uses, once, and the cached keys and values its attention reads.
#pragma once

#include <cstdint>

#include "config/config.hpp"

namespace moas {

struct DecodeReads {
  // The embedding's row and the whole tied LM head, the norms and MLPs, and of the attention all that a token needs:
  // the query and output projections routing lets it skip are counted only for what it uses (the active heads of
  // MoH; one branch of top-1 MoAS, whose branches' projections are all C x C), routers in full, and keys and values
  // in full but for StaticPruning (only the kv heads its active heads read: no token ever needs the others).
  double weight_bytes = 0;
  // Cached keys and values read per visible cached position (summed over layers): every branch's for soft and static
  // MoAS, one branch's on average for top-1 (as if it routed uniformly), the kv heads of the active heads for MoH.
  double cache_bytes_per_position = 0;
};

// For a float32 model of this architecture.
DecodeReads decode_reads(const ModelConfig &config);

}  // namespace moas
