// GroupNorm over NHWC activations in one kernel of thread-block clusters (Hopper): a cluster of up to 8
// blocks owns one image and a slice of whole groups (Cs channels); each block reads its share of the
// pixels of that slice once into shared memory, sums them per channel, and the cluster exchanges its
// blocks' group sums through distributed shared memory between two cluster barriers - no grid-wide
// barrier, no cooperative launch, no global scratch, any batch (clusters need not be co-resident). The
// normalisation then writes from shared memory. The one-pass kernel (group_norm_onepass.cu) waits for every
// block of the grid instead and applies only where the whole tensor fits on chip.
//
// Statistics as in the other kernels: sums of d = x - shift and d^2 in float with one shift per (image,
// group) (the group's first value, read by every block), reduced in a fixed order (deterministic).
#include <cooperative_groups.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>

#include "backends/cuda/nhwc_kernels.cuh"
#include "graph/backend.h"

namespace sdrt::cuda {
namespace {

namespace cg = cooperative_groups;

std::atomic<int64_t> g_launches{0};
constexpr int kMaxCluster = 8;     // the portable cluster size
constexpr int kRedFloats = 4096;   // per-row channel sums kept for the block's reduction: [R][Cs] <= this

struct ClusterGn {
  const uint4* x;
  const __half *gamma, *beta, *vec;
  uint4* y;
  // Cs channels per slice (Q = Cs / 8 chunks of 16 bytes), cpg channels per group; the block's threads are
  // R rows of Q: thread t reads chunk t % Q of pixels t / Q, t / Q + R, ... of its px pixels
  int C, HW, cpg, Cs, Q, R, px;
  float eps;
  bool silu;
};

// Shared memory: [cache: px * Q uint4][red_s, red_q: R * Cs floats each][grp: 2 gs][stat: 2 gs][shift: gs]
__global__ void __launch_bounds__(512, 1) gn_cluster_k(ClusterGn p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  const int nblocks = (int)cluster.num_blocks(), rank = (int)cluster.block_rank();
  const int slice = blockIdx.y, n = blockIdx.z;
  const int Q = p.Q, R = p.R, Cs = p.Cs, cpg = p.cpg, gs = Cs / cpg, C8 = p.C / 8, T = blockDim.x;
  const int t = threadIdx.x, lane = t % Q, row = t / Q;
  const int p0 = rank * p.px, np = max(0, min(p.HW, p0 + p.px) - p0);
  extern __shared__ __align__(16) unsigned char smem[];
  uint4* cache = reinterpret_cast<uint4*>(smem);
  float* red_s = reinterpret_cast<float*>(cache + (size_t)p.px * Q);
  float* red_q = red_s + R * Cs;
  float* grp = red_q + R * Cs;
  float* stat = grp + 2 * gs;
  float* shift = stat + 2 * gs;
  const int cbase = slice * Cs, c0 = lane * 8;  // the slice's first channel; this thread's first in the slice
  const __half* ximg = reinterpret_cast<const __half*>(p.x) + (int64_t)n * p.HW * p.C;
  const __half* vimg = p.vec ? p.vec + (int64_t)n * p.C : nullptr;
  for (int g = t; g < gs; g += T) {
    const int ch = cbase + g * cpg;
    shift[g] = __half2float(ximg[ch]) + (vimg ? __half2float(vimg[ch]) : 0.f);
  }
  __syncthreads();

  // per channel: sums of (x + vec - shift) and its square over this thread's pixels
  float a[8], s[8], q[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) a[e] = (vimg ? __half2float(vimg[cbase + c0 + e]) : 0.f) - shift[(c0 + e) / cpg], s[e] = q[e] = 0.f;
  const uint4* xb = p.x + ((int64_t)n * p.HW + p0) * C8 + cbase / 8 + lane;
  const int my = row < R && row < np ? (np - row + R - 1) / R : 0;
  constexpr int kBatch = 8;  // loads in flight before any is used
  for (int i = 0; i < my; i += kBatch) {
    uint4 v[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) v[b] = i + b < my ? xb[(int64_t)(row + (i + b) * R) * C8] : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (i + b >= my) break;
      cache[(row + (i + b) * R) * Q + lane] = v[b];
      const __half* h = reinterpret_cast<const __half*>(&v[b]);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float d = __half2float(h[e]) + a[e];
        s[e] += d, q[e] += d * d;
      }
    }
  }
  if (row < R) {
#pragma unroll
    for (int e = 0; e < 8; ++e) red_s[row * Cs + c0 + e] = s[e], red_q[row * Cs + c0 + e] = q[e];
  }
  __syncthreads();
  // [R][Cs] -> per group, in a fixed order: rows folded into J rows (each column's rows j, j + J, ... by one
  // thread, in place into row j), then the J rows of each column into row 0, then each group's columns
  const int J = max(1, min(R, T / Cs));
  for (int i = t; i < J * Cs; i += T) {
    const int c = i % Cs, j = i / Cs;
    float S = 0.f, Qs = 0.f;
    for (int r = j; r < R; r += J) S += red_s[r * Cs + c], Qs += red_q[r * Cs + c];
    red_s[j * Cs + c] = S, red_q[j * Cs + c] = Qs;
  }
  __syncthreads();
  for (int c = t; c < Cs; c += T) {
    float S = 0.f, Qs = 0.f;
    for (int j = 0; j < J; ++j) S += red_s[j * Cs + c], Qs += red_q[j * Cs + c];
    red_s[c] = S, red_q[c] = Qs;
  }
  __syncthreads();
  for (int g = t; g < gs; g += T) {
    float S = 0.f, Qs = 0.f;
    for (int c = g * cpg; c < (g + 1) * cpg; ++c) S += red_s[c], Qs += red_q[c];
    grp[2 * g] = S, grp[2 * g + 1] = Qs;
  }
  cluster.sync();  // every block's group sums written (release / acquire across the cluster)
  for (int g = t; g < gs; g += T) {
    float S = 0.f, Qs = 0.f;
    for (int k = 0; k < nblocks; ++k) {  // rank order: every block sums the same way
      const float* other = cluster.map_shared_rank(grp, k);
      S += other[2 * g], Qs += other[2 * g + 1];
    }
    const float cnt = (float)p.HW * cpg, m = S / cnt;  // mean of d
    stat[2 * g] = shift[g] + m;
    stat[2 * g + 1] = rsqrtf(fmaxf(Qs / cnt - m * m, 0.f) + p.eps);
  }
  cluster.sync();  // the other blocks are done reading this one's sums (it may exit); stat visible to the block

  float sc[8], sf[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int c = cbase + c0 + e, g = (c0 + e) / cpg;
    const float mean = stat[2 * g], rstd = stat[2 * g + 1], add = vimg ? __half2float(vimg[c]) : 0.f;
    sc[e] = rstd * __half2float(p.gamma[c]);
    sf[e] = __half2float(p.beta[c]) + (add - mean) * sc[e];
  }
  uint4* yb = p.y + ((int64_t)n * p.HW + p0) * C8 + cbase / 8 + lane;
  for (int i = 0; i < my; ++i) {
    const int px = row + i * R;
    const uint4 v = cache[px * Q + lane];
    const __half2* h = reinterpret_cast<const __half2*>(&v);
    uint4 o;
    __half2* oh = reinterpret_cast<__half2*>(&o);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(h[k]);
      float v0 = f.x * sc[2 * k] + sf[2 * k], v1 = f.y * sc[2 * k + 1] + sf[2 * k + 1];
      if (p.silu) v0 = __fdividef(v0, 1.f + __expf(-v0)), v1 = __fdividef(v1, 1.f + __expf(-v1));
      oh[k] = __floats2half2_rn(v0, v1);
    }
    yb[(int64_t)px * C8] = o;
  }
#endif
}

struct DeviceLimits {
  std::once_flag once;
  bool clusters = false;
  int sms = 0, smem_optin = 0;
};
std::array<DeviceLimits, 64> g_dev;

const DeviceLimits* device_limits() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= (int)g_dev.size()) return cudaGetLastError(), nullptr;
  DeviceLimits& d = g_dev[dev];
  std::call_once(d.once, [&] {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
        cudaFuncSetAttribute(gn_cluster_k, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin) != cudaSuccess)
      return (void)cudaGetLastError();
    d.clusters = major >= 9;
  });
  return &d;
}

bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

}  // namespace

bool group_norm_cluster_enabled() {
  const char* e = std::getenv("SDRT_GN_CLUSTER");
  return e && std::strcmp(e, "1") == 0;
}

bool group_norm_cluster(const __half* x, const __half* gamma, const __half* beta, const __half* vec, __half* y, int64_t N, int64_t C,
                        int64_t HW, int64_t G, float eps, bool silu, cudaStream_t s) {
  if (G <= 0 || C <= 0 || C % G || C % 8 || N <= 0 || N > 65535 || HW <= 0 || HW > (1 << 24)) return false;
  if (!aligned16(x) || !aligned16(y)) return false;
  const DeviceLimits* d = device_limits();
  if (!d || !d->clusters) return false;
  const int64_t cpg = C / G, L = std::lcm<int64_t>(cpg, 8);  // a slice: whole groups, whole 16-byte chunks
  if (C % L) return false;
  const int cl = (int)std::min<int64_t>(kMaxCluster, HW);
  const int64_t px = (HW + cl - 1) / cl;
  // The slice width: the widest whose blocks still cover the SMs (wider rows read better), else the
  // narrowest (most blocks); one whose pixels fit in shared memory beside the reduction's arrays.
  auto smem_for = [&](int64_t Cs, int64_t* R) {
    const int64_t Q = Cs / 8;
    *R = std::max<int64_t>(1, std::min<int64_t>(512 / Q, kRedFloats / Cs));  // at most 512 threads (the kernel's bound)
    const int64_t gs = Cs / cpg;
    return (size_t)px * Q * 16 + (size_t)2 * *R * Cs * 4 + (size_t)5 * gs * 4;
  };
  int64_t best = 0, best_R = 0;
  size_t best_smem = 0;
  for (int64_t Cs = L; Cs <= C && Cs <= 512; Cs += L) {
    if (C % Cs) continue;
    int64_t R;
    const size_t smem = smem_for(Cs, &R);
    if (smem > (size_t)d->smem_optin) break;  // wider slices need more
    if (best == 0 || N * (C / Cs) * cl >= d->sms) best = Cs, best_R = R, best_smem = smem;
  }
  if (best == 0) return false;
  const int64_t Q = best / 8;
  ClusterGn prm{reinterpret_cast<const uint4*>(x), gamma, beta, vec, reinterpret_cast<uint4*>(y), (int)C, (int)HW, (int)cpg, (int)best, (int)Q,
                (int)best_R, (int)px, eps, silu};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)cl, (unsigned)(C / best), (unsigned)N);
  cfg.blockDim = dim3((unsigned)(Q * best_R));
  cfg.dynamicSmemBytes = best_smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = (unsigned)cl;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, gn_cluster_k, &cfg) != cudaSuccess || clusters < 1) return cudaGetLastError(), false;
  if (cudaLaunchKernelEx(&cfg, gn_cluster_k, prm) != cudaSuccess) return cudaGetLastError(), false;
  ++g_launches;
  return true;
}

}  // namespace sdrt::cuda

int64_t sdrt::cuda_group_norm_cluster_launches() { return sdrt::cuda::g_launches.load(); }
