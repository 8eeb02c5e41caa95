// The split-K implicit-GEMM convolution (see conv_splitk.h). A block computes a 128-pixel x BN-channel
// output tile over its share of K: rows are output pixels (n, oy, ox), K runs over (ky, kx, c) as the
// weights' [O, kh, kw, C] rows do, so a 64-deep K step is one filter tap and 64 input channels - for every
// row one 128-byte run of the input pixel under that tap, or zeros past the border. Both operands go
// through a ring of shared-memory stages filled by cp.async in the 128-byte swizzle the warpgroup MMAs read
// (two warpgroups of 64 rows, m64nBNk16), all stages but the one computed loading. The
// cluster's CS blocks take consecutive K ranges of the same tile; each leaves its FP32 partial tile in its
// shared memory, and after a cluster barrier block q sums rows q, q + CS, ... over all CS partial tiles
// (distributed shared memory, in rank order), adds bias and residual, and writes the halves.
#include "backends/cuda/conv_splitk.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/sm90_common.cuh"
#include "backends/cuda/sm90_host.h"
#include "graph/backend.h"

#include <cooperative_groups.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace sdrt::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kBM = 128, kBK = 64, kThreads = 256;

struct SplitkArgs {
  const __half *x, *w, *b, *r;
  __half* y;
  int H, W, C, O, kw, stride, pad_h, pad_w, HoWo, Wo, M, K;
  int nofence;  // diagnostic only (SDRT_SPLITK_NOFENCE=1): no proxy fence between the copies and the MMAs - unsafe
};

#ifdef SDRT_SM90A
#define SDRT_CSK_WGMMA 1
using namespace sm90;
template <int BN>
__device__ __forceinline__ void mma_step(float (&acc)[BN / 2], uint64_t a, uint64_t b, int scale_d) {
  if constexpr (BN == 64) wgmma_n64(acc, a, b, scale_d);
  else wgmma_n128(acc, a, b, scale_d);
}
#endif

template <int BN>
__host__ __device__ constexpr int red_ld() { return BN + 8; }  // the partial tile's row stride in floats (+8: the fragments' stores spread over banks)
template <int BN, int STAGES>
constexpr size_t smem_need() {
  constexpr size_t ring = (size_t)STAGES * (kBM + BN) * kBK * 2, red = (size_t)kBM * red_ld<BN>() * 4;
  return (ring > red ? ring : red) + 1024;  // + the swizzle atoms' alignment
}

template <int BN, int STAGES>
__global__ void __launch_bounds__(kThreads, 1) conv_splitk_k(SplitkArgs p) {
  dep_entry();
#ifdef SDRT_CSK_WGMMA
  constexpr int kStage = (kBM + BN) * kBK * 2, kAhead = STAGES - 1, kLd = red_ld<BN>();
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t raw = (uint32_t)__cvta_generic_to_shared(smem), sbase = (raw + 1023u) & ~1023u;
  float* red = reinterpret_cast<float*>(smem + (sbase - raw));
  cg::cluster_group cluster = cg::this_cluster();
  const int CS = (int)cluster.num_blocks(), rank = (int)cluster.block_rank();
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int c = tid & 7, r0 = tid >> 3;  // this thread's 16-byte chunk of rows r0 + 32 i
  const int n0 = (int)(blockIdx.x / CS) * BN, m0 = (int)blockIdx.y * kBM;
  const int KT = p.K / kBK, kt0 = (int)((int64_t)KT * rank / CS), total = (int)((int64_t)KT * (rank + 1) / CS) - kt0;

  // the output pixels of this thread's A rows: where their input window starts (rows past M: never inside)
  int iy0[kBM / 32], ix0[kBM / 32];
  const __half* xn[kBM / 32];
#pragma unroll
  for (int i = 0; i < kBM / 32; ++i) {
    const int m = m0 + r0 + 32 * i;
    const int n = m / p.HoWo, rem = m - n * p.HoWo, oy = rem / p.Wo, ox = rem - oy * p.Wo;
    iy0[i] = m < p.M ? oy * p.stride - p.pad_h : -(1 << 30);
    ix0[i] = ox * p.stride - p.pad_w;
    xn[i] = p.x + (int64_t)(m < p.M ? n : 0) * p.H * p.W * p.C + c * 8;
  }
  auto load = [&](int stage, int kt) {
    const uint32_t a_s = sbase + stage * kStage, b_s = a_s + kBM * 128;
    const int k0 = kt * kBK, tap = k0 / p.C, c0 = k0 - tap * p.C, ky = tap / p.kw, kx = tap - ky * p.kw;
#pragma unroll
    for (int i = 0; i < kBM / 32; ++i) {
      const int r = r0 + 32 * i, iy = iy0[i] + ky, ix = ix0[i] + kx;
      const bool in = (unsigned)iy < (unsigned)p.H && (unsigned)ix < (unsigned)p.W;
      cp_async_to(a_s + r * 128 + ((c ^ (r & 7)) << 4), in ? xn[i] + ((int64_t)iy * p.W + ix) * p.C + c0 : p.x, in);
    }
#pragma unroll
    for (int i = 0; i < BN / 32; ++i) {
      const int r = r0 + 32 * i;
      cp_async_to(b_s + r * 128 + ((c ^ (r & 7)) << 4), p.w + (int64_t)(n0 + r) * p.K + k0 + c * 8, true);
    }
  };

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < total) load(s, kt0 + s);
    cp_async_commit_group();
  }
  int stage = 0, ld_stage = kAhead;
  for (int it = 0; it < total; ++it) {
    cp_async_wait_group<kAhead - 1>();  // this thread's copies of step it
    if (!p.nofence) fence_proxy_async();  // made visible to the MMAs (async proxy)
    __syncthreads();                    // everyone's; and step it - 1's MMAs (waited for below) are done with the stage refilled next
    const uint32_t st0 = sbase + stage * kStage;
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    const uint64_t da = desc_sw128(st0 + wg * 64 * 128), db = desc_sw128(st0 + kBM * 128);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) mma_step<BN>(acc, da + kk * 2, db + kk * 2, it > 0 || kk > 0);
    wgmma_commit();
    if (it + kAhead < total) load(ld_stage, kt0 + it + kAhead);
    cp_async_commit_group();
    ld_stage = ld_stage + 1 == STAGES ? 0 : ld_stage + 1;
    wgmma_wait<0>();  // the block is bound by its loads: STAGES - 1 steps in flight matter more than overlapped MMAs
  }
  wgmma_wait<0>();
  cp_async_wait_group<0>();
  __syncthreads();  // the ring is free: the partial tile takes its place

  const int row_a = wg * 64 + warp * 16 + g;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = 8 * j + 2 * t;
    *reinterpret_cast<float2*>(red + row_a * kLd + col) = make_float2(acc[4 * j], acc[4 * j + 1]);
    *reinterpret_cast<float2*>(red + (row_a + 8) * kLd + col) = make_float2(acc[4 * j + 2], acc[4 * j + 3]);
  }
  cluster.sync();  // every block's partial tile written (and visible across the cluster)
  constexpr int C4 = BN / 4;
  const int rows = (kBM - rank + CS - 1) / CS;
  for (int idx = tid; idx < rows * C4; idx += kThreads) {
    const int row = rank + (idx / C4) * CS, col = (idx % C4) * 4, gm = m0 + row;
    if (gm >= p.M) continue;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int q = 0; q < CS; ++q) {
      const float4 v = *cluster.map_shared_rank(reinterpret_cast<float4*>(red + row * kLd + col), q);
      s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
    }
    const int64_t o = (int64_t)gm * p.O + n0 + col;
    if (p.b) {
      const uint2 bb = *reinterpret_cast<const uint2*>(p.b + n0 + col);
      const float2 b01 = __half22float2(*reinterpret_cast<const __half2*>(&bb.x)), b23 = __half22float2(*reinterpret_cast<const __half2*>(&bb.y));
      s.x += b01.x, s.y += b01.y, s.z += b23.x, s.w += b23.y;
    }
    if (p.r) {
      const uint2 rr = *reinterpret_cast<const uint2*>(p.r + o);
      const float2 r01 = __half22float2(*reinterpret_cast<const __half2*>(&rr.x)), r23 = __half22float2(*reinterpret_cast<const __half2*>(&rr.y));
      s.x += r01.x, s.y += r01.y, s.z += r23.x, s.w += r23.y;
    }
    const __half2 lo = __floats2half2_rn(s.x, s.y), hi = __floats2half2_rn(s.z, s.w);
    uint2 out;
    out.x = *reinterpret_cast<const uint32_t*>(&lo), out.y = *reinterpret_cast<const uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(p.y + o) = out;
  }
  cluster.sync();  // no block leaves while another still reads its partial tile
#endif
}

// Stages: as many as 192 KB hold (8 of 24 KB for 64-channel tiles, 6 of 32 KB for 128), all but one in flight -
// a block's bytes in flight are what bound it (the first form, two steps ahead of 4 stages, moved the batch-2 8x8
// level's 29.5 MB convolution at 1.3 TB/s on the H100: 0.0223 ms against im2col + cuBLASLt's 0.0161)
constexpr int kStages64 = 8, kStages128 = 6;
struct Form {
  const char* name;
  int bn, cs;
  const void* kernel;
  size_t smem;
};
template <int BN>
constexpr Form form(const char* name, int cs) {
  constexpr int S = BN == 64 ? kStages64 : kStages128;
  return {name, BN, cs, (const void*)conv_splitk_k<BN, S>, smem_need<BN, S>()};
}
const Form kForms[] = {
    form<64>("b64c1", 1),   form<64>("b64c2", 2),   form<64>("b64c4", 4),   form<64>("b64c8", 8),
    form<128>("b128c1", 1), form<128>("b128c2", 2), form<128>("b128c4", 4), form<128>("b128c8", 8),
};
constexpr int kNumForms = sizeof(kForms) / sizeof(kForms[0]);

bool hopper_device() {
  static HopperOnce once;
  return hopper_once(once, [] {
    for (const Form& f : kForms)
      if (cudaFuncSetAttribute(f.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)f.smem) != cudaSuccess) return false;
    return true;
  });
}

bool aligned(const void* p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

template <int BN, int STAGES>
cudaError_t launch(const Form& f, dim3 grid, const SplitkArgs& a, cudaStream_t s) {
  if (f.cs == 1) {
    launch_kernel(conv_splitk_k<BN, STAGES>, grid, kThreads, f.smem, s, a);
    return cudaGetLastError();
  }
  const cudaLaunchAttribute cl = cluster_attr((unsigned)f.cs);
  if (dependent_launch()) {
    if (launch_with({cl, programmatic_attr()}, conv_splitk_k<BN, STAGES>, grid, dim3(kThreads), f.smem, s, a) == cudaSuccess) {
      count_dependent_launch();
      return cudaSuccess;
    }
    cudaGetLastError();
  }
  return launch_with({cl}, conv_splitk_k<BN, STAGES>, grid, dim3(kThreads), f.smem, s, a);
}

std::atomic<int64_t> g_runs{0};

}  // namespace

int conv_splitk_forms() { return kNumForms; }
const char* conv_splitk_form_name(int form) { return form >= 0 && form < kNumForms ? kForms[form].name : "?"; }
int conv_splitk_form_by_name(const char* name) {
  for (int i = 0; i < kNumForms; ++i)
    if (std::strcmp(kForms[i].name, name) == 0) return i;
  return -1;
}

bool conv_splitk_applies(int form, const ConvSplitkShape& s) {
  if (form < 0 || form >= kNumForms) return false;
  const Form& f = kForms[form];
  constexpr int64_t kMax = int64_t(1) << 31;
  const int64_t K = s.kh * s.kw * s.C, M = s.N * s.Ho * s.Wo;
  if (s.N <= 0 || s.H <= 0 || s.W <= 0 || s.C <= 0 || s.O <= 0 || s.kh <= 0 || s.kw <= 0 || s.stride <= 0 || s.Ho <= 0 || s.Wo <= 0 || s.pad_h < 0 ||
      s.pad_w < 0)
    return false;
  if (s.C % kBK || s.O % f.bn || K / kBK < f.cs || K >= kMax || M >= kMax || s.N * s.H * s.W * s.C >= kMax || s.O * K >= kMax || M * s.O >= kMax)
    return false;
  if ((M + kBM - 1) / kBM > 65535 || s.H + 2 * s.pad_h >= (1 << 20) || s.W + 2 * s.pad_w >= (1 << 20)) return false;
  return hopper_device();
}

cudaError_t conv_splitk(int form, const __half* x, const __half* w, const __half* b, const __half* r, __half* y, const ConvSplitkShape& s,
                        cudaStream_t stream) {
  if (!conv_splitk_applies(form, s) || !aligned(x, 16) || !aligned(w, 16) || !aligned(y, 16) || (r && !aligned(r, 16)) || (b && !aligned(b, 8)))
    return cudaErrorNotSupported;
  const Form& f = kForms[form];
  const int64_t M = s.N * s.Ho * s.Wo;
  // SDRT_SPLITK_NOFENCE=1 (a diagnostic, not a form: the MMAs may then read stale shared memory): whether the
  // per-step latency measured in the twentieth session is the proxy fence waiting for every copy in flight
  const char* nf = std::getenv("SDRT_SPLITK_NOFENCE");
  const SplitkArgs a{x, w, b, r, y, (int)s.H, (int)s.W, (int)s.C, (int)s.O, (int)s.kw, (int)s.stride, (int)s.pad_h, (int)s.pad_w,
                     (int)(s.Ho * s.Wo), (int)s.Wo, (int)M, (int)(s.kh * s.kw * s.C), nf && std::strcmp(nf, "1") == 0};
  const dim3 grid((unsigned)(s.O / f.bn * f.cs), (unsigned)((M + kBM - 1) / kBM));
  const cudaError_t e = f.bn == 64 ? launch<64, kStages64>(f, grid, a, stream) : launch<128, kStages128>(f, grid, a, stream);
  if (e == cudaSuccess) ++g_runs;
  return e;
}

}  // namespace sdrt::cuda

int64_t sdrt::cuda_splitk_conv_runs() { return sdrt::cuda::g_runs.load(); }
