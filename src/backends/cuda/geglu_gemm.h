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

// LayerNorm-fused projections (Attrs::ln, pass fold_layernorm_linear) on the same kernel: x's rows are
// normalised (no affine part: folded into w and b) by statistics the kernel sums from the tiles of x it
// reads anyway, y = rstd (x w^T - mean c) + b with c[n] = sum_k w[n, k] (FP32, of the FP16 weights) - with
// geglu the GEGLU of that [M, N] projection into y[M, N / 2], else y[M, N]. Forms per kind, each timed.
int ln_gemm_forms(bool geglu);
const char* ln_gemm_form_name(bool geglu, int form);
int ln_gemm_form_by_name(bool geglu, const char* name);  // -1 if unknown
// Hopper (sm_90a code), K % 64 == 0, N divisible by the form's tile, 16-byte-aligned x, w, y, 8-byte c, 4-byte b.
bool ln_gemm_supported(bool geglu, int form, int64_t M, int64_t K, int64_t N, const void* x, const void* w, const void* c, const void* b, const void* y);
cudaError_t ln_gemm(bool geglu, int form, const __half* x, const __half* w, const float* c, const __half* b, __half* y, int64_t M, int64_t K, int64_t N,
                    float eps, cudaStream_t s);

}  // namespace sdrt::cuda
