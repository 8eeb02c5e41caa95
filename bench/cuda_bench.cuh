// What the CUDA micro-benchmarks share: an error check for main(), a hash for deterministic inputs, and the
// relative difference of two outputs.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cmath>
#include <cstdio>
#include <vector>

// In main(): a failed CUDA call prints itself and its error and returns 1.
#define CHECK(x)                                                                                  \
  do {                                                                                            \
    const cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) return std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)), 1; \
  } while (0)

// A well-mixed 32-bit hash of (i, seed): the fill kernels' source of pseudo-random values.
__device__ __forceinline__ uint32_t bench_hash(uint32_t i, uint32_t seed) {
  uint32_t h = i * 2654435761u ^ seed;
  h ^= h >> 16, h *= 0x85EBCA6Bu, h ^= h >> 13, h *= 0xC2B2AE35u, h ^= h >> 16;
  return h;
}

// || a - b || / || a || over every 7th element of two device FP16 arrays of n; -1 if they cannot be read
inline double relative_l2_diff(const __half* a_dev, const __half* b_dev, int64_t n) {
  std::vector<__half> a(n), b(n);
  if (cudaMemcpy(a.data(), a_dev, n * sizeof(__half), cudaMemcpyDeviceToHost) != cudaSuccess ||
      cudaMemcpy(b.data(), b_dev, n * sizeof(__half), cudaMemcpyDeviceToHost) != cudaSuccess)
    return -1.0;
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; i += 7) {
    const double u = __half2float(a[i]), v = __half2float(b[i]);
    num += (u - v) * (u - v);
    den += u * u;
  }
  return den > 0.0 ? std::sqrt(num / den) : 0.0;
}
