// GroupNorm over NHWC activations in one cooperative kernel (statistics, a grid-wide barrier, then the
// normalisation), instead of the three launches of the statistics / finalise / apply form. Each block
// owns a run of pixels of one image, all channels, and keeps them in shared memory between the two
// phases, so the activation is read from memory once; it applies where the whole tensor fits on chip
// (SD at batch 1-2, and its smaller levels at batch 16). There GroupNorm is bound by launches and
// latency, not bandwidth: one launch and one read instead of three launches and two reads.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "backends/cuda/nhwc_kernels.cuh"
#include "backends/cuda/launch.cuh"
#include "graph/backend.h"

namespace sdrt::cuda {
namespace {

namespace cg = cooperative_groups;

std::atomic<int64_t> g_launches{0}, g_launches8{0};

constexpr int kMaxBlocks = 2048;  // bound on the grid, so on the scratch of the per-block statistics

struct OnePass {
  const __half2* x;
  const __half *gamma, *beta, *vec;  // vec: row n at vec + n * vld (the time embedding's channels, optional)
  int64_t vld;
  __half2* y;
  float2* part;  // [N, nchunks, G]: each block's sums of (x - shift) and (x - shift)^2 per group
  // P = C / 2 channel pairs, Q = P / k: thread t owns pairs t % Q + j * Q (j < k) of pixels t / Q + i * R
  int C, P, Q, R, k, HW, G, nchunks, chunk_px;
  float eps;
  bool silu;
};

// Statistics as sums of d = x - shift and d^2 in float, with one shift per (image, group) that every block
// reads (the group's first value): the mean and variance are then sums in a fixed order (deterministic, no
// divisions on the way), and the shift keeps the variance's cancellation small.
// Shared memory: [cache: np * P half2][pair sums: 2 * R * P][block sums: 2 * blockDim][group mean, rstd: 2G]
__global__ void __launch_bounds__(1024, 1) gn_onepass_k(OnePass p) {
  dep_entry();
  extern __shared__ __align__(16) unsigned char smem[];
  const int T = blockDim.x, t = threadIdx.x, P = p.P, Q = p.Q, R = p.R, G = p.G;
  const int lane = t % Q, row = t / Q;
  const int n = blockIdx.x / p.nchunks, chunk = blockIdx.x % p.nchunks;
  const int p0 = chunk * p.chunk_px, np = min(p.HW, p0 + p.chunk_px) - p0;
  __half2* cache = reinterpret_cast<__half2*>(smem);
  float* pair_s = reinterpret_cast<float*>(smem) + np * P;
  float* pair_q = pair_s + R * P;
  float* red = pair_q + R * P;
  float* stat = red + 2 * T;
  const __half2* xb = p.x + ((int64_t)n * p.HW + p0) * P;
  __half2* yb = p.y + ((int64_t)n * p.HW + p0) * P;
  const __half* ximg = reinterpret_cast<const __half*>(p.x) + (int64_t)n * p.HW * p.C;
  const int cpg = p.C / G, pairs_per_group = cpg / 2;
  const int my_px = row < np ? (np - row + R - 1) / R : 0;  // pixels row, row + R, ... below np

  // phase 1: per channel pair, sums over the thread's pixels
  for (int j = 0; j < p.k; ++j) {
    const int cp = lane + j * Q, g = 2 * cp / cpg;
    float2 add = make_float2(0.f, 0.f);
    if (p.vec) add = __half22float2(reinterpret_cast<const __half2*>(p.vec + (int64_t)n * p.vld)[cp]);
    const float shift = __half2float(ximg[g * cpg]) + (p.vec ? __half2float(p.vec[(int64_t)n * p.vld + g * cpg]) : 0.f);
    if (row == 0 && cp % pairs_per_group == 0) stat[2 * g] = shift;  // for phase 2, which reads no global memory but the sums
    const float a0 = add.x - shift, a1 = add.y - shift;
    float s = 0.f, q = 0.f;
    // kBatch loads in flight before any is used, the last batch predicated: a thread often has fewer
    // than kBatch pixels (SD's [2,320,64,64]: 5 or 6), which one at a time cost a memory round trip each
    constexpr int kBatch = 8;
    for (int i = 0; i < my_px; i += kBatch) {
      __half2 v[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) v[b] = i + b < my_px ? xb[(int64_t)(row + (i + b) * R) * P + cp] : __half2{};
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (i + b >= my_px) break;
        cache[(row + (i + b) * R) * P + cp] = v[b];
        const float2 f = __half22float2(v[b]);
        const float d0 = f.x + a0, d1 = f.y + a1;
        s += d0 + d1, q += d0 * d0 + d1 * d1;
      }
    }
    pair_s[row * P + cp] = s;
    pair_q[row * P + cp] = q;
  }
  __syncthreads();
  for (int g = t; g < G; g += T) {
    float s = 0.f, q = 0.f;
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < pairs_per_group; ++i) s += pair_s[r * P + g * pairs_per_group + i], q += pair_q[r * P + g * pairs_per_group + i];
    p.part[((int64_t)n * p.nchunks + chunk) * G + g] = make_float2(s, q);
  }

  cg::this_grid().sync();

  // phase 2: the image's sums per group from every block's (T is a multiple of G: thread t sums group
  // t % G over chunks t / G, t / G + T / G, ...), then the normalisation of the block's pixels
  {
    const int g = t % G, S = T / G;
    float s = 0.f, q = 0.f;
#pragma unroll 4
    for (int c = t / G; c < p.nchunks; c += S) {
      const float2 e = __ldcg(&p.part[((int64_t)n * p.nchunks + c) * G + g]);  // written by other blocks: from L2
      s += e.x, q += e.y;
    }
    red[t] = s, red[T + t] = q;
  }
  __syncthreads();
  for (int g = t; g < G; g += T) {
    float s = 0.f, q = 0.f;
    for (int i = g; i < T; i += G) s += red[i], q += red[T + i];
    const float cnt = (float)p.HW * cpg, m = s / cnt;  // mean of d
    stat[2 * g] += m;  // the group's shift (phase 1) plus the mean of d
    stat[2 * g + 1] = rsqrtf(fmaxf(q / cnt - m * m, 0.f) + p.eps);
  }
  __syncthreads();
  for (int j = 0; j < p.k; ++j) {
    const int cp = lane + j * Q, c0 = 2 * cp, g = c0 / cpg;  // cpg is even: both channels in group g
    const float mean = stat[2 * g], rstd = stat[2 * g + 1];
    float2 add = make_float2(0.f, 0.f);
    if (p.vec) add = __half22float2(reinterpret_cast<const __half2*>(p.vec + (int64_t)n * p.vld)[cp]);
    const float sc0 = rstd * __half2float(p.gamma[c0]), sc1 = rstd * __half2float(p.gamma[c0 + 1]);
    const float sf0 = __half2float(p.beta[c0]) + (add.x - mean) * sc0, sf1 = __half2float(p.beta[c0 + 1]) + (add.y - mean) * sc1;
#pragma unroll 4
    for (int i = 0; i < my_px; ++i) {
      const int q = row + i * R;
      const float2 f = __half22float2(cache[q * P + cp]);
      float v0 = f.x * sc0 + sf0, v1 = f.y * sc1 + sf1;
      if (p.silu) v0 = __fdividef(v0, 1.f + __expf(-v0)), v1 = __fdividef(v1, 1.f + __expf(-v1));  // -0 where exp overflows
      yb[(int64_t)q * P + cp] = __floats2half2_rn(v0, v1);
    }
  }
}


// The one-pass GroupNorm in 16-byte vectors ("onepass8"): thread t holds channels 8 c8 .. 8 c8 + 7 (c8 = t % C8,
// C8 = C / 8) of pixels t / C8 + i R of its block's chunk, loads them as uint4 (a warp's loads are 512
// contiguous bytes, against 128 for the half2 kernel above), keeps them in shared memory, and sums them per
// group in registers: with at least 8 channels per group the 8 channels span at most two groups (a, b).
// Reductions are a warp per group with shuffles instead of one thread's serial loop over shared memory. A
// tensor larger than the chip's shared memory runs as consecutive launches over slices of the batch
// (n0: the slice's first image), each one read and one write. Same statistics as the other forms (sums of
// d = x + vec - shift, shift the group's first value, in a fixed order: deterministic).
struct OnePass8 {
  const uint4* x;
  const __half *gamma, *beta, *vec;
  int64_t vld;
  uint4* y;
  float2* part;  // [blocks of the launch, G]: each block's sums of d and d^2 per group
  int C, C8, R, HW, G, cpg, nchunks, chunk_px, n0;
  float eps;
  bool silu;
};

constexpr int kOnePass8Batch = 4;  // loads in flight per thread before any is used

// A group's mean and reciprocal standard deviation from its sums s, q of d = x - shift and d^2 over cnt values.
__device__ __forceinline__ float2 group_stat(float s, float q, float cnt, float shift, float eps) {
  const float m = s / cnt;
  return make_float2(shift + m, rsqrtf(fmaxf(q / cnt - m * m, 0.f) + eps));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Shared memory: [cache: chunk_px * C8 uint4][red: blockDim float4 (sums of groups a and b)][stat: G float2]
__global__ void __launch_bounds__(1024, 1) gn_onepass8_k(OnePass8 p) {
  dep_entry();
  extern __shared__ __align__(16) unsigned char smem[];
  const int t = threadIdx.x, C8 = p.C8, R = p.R, G = p.G, cpg = p.cpg, T = blockDim.x;
  const int lane = t & 31, warp = t >> 5, nwarps = T >> 5;
  const int local = blockIdx.x / p.nchunks, chunk = blockIdx.x % p.nchunks, n = p.n0 + local;
  const int p0 = chunk * p.chunk_px, np = min(p.HW, p0 + p.chunk_px) - p0;
  uint4* cache = reinterpret_cast<uint4*>(smem);
  float4* red = reinterpret_cast<float4*>(cache + (size_t)p.chunk_px * C8);
  float2* stat = reinterpret_cast<float2*>(red + T);
  const __half* ximg = reinterpret_cast<const __half*>(p.x) + (int64_t)n * p.HW * p.C;
  const __half* vrow = p.vec ? p.vec + (int64_t)n * p.vld : nullptr;
  const uint4* xb = p.x + ((int64_t)n * p.HW + p0) * C8;
  uint4* yb = p.y + ((int64_t)n * p.HW + p0) * C8;
  const int c8 = t % C8, row = t / C8, c0 = 8 * c8;
  const bool active = row < R;
  const int my_px = active && row < np ? (np - row + R - 1) / R : 0;  // pixels row, row + R, ... below np
  const int ga = c0 / cpg, gb = min((c0 + 7) / cpg, G - 1);
  const int split = gb == ga ? 8 : gb * cpg - c0;  // channels k < split are in group a, the rest in b
  auto group_shift = [&](int g) { return __half2float(ximg[g * cpg]) + (vrow ? __half2float(vrow[g * cpg]) : 0.f); };

  // phase 1: the thread's pixels into shared memory, their sums per group
  float sa = 0.f, qa = 0.f, sb = 0.f, qb = 0.f;
  if (my_px > 0) {
    float off[8];  // d = x + off: the channel's vec value less its group's shift
    const float sha = group_shift(ga), shb = group_shift(gb);
#pragma unroll
    for (int k = 0; k < 8; ++k) off[k] = (vrow ? __half2float(vrow[c0 + k]) : 0.f) - (k < split ? sha : shb);
    for (int i = 0; i < my_px; i += kOnePass8Batch) {
      uint4 v[kOnePass8Batch];
#pragma unroll
      for (int b = 0; b < kOnePass8Batch; ++b) v[b] = i + b < my_px ? __ldg(xb + (int64_t)(row + (i + b) * R) * C8 + c8) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int b = 0; b < kOnePass8Batch; ++b) {
        if (i + b >= my_px) break;
        cache[(row + (i + b) * R) * C8 + c8] = v[b];
        const __half2* h = reinterpret_cast<const __half2*>(&v[b]);
#pragma unroll
        for (int k2 = 0; k2 < 4; ++k2) {
          const float2 f = __half22float2(h[k2]);
          const float d0 = f.x + off[2 * k2], d1 = f.y + off[2 * k2 + 1];
          if (2 * k2 < split) sa += d0, qa += d0 * d0;
          else sb += d0, qb += d0 * d0;
          if (2 * k2 + 1 < split) sa += d1, qa += d1 * d1;
          else sb += d1, qb += d1 * d1;
        }
      }
    }
  }
  red[t] = make_float4(sa, qa, sb, qb);
  __syncthreads();
  // the block's sums per group: warp w takes groups w, w + nwarps, ...; group g's vectors are lo .. hi of
  // every row, their a sums where the vector starts in g, else their b sums
  for (int g = warp; g < G; g += nwarps) {
    const int lo = g * cpg / 8, hi = ((g + 1) * cpg - 1) / 8, nv = hi - lo + 1;
    float s = 0.f, q = 0.f;
    for (int i = lane; i < nv * R; i += 32) {
      const int cv = lo + i % nv;
      const float4 e = red[(i / nv) * C8 + cv];
      const bool first = 8 * cv / cpg == g;
      s += first ? e.x : e.z, q += first ? e.y : e.w;
    }
    s = warp_sum(s), q = warp_sum(q);
    if (lane == 0) p.part[(int64_t)blockIdx.x * G + g] = make_float2(s, q);
  }

  cg::this_grid().sync();

  // phase 2: the image's sums per group over its chunks' blocks (written by other blocks: read from L2)
  for (int g = warp; g < G; g += nwarps) {
    float s = 0.f, q = 0.f;
    for (int c = lane; c < p.nchunks; c += 32) {
      const float2 e = __ldcg(&p.part[((int64_t)local * p.nchunks + c) * G + g]);
      s += e.x, q += e.y;
    }
    s = warp_sum(s), q = warp_sum(q);
    if (lane == 0) stat[g] = group_stat(s, q, (float)p.HW * cpg, group_shift(g), p.eps);
  }
  __syncthreads();
  if (my_px == 0) return;
  float sc[8], sf[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float2 st = stat[k < split ? ga : gb];
    const float add = vrow ? __half2float(vrow[c0 + k]) : 0.f;
    sc[k] = st.y * __half2float(p.gamma[c0 + k]);
    sf[k] = __half2float(p.beta[c0 + k]) + (add - st.x) * sc[k];
  }
  for (int i = 0; i < my_px; ++i) {
    const int q = row + i * R;
    uint4 v = cache[q * C8 + c8];
    __half2* h = reinterpret_cast<__half2*>(&v);
#pragma unroll
    for (int k2 = 0; k2 < 4; ++k2) {
      const float2 f = __half22float2(h[k2]);
      float v0 = f.x * sc[2 * k2] + sf[2 * k2], v1 = f.y * sc[2 * k2 + 1] + sf[2 * k2 + 1];
      if (p.silu) v0 = __fdividef(v0, 1.f + __expf(-v0)), v1 = __fdividef(v1, 1.f + __expf(-v1));
      h[k2] = __floats2half2_rn(v0, v1);
    }
    yb[(int64_t)q * C8 + c8] = v;
  }
}

// GroupNorm with one block per (image, slab of whole groups) holding the slab in registers (form "block"):
// no grid-wide barrier and no cooperative launch, one read and one write. Thread t holds channel pair
// column t % SP of the slab (SP pairs: gpb groups of cpg channels, cpg even, so a pair lies in one group) for
// pixels t / SP + i R (i < V), loads them all before using any, sums d = x + vec - shift per group (shift
// the group's first value, as the other forms), reduces them per group through warp shuffles and shared
// memory (a fixed order: deterministic), and writes the normalisation from its registers. For the tensors
// where the half2 one-pass kernel's cooperative launch and grid barrier are most of its time (SD's 8x8 to
// 32x32 levels at batch 2) and wide slabs too large for that kernel (group_norm_block's rules).
struct GnBlock {
  const __half2* x;
  const __half *gamma, *beta, *vec;
  int64_t vld;
  __half2* y;
  int P, SP, R, HW, cpg, gpb;
  float eps;
  bool silu;
};

constexpr int kBlockMaxGroups = 4;  // groups per slab

template <int V>
__global__ void __launch_bounds__(1024, 1) gn_block_k(GnBlock p) {
  dep_entry();
  __shared__ float2 red[32][kBlockMaxGroups];
  __shared__ float2 stat[kBlockMaxGroups];
  const int t = threadIdx.x, SP = p.SP, R = p.R, lane = t & 31, warp = t >> 5, nwarps = blockDim.x >> 5;
  const int n = blockIdx.y, slab = blockIdx.x, cpl = t % SP, row = t / SP;
  const bool active = row < R;
  const int cp = slab * SP + cpl, c0 = 2 * cp, lg = 2 * cpl / p.cpg;  // pair column in the image, channel, group in the slab
  const int64_t base = (int64_t)n * p.HW * p.P;  // the image's first pair
  const __half* ximg = reinterpret_cast<const __half*>(p.x + base);
  const __half* vrow = p.vec ? p.vec + (int64_t)n * p.vld : nullptr;
  auto group_shift = [&](int g) {  // g: group in the slab
    const int gc = (slab * p.gpb + g) * p.cpg;
    return __half2float(ximg[gc]) + (vrow ? __half2float(vrow[gc]) : 0.f);
  };
  const int np = active ? (p.HW - row + R - 1) / R : 0;  // this thread's pixels: row, row + R, ... below HW
  const int64_t step = (int64_t)R * p.P;
  const __half2* src = p.x + base + (int64_t)row * p.P + cp;
  __half2 v[V];
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = i < np ? src[i * step] : __half2{};
  float2 add = make_float2(0.f, 0.f);
  float s = 0.f, q = 0.f;
  if (active) {
    if (vrow) add = make_float2(__half2float(vrow[c0]), __half2float(vrow[c0 + 1]));
    const float sh = group_shift(lg), a0 = add.x - sh, a1 = add.y - sh;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (i >= np) break;
      const float2 f = __half22float2(v[i]);
      const float d0 = f.x + a0, d1 = f.y + a1;
      s += d0 + d1, q += d0 * d0 + d1 * d1;
    }
  }
  for (int g = 0; g < p.gpb; ++g) {
    const float a = warp_sum(lg == g ? s : 0.f), b = warp_sum(lg == g ? q : 0.f);
    if (lane == 0) red[warp][g] = make_float2(a, b);
  }
  __syncthreads();
  if (t < p.gpb) {  // group t's sums of d and d^2 over the block
    float a = 0.f, b = 0.f;
    for (int w = 0; w < nwarps; ++w) a += red[w][t].x, b += red[w][t].y;
    stat[t] = group_stat(a, b, (float)p.HW * p.cpg, group_shift(t), p.eps);
  }
  __syncthreads();
  if (!active) return;
  const float2 st = stat[lg];
  const float sc0 = st.y * __half2float(p.gamma[c0]), sc1 = st.y * __half2float(p.gamma[c0 + 1]);
  const float sf0 = __half2float(p.beta[c0]) + (add.x - st.x) * sc0, sf1 = __half2float(p.beta[c0 + 1]) + (add.y - st.x) * sc1;
  __half2* dst = p.y + base + (int64_t)row * p.P + cp;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (i >= np) break;
    const float2 f = __half22float2(v[i]);
    float v0 = f.x * sc0 + sf0, v1 = f.y * sc1 + sf1;
    if (p.silu) v0 = __fdividef(v0, 1.f + __expf(-v0)), v1 = __fdividef(v1, 1.f + __expf(-v1));
    dst[i * step] = __floats2half2_rn(v0, v1);
  }
}

struct DeviceLimits {
  int sms = 0, smem_optin = 0;
  bool cooperative = false;
};

DeviceLimits device_limits() {
  static std::mutex mu;
  static std::unordered_map<int, DeviceLimits> known;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return {};
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(dev);
  if (it != known.end()) return it->second;
  DeviceLimits d;
  int coop = 0;
  if (cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess ||
      cudaFuncSetAttribute(gn_onepass_k, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin) != cudaSuccess ||
      cudaFuncSetAttribute(gn_onepass8_k, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin) != cudaSuccess) {
    cudaGetLastError();
    d = {};
  }
  d.cooperative = coop != 0;
  known[dev] = d;
  return d;
}

}  // namespace

int64_t group_norm_onepass_scratch(int64_t G) { return (int64_t)kMaxBlocks * G * 2; }

namespace {
std::atomic<int> g_coop_pdl{-1};  // whether a cooperative launch may also be a dependent one: -1 not yet probed
__global__ void coop_probe_k() { dep_entry(); }
}  // namespace

bool cooperative_dependent_launch() {
  int v = g_coop_pdl.load();
  if (v >= 0) return v == 1;
  cudaStream_t s = nullptr;
  const cudaLaunchAttribute coop = cooperative_attr();
  v = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess &&
      launch_with({coop, programmatic_attr()}, coop_probe_k, dim3(1), dim3(32), 0, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess;
  if (s) cudaStreamDestroy(s);
  cudaGetLastError();
  g_coop_pdl.store(v);
  return v == 1;
}

bool group_norm_onepass(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                        int64_t HW, int64_t G, float eps, bool silu, float* scratch, cudaStream_t s, int share) {
  const char* env = std::getenv("SDRT_GN_ONEPASS");
  if (env && std::strcmp(env, "0") == 0) return false;
  if (share < 1 || (share > 1 && !(env && std::strcmp(env, "1") == 0))) return false;
  if (G <= 0 || C % G || (C / G) % 2 || N <= 0 || N > kMaxBlocks || HW <= 0 || HW > (1 << 30)) return false;
  if (vld <= 0) vld = C;
  if (((uintptr_t)x | (uintptr_t)y | (uintptr_t)vec) & 3 || vld % 2 || vld < C) return false;  // vec's rows read as half2
  const int P = (int)(C / 2), k = (P + 1023) / 1024;
  if (P % k) return false;
  const int Q = P / k, R = std::max(1, std::min(8, 1024 / Q)), T = Q * R;  // up to 1024 threads, 8 pixel rows
  if (T % G || T < 32) return false;
  const DeviceLimits d = device_limits();
  if (!d.cooperative || d.sms == 0) return false;
  const size_t base = ((size_t)2 * R * P + 2 * T + 2 * G) * sizeof(float);
  // Blocks: at most two per SM (each block sums every block's partials of its image, so their count is
  // kept low), each with its pixels cached in shared memory.
  int nchunks = 0, chunk_px = 0;
  size_t smem = 0;
  bool cache = false;
  for (int per_sm = 2; per_sm >= 1 && !cache; --per_sm) {
    const int64_t per_image = std::min<int64_t>(std::min<int64_t>((int64_t)d.sms * per_sm / share, kMaxBlocks) / N, HW);
    if (per_image < 1) continue;
    const int64_t px = (HW + per_image - 1) / per_image;
    const size_t need = base + (size_t)px * P * sizeof(__half2);
    if (need > (size_t)d.smem_optin) continue;
    int occ = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, gn_onepass_k, T, need) != cudaSuccess) return cudaGetLastError(), false;
    const int64_t chunks = (HW + px - 1) / px;
    if ((int64_t)occ * d.sms / share >= N * chunks) cache = true, nchunks = (int)chunks, chunk_px = (int)px, smem = need;
  }
  // Without the cache (a tensor larger than the chip's shared memory) one block per SM cannot keep
  // enough loads in flight: the three-pass form is faster there (H200, batch 16: 0.7-0.8x at 42 MB).
  if (!cache) return false;
  OnePass prm{reinterpret_cast<const __half2*>(x), gamma, beta, vec, vld, reinterpret_cast<__half2*>(y), reinterpret_cast<float2*>(scratch),
              (int)C, P, Q, R, k, (int)HW, (int)G, nchunks, chunk_px, eps, silu};
  const cudaLaunchAttribute coop = cooperative_attr();
  const dim3 grid((unsigned)(N * nchunks)), block((unsigned)T);
  // Under SDRT_PDL=1 also as a dependent launch where the driver takes both attributes (probed outside any
  // capture, cooperative_dependent_launch): its blocks, resident early, wait at the top for the kernel before,
  // and all of them are resident before any passes the grid barrier.
  bool launched = false;
  if (dependent_launch() && g_coop_pdl.load() == 1) {
    launched = launch_with({coop, programmatic_attr()}, gn_onepass_k, grid, block, smem, s, prm) == cudaSuccess;
    if (launched) count_dependent_launch();
    else cudaGetLastError();
  }
  if (!launched && launch_with({coop}, gn_onepass_k, grid, block, smem, s, prm) != cudaSuccess) return cudaGetLastError(), false;
  ++g_launches;
  return true;
}


bool group_norm_onepass8(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                         int64_t HW, int64_t G, float eps, bool silu, float* scratch, cudaStream_t s, int share, int max_launches) {
  const char* env = std::getenv("SDRT_GN_ONEPASS");
  if (env && std::strcmp(env, "0") == 0) return false;
  if (share != 1 || G <= 0 || C % 8 || C % G || C / G < 8 || C > 8192 || N <= 0 || HW <= 0 || HW > (1 << 30)) return false;
  if (vld <= 0) vld = C;
  if (vld < C || ((uintptr_t)x | (uintptr_t)y) & 15) return false;
  // up to 1024 threads, one block per SM (512 threads, two blocks per SM, measured slower on the H100 at
  // every SD shape but one: sixteenth session)
  const int C8 = (int)(C / 8), R = std::max(1, 1024 / C8), T = (C8 * R + 31) / 32 * 32;
  if (T > 1024 || T < 32) return false;
  const DeviceLimits d = device_limits();
  if (!d.cooperative || d.sms == 0) return false;
  const size_t base = (size_t)T * sizeof(float4) + (size_t)G * sizeof(float2);
  // The fewest launches (slices of the batch) whose blocks - at most one per SM, each image's pixels split
  // evenly over its share of them - hold their pixels in shared memory; at most max_launches (8 at most).
  const int per_sm = 1024 / T;
  for (int64_t launches = 1; launches <= std::min<int64_t>(N, std::min(max_launches, 8)); ++launches) {
    const int64_t ns = (N + launches - 1) / launches;  // images per launch (the last slice may have fewer)
    const int64_t per_image = std::min<int64_t>((int64_t)d.sms * per_sm / ns, (HW + R - 1) / R);  // no block with idle pixel rows
    if (per_image < 1) continue;
    const int64_t px = (HW + per_image - 1) / per_image, chunks = (HW + px - 1) / px;
    const size_t need = base + (size_t)px * C8 * sizeof(uint4);
    if (need > (size_t)d.smem_optin || ns * chunks * G > group_norm_onepass_scratch(G) / 2) continue;
    int occ = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, gn_onepass8_k, T, need) != cudaSuccess) return cudaGetLastError(), false;
    if ((int64_t)occ * d.sms < ns * chunks) continue;
    for (int64_t n0 = 0; n0 < N; n0 += ns) {
      const int64_t nn = std::min(ns, N - n0);
      OnePass8 prm{reinterpret_cast<const uint4*>(x), gamma, beta, vec, vld, reinterpret_cast<uint4*>(y), reinterpret_cast<float2*>(scratch),
                   (int)C, C8, R, (int)HW, (int)G, (int)(C / G), (int)chunks, (int)px, (int)n0, eps, silu};
      if (launch_with({cooperative_attr()}, gn_onepass8_k, dim3((unsigned)(nn * chunks)), dim3((unsigned)T), need, s, prm) != cudaSuccess)
        return cudaGetLastError(), false;  // a later slice failing leaves the earlier ones done: the caller's fallback redoes all
      ++g_launches8;
    }
    return true;
  }
  return false;
}

namespace {
std::atomic<int64_t> g_block_launches{0};

// gn_block_k's instance for `need` pixels a thread (null over 32)
void (*block_kernel(int64_t need))(GnBlock) {
  return need <= 1    ? gn_block_k<1>
         : need <= 2  ? gn_block_k<2>
         : need <= 4  ? gn_block_k<4>
         : need <= 8  ? gn_block_k<8>
         : need <= 16 ? gn_block_k<16>
         : need <= 32 ? gn_block_k<32>
                      : nullptr;
}
}  // namespace

bool group_norm_block(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                      int64_t HW, int64_t G, float eps, bool silu, cudaStream_t s, int rule) {
  if (G <= 0 || C % G || (C / G) % 2 || C > 8192 || N <= 0 || N > 65535 || HW <= 0 || HW > (1 << 30)) return false;
  if (vld <= 0) vld = C;
  if (vld < C || ((uintptr_t)x | (uintptr_t)y) & 3) return false;
  const DeviceLimits d = device_limits();
  if (d.sms == 0) return false;
  const int cpg = (int)(C / G);
  // The most groups per slab (1, 2 or 4) that still leaves two blocks per SM and fits the registers; rows:
  // up to 1024 threads, about four pixels each for the small tensors.
  for (int gpb : {4, 2, 1}) {
    if (G % gpb || (gpb > 1 && N * (G / gpb) < 2 * d.sms)) continue;
    const int SP = gpb * cpg / 2;
    if (SP > 1024) continue;
    const int R = (int)std::max<int64_t>(1, std::min<int64_t>(1024 / SP, (HW + 3) / 4));
    const int64_t need = (HW + R - 1) / R;  // pixels per thread
    if (need > 32) continue;
    // The default order's rules (H100, seventeenth session, bench_group_norm): "small" - a tensor of up to 3 MB,
    // or at most one block per SM with slab rows of 32 bytes or more (SD's batch-2 shapes but [320,64,64],
    // whose 20-byte rows lost: 17.6 against 11.2 us); "large" (after the half2 kernel, which did not fit) -
    // slab rows of 60 bytes or more (the UNet on 16 rows: [960|1280|1920,32,32] 41-65 us against 44-80 for the
    // 16-byte one-pass kernel; on 32 rows, two groups a slab: also [640,32,32], [1920|2560,16,16]: 48, 34, 45
    // against 50, 43, 50 us).
    // Narrow slabs (rows under 32 bytes) only with few pixels per thread: their loads touch a sector for 20
    // bytes, which [2,320,32,32] (6 per thread: 6.5 against 8.9 us) bears and [2,320,64,64] (21: 17.5 against
    // 11.2) does not; nor the guided UNet's shared prefix, [1,320,64,64] (21 per thread: 17.75 us against the
    // half2 kernel's 9.87, eighteenth session). Splitting such slabs over clusters of blocks was slower still
    // (10.77 and 14.85 us on [1|2,320,64,64]; removed).
    if (rule == 1 && SP < 8 && need > 8) continue;
    if (rule == 1 && !(N * C * HW * 2 <= (int64_t(3) << 20) || (N * (G / gpb) <= d.sms && SP >= 8))) continue;
    if (rule == 2 && SP < 15) continue;
    void (*k)(GnBlock) = block_kernel(need);
    if (!k) continue;
    const GnBlock prm{reinterpret_cast<const __half2*>(x), gamma, beta, vec, vld, reinterpret_cast<__half2*>(y), (int)(C / 2), SP, R, (int)HW, cpg, gpb, eps, silu};
    launch_kernel(k, dim3((unsigned)(G / gpb), (unsigned)N), dim3((unsigned)((SP * R + 31) / 32 * 32)), 0, s, prm);
    if (cudaGetLastError() != cudaSuccess) return false;
    ++g_block_launches;
    return true;
  }
  return false;
}
}  // namespace sdrt::cuda

int64_t sdrt::cuda_group_norm_onepass_launches() { return sdrt::cuda::g_launches.load(); }
int64_t sdrt::cuda_group_norm_onepass8_launches() { return sdrt::cuda::g_launches8.load(); }
int64_t sdrt::cuda_group_norm_block_launches() { return sdrt::cuda::g_block_launches.load(); }
