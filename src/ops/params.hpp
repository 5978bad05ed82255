// All parameters of a model live in one flat buffer (and their gradients in a second), so AdamW, zero-grad and the
// global gradient norm are single loops, and a fused projection ([q; k; v], [c_fc; c_up]) is one GEMM even when
// the checkpoint names its row blocks separately.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/error.hpp"

namespace moas {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset;  // into the flat buffers
  int64_t numel;
  bool decay;  // AdamW weight decay applies to tensors of rank >= 2
};

template <typename T>
class ParamTable {
 public:
  // Registers a tensor right after the previous one and returns its offset.
  int64_t add(const std::string &name, std::vector<int64_t> shape) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const int64_t offset = total_;
    index_[name] = infos_.size();
    const bool decay = shape.size() >= 2;
    infos_.push_back({name, std::move(shape), offset, numel, decay});
    total_ += numel;
    return offset;
  }
  void allocate() {
    values.assign((size_t)total_, T(0));
    grads.assign((size_t)total_, T(0));
  }

  const std::vector<ParamInfo> &infos() const { return infos_; }
  int64_t total() const { return total_; }
  const ParamInfo &find(const std::string &name) const {
    auto it = index_.find(name);
    MOAS_REQUIRE(it != index_.end(), MOAS_ERR_UNKNOWN_PARAMETER,
                 "no parameter named \"" + name + "\" in this model: enumerate names with moas_parameter_info_at");
    return infos_[it->second];
  }
  bool contains(const std::string &name) const { return index_.count(name) != 0; }
  // The offset of an optional tensor (a bias, CoPE's table): -1 when this model has none.
  int64_t offset_if_present(const std::string &name) const { return contains(name) ? find(name).offset : -1; }

  T *value(int64_t offset) { return values.data() + offset; }
  const T *value(int64_t offset) const { return values.data() + offset; }
  T *grad(int64_t offset) { return grads.data() + offset; }
  // For optional tensors (biases): offset -1 means absent.
  const T *value_or_null(int64_t offset) const { return offset < 0 ? nullptr : values.data() + offset; }
  T *grad_or_null(int64_t offset) { return offset < 0 ? nullptr : grads.data() + offset; }

  std::vector<T> values;
  std::vector<T> grads;

 private:
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

// The table as the CUDA AdamW's segments: each tensor's first element, then the end; and whether each tensor decays
// (ParamInfo::decay).
struct ParamSegments {
  std::vector<int64_t> begin;
  std::vector<uint8_t> decay;
};
template <typename T>
ParamSegments param_segments(const ParamTable<T> &params) {
  ParamSegments s;
  for (const ParamInfo &info : params.infos()) {
    s.begin.push_back(info.offset);
    s.decay.push_back(info.decay ? 1 : 0);
  }
  s.begin.push_back(params.total());
  return s;
}

}  // namespace moas
