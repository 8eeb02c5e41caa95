// Grow-only scratch buffers for the CPU kernels (im2col columns, attention scores): allocated once and
// reused, so that a large temporary does not cost a fresh mmap and its page faults at every call.
#pragma once
#include <cstddef>
#include <vector>

namespace sdrt::cpu {

enum class Scratch { Im2col, Scores };

inline float* scratch(Scratch which, size_t n) {
  thread_local std::vector<float> bufs[2];
  auto& b = bufs[(int)which];
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace sdrt::cpu
