// The model's weight matrices re-laid for decoding (base/packed_product.hpp), made on a decode step's first use of
// each and kept until the weights change: a step reads each matrix once as one stream instead of row by row.
// They double the memory of the matrices decoding uses; Model::parameters_changed drops them, so that every change
// of a weight (optimizer step, parameter write, checkpoint load) reaches the next step.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>

#include "base/packed_product.hpp"

namespace moas {

template <typename T>
class DecodeWeights {
 public:
  // W [N, K] (row stride ldw, K by default) as packed panels. A fused matrix may be used whole, by row blocks or by
  // a block of columns: each (first element, rows, columns) is its own entry.
  const PackedMatrix<T> &of(const T *W, int64_t N, int64_t K, int64_t ldw = 0) {
    const Key key{W, N, K};
    auto found = packed_.find(key);
    if (found == packed_.end()) found = packed_.emplace(key, pack_matrix(W, N, K, ldw ? ldw : K)).first;
    return found->second;
  }
  void clear() { packed_.clear(); }

 private:
  using Key = std::tuple<const T *, int64_t, int64_t>;
  std::map<Key, PackedMatrix<T>> packed_;
};

}  // namespace moas
