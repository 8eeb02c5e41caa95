// The GEGLU feed-forward projection as one kernel (Hopper): y[M, F] = (x w_v^T + b_v) * gelu(x w_g^T + b_g),
// where w = [w_v; w_g] is the linear layer's [2F, K] weight and b its [2F] bias - diffusers' GEGLU, whose
// first half of the projection is the value and the second the gate. The [M, 2F] projection is never
// written: the two-kernel form (cuBLASLt's GEMM, then the GEGLU pass) moves it through memory twice.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

// The kernel's forms (tile width, pipeline, persistence); each is timed per shape where it applies. The
// experimental ones (warp-specialized with TMA: correct on the H200, no faster) are listed only with
// SDRT_GEGLU_EXPERIMENTAL=1.
int geglu_gemm_forms();
const char* geglu_gemm_form_name(int form);
int geglu_gemm_form_by_name(const char* name);  // -1 if unknown
// Whether the form computes the model's GELU (erf); the others use its tanh approximation (experiments).
bool geglu_gemm_form_exact(int form);

// Whether the fused kernel handles this shape and these pointers: a compute capability 9.0 GPU (sm_90a
// code), K % 64 == 0, F % 128 == 0, 16-byte-aligned x, w and y, 4-byte-aligned b, M, K, F < 2^31.
bool geglu_gemm_supported(int64_t M, int64_t K, int64_t F, const void* x, const void* w, const void* b, const void* y);

// Launches form `form`; cudaErrorNotSupported where geglu_gemm_supported is false.
cudaError_t geglu_gemm(int form, const __half* x, const __half* w, const __half* b, __half* y, int64_t M, int64_t K, int64_t F, cudaStream_t s);

}  // namespace sdrt::cuda
