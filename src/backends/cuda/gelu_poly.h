// GELU through one polynomial for log2 Phi: the fused GEGLU kernel's "p" forms (geglu_gemm_sm90.cu), and the
// CPU test that holds its accuracy (host code here computes 2^x with std::exp2 where the GPU uses ex2.approx).
//
// GELU(x) = x Phi(x), with Phi(-|x|) = 0.5 erfc(|x| / sqrt 2) = 2^(Q(|x|) - x^2 / (2 ln 2)). Q(a) = log2(0.5 erfcx(a /
// sqrt 2)) is smooth and slowly varying, so one polynomial covers it - degree 8 in t = a / 2.75 - 1 on [0, 5.5]
// (Chebyshev-interpolated, then as monomials in FP32) - where erff selects between two polynomials by |x|
// coefficient by coefficient (9 FSEL, 7 FFMA and a predicated exponential per value in the staged epilogue's
// SASS, 34 instructions per output value in all). Here: 12 FMA-pipe instructions, one MUFU exponential, no
// selects of coefficients. Beyond |x| = 5.5, Q is held at Q(5.5): Phi(x) is 1 in FP32 for x > 5.5 and |GELU| <
// 1.1e-7 for x < -5.5. Against erf-GELU in double over [-12, 12] in steps of 5e-5, with an exact 2^x (ex2.approx
// adds about 2^-22 relative): relative error at most 2.8e-6 for |x| <= 5.5, absolute at most 4.4e-7; 337 of 480001
// FP16 results one unit off the exactly rounded GELU. bench/gelu_poly_fit.py derives the coefficients and these
// figures; CpuOps.PolynomialGeluMatchesErfGelu holds them.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define SDRT_GELU_HD __host__ __device__
#else
#define SDRT_GELU_HD
#endif

namespace sdrt::cuda {

SDRT_GELU_HD inline float gelu_poly(float v) {
  const float t = fmaf(fminf(fabsf(v), 5.5f), 0.363636374f, -1.f);
  float q = -3.236977791e-04f;
  q = fmaf(q, t, -2.285121242e-03f), q = fmaf(q, t, 1.202445477e-02f), q = fmaf(q, t, -3.212790191e-02f), q = fmaf(q, t, 7.766598463e-02f);
  q = fmaf(q, t, -1.830367148e-01f), q = fmaf(q, t, 4.313030839e-01f), q = fmaf(q, t, -1.197280765e+00f), q = fmaf(q, t, -2.935396671e+00f);
  const float e = fmaf(v * v, -0.721347520f, q);
  float h;  // Phi(-|v|)
#ifdef __CUDA_ARCH__
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(h) : "f"(e));
#else
  h = std::exp2(e);
#endif
  return v * (v >= 0.f ? 1.f - h : h);
}

}  // namespace sdrt::cuda

#undef SDRT_GELU_HD
