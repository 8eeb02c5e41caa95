// Float32 CUDA kernels of the first CUDA backend stage (NCHW, the CPU backend's layouts), one launcher
// per op; matrix work goes to cuBLAS. FP16/NHWC kernels, fusion and autotuning come next.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

void im2col(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, const int64_t pad[4],
            int64_t Ho, int64_t Wo, cudaStream_t s);
void add_channel_bias(float* y, const float* b, int64_t N, int64_t C, int64_t S, cudaStream_t s);  // y[n,c,s] += b[c]
void add_row_bias(float* y, const float* b, int64_t rows, int64_t C, cudaStream_t s);              // y[r,c] += b[c]
void group_norm(const float* x, const float* g, const float* b, float* y, int64_t N, int64_t C, int64_t S, int64_t G, float eps,
                cudaStream_t s);
void layer_norm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps, cudaStream_t s);
enum class Act { SiLU, GELU, QuickGELU };
void activation(Act a, const float* x, float* y, int64_t n, cudaStream_t s);
void geglu(const float* x, float* y, int64_t rows, int64_t F, cudaStream_t s);
// rows of `cols` scores; causal masks column j > (row % rows_per_head)
void softmax_rows(float* x, int64_t rows, int64_t cols, int64_t rows_per_head, bool causal, cudaStream_t s);
void upsample_nearest(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo, cudaStream_t s);
void transpose_last2(const float* x, float* y, int64_t N, int64_t R, int64_t C, cudaStream_t s);
void timestep_embedding(const float* t, float* y, int64_t N, int64_t dim, bool flip, float shift, cudaStream_t s);
void embedding(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t C, int* bad, cudaStream_t s);
// out = x (op) z with broadcasting described by per-dimension strides (0 on broadcast dims), rank <= 6
void broadcast_binary(bool mul, const float* x, const float* z, float* y, int64_t n, int rank, const int64_t* out_shape,
                      const int64_t* sx, const int64_t* sz, cudaStream_t s);
void scale(const float* x, float* y, int64_t n, float a, cudaStream_t s);
void copy_rows(const float* src, float* dst, int64_t rows, int64_t src_row, int64_t dst_row, int64_t dst_off, cudaStream_t s);

}  // namespace sdrt::cuda
