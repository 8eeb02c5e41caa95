// CUDA kernels of the CUDA backend (NCHW, the CPU backend's layouts), one launcher per op, templated on
// the stored element type T (float or __half); arithmetic is always float. Matrix work goes to cuBLAS.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

template <class T>
void im2col(const T* x, T* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, const int64_t pad[4], int64_t Ho,
            int64_t Wo, cudaStream_t s);
template <class T>
void add_channel_bias(T* y, const T* b, int64_t N, int64_t C, int64_t S, cudaStream_t s);  // y[n,c,s] += b[c]
template <class T>
void add_row_bias(T* y, const T* b, int64_t rows, int64_t C, cudaStream_t s);  // y[r,c] += b[c]
template <class T>
void group_norm(const T* x, const T* g, const T* b, T* y, int64_t N, int64_t C, int64_t S, int64_t G, float eps, cudaStream_t s);
template <class T>
void layer_norm(const T* x, const T* g, const T* b, T* y, int64_t rows, int64_t C, float eps, cudaStream_t s);
enum class Act { SiLU, GELU, QuickGELU };
template <class T>
void activation(Act a, const T* x, T* y, int64_t n, cudaStream_t s);
template <class T>
void geglu(const T* x, T* y, int64_t rows, int64_t F, cudaStream_t s);
// rows of `cols` float scores -> probabilities written to p (may alias when T is float); causal masks
// column j > (row % rows_per_head)
template <class T>
void softmax_rows(float* x, T* p, int64_t rows, int64_t cols, int64_t rows_per_head, bool causal, cudaStream_t s);
// PhaseInterleave (NCHW): x [N, 4C, H+1, W+1] -> y [N, C, 2H, 2W], y[n, c, 2i+a, 2j+b] = x[n, (2a+b) C + c, i+a, j+b]
template <class T>
void phase_interleave(const T* x, T* y, int64_t N, int64_t C, int64_t H, int64_t W, cudaStream_t s);
template <class T>
void upsample_nearest(const T* x, T* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo, cudaStream_t s);
template <class T>
void transpose_last2(const T* x, T* y, int64_t N, int64_t R, int64_t C, cudaStream_t s);
template <class T>
void timestep_embedding(const float* t, T* y, int64_t N, int64_t dim, bool flip, float shift, cudaStream_t s);
template <class T>
void embedding(const int32_t* ids, const T* table, T* y, int64_t n, int64_t V, int64_t C, int* bad, cudaStream_t s);
// y = x (op) z with broadcasting described by per-dimension strides (0 on broadcast dims), rank <= 6
template <class T>
void broadcast_binary(bool mul, const T* x, const T* z, T* y, int64_t n, int rank, const int64_t* out_shape, const int64_t* sx,
                      const int64_t* sz, cudaStream_t s);
template <class T>
void scale(const T* x, T* y, int64_t n, float a, cudaStream_t s);
// dst[k] = sum_j coef[j] * src[j][k] over float vectors (the sampling loop's scheduler and CFG
// arithmetic); dst may be one of the sources. terms <= kMaxCombine.
constexpr int kMaxCombine = 8;
void lin_combine(float* dst, int64_t n, const float* const* src, const float* coef, int terms, cudaStream_t s);
// The same, the sum also written scaled to each of `outs` more vectors (at most kMaxCombineOuts; not sources):
// also[k][i] = also_scale[k] * dst[i].
constexpr int kMaxCombineOuts = 2;
void lin_combine(float* dst, int64_t n, const float* const* src, const float* coef, int terms, float* const* also, const float* also_scale,
                 int outs, cudaStream_t s);
void f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t s);
void f16_to_f32(const __half* x, float* y, int64_t n, cudaStream_t s);

}  // namespace sdrt::cuda
