// A GEGLU feed-forward projection as one kernel: y[M, F] = (x w_v^T + b_v) * gelu(x w_g^T + b_g), where w = [w_v; w_g]
// is the linear layer's [2F, K] weight (diffusers' GEGLU: the first half of the projection is the value, the
// second the gate) - against what the engine runs now, cuBLASLt's GEMM to [M, 2F] with the bias in its
// epilogue and then the GEGLU pass over that (geglu_fast). The fused form never writes or reads the
// [M, 2F] intermediate: at batch 16 the first level's is 335 MB per call, and the GEGLU passes took 1.22 ms
// of a 29 ms forward.
//
// The kernel (Hopper, sm_90a): blocks of 128 rows x 64 output columns, two warpgroups of 64 rows; each
// warpgroup's m64n128k16 MMAs compute the 64 value and the 64 gate columns of its rows at once (B's rows:
// the 64 value rows of w, then the 64 matching gate rows), so every thread holds a value and its gate in
// registers and the epilogue is elementwise. K in steps of 64 through a ring of shared-memory stages filled
// by cp.async in the 128-byte-swizzled layout the MMAs read (8 rows of 128 bytes per 1024-byte atom, the
// 16-byte chunk c of row r at chunk c ^ (r % 8): a warp's copies are whole rows, coalesced, and land without
// bank conflicts). Shapes: the SD 1.5 UNet's GEGLU projections, weighted by their count in a forward.
//
// Forms: the 128-byte-swizzled layout with 3 stages (two blocks per SM) and 4, and a fallback in the plain
// core-matrix layout of flash_attention_sm90.cu (descriptors proven there; its copies bank-conflict).
// Status: written in a session without device time left: compiled, not yet run. Each form's output is
// checked against the two-kernel one (max |diff| relative to the largest value, < 1e-2) before it is timed.
//   bench_geglu_gemm --batch 16 --repeats 20
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_bench.cuh"
#include "backends/cuda/common.cuh"
#include "backends/cuda/lt_gemm.h"
#include "backends/cuda/nhwc_kernels.cuh"

namespace {

constexpr int kBM = 128, kBN = 64, kBK = 64, kThreads = 256;
constexpr int kStageBytes = (kBM + 2 * kBN) * kBK * 2;  // A's 128 rows and B's 128 rows of 128 bytes

__global__ void fill_k(__half* x, int64_t n, uint32_t seed, float scale) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  x[i] = __float2half(((float)(bench_hash((uint32_t)i, seed) & 0xFFFF) / 65536.f - 0.5f) * 2.f * scale);
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GG_WGMMA 1
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool in) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(in ? 16 : 0) : "memory");
}

// Matrix descriptor of a K-major tile in the 128-byte swizzle (start address, leading offset unused (1),
// stride offset 1024 bytes between 8-row atoms, layout type 1); the tile starts on a 1024-byte boundary,
// and a K-step of 16 moves the start by 32 bytes.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t saddr) {
  return (uint64_t)((saddr >> 4) & 0x3FFF) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
// Without swizzle (the layout flash_attention_sm90.cu uses): 8-row x 16-byte core matrices, those of one
// 16-byte column block of the 128-row tile contiguous (2048 bytes), so the leading offset (along K) is 2048
// and the stride offset (along rows) 128.
__device__ __forceinline__ uint64_t desc_plain(uint32_t saddr) {
  return (uint64_t)((saddr >> 4) & 0x3FFF) | ((uint64_t)(2048 >> 4) << 16) | ((uint64_t)(128 >> 4) << 32);
}

// d (64 x 128 per warpgroup, FP32) += A B: A and B from shared memory, both K-major, 128-byte swizzled.
__device__ __forceinline__ void wgmma_128(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(1));
}
#endif

// SWZ: the 128-byte-swizzled layout; else the plain core-matrix one (a fallback whose descriptors the
// attention kernel already proved, its copies with 8-way bank conflicts).
template <int STAGES, bool SWZ>
__global__ void __launch_bounds__(kThreads, STAGES <= 3 ? 2 : 1)
    geglu_gemm_k(const __half* __restrict__ x, const __half* __restrict__ w, const __half* __restrict__ bias, __half* __restrict__ y, int M, int K, int F) {
#ifdef GG_WGMMA
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;  // the swizzle atoms' alignment
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int c = tid & 7, r0 = tid >> 3;  // this thread's 16-byte chunk of rows r0 + 32 i
  const int KT = K / kBK;

  auto load = [&](int kt, int stage) {
    const uint32_t a_s = sbase + stage * kStageBytes, b_s = a_s + kBM * 128;
    const int64_t k0 = (int64_t)kt * kBK + c * 8;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = r0 + 32 * i;
      const uint32_t off = SWZ ? r * 128 + ((c ^ (r & 7)) << 4) : c * 2048 + r * 16;
      const int gm = m0 + r;
      cp_async16(a_s + off, x + (int64_t)(gm < M ? gm : 0) * K + k0, gm < M);
      const int wr = r < kBN ? n0 + r : F + n0 + (r - kBN);  // value rows, then their gate rows
      cp_async16(b_s + off, w + (int64_t)wr * K + k0, true);
    }
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<STAGES - 2>();  // this thread's copies of tile kt
    fence_proxy_async();          // made visible to the MMAs (async proxy)
    __syncthreads();              // everyone's; and everyone is done with tile kt - 1's stage
    if (kt + STAGES - 1 < KT) load(kt + STAGES - 1, (kt + STAGES - 1) % STAGES);
    cp_async_commit();
    const uint32_t st0 = sbase + (kt % STAGES) * kStageBytes;
    const uint32_t a_s = st0 + wg * (SWZ ? 64 * 128 : 8 * 128), b_s = st0 + kBM * 128;  // this warpgroup's 64 rows; B's 128
    const uint64_t da = SWZ ? desc_sw128(a_s) : desc_plain(a_s), db = SWZ ? desc_sw128(b_s) : desc_plain(b_s);
    constexpr uint64_t kStep = SWZ ? 32 >> 4 : 2 * 2048 >> 4;  // a K-step of 16: 32 bytes, or two column blocks
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) wgmma_128(acc, da + kk * kStep, db + kk * kStep);
    wgmma_commit();
    wgmma_wait_all();
  }

  // acc[4j + e]: row g (e < 2) or g + 8, column 8j + 2t + (e & 1) of the warpgroup's 128 (j < 8 value, j >= 8 gate)
  const int row_a = m0 + wg * 64 + warp * 16 + g, row_b = row_a + 8;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int col = n0 + 8 * j + 2 * t;
    const float2 bv = __half22float2(*reinterpret_cast<const __half2*>(bias + col));
    const float2 bg = __half22float2(*reinterpret_cast<const __half2*>(bias + F + col));
    auto geglu = [](float v, float gt) { return v * (0.5f * gt * (1.f + erff(gt * 0.70710678118654752f))); };
    if (row_a < M)
      *reinterpret_cast<__half2*>(y + (int64_t)row_a * F + col) =
          __floats2half2_rn(geglu(acc[4 * j] + bv.x, acc[4 * (j + 8)] + bg.x), geglu(acc[4 * j + 1] + bv.y, acc[4 * (j + 8) + 1] + bg.y));
    if (row_b < M)
      *reinterpret_cast<__half2*>(y + (int64_t)row_b * F + col) =
          __floats2half2_rn(geglu(acc[4 * j + 2] + bv.x, acc[4 * (j + 8) + 2] + bg.x), geglu(acc[4 * j + 3] + bv.y, acc[4 * (j + 8) + 3] + bg.y));
  }
#endif
}

template <int STAGES, bool SWZ>
cudaError_t fused(const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s) {
  const size_t smem = (size_t)STAGES * kStageBytes + 1024;  // + alignment slack
  const cudaError_t attr = cudaFuncSetAttribute(geglu_gemm_k<STAGES, SWZ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (attr != cudaSuccess) return attr;
  geglu_gemm_k<STAGES, SWZ><<<dim3((unsigned)(F / kBN), (unsigned)((M + kBM - 1) / kBM)), kThreads, smem, s>>>(x, w, b, y, M, K, F);
  return cudaGetLastError();
}

struct Shape {
  const char* what;
  int64_t tokens, K, F;
  int count;  // per UNet forward
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fused GEGLU projection benchmark"};
  int64_t batch = 16;
  int repeats = 20;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 512));
  app.add_option("--repeats", repeats, "graph launches timed; the median is printed")->check(CLI::Range(1, 10000));
  CLI11_PARSE(app, argc, argv);
  int dev = 0, major = 0, minor = 0;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major != 9 || minor != 0) return std::fprintf(stderr, "the fused kernel is sm_90a code: needs a compute capability 9.0 GPU\n"), 1;

  const Shape shapes[] = {{"level 1 [4096 tok] 320 -> 2x1280", 4096, 320, 1280, 5},
                          {"level 2 [1024 tok] 640 -> 2x2560", 1024, 640, 2560, 5},
                          {"level 3 [256 tok] 1280 -> 2x5120", 256, 1280, 5120, 5},
                          {"mid [64 tok] 1280 -> 2x5120", 64, 1280, 5120, 1}};
  cudaStream_t st;
  CHECK(cudaStreamCreate(&st));
  void* ws = nullptr;
  const size_t ws_bytes = size_t(32) << 20;
  CHECK(cudaMalloc(&ws, ws_bytes));
  auto lt = sdrt::cuda::LtGemm::create(st, ws, ws_bytes);
  if (!lt) return std::fprintf(stderr, "cuBLASLt: %s\n", lt.status().message().c_str()), 1;
  sdrt::cuda::GemmTuning tuning;
  std::printf("GEGLU projection, batch %lld: cuBLASLt GEMM (bias epilogue) + GEGLU pass vs one fused kernel; 10 launches per graph, median of %d\n",
              (long long)batch, repeats);
  std::printf("%-36s %11s %9s %9s %9s %8s   %s\n", "shape", "2-kernel us", "sw128-3", "sw128-4", "plain-3", "best", "max rel diff (each)");
  double sum_ref = 0, sum_fused = 0;
  for (const Shape& sh : shapes) {
    const int64_t M = batch * sh.tokens, K = sh.K, F = sh.F;
    __half *x, *w, *b, *mid, *y0, *y1;
    CHECK(cudaMalloc(&x, M * K * 2));
    CHECK(cudaMalloc(&w, 2 * F * K * 2));
    CHECK(cudaMalloc(&b, 2 * F * 2));
    CHECK(cudaMalloc(&mid, M * 2 * F * 2));
    CHECK(cudaMalloc(&y0, M * F * 2));
    CHECK(cudaMalloc(&y1, M * F * 2));
    fill_k<<<(unsigned)((M * K + 255) / 256), 256, 0, st>>>(x, M * K, 1, 2.f);
    fill_k<<<(unsigned)((2 * F * K + 255) / 256), 256, 0, st>>>(w, 2 * F * K, 2, 1.f / std::sqrt((float)K));
    fill_k<<<(unsigned)((2 * F + 255) / 256), 256, 0, st>>>(b, 2 * F, 3, 0.5f);
    CHECK(cudaGetLastError());
    auto plan = (*lt)->prepare(M, 2 * F, K, true, false, tuning);
    if (!plan) return std::fprintf(stderr, "cuBLASLt plan: %s\n", plan.status().message().c_str()), 1;
    auto two = [&] { return (*lt)->run(*plan, x, w, b, nullptr, mid).is_ok() && sdrt::cuda::geglu_fast(mid, y0, M, F, st); };
    using Fn = cudaError_t (*)(const __half*, const __half*, const __half*, __half*, int, int, int, cudaStream_t);
    const Fn variants[3] = {fused<3, true>, fused<4, true>, fused<3, false>};
    auto median = [&](auto&& body) {
      std::vector<float> t;
      for (int r = 0; r < repeats; ++r) t.push_back(sdrt::cuda::time_in_graph(st, 10, body));
      std::sort(t.begin(), t.end());
      return t[0] < 0 ? -1.0 : t[t.size() / 2] * 1000.0;
    };
    const double us_ref = median(two);
    // correctness first: each fused form's output against the two-kernel one; only matching forms are timed
    std::vector<__half> h0(M * F), h1(M * F);
    double diff[3], us[3], best = -1;
    for (int v = 0; v < 3; ++v) {
      std::fprintf(stderr, "  checking %s, fused form %d\n", sh.what, v);  // a form that faults kills the context: which one
      CHECK(cudaMemsetAsync(y1, 0xFF, M * F * 2, st));  // NaNs: an unwritten element shows
      const cudaError_t e = variants[v](x, w, b, y1, (int)M, (int)K, (int)F, st);
      if (e != cudaSuccess) return std::fprintf(stderr, "%s: fused kernel %d failed: %s\n", sh.what, v, cudaGetErrorString(e)), 1;
      if (!two()) return std::fprintf(stderr, "%s: reference failed\n", sh.what), 1;
      CHECK(cudaStreamSynchronize(st));
      CHECK(cudaMemcpy(h0.data(), y0, M * F * 2, cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(h1.data(), y1, M * F * 2, cudaMemcpyDeviceToHost));
      double md = 0, mx = 0;
      for (int64_t i = 0; i < M * F; ++i) {
        const double a = __half2float(h0[i]), d = std::fabs((double)__half2float(h1[i]) - a);
        md = std::isnan(d) ? INFINITY : std::max(md, d);
        mx = std::max(mx, std::fabs(a));
      }
      diff[v] = md / std::max(mx, 1e-6);
      us[v] = diff[v] < 1e-2 ? median([&] { return variants[v](x, w, b, y1, (int)M, (int)K, (int)F, st) == cudaSuccess; }) : -1.0;
      if (us[v] > 0 && (best < 0 || us[v] < best)) best = us[v];
    }
    std::printf("%-36s %11.2f %9.2f %9.2f %9.2f %7.2fx   %.3g %.3g %.3g%s\n", sh.what, us_ref, us[0], us[1], us[2], best > 0 ? us_ref / best : 0.0, diff[0],
                diff[1], diff[2], best > 0 ? "" : "  (no fused form matched: -1 = not timed)");
    sum_ref += us_ref * sh.count;
    sum_fused += (best > 0 ? best : us_ref) * sh.count;
    for (void* p : {(void*)x, (void*)w, (void*)b, (void*)mid, (void*)y0, (void*)y1}) cudaFree(p);
  }
  std::printf("one forward's GEGLU projections (counts as above): 2-kernel %.1f us, fused %.1f us\n", sum_ref, sum_fused);
  cudaFree(ws);
  return 0;
}
