// Scaled dot-product attention on the CPU: per (batch, head), S = q k^T in query chunks (so a 4096-token
// self-attention never holds more than 2048 x Lk scores, 32 MB), row exponentials, o = S v divided by the
// rows' sums. (Chunks of 2048 rows: [2,4096,320] with 8 heads 0.71-0.99 s against 0.89-1.21 s with 1024 on
// the 2-core VM; smaller ones were slower still: each BLAS call has its threads to wake.)
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/scratch.h"

namespace sdrt::cpu {

void attention(const float* q, const float* k, const float* v, float* o, int64_t B, int64_t Lq, int64_t Lk,
               int64_t H, int64_t D, int64_t Dv, int64_t ldq, int64_t ldk, int64_t ldv, float scale, bool causal) {
  const int64_t chunk = std::min<int64_t>(Lq, 2048);
  float* s = scratch(Scratch::Scores, (size_t)(chunk * Lk));
  std::vector<float> inv((size_t)chunk);  // 1 / each row's sum of exponentials
  const int64_t ldo = H * Dv;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i0 = 0; i0 < Lq; i0 += chunk) {
        const int64_t m = std::min(chunk, Lq - i0);
        const float* qb = q + (b * Lq + i0) * ldq + h * D;
        const float* kb = k + b * Lk * ldk + h * D;
        const float* vb = v + b * Lk * ldv + h * Dv;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)Lk, (int)D, scale, qb, (int)ldq, kb, (int)ldk, 0.f,
                    s, (int)Lk);
#pragma omp parallel for
        for (int64_t i = 0; i < m; ++i) {
          float* row = s + i * Lk;
          const int64_t valid = causal ? std::min<int64_t>(Lk, i0 + i + 1) : Lk;
          float mx = std::numeric_limits<float>::lowest();
          for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, row[j]);
          // exp vectorised through glibc's libmvec (this file is built with -ffast-math, see
          // CMakeLists.txt; scores are finite and masked entries are never read).
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < valid; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          inv[i] = 1.f / sum;  // applied to the row's output: one pass over the scores fewer
          for (int64_t j = valid; j < Lk; ++j) row[j] = 0.f;
        }
        float* ob = o + (b * Lq + i0) * ldo + h * Dv;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)Dv, (int)Lk, 1.f, s, (int)Lk, vb, (int)ldv, 0.f, ob, (int)ldo);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < Dv; ++c) ob[i * ldo + c] *= inv[i];
      }
}

}  // namespace sdrt::cpu
