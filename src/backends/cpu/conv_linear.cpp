// Convolution (im2col in row chunks + SGEMM) and linear layers (SGEMM) on the CPU.
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/scratch.h"

namespace sdrt::cpu {

void linear(const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t N) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.f, x, (int)K, w, (int)K, 0.f, y, (int)N);
  if (b) {
#pragma omp parallel for
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] += b[n];
  }
}

namespace {

// Columns of one image for output rows [r0, r0 + nr): col[(c*kh + ki)*kw + kj][oy*Wo + ox] at leading
// dimension ld (so that several images can sit side by side).
void im2col(const float* xn, float* col, int64_t ld, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            const int64_t pad[4], int64_t Wo, int64_t r0, int64_t nr) {
#pragma omp parallel for collapse(2)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t ki = 0; ki < kh; ++ki)
      for (int64_t kj = 0; kj < kw; ++kj) {
        float* dst = col + ((c * kh + ki) * kw + kj) * ld;
        for (int64_t oy = 0; oy < nr; ++oy) {
          const int64_t iy = (r0 + oy) * stride - pad[0] + ki;
          float* d = dst + oy * Wo;
          if (iy < 0 || iy >= H) {
            std::fill(d, d + Wo, 0.f);
            continue;
          }
          const float* srow = xn + (c * H + iy) * W;
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const int64_t ix = ox * stride - pad[1] + kj;
            d[ox] = (ix >= 0 && ix < W) ? srow[ix] : 0.f;
          }
        }
      }
}

void add_bias(float* yn, const float* b, int64_t O, int64_t S) {
#pragma omp parallel for
  for (int64_t o = 0; o < O; ++o)
    for (int64_t s = 0; s < S; ++s) yn[o * S + s] += b[o];
}

}  // namespace

void conv2d(const float* x, const float* w, const float* b, float* y, int64_t N, int64_t C, int64_t H, int64_t W,
            int64_t O, int64_t kh, int64_t kw, int64_t stride, const int64_t pad[4], int64_t Ho, int64_t Wo) {
  const int64_t K = C * kh * kw, S = Ho * Wo;
  constexpr int64_t kBudget = 16 << 20;  // floats of column buffer
  if (N > 1 && K * N * S <= kBudget && O * N * S <= kBudget) {
    // Small images: one GEMM over the whole batch, so each weight is read once per batch, not per image.
    float* col = scratch(Scratch::Im2col, (size_t)(K * N * S + O * N * S));
    float* out = col + K * N * S;
    for (int64_t n = 0; n < N; ++n) im2col(x + n * C * H * W, col + n * S, N * S, C, H, W, kh, kw, stride, pad, Wo, 0, Ho);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)(N * S), (int)K, 1.f, w, (int)K, col, (int)(N * S), 0.f, out,
                (int)(N * S));
#pragma omp parallel for collapse(2)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) {
        const float bo = b ? b[o] : 0.f;
        const float* src = out + o * N * S + n * S;
        float* dst = y + (n * O + o) * S;
        for (int64_t s = 0; s < S; ++s) dst[s] = src[s] + bo;
      }
    return;
  }
  const bool pointwise = kh == 1 && kw == 1 && stride == 1 && !pad[0] && !pad[1] && !pad[2] && !pad[3];
  // Output rows per im2col chunk: keep the column buffer near 16M floats.
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(Ho, kBudget / std::max<int64_t>(1, K * Wo)));
  float* col = pointwise ? nullptr : scratch(Scratch::Im2col, (size_t)(K * rows * Wo));
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * C * H * W;
    float* yn = y + n * O * S;
    if (pointwise) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)S, (int)C, 1.f, w, (int)C, xn, (int)S, 0.f, yn, (int)S);
    } else {
      for (int64_t r0 = 0; r0 < Ho; r0 += rows) {
        const int64_t nr = std::min(rows, Ho - r0), cols = nr * Wo;
        im2col(xn, col, cols, C, H, W, kh, kw, stride, pad, Wo, r0, nr);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)cols, (int)K, 1.f, w, (int)K, col, (int)cols, 0.f,
                    yn + r0 * Wo, (int)S);
      }
    }
    if (b) add_bias(yn, b, O, S);
  }
}

}  // namespace sdrt::cpu
