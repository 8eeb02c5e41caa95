// GroupNorm over NHWC activations with one thread-block cluster (compute capability 9.0+) per image and
// slab of channels: the slab - the fewest whole groups whose channels fill 16-byte vectors (SD's 320-
// and 640-channel levels: 40 channels) - is split by pixels over the cluster's blocks; each block keeps
// its pixels in registers, sums them per group, the blocks combine their sums through distributed shared
// memory behind the cluster's barrier, and each normalises what it holds. One read and one write, like the
// cooperative one-pass kernel, but with no grid-wide barrier, no partial sums through global memory and no
// limit to what fits the chip at once (clusters are independent: a large tensor takes several waves).
// Sums of d = x - shift with one shift per (image, group), the group's first value, in a fixed order:
// deterministic, as the other forms.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/launch.cuh"
#include "backends/cuda/nhwc_kernels.cuh"
#include "graph/backend.h"

namespace sdrt::cuda {
namespace {

namespace cg = cooperative_groups;

std::atomic<int64_t> g_launches{0};

constexpr int kMaxThreads = 512, kMaxCluster = 8;

struct ClusterParams {
  const uint4* x;                    // [N, HW, C / 8] 16-byte vectors
  const __half *gamma, *beta, *vec;  // vec: row n at vec + n * vld (the time embedding's channels, optional)
  int64_t vld;
  uint4* y;
  int C8, HW, cpg, gpc, vpp;  // vectors per pixel; channels per group; groups and vectors per pixel of a slab
  int slabs, R, cl, ppb;      // slabs per image; pixel rows per pass (threads = vpp R); cluster size; pixels per block
  float eps;
  bool silu;
};

__device__ __forceinline__ void unpack(const uint4& v, float (&f)[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __half22float2(h[i]);
    f[2 * i] = t.x, f[2 * i + 1] = t.y;
  }
}

// Block b of the grid: image n = b / (slabs cl), slab (b / cl) % slabs, rank b % cl in its cluster (pixels
// [rank ppb, rank ppb + ppb)). Thread t: vector c8 = t % vpp of the slab (channels 8 c8 ... of it) at pixels
// t / vpp + i R, i < VPT. Shared memory: [red: 2 x 8 T][col: 2 x max(T, cs)][part: gpc float2][stat: gpc float2].
template <int VPT>
__global__ void __launch_bounds__(kMaxThreads) gn_cluster_k(ClusterParams p) {
  dep_entry();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(16) unsigned char smem[];
  cg::cluster_group cluster = cg::this_cluster();
  const int T = blockDim.x, t = threadIdx.x, vpp = p.vpp, cs = vpp * 8;
  const int rank = (int)(blockIdx.x % p.cl), unit = (int)(blockIdx.x / p.cl), slab = unit % p.slabs, n = unit / p.slabs;
  float* red_s = reinterpret_cast<float*>(smem);
  float* red_q = red_s + 8 * T;
  const int ncol = max(T, cs);
  float* col_s = red_q + 8 * T;
  float* col_q = col_s + ncol;
  float2* part = reinterpret_cast<float2*>(col_q + ncol);
  float2* stat = part + p.gpc;
  const int c8 = t % vpp, row = t / vpp;
  const bool active = row < p.R;
  const int ch0 = slab * cs + 8 * c8;  // this thread's first channel
  const __half* ximg = reinterpret_cast<const __half*>(p.x) + (int64_t)n * p.HW * p.C8 * 8;
  const __half* vrow = p.vec ? p.vec + (int64_t)n * p.vld : nullptr;
  const int px0 = rank * p.ppb, px1 = min(p.HW, px0 + p.ppb);

  // the time embedding's value and the group's shift per channel of the vector
  float add[8], shift[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int c = ch0 + k, first = c / p.cpg * p.cpg;
    add[k] = vrow ? __half2float(vrow[c]) : 0.f;
    shift[k] = __half2float(ximg[first]) + (vrow ? __half2float(vrow[first]) : 0.f) - add[k];
  }
  // phase 1: the thread's pixels into registers, their sums per channel
  uint4 v[VPT];
  float s[8] = {}, q[8] = {};
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int px = px0 + row + i * p.R;
    v[i] = active && px < px1 ? p.x[((int64_t)n * p.HW + px) * p.C8 + slab * vpp + c8] : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    if (!active || px0 + row + i * p.R >= px1) break;
    float f[8];
    unpack(v[i], f);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float d = f[k] - shift[k];  // (x + add) - (first + its add)
      s[k] += d, q[k] += d * d;
    }
  }
  // per channel of the slab over the block's pixels: rows summed in two steps (col[c + j cs]: column c of
  // red over rows j, j + step, ...; then those partials)
#pragma unroll
  for (int k = 0; k < 8; ++k) red_s[t * 8 + k] = s[k], red_q[t * 8 + k] = q[k];  // = red[row][8 c8 + k]
  __syncthreads();
  const int step = max(1, T / cs);
  for (int i = t; i < cs * step; i += T) {
    const int c = i % cs;
    float a = 0.f, b = 0.f;
    for (int r = i / cs; r < p.R; r += step) a += red_s[r * cs + c], b += red_q[r * cs + c];
    col_s[i] = a, col_q[i] = b;
  }
  __syncthreads();
  for (int gi = t; gi < p.gpc; gi += T) {  // this block's sums of group gi of the slab
    float a = 0.f, b = 0.f;
    for (int c = gi * p.cpg; c < (gi + 1) * p.cpg; ++c)
      for (int j = 0; j < step; ++j) a += col_s[c + j * cs], b += col_q[c + j * cs];
    part[gi] = make_float2(a, b);
  }
  cluster.sync();  // every block's sums written
  for (int gi = t; gi < p.gpc; gi += T) {  // the slab's groups over the whole image: the cluster's blocks in rank order
    float a = 0.f, b = 0.f;
    for (int r = 0; r < p.cl; ++r) {
      const float2 e = cluster.map_shared_rank(part, r)[gi];
      a += e.x, b += e.y;
    }
    const float cnt = (float)p.HW * p.cpg, m = a / cnt;
    stat[gi] = make_float2(m, rsqrtf(fmaxf(b / cnt - m * m, 0.f) + p.eps));
  }
  cluster.sync();  // the other blocks are done reading this one's sums (and this block's stat is written)
  // phase 2: y = (x + add - mean) rstd gamma + beta, then SiLU
  if (!active) return;
  float sc[8], sf[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int c = ch0 + k;
    const float2 st = stat[c / p.cpg - slab * p.gpc];
    const float mean = shift[k] + add[k] + st.x;  // the group's shift plus the mean of d
    sc[k] = st.y * __half2float(p.gamma[c]);
    sf[k] = __half2float(p.beta[c]) + (add[k] - mean) * sc[k];
  }
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int px = px0 + row + i * p.R;
    if (px >= px1) break;
    float f[8];
    unpack(v[i], f);
    uint4 o;
    __half2* oh = reinterpret_cast<__half2*>(&o);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float a = f[2 * k] * sc[2 * k] + sf[2 * k], b = f[2 * k + 1] * sc[2 * k + 1] + sf[2 * k + 1];
      if (p.silu) a = __fdividef(a, 1.f + __expf(-a)), b = __fdividef(b, 1.f + __expf(-b));
      oh[k] = __floats2half2_rn(a, b);
    }
    p.y[((int64_t)n * p.HW + px) * p.C8 + slab * vpp + c8] = o;
  }
#endif
}

bool cluster_device(int* sms) {
  int dev = 0, major = 0;
  return cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
         cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && major >= 9;
}

template <int VPT>
cudaError_t launch(const ClusterParams& p, int64_t N, int threads, size_t smem, cudaStream_t s) {
  const cudaLaunchAttribute cl = cluster_attr((unsigned)p.cl);
  const dim3 grid((unsigned)(N * p.slabs * p.cl));
  if (dependent_launch()) {
    if (launch_with({cl, programmatic_attr()}, gn_cluster_k<VPT>, grid, dim3((unsigned)threads), smem, s, p) == cudaSuccess) {
      count_dependent_launch();
      return cudaSuccess;
    }
    cudaGetLastError();
  }
  return launch_with({cl}, gn_cluster_k<VPT>, grid, dim3((unsigned)threads), smem, s, p);
}

}  // namespace

int group_norm_cluster_env() {
  const char* e = std::getenv("SDRT_GN_CLUSTER");
  return e && std::strcmp(e, "1") == 0 ? 1 : 0;
}

bool group_norm_cluster(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                        int64_t HW, int64_t G, float eps, bool silu, cudaStream_t s) {
  if (G <= 0 || C % G || C % 8 || N <= 0 || HW <= 0 || HW > (1 << 30) || ((uintptr_t)x | (uintptr_t)y) & 15) return false;
  if (vld <= 0) vld = C;
  if (vld < C) return false;
  const int64_t cpg = C / G;
  int64_t gpc = 1;  // groups per slab: the fewest whose channels fill 16-byte vectors
  while (gpc <= G && ((gpc * cpg) % 8 || G % gpc)) ++gpc;
  if (gpc > G) return false;
  const int64_t cs = gpc * cpg, vpp = cs / 8, slabs = C / cs;
  if (vpp > 128) return false;  // slabs of up to 1024 channels (SD's widest: 120; 520 for 65 channels a group)
  int sms = 0;
  if (!cluster_device(&sms)) return false;
  // Cluster size: the smallest of 1, 2, 4, 8 whose blocks hold their pixels at 16 vectors a thread and,
  // where the pixels allow, give the SMs a block each; threads: the slab's vectors times the pixel rows of
  // a pass (at most 512, no more rows than the block's pixels); VPT: the vectors a thread holds.
  const int64_t R_max = kMaxThreads / vpp;
  int64_t cl = 1, ppb = HW, R = 1, vpt = 1;
  for (;; cl *= 2) {
    ppb = (HW + cl - 1) / cl;
    R = std::min<int64_t>(R_max, ppb);
    vpt = (ppb + R - 1) / R;
    const bool fits = vpt <= 16, fills = N * slabs * cl >= sms || ppb <= R;
    if ((fits && fills) || cl == kMaxCluster) break;
  }
  if (vpt > 16 || N * slabs * cl > 0x7FFFFFFF) return false;
  const int threads = (int)(vpp * R);
  const size_t smem = ((size_t)2 * threads * 8 + 2 * std::max<int64_t>(threads, cs) + 4 * gpc) * sizeof(float);  // under 48 KB
  const ClusterParams p{reinterpret_cast<const uint4*>(x), gamma, beta, vec, vld, reinterpret_cast<uint4*>(y), (int)(C / 8), (int)HW, (int)cpg,
                        (int)gpc, (int)vpp, (int)slabs, (int)R, (int)cl, (int)ppb, eps, silu};
  const cudaError_t e = vpt <= 1   ? launch<1>(p, N, threads, smem, s)
                        : vpt <= 2 ? launch<2>(p, N, threads, smem, s)
                        : vpt <= 4 ? launch<4>(p, N, threads, smem, s)
                        : vpt <= 8 ? launch<8>(p, N, threads, smem, s)
                                   : launch<16>(p, N, threads, smem, s);
  if (e != cudaSuccess) return cudaGetLastError(), false;
  ++g_launches;
  return true;
}

}  // namespace sdrt::cuda

int64_t sdrt::cuda_group_norm_cluster_launches() { return sdrt::cuda::g_launches.load(); }
