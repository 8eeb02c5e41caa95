#include <atomic>
#include <cmath>
#include <cstdlib>

#include "backends/cuda/kernels.cuh"
#include "backends/cuda/launch.cuh"
#include "graph/backend.h"

namespace sdrt::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__half* p, float v) { *p = __float2half_rn(v); }
inline unsigned blocks(int64_t n) { return (unsigned)std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20); }

template <class T>
__global__ void im2col_k(const T* x, T* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, int64_t pt,
                         int64_t pl, int64_t Ho, int64_t Wo) {
  dep_entry();
  const int64_t S = Ho * Wo, total = C * kh * kw * S;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i % S, r = i / S, kj = r % kw, ki = (r / kw) % kh, c = r / (kw * kh);
    const int64_t oy = s / Wo, ox = s % Wo, iy = oy * stride - pt + ki, ix = ox * stride - pl + kj;
    col[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(c * H + iy) * W + ix] : T(0.f);
  }
}

template <class T>
__global__ void channel_bias_k(T* y, const T* b, int64_t C, int64_t S, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    st(y + i, ld(y + i) + ld(b + (i / S) % C));
}

template <class T>
__global__ void row_bias_k(T* y, const T* b, int64_t C, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    st(y + i, ld(y + i) + ld(b + i % C));
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

// Mean and 1/sqrt(var + eps) of n values, by the whole block, two passes in float (GroupNorm, LayerNorm).
template <class T>
__device__ void block_mean_rstd(const T* x, int64_t n, float eps, float* mean_out, float* rstd_out) {
  float sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += ld(x + i);
  const float mean = block_sum(sum) / (float)n;
  float sq = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sq += (ld(x + i) - mean) * (ld(x + i) - mean);
  *mean_out = mean;
  *rstd_out = rsqrtf(block_sum(sq) / (float)n + eps);
}

template <class T>
__global__ void group_norm_k(const T* x, const T* g, const T* b, T* y, int64_t C, int64_t S, int64_t G, float eps) {
  dep_entry();
  const int64_t n = blockIdx.x / G, grp = blockIdx.x % G, cpg = C / G, span = cpg * S;
  const T* xs = x + (n * C + grp * cpg) * S;
  T* ys = y + (n * C + grp * cpg) * S;
  float mean, rstd;
  block_mean_rstd(xs, span, eps, &mean, &rstd);
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
    const int64_t ch = grp * cpg + i / S;
    st(ys + i, (ld(xs + i) - mean) * rstd * ld(g + ch) + ld(b + ch));
  }
}

template <class T>
__global__ void layer_norm_k(const T* x, const T* g, const T* b, T* y, int64_t C, float eps) {
  dep_entry();
  const T* xr = x + blockIdx.x * C;
  T* yr = y + blockIdx.x * C;
  float mean, rstd;
  block_mean_rstd(xr, C, eps, &mean, &rstd);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) st(yr + i, (ld(xr + i) - mean) * rstd * ld(g + i) + ld(b + i));
}

__device__ float gelu1(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

template <class T>
__global__ void act_k(int a, const T* x, T* y, int64_t n) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = ld(x + i);
    st(y + i, a == 0 ? v / (1.f + expf(-v)) : a == 1 ? gelu1(v) : v / (1.f + expf(-1.702f * v)));
  }
}

template <class T>
__global__ void geglu_k(const T* x, T* y, int64_t F, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / F, c = i % F;
    st(y + i, ld(x + r * 2 * F + c) * gelu1(ld(x + r * 2 * F + F + c)));
  }
}

// One block per row; masked entries (causal) become 0.
template <class T>
__global__ void softmax_k(float* x, T* p, int64_t cols, int64_t rows_per_head, bool causal) {
  dep_entry();
  float* row = x + blockIdx.x * cols;
  T* prow = p + blockIdx.x * cols;
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
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) st(prow + j, j < valid ? row[j] * inv : 0.f);
}

template <class T>
__global__ void upsample_k(const T* x, T* y, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t total) {
  dep_entry();
  const float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ox = i % Wo, oy = (i / Wo) % Ho, p = i / (Wo * Ho);
    const int64_t iy = min((int64_t)(oy * sh), H - 1), ix = min((int64_t)(ox * sw), W - 1);
    y[i] = x[(p * H + iy) * W + ix];
  }
}

template <class T>
__global__ void transpose_k(const T* x, T* y, int64_t R, int64_t C, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i % R, c = (i / R) % C, n = i / (R * C);  // i indexes y[n][c][r]
    y[i] = x[(n * R + r) * C + c];
  }
}

template <class T>
__global__ void timestep_k(const float* t, T* y, int64_t N, int64_t dim, bool flip, float shift) {
  dep_entry();
  const int64_t half = dim / 2;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * half; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / half, k = i % half;
    float exponent = -logf(10000.f) * (float)k;
    exponent = exponent / ((float)half - shift);
    const float arg = t[n] * expf(exponent);
    const float s = sinf(arg), c = cosf(arg);
    st(y + n * dim + k, flip ? c : s);
    st(y + n * dim + half + k, flip ? s : c);
  }
}

template <class T>
__global__ void embedding_k(const int32_t* ids, const T* table, T* y, int64_t n, int64_t V, int64_t C, int* bad) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * C; i += (int64_t)gridDim.x * blockDim.x) {
    const int32_t id = ids[i / C];
    if (id < 0 || id >= V) {
      *bad = 1;
      y[i] = T(0.f);
    } else {
      y[i] = table[(int64_t)id * C + i % C];
    }
  }
}

struct Dims {
  int64_t shape[6], sx[6], sz[6];
};

template <class T>
__global__ void binary_k(bool mul, const T* x, const T* z, T* y, int64_t n, int rank, Dims d) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, ox = 0, oz = 0;
    for (int k = rank - 1; k >= 0; --k) {
      const int64_t idx = rem % d.shape[k];
      rem /= d.shape[k];
      ox += idx * d.sx[k];
      oz += idx * d.sz[k];
    }
    st(y + i, mul ? ld(x + ox) * ld(z + oz) : ld(x + ox) + ld(z + oz));
  }
}

template <class T>
__global__ void scale_k(const T* x, T* y, int64_t n, float a) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) st(y + i, ld(x + i) * a);
}

__global__ void f32_to_f16_k(const float* x, __half* y, int64_t n) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = __float2half_rn(x[i]);
}
__global__ void f16_to_f32_k(const __half* x, float* y, int64_t n) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = __half2float(x[i]);
}

}  // namespace

template <class T>
void im2col(const T* x, T* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, const int64_t pad[4], int64_t Ho,
            int64_t Wo, cudaStream_t s) {
  launch_kernel(im2col_k<T>, blocks(C * kh * kw * Ho * Wo), kThreads, 0, s, x, col, C, H, W, kh, kw, stride, pad[0], pad[1], Ho, Wo);
}
template <class T>
void add_channel_bias(T* y, const T* b, int64_t N, int64_t C, int64_t S, cudaStream_t s) {
  launch_kernel(channel_bias_k<T>, blocks(N * C * S), kThreads, 0, s, y, b, C, S, N * C * S);
}
template <class T>
void add_row_bias(T* y, const T* b, int64_t rows, int64_t C, cudaStream_t s) {
  launch_kernel(row_bias_k<T>, blocks(rows * C), kThreads, 0, s, y, b, C, rows * C);
}
template <class T>
void group_norm(const T* x, const T* g, const T* b, T* y, int64_t N, int64_t C, int64_t S, int64_t G, float eps, cudaStream_t s) {
  launch_kernel(group_norm_k<T>, (unsigned)(N * G), 512, 0, s, x, g, b, y, C, S, G, eps);
}
template <class T>
void layer_norm(const T* x, const T* g, const T* b, T* y, int64_t rows, int64_t C, float eps, cudaStream_t s) {
  launch_kernel(layer_norm_k<T>, (unsigned)rows, 256, 0, s, x, g, b, y, C, eps);
}
template <class T>
void activation(Act a, const T* x, T* y, int64_t n, cudaStream_t s) {
  launch_kernel(act_k<T>, blocks(n), kThreads, 0, s, (int)a, x, y, n);
}
template <class T>
void geglu(const T* x, T* y, int64_t rows, int64_t F, cudaStream_t s) {
  launch_kernel(geglu_k<T>, blocks(rows * F), kThreads, 0, s, x, y, F, rows * F);
}
template <class T>
void softmax_rows(float* x, T* p, int64_t rows, int64_t cols, int64_t rows_per_head, bool causal, cudaStream_t s) {
  launch_kernel(softmax_k<T>, (unsigned)rows, 256, 0, s, x, p, cols, rows_per_head, causal);
}
// y[n, c, 2i+a, 2j+b] = x[n, (2a+b) C + c, i+a, j+b], x [N, 4C, H+1, W+1] (PhaseInterleave)
template <class T>
__global__ void phase_interleave_k(const T* x, T* y, int64_t C, int64_t H, int64_t W, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ox = i % (2 * W), oy = (i / (2 * W)) % (2 * H), c = (i / (4 * H * W)) % C, n = i / (4 * H * W * C);
    const int64_t a = oy & 1, b = ox & 1;
    y[i] = x[((n * 4 * C + (2 * a + b) * C + c) * (H + 1) + (oy >> 1) + a) * (W + 1) + (ox >> 1) + b];
  }
}
template <class T>
void phase_interleave(const T* x, T* y, int64_t N, int64_t C, int64_t H, int64_t W, cudaStream_t s) {
  launch_kernel(phase_interleave_k<T>, blocks(N * C * 4 * H * W), kThreads, 0, s, x, y, C, H, W, N * C * 4 * H * W);
}
template <class T>
void upsample_nearest(const T* x, T* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo, cudaStream_t s) {
  launch_kernel(upsample_k<T>, blocks(NC * Ho * Wo), kThreads, 0, s, x, y, H, W, Ho, Wo, NC * Ho * Wo);
}
template <class T>
void transpose_last2(const T* x, T* y, int64_t N, int64_t R, int64_t C, cudaStream_t s) {
  launch_kernel(transpose_k<T>, blocks(N * R * C), kThreads, 0, s, x, y, R, C, N * R * C);
}
template <class T>
void timestep_embedding(const float* t, T* y, int64_t N, int64_t dim, bool flip, float shift, cudaStream_t s) {
  launch_kernel(timestep_k<T>, blocks(N * dim / 2), kThreads, 0, s, t, y, N, dim, flip, shift);
}
template <class T>
void embedding(const int32_t* ids, const T* table, T* y, int64_t n, int64_t V, int64_t C, int* bad, cudaStream_t s) {
  launch_kernel(embedding_k<T>, blocks(n * C), kThreads, 0, s, ids, table, y, n, V, C, bad);
}
template <class T>
void broadcast_binary(bool mul, const T* x, const T* z, T* y, int64_t n, int rank, const int64_t* out_shape, const int64_t* sx,
                      const int64_t* sz, cudaStream_t s) {
  Dims d{};
  for (int k = 0; k < rank; ++k) d.shape[k] = out_shape[k], d.sx[k] = sx[k], d.sz[k] = sz[k];
  launch_kernel(binary_k<T>, blocks(n), kThreads, 0, s, mul, x, z, y, n, rank, d);
}
template <class T>
void scale(const T* x, T* y, int64_t n, float a, cudaStream_t s) {
  launch_kernel(scale_k<T>, blocks(n), kThreads, 0, s, x, y, n, a);
}
struct Combine {
  const float* src[kMaxCombine];
  float coef[kMaxCombine];
  int terms;
  float* also[kMaxCombineOuts];
  float also_scale[kMaxCombineOuts];
  int outs;
};
__global__ void lin_combine_k(float* dst, Combine c, int64_t n) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < c.terms; ++j) acc += c.coef[j] * c.src[j][i];
    dst[i] = acc;
    for (int k = 0; k < c.outs; ++k) c.also[k][i] = c.also_scale[k] * acc;
  }
}
void lin_combine(float* dst, int64_t n, const float* const* src, const float* coef, int terms, cudaStream_t s) {
  lin_combine(dst, n, src, coef, terms, nullptr, nullptr, 0, s);
}
void lin_combine(float* dst, int64_t n, const float* const* src, const float* coef, int terms, float* const* also, const float* also_scale,
                 int outs, cudaStream_t s) {
  Combine c{};
  for (int j = 0; j < terms; ++j) {
    c.src[j] = src[j];
    c.coef[j] = coef[j];
  }
  c.terms = terms;
  for (int k = 0; k < outs; ++k) {
    c.also[k] = also[k];
    c.also_scale[k] = also_scale[k];
  }
  c.outs = outs;
  launch_kernel(lin_combine_k, blocks(n), kThreads, 0, s, dst, c, n);
}
void f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t s) { launch_kernel(f32_to_f16_k, blocks(n), kThreads, 0, s, x, y, n); }
void f16_to_f32(const __half* x, float* y, int64_t n, cudaStream_t s) { launch_kernel(f16_to_f32_k, blocks(n), kThreads, 0, s, x, y, n); }

namespace {
std::atomic<int64_t> g_dependent_launches{0};
std::atomic<int> g_cc_major[16] = {};  // per device: compute capability major + 1 once read
}  // namespace

bool dependent_launch() {
  const char* e = std::getenv("SDRT_PDL");
  if (!e || e[0] != '1' || e[1]) return false;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 16) return cudaGetLastError(), false;
  int major = g_cc_major[dev].load(std::memory_order_relaxed) - 1;
  if (major < 0) {
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return cudaGetLastError(), false;
    g_cc_major[dev].store(major + 1, std::memory_order_relaxed);
  }
  return major >= 9;
}
void count_dependent_launch() { ++g_dependent_launches; }

#define SDRT_INSTANTIATE(T)                                                                                                          \
  template void im2col<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*, int64_t, int64_t,     \
                          cudaStream_t);                                                                                             \
  template void add_channel_bias<T>(T*, const T*, int64_t, int64_t, int64_t, cudaStream_t);                                          \
  template void add_row_bias<T>(T*, const T*, int64_t, int64_t, cudaStream_t);                                                       \
  template void group_norm<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, float, cudaStream_t);           \
  template void layer_norm<T>(const T*, const T*, const T*, T*, int64_t, int64_t, float, cudaStream_t);                             \
  template void activation<T>(Act, const T*, T*, int64_t, cudaStream_t);                                                             \
  template void geglu<T>(const T*, T*, int64_t, int64_t, cudaStream_t);                                                              \
  template void softmax_rows<T>(float*, T*, int64_t, int64_t, int64_t, bool, cudaStream_t);                                          \
  template void upsample_nearest<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                        \
  template void phase_interleave<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                                 \
  template void transpose_last2<T>(const T*, T*, int64_t, int64_t, int64_t, cudaStream_t);                                           \
  template void timestep_embedding<T>(const float*, T*, int64_t, int64_t, bool, float, cudaStream_t);                                \
  template void embedding<T>(const int32_t*, const T*, T*, int64_t, int64_t, int64_t, int*, cudaStream_t);                           \
  template void broadcast_binary<T>(bool, const T*, const T*, T*, int64_t, int, const int64_t*, const int64_t*, const int64_t*,      \
                                    cudaStream_t);                                                                                   \
  template void scale<T>(const T*, T*, int64_t, float, cudaStream_t);
SDRT_INSTANTIATE(float)
SDRT_INSTANTIATE(__half)

}  // namespace sdrt::cuda

int64_t sdrt::cuda_dependent_launches() { return sdrt::cuda::g_dependent_launches.load(); }
