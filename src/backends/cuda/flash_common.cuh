// Device helpers shared by the attention kernels (flash_attention.cu, flash_attention_sm90.cu): the
// asynchronous global -> shared copies that stage Q, K and V, and the softmax's exponential and packing.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

namespace sdrt::cuda::flash {

// 16 bytes global -> shared without passing through registers; src_bytes 0 writes zeros.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as an FP16 pair (lo in the low half): an MMA A-fragment register.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// 2^lo and 2^hi as an FP16 pair: the arguments rounded to FP16, then one MUFU instruction for both
// (ex2.approx.f16x2) instead of one each (the exponentials bound the head-dim-40 attention). The argument's
// rounding costs up to 2^-(12 - e) ln 2 relative error for |x| in [2^(e-1), 2^e): 0.14% at |x| in [4, 8)
// against FP16's 0.05% rounding of the result.
__device__ __forceinline__ uint32_t exp2_half2(float lo, float hi) {
  const uint32_t x = pack_half2(lo, hi);
  uint32_t y;
  asm("ex2.approx.f16x2 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}
// P's FP16 pair: exponentials in FP32 then packed, or (E16) packed then exponentiated in FP16.
template <bool E16>
__device__ __forceinline__ uint32_t exp2_pack(float lo, float hi) {
  if constexpr (E16) return exp2_half2(lo, hi);
  else return pack_half2(fast_exp2(lo), fast_exp2(hi));
}

}  // namespace sdrt::cuda::flash
