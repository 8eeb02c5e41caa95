// What the CUDA micro-benchmarks share: an error check for main() and a hash for deterministic inputs.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

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
