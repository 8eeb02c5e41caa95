// What the two FP8 probes (fp8_gemm.cu, fp8_conv.cu) share: inputs held in FP16 and FP8 E4M3 with the same
// values (the outputs' relative difference is cuda_bench.cuh's).
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_bench.cuh"

// values in [-1, 1) from a hash, as FP8 E4M3 and as FP16 holding the same (FP8-representable) value, so a
// comparison of the two paths sees only the arithmetic
__global__ void fill_fp8_pair_k(__half* h, __nv_fp8_e4m3* q, int64_t n, uint32_t seed) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = (float)(bench_hash((uint32_t)i, seed) & 0xFFFF) / 32768.f - 1.f;
  const __nv_fp8_e4m3 e(v);
  q[i] = e;
  h[i] = __float2half((float)e);
}

inline void fill_fp8_pair(__half* h, __nv_fp8_e4m3* q, int64_t n, uint32_t seed) {
  fill_fp8_pair_k<<<(unsigned)((n + 255) / 256), 256>>>(h, q, n, seed);
}
