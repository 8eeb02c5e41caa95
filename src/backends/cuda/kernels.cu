#include <cmath>

#include "backends/cuda/kernels.cuh"

namespace sdrt::cuda {
namespace {

constexpr int kThreads = 256;
inline unsigned blocks(int64_t n) { return (unsigned)std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20); }

__global__ void im2col_k(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, int64_t pt,
                         int64_t pl, int64_t Ho, int64_t Wo) {
  const int64_t S = Ho * Wo, total = C * kh * kw * S;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i % S, r = i / S, kj = r % kw, ki = (r / kw) % kh, c = r / (kw * kh);
    const int64_t oy = s / Wo, ox = s % Wo, iy = oy * stride - pt + ki, ix = ox * stride - pl + kj;
    col[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(c * H + iy) * W + ix] : 0.f;
  }
}

__global__ void channel_bias_k(float* y, const float* b, int64_t C, int64_t S, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) y[i] += b[(i / S) % C];
}

__global__ void row_bias_k(float* y, const float* b, int64_t C, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) y[i] += b[i % C];
}

// One block per (n, group): mean and variance in float with a block reduction (two passes over the data).
__device__ float block_sum(float v) {
  __shared__ float sh[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : 0.f;
  if (threadIdx.x < 32)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  __shared__ float out;
  if (threadIdx.x == 0) out = v;
  __syncthreads();
  float r = out;
  __syncthreads();
  return r;
}

__global__ void group_norm_k(const float* x, const float* g, const float* b, float* y, int64_t C, int64_t S, int64_t G, float eps) {
  const int64_t n = blockIdx.x / G, grp = blockIdx.x % G, cpg = C / G, span = cpg * S;
  const float* xs = x + (n * C + grp * cpg) * S;
  float* ys = y + (n * C + grp * cpg) * S;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) sum += xs[i];
  const float mean = block_sum(sum) / (float)span;
  float sq = 0;
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) sq += (xs[i] - mean) * (xs[i] - mean);
  const float rstd = rsqrtf(block_sum(sq) / (float)span + eps);
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
    const int64_t ch = grp * cpg + i / S;
    ys[i] = (xs[i] - mean) * rstd * g[ch] + b[ch];
  }
}

__global__ void layer_norm_k(const float* x, const float* g, const float* b, float* y, int64_t C, float eps) {
  const float* xr = x + blockIdx.x * C;
  float* yr = y + blockIdx.x * C;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) sum += xr[i];
  const float mean = block_sum(sum) / (float)C;
  float sq = 0;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) sq += (xr[i] - mean) * (xr[i] - mean);
  const float rstd = rsqrtf(block_sum(sq) / (float)C + eps);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) yr[i] = (xr[i] - mean) * rstd * g[i] + b[i];
}

__device__ float gelu1(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

__global__ void act_k(int a, const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = x[i];
    y[i] = a == 0 ? v / (1.f + expf(-v)) : a == 1 ? gelu1(v) : v / (1.f + expf(-1.702f * v));
  }
}

__global__ void geglu_k(const float* x, float* y, int64_t F, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / F, c = i % F;
    y[i] = x[r * 2 * F + c] * gelu1(x[r * 2 * F + F + c]);
  }
}

// One block per row; masked entries (causal) become 0.
__global__ void softmax_k(float* x, int64_t cols, int64_t rows_per_head, bool causal) {
  float* row = x + blockIdx.x * cols;
  const int64_t valid = causal ? min(cols, (int64_t)blockIdx.x % rows_per_head + 1) : cols;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) mx = fmaxf(mx, row[j]);
  __shared__ float sh[32];
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = mx;
  __syncthreads();
  mx = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : -INFINITY;
  if (threadIdx.x < 32)
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
  __shared__ float m;
  if (threadIdx.x == 0) m = mx;
  __syncthreads();
  mx = m;
  float sum = 0;
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.f / block_sum(sum);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) row[j] = j < valid ? row[j] * inv : 0.f;
}

__global__ void upsample_k(const float* x, float* y, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t total) {
  const float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ox = i % Wo, oy = (i / Wo) % Ho, p = i / (Wo * Ho);
    const int64_t iy = min((int64_t)(oy * sh), H - 1), ix = min((int64_t)(ox * sw), W - 1);
    y[i] = x[(p * H + iy) * W + ix];
  }
}

__global__ void transpose_k(const float* x, float* y, int64_t R, int64_t C, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i % R, c = (i / R) % C, n = i / (R * C);  // i indexes y[n][c][r]
    y[i] = x[(n * R + r) * C + c];
  }
}

__global__ void timestep_k(const float* t, float* y, int64_t N, int64_t dim, bool flip, float shift) {
  const int64_t half = dim / 2;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * half; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / half, k = i % half;
    float exponent = -logf(10000.f) * (float)k;
    exponent = exponent / ((float)half - shift);
    const float arg = t[n] * expf(exponent);
    const float s = sinf(arg), c = cosf(arg);
    y[n * dim + k] = flip ? c : s;
    y[n * dim + half + k] = flip ? s : c;
  }
}

__global__ void embedding_k(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t C, int* bad) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * C; i += (int64_t)gridDim.x * blockDim.x) {
    const int32_t id = ids[i / C];
    if (id < 0 || id >= V) {
      *bad = 1;
      y[i] = 0.f;
    } else {
      y[i] = table[(int64_t)id * C + i % C];
    }
  }
}

struct Dims {
  int64_t shape[6], sx[6], sz[6];
};

__global__ void binary_k(bool mul, const float* x, const float* z, float* y, int64_t n, int rank, Dims d) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, ox = 0, oz = 0;
    for (int k = rank - 1; k >= 0; --k) {
      const int64_t idx = rem % d.shape[k];
      rem /= d.shape[k];
      ox += idx * d.sx[k];
      oz += idx * d.sz[k];
    }
    y[i] = mul ? x[ox] * z[oz] : x[ox] + z[oz];
  }
}

__global__ void scale_k(const float* x, float* y, int64_t n, float a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = x[i] * a;
}

}  // namespace

void im2col(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, const int64_t pad[4],
            int64_t Ho, int64_t Wo, cudaStream_t s) {
  im2col_k<<<blocks(C * kh * kw * Ho * Wo), kThreads, 0, s>>>(x, col, C, H, W, kh, kw, stride, pad[0], pad[1], Ho, Wo);
}
void add_channel_bias(float* y, const float* b, int64_t N, int64_t C, int64_t S, cudaStream_t s) {
  channel_bias_k<<<blocks(N * C * S), kThreads, 0, s>>>(y, b, C, S, N * C * S);
}
void add_row_bias(float* y, const float* b, int64_t rows, int64_t C, cudaStream_t s) {
  row_bias_k<<<blocks(rows * C), kThreads, 0, s>>>(y, b, C, rows * C);
}
void group_norm(const float* x, const float* g, const float* b, float* y, int64_t N, int64_t C, int64_t S, int64_t G, float eps,
                cudaStream_t s) {
  group_norm_k<<<(unsigned)(N * G), 512, 0, s>>>(x, g, b, y, C, S, G, eps);
}
void layer_norm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps, cudaStream_t s) {
  layer_norm_k<<<(unsigned)rows, 256, 0, s>>>(x, g, b, y, C, eps);
}
void activation(Act a, const float* x, float* y, int64_t n, cudaStream_t s) { act_k<<<blocks(n), kThreads, 0, s>>>((int)a, x, y, n); }
void geglu(const float* x, float* y, int64_t rows, int64_t F, cudaStream_t s) { geglu_k<<<blocks(rows * F), kThreads, 0, s>>>(x, y, F, rows * F); }
void softmax_rows(float* x, int64_t rows, int64_t cols, int64_t rows_per_head, bool causal, cudaStream_t s) {
  softmax_k<<<(unsigned)rows, 256, 0, s>>>(x, cols, rows_per_head, causal);
}
void upsample_nearest(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo, cudaStream_t s) {
  upsample_k<<<blocks(NC * Ho * Wo), kThreads, 0, s>>>(x, y, H, W, Ho, Wo, NC * Ho * Wo);
}
void transpose_last2(const float* x, float* y, int64_t N, int64_t R, int64_t C, cudaStream_t s) {
  transpose_k<<<blocks(N * R * C), kThreads, 0, s>>>(x, y, R, C, N * R * C);
}
void timestep_embedding(const float* t, float* y, int64_t N, int64_t dim, bool flip, float shift, cudaStream_t s) {
  timestep_k<<<blocks(N * dim / 2), kThreads, 0, s>>>(t, y, N, dim, flip, shift);
}
void embedding(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t C, int* bad, cudaStream_t s) {
  embedding_k<<<blocks(n * C), kThreads, 0, s>>>(ids, table, y, n, V, C, bad);
}
void broadcast_binary(bool mul, const float* x, const float* z, float* y, int64_t n, int rank, const int64_t* out_shape, const int64_t* sx,
                      const int64_t* sz, cudaStream_t s) {
  Dims d{};
  for (int k = 0; k < rank; ++k) d.shape[k] = out_shape[k], d.sx[k] = sx[k], d.sz[k] = sz[k];
  binary_k<<<blocks(n), kThreads, 0, s>>>(mul, x, z, y, n, rank, d);
}
void scale(const float* x, float* y, int64_t n, float a, cudaStream_t s) { scale_k<<<blocks(n), kThreads, 0, s>>>(x, y, n, a); }
void copy_rows(const float* src, float* dst, int64_t rows, int64_t src_row, int64_t dst_row, int64_t dst_off, cudaStream_t s) {
  cudaMemcpy2DAsync(dst + dst_off, dst_row * 4, src, src_row * 4, src_row * 4, rows, cudaMemcpyDeviceToDevice, s);
}

}  // namespace sdrt::cuda
