// A thread's scratch of at least n elements, one per (element type, slot), kept across calls: a call of a shape
// seen before allocates nothing (decode steps, RustGPT's small calls), and small calls do not map and zero buffers
// sized for large ones. The caller writes every element before reading it.
#pragma once

#include <cstddef>
#include <vector>

namespace moas {

template <typename E, int kSlot>
E *thread_scratch(size_t n) {
  thread_local std::vector<E> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace moas
