// Data movement on the CPU: nearest upsampling and [C,S] <-> [S,C] transposes.
#include <algorithm>

#include "backends/cpu/cpu_ops.h"

namespace sdrt::cpu {

void upsample_nearest(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  const float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
#pragma omp parallel for
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t i = 0; i < Ho; ++i) {
      const float* src = x + (p * H + std::min<int64_t>((int64_t)(i * sh), H - 1)) * W;
      float* dst = y + (p * Ho + i) * Wo;
      for (int64_t j = 0; j < Wo; ++j) dst[j] = src[std::min<int64_t>((int64_t)(j * sw), W - 1)];
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
