// Data movement on the CPU: nearest upsampling and [C,S] <-> [S,C] transposes.
#include <algorithm>

#include "backends/cpu/cpu_ops.h"

namespace sdrt::cpu {

void upsample_nearest2x(const float* x, float* y, int64_t NC, int64_t H, int64_t W) {
#pragma omp parallel for
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t i = 0; i < 2 * H; ++i) {
      const float* src = x + (p * H + i / 2) * W;
      float* dst = y + (p * 2 * H + i) * 2 * W;
      for (int64_t j = 0; j < 2 * W; ++j) dst[j] = src[j / 2];
    }
}

void transpose_last2(const float* x, float* y, int64_t N, int64_t R, int64_t Cc) {
  constexpr int64_t T = 32;  // tile for cache-friendly transposes
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r0 = 0; r0 < R; r0 += T)
      for (int64_t c0 = 0; c0 < Cc; c0 += T)
        for (int64_t r = r0; r < std::min(R, r0 + T); ++r)
          for (int64_t c = c0; c < std::min(Cc, c0 + T); ++c) y[(n * Cc + c) * R + r] = x[(n * R + r) * Cc + c];
}

}  // namespace sdrt::cpu
