// Normalisations and activations on the CPU. Statistics are accumulated in double so that the float32
// result is as close to PyTorch's as rounding allows.
#include <cmath>

#include "backends/cpu/cpu_ops.h"

namespace sdrt::cpu {

void group_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t N, int64_t C, int64_t S,
                int64_t G, float eps) {
  const int64_t cpg = C / G, span = cpg * S;
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const float* xs = x + (n * C + g * cpg) * S;
      float* ys = y + (n * C + g * cpg) * S;
      double sum = 0;
      for (int64_t i = 0; i < span; ++i) sum += xs[i];
      const double mean = sum / (double)span;
      double sq = 0;
      for (int64_t i = 0; i < span; ++i) sq += (xs[i] - mean) * (xs[i] - mean);
      const double rstd = 1.0 / std::sqrt(sq / (double)span + eps);
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = g * cpg + c;
        const float a = (float)(rstd * gamma[ch]), bb = (float)(beta[ch] - mean * rstd * gamma[ch]);
        for (int64_t s = 0; s < S; ++s) ys[c * S + s] = xs[c * S + s] * a + bb;
      }
    }
}

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    double sum = 0;
    for (int64_t i = 0; i < C; ++i) sum += xr[i];
    const double mean = sum / (double)C;
    double sq = 0;
    for (int64_t i = 0; i < C; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
    const double rstd = 1.0 / std::sqrt(sq / (double)C + eps);
    for (int64_t i = 0; i < C; ++i) yr[i] = (float)((xr[i] - mean) * rstd) * gamma[i] + beta[i];
  }
}

void silu(const float* x, float* y, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

static inline float gelu1(float v) { return 0.5f * v * (1.f + std::erf(v * 0.70710678118654752f)); }

void gelu(const float* x, float* y, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) y[i] = gelu1(x[i]);
}

void quick_gelu(const float* x, float* y, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-1.702f * x[i]));
}

void geglu(const float* x, float* y, int64_t rows, int64_t F) {
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < F; ++i) y[r * F + i] = x[r * 2 * F + i] * gelu1(x[r * 2 * F + F + i]);
}

void timestep_embedding(const float* t, float* y, int64_t N, int64_t dim, bool flip_sin_to_cos, float freq_shift) {
  // diffusers get_timestep_embedding, max_period 10000, computed in float32 like torch.
  const int64_t half = dim / 2;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < half; ++i) {
      float exponent = -std::log(10000.f) * (float)i;
      exponent = exponent / ((float)half - freq_shift);
      float arg = t[n] * std::exp(exponent);
      float s = std::sin(arg), c = std::cos(arg);
      y[n * dim + i] = flip_sin_to_cos ? c : s;
      y[n * dim + half + i] = flip_sin_to_cos ? s : c;
    }
}

}  // namespace sdrt::cpu
