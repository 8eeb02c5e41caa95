// Convolution form "splitk" (Hopper): an implicit-GEMM convolution whose K (kh * kw * C) is split over the
// blocks of a thread-block cluster, their partial sums added through distributed shared memory. SD's low
// levels (8x8 and 16x16 latents, 1280 channels) are short, deep GEMMs - 128 rows at batch 2 against
// 11520-deep, 29.5 MB weights - bound by reading the weights once: cuDNN's kernels and im2col + cuBLASLt's
// split-K (an im2col pass, the GEMM, a reduction kernel) reach about 60% of the memory's bandwidth there. Here
// one launch reads the activations in place (the im2col gather in the loads, zeros at the borders), streams
// the weights through a deep cp.async ring into warpgroup MMAs, and reduces the cluster's partial tiles
// on chip with the bias and residual in the same pass. The sum over the cluster's blocks runs in a fixed
// order: deterministic. The same kernel serves as the GEMM of Linear layers and 1x1 convolutions (a 1x1
// convolution over M rows).
//
// An experiment (SDRT_CONV_SPLITK / SDRT_GEMM_SPLITK = timed to time it, =<form> to force one): correct on the
// H100 and H200 but slower than cuDNN / cuBLASLt on every SD shape (twentieth session): ~0.5 us per K step of a
// block whatever the ring's depth (4 stages 2 ahead or 6-8 stages all but one ahead measured alike), as if each
// step waited a full memory round trip, plus 2-4 us fixed (the cluster's partial tiles read remotely, one rank
// after another). The next try: the weights through TMA (bulk tensor copies, not cp.async's per-thread
// requests) and the partial tiles pushed to their owners before one cluster barrier.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

// Forms: output-channel tile (64 or 128) x cluster size (the K split: 1, 2, 4, 8), named "b<BN>c<CS>".
int conv_splitk_forms();
// The most GEMM rows (output pixels) at which SDRT_*_SPLITK=timed times the kernel: with more, cuDNN's and
// cuBLASLt's kernels won by far on every SD shape (H100, twentieth session), and timing cost a batch-16 build 19 s.
constexpr int64_t kSplitkTimedRows = 2048;
const char* conv_splitk_form_name(int form);
int conv_splitk_form_by_name(const char* name);  // -1 if unknown

struct ConvSplitkShape {
  int64_t N, H, W, C, O, kh, kw, stride, pad_h, pad_w, Ho, Wo;
};

// A GEMM y[M, N] = x[M, K] w[N, K]^T as the kernel runs it: a 1x1 convolution over M one-pixel images.
inline ConvSplitkShape splitk_gemm_shape(int64_t M, int64_t N, int64_t K) { return {M, 1, 1, K, N, 1, 1, 1, 0, 0, 1, 1}; }

// Whether form `form` runs this convolution: a compute capability 9.0 GPU (sm_90a code), C % 64 == 0, O a
// multiple of the form's tile, at least as many 64-deep K steps as the cluster has blocks, sizes below 2^31.
bool conv_splitk_applies(int form, const ConvSplitkShape& s);

// y[N, Ho, Wo, O] = conv(x[N, H, W, C], w[O, kh, kw, C]) (+ b[O]) (+ r[N, Ho, Wo, O]), NHWC halves, padding
// pad_h / pad_w on both sides. x, w, y, r 16-byte aligned, b 8-byte aligned (else cudaErrorNotSupported, as
// where the form does not apply).
cudaError_t conv_splitk(int form, const __half* x, const __half* w, const __half* b, const __half* r, __half* y, const ConvSplitkShape& s,
                        cudaStream_t stream);

}  // namespace sdrt::cuda
