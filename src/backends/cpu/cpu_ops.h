// Float32 reference kernels of the CPU backend. Plain functions over contiguous row-major buffers so
// that tests can check them against hand-computed values; threaded with OpenMP, matrix work in BLAS.
#pragma once
#include <cstdint>

namespace sdrt::cpu {

// x[N,C,H,W] * w[O,C,kh,kw] (+ b[O]) -> y[N,O,Ho,Wo]; pads = {top, left, bottom, right}
void conv2d(const float* x, const float* w, const float* b, float* y, int64_t N, int64_t C, int64_t H, int64_t W,
            int64_t O, int64_t kh, int64_t kw, int64_t stride, const int64_t pad[4], int64_t Ho, int64_t Wo);
// x[M,K] * w[N,K]^T (+ b[N]) -> y[M,N]
void linear(const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t N);
// x[N, C, S] grouped over C into G groups; y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c]
void group_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t N, int64_t C, int64_t S,
                int64_t G, float eps);
// rows of width C
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t C, float eps);
void silu(const float* x, float* y, int64_t n);
void gelu(const float* x, float* y, int64_t n);
void quick_gelu(const float* x, float* y, int64_t n);
// x[rows, 2F] -> y[rows, F]
void geglu(const float* x, float* y, int64_t rows, int64_t F);
// q[B,Lq,H*D], k[B,Lk,H*D], v[B,Lk,H*Dv] -> o[B,Lq,H*Dv]
// q, k, v rows ldq, ldk, ldv elements apart (packed projections share one buffer); o is [B, Lq, H*Dv].
void attention(const float* q, const float* k, const float* v, float* o, int64_t B, int64_t Lq, int64_t Lk,
               int64_t H, int64_t D, int64_t Dv, int64_t ldq, int64_t ldk, int64_t ldv, float scale, bool causal);
// nearest (torch 'nearest': src = floor(dst * in / out)) from [NC,H,W] to [NC,Ho,Wo]
void upsample_nearest(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo);
// [N, C, S] <-> [N, S, C]
void transpose_last2(const float* x, float* y, int64_t N, int64_t R, int64_t Cc);
// t[N] -> y[N, dim]
void timestep_embedding(const float* t, float* y, int64_t N, int64_t dim, bool flip_sin_to_cos, float freq_shift);

}  // namespace sdrt::cpu
