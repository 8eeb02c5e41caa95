#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/nhwc_kernels.cuh"
#include "backends/cuda/launch.cuh"
#include "graph/backend.h"

namespace sdrt::cuda {
namespace {

constexpr int kThreads = 256;
inline unsigned blocks(int64_t n) { return (unsigned)std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20); }
inline bool aligned4(const void* p) { return ((uintptr_t)p & 3) == 0; }
inline bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

__global__ void nchw_to_nhwc_k(const float* x, __half* y, int64_t C, int64_t HW, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % C, p = (i / C) % HW, n = i / (C * HW);  // i indexes y[n][p][c]
    y[i] = __float2half_rn(x[(n * C + c) * HW + p]);
  }
}
__global__ void nhwc_to_nchw_k(const __half* x, float* y, int64_t C, int64_t HW, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = i % HW, c = (i / HW) % C, n = i / (C * HW);  // i indexes y[n][c][p]
    y[i] = __half2float(x[(n * HW + p) * C + c]);
  }
}

// Chan's merge of (count, mean, M2) statistics.
__device__ __forceinline__ void merge(float& na, float& ma, float& m2a, float nb, float mb, float m2b) {
  const float n = na + nb, d = mb - ma;
  ma += d * (nb / n);
  m2a += m2b + d * d * (na * nb / n);
  na = n;
}

// Partial statistics of one chunk of pixels of one image, per group. Each thread owns V consecutive
// channels (V = 2 only when a group's channel count is even, so both are in one group); per channel a
// shifted sum and sum of squares (shift = the chunk's first value) give a stable mean and M2.
template <int V>
__global__ void gn_stats_k(const __half* x, const __half* vec, int64_t vld, float* part, int C, int HW, int G, int chunk_px) {
  dep_entry();
  extern __shared__ float sm[];  // mean, M2 per V-channel vector
  const int n = blockIdx.y, chunk = blockIdx.x, nchunks = gridDim.x, P = C / V;
  const int p0 = chunk * chunk_px, p1 = min(HW, p0 + chunk_px);
  const float cnt = (float)(p1 - p0);
  for (int cp = threadIdx.x; cp < P; cp += blockDim.x) {  // one V-channel vector at a time (C > 2048: several per thread)
    const __half* xb = x + (int64_t)n * HW * C + cp * V;
    float shift[V], s[V], ss[V], add[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      add[v] = vec ? __half2float(vec[(int64_t)n * vld + cp * V + v]) : 0.f;  // GroupNorm(x + vec[n, c])
      shift[v] = __half2float(xb[(int64_t)p0 * C + v]) + add[v], s[v] = ss[v] = 0.f;
    }
    // kBatch pixels' loads issued before any is used: the pass is bound by memory latency, not bandwidth
    constexpr int kBatch = 8;
    auto load = [&](int p, float (&val)[V]) {
      if constexpr (V == 2) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(xb + (int64_t)p * C));
        val[0] = f.x, val[1] = f.y;
      } else {
        val[0] = __half2float(xb[(int64_t)p * C]);
      }
    };
    auto accumulate = [&](const float (&val)[V]) {
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const float d = val[v] + add[v] - shift[v];
        s[v] += d;
        ss[v] += d * d;
      }
    };
    int p = p0;
    for (; p + kBatch <= p1; p += kBatch) {
      float val[kBatch][V];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) load(p + k, val[k]);
#pragma unroll
      for (int k = 0; k < kBatch; ++k) accumulate(val[k]);
    }
    for (; p < p1; ++p) {
      float val[V];
      load(p, val);
      accumulate(val);
    }
    float na = cnt, ma = shift[0] + s[0] / cnt, m2a = fmaxf(ss[0] - s[0] * s[0] / cnt, 0.f);
    if constexpr (V == 2) merge(na, ma, m2a, cnt, shift[1] + s[1] / cnt, fmaxf(ss[1] - s[1] * s[1] / cnt, 0.f));
    sm[cp] = ma;
    sm[P + cp] = m2a;
  }
  __syncthreads();
  const int per_group = C / G / V;  // vectors per group
  for (int grp = threadIdx.x; grp < G; grp += blockDim.x) {
    float n2 = cnt * V, m2 = sm[grp * per_group], q2 = sm[P + grp * per_group];
    for (int k = 1; k < per_group; ++k) merge(n2, m2, q2, cnt * V, sm[grp * per_group + k], sm[P + grp * per_group + k]);
    float* o = part + (((int64_t)n * nchunks + chunk) * G + grp) * 2;
    o[0] = m2;
    o[1] = q2;
  }
}

// gn_stats_k in 16-byte loads (C % 8 == 0, C <= 2048): thread t of a block takes the 8 channels of vector
// t % CV (CV = C / 8) on pixel lane t / CV of `lanes` (256 / CV), so a block keeps 256 threads' loads in
// flight however narrow the rows (the 4-byte form's C / 2 threads left the pass bound by memory latency:
// 2.1-2.4 TB/s on SD's 64x64 up-path GroupNorms). Per channel a shifted sum and sum of squares over the
// lane's pixels (shift: its first value), merged over the lanes (Chan) and then over each group's channels
// in shared memory; the partial statistics as gn_stats_k writes them.
constexpr int kStats8Threads = 256;
std::atomic<int64_t> g_stats8_launches{0};
__global__ void gn_stats8_k(const __half* x, const __half* vec, int64_t vld, float* part, int C, int HW, int G, int chunk_px) {
  dep_entry();
  extern __shared__ float sm[];  // [lanes][C] means, [lanes][C] M2; then per channel mean, M2 (reusing lane 0's rows)
  const int n = blockIdx.y, chunk = blockIdx.x, nchunks = gridDim.x, CV = C / 8, lanes = kStats8Threads / CV;
  const int p0 = chunk * chunk_px, p1 = min(HW, p0 + chunk_px);
  const int tid = threadIdx.x, cv = tid % CV, lane = tid / CV;
  const int cnt_lane0 = (p1 - p0) / lanes, extra = (p1 - p0) % lanes;  // lane l has cnt_lane0 + (l < extra) pixels
  if (lane < lanes) {
    const __half* xb = x + (int64_t)n * HW * C + cv * 8;
    float shift[8], s[8], ss[8], add[8];
    const int cnt = cnt_lane0 + (lane < extra);
    auto load = [&](int p, float (&val)[8]) {
      const uint4 u = *reinterpret_cast<const uint4*>(xb + (int64_t)p * C);
      const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        val[2 * i] = f.x, val[2 * i + 1] = f.y;
      }
    };
#pragma unroll
    for (int v = 0; v < 8; ++v) add[v] = vec ? __half2float(vec[(int64_t)n * vld + cv * 8 + v]) : 0.f, s[v] = ss[v] = 0.f, shift[v] = 0.f;
    if (cnt > 0) {
      float first[8];
      load(p0 + lane, first);
#pragma unroll
      for (int v = 0; v < 8; ++v) shift[v] = first[v] + add[v];
    }
    auto accumulate = [&](const float (&val)[8]) {
#pragma unroll
      for (int v = 0; v < 8; ++v) {
        const float d = val[v] + add[v] - shift[v];
        s[v] += d;
        ss[v] += d * d;
      }
    };
    constexpr int kBatch = 4;
    int p = p0 + lane;
    for (; p + (kBatch - 1) * lanes < p1; p += kBatch * lanes) {
      float val[kBatch][8];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) load(p + k * lanes, val[k]);
#pragma unroll
      for (int k = 0; k < kBatch; ++k) accumulate(val[k]);
    }
    for (; p < p1; p += lanes) {
      float val[8];
      load(p, val);
      accumulate(val);
    }
    const float fc = (float)cnt;
#pragma unroll
    for (int v = 0; v < 8; ++v) {
      sm[lane * C + cv * 8 + v] = cnt > 0 ? shift[v] + s[v] / fc : 0.f;
      sm[(lanes + lane) * C + cv * 8 + v] = cnt > 0 ? fmaxf(ss[v] - s[v] * s[v] / fc, 0.f) : 0.f;
    }
  }
  __syncthreads();
  for (int c = tid; c < C; c += kStats8Threads) {  // each channel over the lanes
    // lane 0 has at least one pixel (a chunk is never empty); a lane past the chunk's pixels adds nothing
    float na = (float)(cnt_lane0 + (0 < extra)), ma = sm[c], m2a = sm[lanes * C + c];
    for (int l = 1; l < lanes; ++l) {
      const float nb = (float)(cnt_lane0 + (l < extra));
      if (nb > 0.f) merge(na, ma, m2a, nb, sm[l * C + c], sm[(lanes + l) * C + c]);
    }
    sm[c] = ma, sm[lanes * C + c] = m2a;  // only this thread reads or writes channel c here
  }
  __syncthreads();
  const int cpg = C / G;
  const float cnt = (float)(p1 - p0);
  for (int grp = tid; grp < G; grp += kStats8Threads) {
    float n2 = cnt, m2 = sm[grp * cpg], q2 = sm[lanes * C + grp * cpg];
    for (int k = 1; k < cpg; ++k) merge(n2, m2, q2, cnt, sm[grp * cpg + k], sm[lanes * C + grp * cpg + k]);
    float* o = part + (((int64_t)n * nchunks + chunk) * G + grp) * 2;
    o[0] = m2;
    o[1] = q2;
  }
}

// One block per (group, image): merges the chunks' statistics once (each thread a strided subset, then a
// tree in shared memory) and writes each channel's scale and shift (y = x * scale + shift), so the apply
// pass is a plain elementwise kernel.
constexpr int kFinalizeThreads = 128;
__global__ void gn_finalize_k(const __half* gamma, const __half* beta, const __half* vec, int64_t vld, const float* part, float* scale_shift, int C,
                              int HW, int G, int nchunks, int chunk_px, float eps) {
  dep_entry();
  __shared__ float sn[kFinalizeThreads], sm_[kFinalizeThreads], sq[kFinalizeThreads];
  const int grp = blockIdx.x, n = blockIdx.y, cpg = C / G, tid = threadIdx.x;
  float na = 0.f, ma = 0.f, m2a = 0.f;
  for (int k = tid; k < nchunks; k += kFinalizeThreads) {
    const float cnt = (float)(min(HW, (k + 1) * chunk_px) - k * chunk_px) * cpg;
    const float* pp = part + (((int64_t)n * nchunks + k) * G + grp) * 2;
    if (na == 0.f) na = cnt, ma = pp[0], m2a = pp[1];
    else merge(na, ma, m2a, cnt, pp[0], pp[1]);
  }
  sn[tid] = na, sm_[tid] = ma, sq[tid] = m2a;
  __syncthreads();
  for (int half = kFinalizeThreads / 2; half > 0; half >>= 1) {
    if (tid < half && sn[tid + half] > 0.f) {
      if (sn[tid] == 0.f) sn[tid] = sn[tid + half], sm_[tid] = sm_[tid + half], sq[tid] = sq[tid + half];
      else merge(sn[tid], sm_[tid], sq[tid], sn[tid + half], sm_[tid + half], sq[tid + half]);
    }
    __syncthreads();
  }
  const float mean = sm_[0], rstd = rsqrtf(sq[0] / sn[0] + eps);
  for (int c = grp * cpg + tid; c < (grp + 1) * cpg; c += kFinalizeThreads) {
    const float sc = rstd * __half2float(gamma[c]);
    scale_shift[((int64_t)n * C + c) * 2] = sc;
    const float add = vec ? __half2float(vec[(int64_t)n * vld + c]) : 0.f;  // (x + add) * sc + shift
    scale_shift[((int64_t)n * C + c) * 2 + 1] = __half2float(beta[c]) + (add - mean) * sc;
  }
}

// y = x * scale[n, c] + shift[n, c] (then SiLU), V halves per thread (8: one 16-byte load).
template <int V>
__global__ void gn_apply_k(const __half* x, const float2* ss, __half* y, int64_t C, int64_t HWC, int64_t total_v, bool silu) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total_v; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t e = i * V, n = e / HWC, c0 = e % C;
    __half h[V];
    if constexpr (V == 8) *reinterpret_cast<uint4*>(h) = reinterpret_cast<const uint4*>(x)[i];
    else if constexpr (V == 2) *reinterpret_cast<__half2*>(h) = reinterpret_cast<const __half2*>(x)[i];
    else h[0] = x[i];
    const float2* sp = ss + n * C + c0;
    float2 kv[V];
    if constexpr (V == 8) {  // C % 8 == 0: 64-byte aligned, four 16-byte loads
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 f = reinterpret_cast<const float4*>(sp)[q];
        kv[2 * q] = make_float2(f.x, f.y), kv[2 * q + 1] = make_float2(f.z, f.w);
      }
    } else {
#pragma unroll
      for (int v = 0; v < V; ++v) kv[v] = sp[v];
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const float2 k = kv[v];
      float val = __half2float(h[v]) * k.x + k.y;
      if (silu) val = __fdividef(val, 1.f + __expf(-val));  // -0 where exp overflows
      h[v] = __float2half_rn(val);
    }
    if constexpr (V == 8) reinterpret_cast<uint4*>(y)[i] = *reinterpret_cast<uint4*>(h);
    else if constexpr (V == 2) reinterpret_cast<__half2*>(y)[i] = *reinterpret_cast<__half2*>(h);
    else y[i] = h[0];
  }
}

// Pixels per chunk of the statistics pass: enough blocks to fill the GPU (about 2048 over the batch),
// at least 16 pixels each.
int gn_chunks(int64_t N, int64_t HW, int64_t* chunk_px) {
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((HW + 15) / 16, (2048 + N - 1) / N));
  *chunk_px = (HW + chunks - 1) / chunks;
  return (int)((HW + *chunk_px - 1) / *chunk_px);
}

// Copies of VEC halves (uint4 when C % 8 == 0).
template <class U>
__global__ void upsample_nhwc_k(const U* x, U* y, int64_t H, int64_t W, int64_t Cv, int64_t Ho, int64_t Wo, int64_t total) {
  dep_entry();
  const float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % Cv, ox = (i / Cv) % Wo, oy = (i / (Cv * Wo)) % Ho, n = i / (Cv * Wo * Ho);
    const int64_t iy = min((int64_t)(oy * sh), H - 1), ix = min((int64_t)(ox * sw), W - 1);
    y[i] = x[((n * H + iy) * W + ix) * Cv + c];
  }
}

template <class U>
__global__ void pad_nhwc_k(const U* x, U* y, int64_t H, int64_t W, int64_t Cv, int64_t pt, int64_t pl, int64_t Hp, int64_t Wp, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % Cv, px = (i / Cv) % Wp, py = (i / (Cv * Wp)) % Hp, n = i / (Cv * Wp * Hp);
    const int64_t iy = py - pt, ix = px - pl;
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) y[i] = x[((n * H + iy) * W + ix) * Cv + c];
    else y[i] = U{};
  }
}

}  // namespace

void nchw_f32_to_nhwc_f16(const float* x, __half* y, int64_t N, int64_t C, int64_t HW, cudaStream_t s) {
  launch_kernel(nchw_to_nhwc_k, blocks(N * C * HW), kThreads, 0, s, x, y, C, HW, N * C * HW);
}
void nhwc_f16_to_nchw_f32(const __half* x, float* y, int64_t N, int64_t C, int64_t HW, cudaStream_t s) {
  launch_kernel(nhwc_to_nchw_k, blocks(N * C * HW), kThreads, 0, s, x, y, C, HW, N * C * HW);
}

int64_t group_norm_nhwc_scratch(int64_t N, int64_t C, int64_t HW, int64_t G) {
  int64_t px;
  return std::max(N * gn_chunks(N, HW, &px) * G * 2 + 4 + N * C * 2, group_norm_onepass_scratch(G));
}

const char* group_norm_form_name(int form) {
  static const char* const names[] = {"3pass", "onepass", "cluster", "onepass8", "block"};
  return form >= 0 && form < kGroupNormForms ? names[form] : "?";
}
int group_norm_form_by_name(const char* name) {
  for (int f = 0; f < kGroupNormForms; ++f)
    if (std::strcmp(name, group_norm_form_name(f)) == 0) return f;
  return -1;
}

bool group_norm_block_on() {
  const char* e = std::getenv("SDRT_GN_BLOCK");
  return !std::getenv("SDRT_GN_ONEPASS") && !(e && std::strcmp(e, "0") == 0);
}

namespace {
// SDRT_GN_STATS8=0: the three-pass form's statistics in 4-byte loads (gn_stats_k) as before gn_stats8_k (A/B)
bool gn_stats8_off() {
  const char* e = std::getenv("SDRT_GN_STATS8");
  return e && std::strcmp(e, "0") == 0;
}
bool gn_onepass8_off() {
  const char* e = std::getenv("SDRT_GN_ONEPASS8");
  return e && std::strcmp(e, "0") == 0;
}
}  // namespace

bool group_norm_nhwc(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                     int64_t HW, int64_t G, float eps, bool silu, float* scratch, cudaStream_t s, int share, int form) {
  if (form >= kGroupNormForms) return false;
  if (G <= 0 || C % G || C > 8192 || N > 65535 || HW <= 0 || HW > (1 << 30)) return false;
  if (vld <= 0) vld = C;
  if (vld < C) return false;
  const bool v2 = (C / G) % 2 == 0;
  const int vecs = (int)(v2 ? C / 2 : C), threads = std::min(vecs, 1024);
  if (vecs * 2 * sizeof(float) > 48 * 1024) return false;
  if (form == kGnCluster || (form < 0 && group_norm_cluster_env() == 1)) {
    if (group_norm_cluster(x, gamma, beta, vec, vld, y, N, C, HW, G, eps, silu, s)) return true;
    if (form == kGnCluster) return false;
  }
  const bool block = form < 0 && group_norm_block_on();
  if (form == kGnBlock || block) {
    if (group_norm_block(x, gamma, beta, vec, vld, y, N, C, HW, G, eps, silu, s, form == kGnBlock ? 0 : 1)) return true;
    if (form == kGnBlock) return false;
  }
  if (form == kGnOnePass || form < 0) {
    if (group_norm_onepass(x, gamma, beta, vec, vld, y, N, C, HW, G, eps, silu, scratch, s, share)) return true;
    if (form == kGnOnePass) return false;
  }
  if (block && group_norm_block(x, gamma, beta, vec, vld, y, N, C, HW, G, eps, silu, s, 2)) return true;
  if (form == kGnOnePass8 || (form < 0 && !std::getenv("SDRT_GN_ONEPASS") && !gn_onepass8_off())) {
    if (group_norm_onepass8(x, gamma, beta, vec, vld, y, N, C, HW, G, eps, silu, scratch, s, share, form < 0 ? 3 : 8)) return true;
    if (form == kGnOnePass8) return false;
  }
  int64_t px;
  const int chunks = gn_chunks(N, HW, &px);
  const dim3 grid((unsigned)chunks, (unsigned)N);
  if (C % 8 == 0 && C / 8 <= kStats8Threads && aligned16(x) && !gn_stats8_off()) {
    const int lanes = kStats8Threads / (int)(C / 8);
    launch_kernel(gn_stats8_k, grid, kStats8Threads, 2 * lanes * C * sizeof(float), s, x, vec, vld, scratch, (int)C, (int)HW, (int)G, (int)px);
    ++g_stats8_launches;
  } else if (v2) launch_kernel(gn_stats_k<2>, grid, threads, 2 * vecs * sizeof(float), s, x, vec, vld, scratch, (int)C, (int)HW, (int)G, (int)px);
  else launch_kernel(gn_stats_k<1>, grid, threads, 2 * vecs * sizeof(float), s, x, vec, vld, scratch, (int)C, (int)HW, (int)G, (int)px);
  float* ss = scratch + ((N * chunks * G * 2 + 3) & ~int64_t(3));  // 16-byte aligned: the apply pass reads it as float4
  launch_kernel(gn_finalize_k, dim3((unsigned)G, (unsigned)N), kFinalizeThreads, 0, s, gamma, beta, vec, vld, scratch, ss, (int)C, (int)HW, (int)G, chunks,
                (int)px, eps);
  const int64_t total = N * HW * C;
  const float2* ss2 = reinterpret_cast<const float2*>(ss);
  if (C % 8 == 0 && aligned16(x) && aligned16(y) && aligned16(ss))
    launch_kernel(gn_apply_k<8>, blocks(total / 8), kThreads, 0, s, x, ss2, y, C, HW * C, total / 8, silu);
  else if (C % 2 == 0) launch_kernel(gn_apply_k<2>, blocks(total / 2), kThreads, 0, s, x, ss2, y, C, HW * C, total / 2, silu);
  else launch_kernel(gn_apply_k<1>, blocks(total), kThreads, 0, s, x, ss2, y, C, HW * C, total, silu);
  return true;
}

// PhaseInterleave on NHWC: y[n, 2i+a, 2j+b, c] = x[n, i+a, j+b, (2a+b) C + c] in units U of Cv per pixel phase
template <class U>
__global__ void phase_interleave_nhwc_k(const U* x, U* y, int64_t H, int64_t W, int64_t Cv, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % Cv, ox = (i / Cv) % (2 * W), oy = (i / (Cv * 2 * W)) % (2 * H), n = i / (Cv * 4 * W * H);
    const int64_t a = oy & 1, b = ox & 1;
    y[i] = x[((n * (H + 1) + (oy >> 1) + a) * (W + 1) + (ox >> 1) + b) * 4 * Cv + (2 * a + b) * Cv + c];
  }
}
void phase_interleave_nhwc(const __half* x, __half* y, int64_t N, int64_t C, int64_t H, int64_t W, cudaStream_t s) {
  if (C % 8 == 0 && aligned16(x) && aligned16(y)) {
    const int64_t total = N * 4 * H * W * (C / 8);
    launch_kernel(phase_interleave_nhwc_k<uint4>, blocks(total), kThreads, 0, s, reinterpret_cast<const uint4*>(x), reinterpret_cast<uint4*>(y), H, W, C / 8,
                  total);
  } else {
    const int64_t total = N * 4 * H * W * C;
    launch_kernel(phase_interleave_nhwc_k<__half>, blocks(total), kThreads, 0, s, x, y, H, W, C, total);
  }
}

void upsample_nearest_nhwc(const __half* x, __half* y, int64_t N, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, cudaStream_t s) {
  if (C % 8 == 0) {
    const int64_t total = N * Ho * Wo * (C / 8);
    launch_kernel(upsample_nhwc_k<uint4>, blocks(total), kThreads, 0, s, reinterpret_cast<const uint4*>(x), reinterpret_cast<uint4*>(y), H, W, C / 8, Ho,
                  Wo, total);
  } else {
    const int64_t total = N * Ho * Wo * C;
    launch_kernel(upsample_nhwc_k<__half>, blocks(total), kThreads, 0, s, x, y, H, W, C, Ho, Wo, total);
  }
}

void pad_nhwc(const __half* x, __half* y, int64_t N, int64_t H, int64_t W, int64_t C, int64_t pt, int64_t pl, int64_t Hp, int64_t Wp,
              cudaStream_t s) {
  if (C % 8 == 0) {
    const int64_t total = N * Hp * Wp * (C / 8);
    launch_kernel(pad_nhwc_k<uint4>, blocks(total), kThreads, 0, s, reinterpret_cast<const uint4*>(x), reinterpret_cast<uint4*>(y), H, W, C / 8, pt, pl,
                  Hp, Wp, total);
  } else {
    const int64_t total = N * Hp * Wp * C;
    launch_kernel(pad_nhwc_k<__half>, blocks(total), kThreads, 0, s, x, y, H, W, C, pt, pl, Hp, Wp, total);
  }
}

}  // namespace sdrt::cuda

namespace sdrt::cuda {
namespace {

__global__ void bias_res_k(__half2* y, const __half2* b, const __half2* r, int64_t C2, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    float2 v = __half22float2(y[i]);
    const float2 bb = __half22float2(b[i % C2]);
    v.x += bb.x, v.y += bb.y;
    if (r) {
      const float2 rr = __half22float2(r[i]);
      v.x += rr.x, v.y += rr.y;
    }
    y[i] = __floats2half2_rn(v.x, v.y);
  }
}
__global__ void bias_res1_k(__half* y, const __half* b, const __half* r, int64_t C, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = __float2half_rn(__half2float(y[i]) + __half2float(b[i % C]) + (r ? __half2float(r[i]) : 0.f));
}
__global__ void binary2_k(bool mul, const __half2* x, const __half2* z, __half2* y, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const float2 a = __half22float2(x[i]), c = __half22float2(z[i]);
    y[i] = mul ? __floats2half2_rn(a.x * c.x, a.y * c.y) : __floats2half2_rn(a.x + c.x, a.y + c.y);
  }
}
__global__ void binary1_k(bool mul, const __half* x, const __half* z, __half* y, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const float a = __half2float(x[i]), c = __half2float(z[i]);
    y[i] = __float2half_rn(mul ? a * c : a + c);
  }
}
__global__ void pixel_bcast_k(const __half* x, const __half* t, __half* y, int64_t HW, int64_t C, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = __float2half_rn(__half2float(x[i]) + __half2float(t[(i / (HW * C)) * C + i % C]));
}


// One warp per row, the row held in registers as 16-byte vectors (C % 8 == 0, C <= 8 * 32 * MAXV):
// one read, mean then variance from the registers, one write.
template <int MAXV>
__global__ void layer_norm_warp_k(const uint4* x, const uint4* g, const uint4* b, uint4* y, int64_t rows, int cv, float eps) {
  dep_entry();
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const uint4* xr = x + row * cv;
  float v[MAXV][8];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < MAXV; ++k) {
    const int j = lane + 32 * k;
    if (j < cv) {
      uint4 u = xr[j];
      const __half* h = reinterpret_cast<const __half*>(&u);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[k][e] = __half2float(h[e]), sum += v[k][e];
    }
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
  const float n = (float)cv * 8.f, mean = sum / n;
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < MAXV; ++k)
    if (lane + 32 * k < cv)
#pragma unroll
      for (int e = 0; e < 8; ++e) sq += (v[k][e] - mean) * (v[k][e] - mean);
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffff, sq, o);
  const float rstd = rsqrtf(sq / n + eps);
#pragma unroll
  for (int k = 0; k < MAXV; ++k) {
    const int j = lane + 32 * k;
    if (j < cv) {
      uint4 gu = g[j], bu = b[j], out;
      const __half *gh = reinterpret_cast<const __half*>(&gu), *bh = reinterpret_cast<const __half*>(&bu);
      __half* oh = reinterpret_cast<__half*>(&out);
#pragma unroll
      for (int e = 0; e < 8; ++e) oh[e] = __float2half_rn((v[k][e] - mean) * rstd * __half2float(gh[e]) + __half2float(bh[e]));
      y[row * cv + j] = out;
    }
  }
}

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

// y[r, c] = x[r, c] * gelu(x[r, F + c]), 8 halves per thread.
__global__ void geglu8_k(const uint4* x, uint4* y, int64_t fv, int64_t total) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / fv, c = i % fv;
    uint4 a = x[r * 2 * fv + c], gt = x[r * 2 * fv + fv + c], out;
    const __half *ah = reinterpret_cast<const __half*>(&a), *gh = reinterpret_cast<const __half*>(&gt);
    __half* oh = reinterpret_cast<__half*>(&out);
#pragma unroll
    for (int e = 0; e < 8; ++e) oh[e] = __float2half_rn(__half2float(ah[e]) * gelu_erf(__half2float(gh[e])));
    y[i] = out;
  }
}

// uniform values in [-scale, scale) from a hash of the index (grid-stride)
__global__ void fill_uniform_k(__half* p, int64_t n, float scale, uint32_t seed) {
  dep_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 16, h *= 0x85EBCA6Bu, h ^= h >> 13, h *= 0xC2B2AE35u, h ^= h >> 16;
    p[i] = __float2half(((float)(h & 0xFFFFFF) / 16777216.f * 2.f - 1.f) * scale);
  }
}

}  // namespace

void fill_uniform(__half* p, int64_t n, float scale, uint32_t seed, cudaStream_t s) {
  if (n > 0) launch_kernel(fill_uniform_k, blocks(n), kThreads, 0, s, p, n, scale, seed);
}

constexpr int kCatMax = 8;
struct Cat {
  const void* src[kCatMax];
  int64_t off[kCatMax + 1];  // each source's first unit within an output row; off[k] the row's width
  int k;
};

// Row r of the output is source i's row r at columns [off[i], off[i + 1]). With kUp2, source 0 is phase planes
// [N, H+1, W+1, 4 w0] (NHWC, w0 = its width in units) and output row r = (n, oy, ox) of [N, 2H, 2W] reads
// its phase (a, b) = (oy & 1, ox & 1) at plane pixel (oy / 2 + a, ox / 2 + b): PhaseInterleave as it copies.
template <class U, bool kUp2>
__global__ void concat_rows_k(U* y, Cat c, int64_t total, int64_t H, int64_t W) {
  dep_entry();
  const int64_t Wd = c.off[c.k];
  for (int64_t u = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = u / Wd, col = u - r * Wd;
    int i = 0;
    while (i + 1 < c.k && col >= c.off[i + 1]) ++i;
    const int64_t w = c.off[i + 1] - c.off[i];
    if (kUp2 && i == 0) {
      const int64_t ox = r % (2 * W), oy = (r / (2 * W)) % (2 * H), n = r / (4 * H * W), a = oy & 1, b = ox & 1;
      y[u] = static_cast<const U*>(c.src[0])[((n * (H + 1) + (oy >> 1) + a) * (W + 1) + (ox >> 1) + b) * 4 * w + (2 * a + b) * w + col];
    } else {
      y[u] = static_cast<const U*>(c.src[i])[r * w + col - c.off[i]];
    }
  }
}

template <bool kUp2>
bool concat_rows_impl(void* y, const void* const* xs, const int64_t* row_bytes, int k, int64_t outer, int64_t H, int64_t W, cudaStream_t s) {
  if (k < 1 || k > kCatMax) return false;
  uint64_t bits = (uintptr_t)y;  // the unit: the largest power of two (to 16) dividing every size and address
  for (int i = 0; i < k; ++i) bits |= (uint64_t)row_bytes[i] | (uint64_t)(uintptr_t)xs[i];
  const int unit = bits % 16 == 0 ? 16 : bits % 4 == 0 ? 4 : bits % 2 == 0 ? 2 : 1;
  Cat c{};
  c.k = k;
  for (int i = 0; i < k; ++i) c.src[i] = xs[i], c.off[i + 1] = c.off[i] + row_bytes[i] / unit;
  const int64_t total = outer * c.off[k];
  if (total == 0) return true;
  switch (unit) {
    case 16: launch_kernel(concat_rows_k<uint4, kUp2>, blocks(total), kThreads, 0, s, static_cast<uint4*>(y), c, total, H, W); break;
    case 4: launch_kernel(concat_rows_k<uint32_t, kUp2>, blocks(total), kThreads, 0, s, static_cast<uint32_t*>(y), c, total, H, W); break;
    case 2: launch_kernel(concat_rows_k<uint16_t, kUp2>, blocks(total), kThreads, 0, s, static_cast<uint16_t*>(y), c, total, H, W); break;
    default: launch_kernel(concat_rows_k<uint8_t, kUp2>, blocks(total), kThreads, 0, s, static_cast<uint8_t*>(y), c, total, H, W);
  }
  return true;
}

bool concat_rows(void* y, const void* const* xs, const int64_t* row_bytes, int k, int64_t outer, cudaStream_t s) {
  return concat_rows_impl<false>(y, xs, row_bytes, k, outer, 0, 0, s);
}

bool concat_rows_up2(void* y, const void* const* xs, const int64_t* row_bytes, int k, int64_t N, int64_t H, int64_t W, cudaStream_t s) {
  return concat_rows_impl<true>(y, xs, row_bytes, k, N * 4 * H * W, H, W, s);
}

void bias_residual_rows(__half* y, const __half* b, const __half* res, int64_t rows, int64_t C, cudaStream_t s) {
  if (C % 2 == 0 && aligned4(y) && aligned4(b) && (!res || aligned4(res))) {
    const int64_t total = rows * C / 2;
    launch_kernel(bias_res_k, blocks(total), kThreads, 0, s, reinterpret_cast<__half2*>(y), reinterpret_cast<const __half2*>(b),
                  reinterpret_cast<const __half2*>(res), C / 2, total);
  } else {
    launch_kernel(bias_res1_k, blocks(rows * C), kThreads, 0, s, y, b, res, C, rows * C);
  }
}

void binary_same(bool mul, const __half* x, const __half* z, __half* y, int64_t n, cudaStream_t s) {
  if (n % 2 == 0 && aligned4(x) && aligned4(z) && aligned4(y))
    launch_kernel(binary2_k, blocks(n / 2), kThreads, 0, s, mul, reinterpret_cast<const __half2*>(x), reinterpret_cast<const __half2*>(z),
                  reinterpret_cast<__half2*>(y), n / 2);
  else
    launch_kernel(binary1_k, blocks(n), kThreads, 0, s, mul, x, z, y, n);
}

void add_pixel_broadcast(const __half* x, const __half* t, __half* y, int64_t N, int64_t HW, int64_t C, cudaStream_t s) {
  launch_kernel(pixel_bcast_k, blocks(N * HW * C), kThreads, 0, s, x, t, y, HW, C, N * HW * C);
}

bool layer_norm_fast(const __half* x, const __half* g, const __half* b, __half* y, int64_t rows, int64_t C, float eps, cudaStream_t s) {
  if (C % 8 || C > 8 * 32 * 8 || !aligned16(x) || !aligned16(g) || !aligned16(b) || !aligned16(y)) return false;
  const int cv = (int)(C / 8), per_block = kThreads / 32;
  const unsigned grid = (unsigned)((rows + per_block - 1) / per_block);
  if (rows > (int64_t)per_block * 0x7fffffff) return false;
  auto X = reinterpret_cast<const uint4*>(x), G = reinterpret_cast<const uint4*>(g), B = reinterpret_cast<const uint4*>(b);
  auto Y = reinterpret_cast<uint4*>(y);
  if (cv <= 32) launch_kernel(layer_norm_warp_k<1>, grid, kThreads, 0, s, X, G, B, Y, rows, cv, eps);
  else if (cv <= 64) launch_kernel(layer_norm_warp_k<2>, grid, kThreads, 0, s, X, G, B, Y, rows, cv, eps);
  else if (cv <= 128) launch_kernel(layer_norm_warp_k<4>, grid, kThreads, 0, s, X, G, B, Y, rows, cv, eps);
  else launch_kernel(layer_norm_warp_k<8>, grid, kThreads, 0, s, X, G, B, Y, rows, cv, eps);
  return true;
}

bool geglu_fast(const __half* x, __half* y, int64_t rows, int64_t F, cudaStream_t s) {
  if (F % 8 || !aligned16(x) || !aligned16(y)) return false;
  const int64_t total = rows * F / 8;
  launch_kernel(geglu8_k, blocks(total), kThreads, 0, s, reinterpret_cast<const uint4*>(x), reinterpret_cast<uint4*>(y), F / 8, total);
  return true;
}

}  // namespace sdrt::cuda

namespace sdrt::cuda {
namespace {

// One warp per row of col (an output pixel and a filter tap), its lanes over the row's 16-byte vectors of 8
// channels: the row's index arithmetic once per warp (32-bit where the rows fit: I), then plain 512-byte
// runs of loads and stores. (A thread per vector with 64-bit divisions took ~5 us for each of SD's 8x8-level
// convolutions at batch 2; the H100's batch-2 step is ~0.02 ms shorter with this one, twenty-second session.)
template <typename I>
__global__ void im2col_nhwc_k(const uint4* __restrict__ x, uint4* __restrict__ col, I H, I W, I Cv, I kh, I kw, I stride, I ph, I pw, I Ho, I Wo,
                              I rows) {
  dep_entry();
  const int lane = threadIdx.x & 31;
  const I warps = (I)(blockDim.x >> 5);
  for (I r = (I)blockIdx.x * warps + (I)(threadIdx.x >> 5); r < rows; r += (I)gridDim.x * warps) {
    I q = r;
    const I kx = q % kw;
    q /= kw;
    const I ky = q % kh;
    q /= kh;  // output pixel (n, oy, ox)
    const I ox = q % Wo;
    q /= Wo;
    const I oy = q % Ho, n = q / Ho;
    const I iy = oy * stride - ph + ky, ix = ox * stride - pw + kx;
    uint4* dst = col + (int64_t)r * Cv;
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
      const uint4* src = x + (((int64_t)n * H + iy) * W + ix) * Cv;
#pragma unroll 4
      for (I c = lane; c < Cv; c += 32) dst[c] = src[c];
    } else {
      for (I c = lane; c < Cv; c += 32) dst[c] = make_uint4(0, 0, 0, 0);
    }
  }
}

}  // namespace

void im2col_nhwc(const __half* x, __half* col, int64_t N, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw, int64_t stride,
                 int64_t pad_h, int64_t pad_w, int64_t Ho, int64_t Wo, cudaStream_t s) {
  const int64_t rows = N * Ho * Wo * kh * kw;
  const unsigned grid = (unsigned)std::min<int64_t>((rows + kThreads / 32 - 1) / (kThreads / 32), 1 << 20);
  const auto* xv = reinterpret_cast<const uint4*>(x);
  auto* cv = reinterpret_cast<uint4*>(col);
  if (rows <= INT32_MAX - (int64_t)grid * (kThreads / 32))  // (the grid-stride loop's last step stays in range too)
    launch_kernel(im2col_nhwc_k<int32_t>, grid, kThreads, 0, s, xv, cv, (int32_t)H, (int32_t)W, (int32_t)(C / 8), (int32_t)kh, (int32_t)kw,
                  (int32_t)stride, (int32_t)pad_h, (int32_t)pad_w, (int32_t)Ho, (int32_t)Wo, (int32_t)rows);
  else
    launch_kernel(im2col_nhwc_k<int64_t>, grid, kThreads, 0, s, xv, cv, H, W, C / 8, kh, kw, stride, pad_h, pad_w, Ho, Wo, rows);
}

}  // namespace sdrt::cuda

int64_t sdrt::cuda_group_norm_stats8_launches() { return sdrt::cuda::g_stats8_launches.load(); }
