// Convolutions with at most 8 output channels (SD's UNet conv_out: 320 -> 4; the VAE decoder's: 128 -> 3) as
// one tensor-core kernel. cuDNN runs them as a general implicit GEMM with N = O padded to its tile - on the
// H100 a batch-2 UNet conv_out took a 13 us kernel of 128 blocks plus two padding kernels and a bias kernel
// (22 us under ncu, nineteenth session) for 0.19 GFLOP. Here the GEMM's N is 8, one mma.sync m16n8k16 tile
// wide: a block takes 16 output pixels and its warps split the K = kh kw C reduction (chunk q of 16: tap
// q / (C / 16), channels 16 (q % (C / 16)) onward), loading their A fragments (two pixels' channel pairs)
// and B fragments (filter rows) straight from global memory - the input's 3x3 neighbourhoods are read
// from L1/L2, the filter is a few tens of KB - then sum their partial tiles in shared memory in a fixed
// order (deterministic) and write bias (+ residual) applied outputs.
//
// Two forms: the staged one below (stride 1: a block's input rows in shared memory) and this first one for
// the rest. An experiment (SDRT_CONV_NARROW=1 forces it, =timed times it beside cuDNN's forms): correct
// (nmse ~1e-7 against the CPU). In a graph against cuDNN's kernel + padding + bias (H100, twenty-second
// session, `bench/results/cuda-h100-session22/narrow2-timing.txt`): SD's conv_out at batch 2 0.0164 against
// 0.0176 ms (the first form took 0.0241 against 0.0174 on the H200), but 0.1116 against 0.0753 at 16 rows and
// 0.1147 against 0.1086 for the VAE's 512x512 conv_out: each input row is staged three times (once per
// output row under it) and a block's 8 warps share one tile's small MMAs, so the larger shapes lose. Timed by
// default it would save ~1 us of a batch-2 step; left opt-in.
#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/flash_common.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/nhwc_kernels.cuh"

namespace sdrt::cuda {
namespace {

constexpr int kWarps = 8, kUnroll = 4;

struct NarrowConv {
  const __half *x, *w, *b, *r;
  __half* y;
  int64_t M;  // output pixels N Ho Wo
  int H, W, C, O, kh, kw, stride, pad_h, pad_w, Ho, Wo;
};

__device__ __forceinline__ uint32_t ld32(const __half* p) { return __ldg(reinterpret_cast<const unsigned int*>(p)); }

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// output channel o of pixel pix: the summed tile value s plus bias and residual, as FP16
__device__ __forceinline__ void store_out(const NarrowConv& p, int64_t pix, int o, float s) {
  if (p.b) s += __half2float(p.b[o]);
  if (p.r) s += __half2float(p.r[pix * p.O + o]);
  p.y[pix * p.O + o] = __float2half(s);
}

__global__ void __launch_bounds__(kWarps * 32) conv_narrow_k(NarrowConv p) {
  dep_entry();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t pix0 = (int64_t)blockIdx.x * 16;
  // this thread's two A rows: output pixels pix0 + g and pix0 + g + 8 (row 0 and row 1 below)
  int iy0[2], ix0[2];
  const __half* xb[2];
  bool live[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t pix = pix0 + g + 8 * r;
    live[r] = pix < p.M;
    const int64_t q = live[r] ? pix : 0;
    const int ox = (int)(q % p.Wo), oy = (int)((q / p.Wo) % p.Ho);
    const int64_t n = q / ((int64_t)p.Wo * p.Ho);
    iy0[r] = oy * p.stride - p.pad_h;
    ix0[r] = ox * p.stride - p.pad_w;
    xb[r] = p.x + n * p.H * p.W * (int64_t)p.C + 2 * t;
  }
  const bool ocol = g < p.O;  // this thread's B column: output channel g
  const __half* wb = p.w + (int64_t)(ocol ? g : 0) * p.kh * p.kw * p.C + 2 * t;
  const int cchunks = p.C / 16, chunks = p.kh * p.kw * cchunks;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int q0 = warp; q0 < chunks; q0 += kWarps * kUnroll) {
    uint32_t a[kUnroll][4], bf[kUnroll][2];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int q = q0 + u * kWarps;
      a[u][0] = a[u][1] = a[u][2] = a[u][3] = 0u;
      bf[u][0] = bf[u][1] = 0u;
      if (q >= chunks) continue;
      const int tap = q / cchunks, c0 = (q - tap * cchunks) * 16, ky = tap / p.kw, kx = tap - ky * p.kw;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int iy = iy0[r] + ky, ix = ix0[r] + kx;
        if (live[r] && iy >= 0 && iy < p.H && ix >= 0 && ix < p.W) {
          const __half* s = xb[r] + ((int64_t)iy * p.W + ix) * p.C + c0;
          a[u][r] = ld32(s);          // a0 / a1: rows g / g + 8, columns 2t, 2t + 1
          a[u][r + 2] = ld32(s + 8);  // a2 / a3: columns 2t + 8, 2t + 9
        }
      }
      if (ocol) {
        const __half* s = wb + (int64_t)tap * p.C + c0;
        bf[u][0] = ld32(s);      // b0: k rows 2t, 2t + 1 of column g
        bf[u][1] = ld32(s + 8);  // b1: k rows 2t + 8, 2t + 9
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) mma16816(acc, a[u], bf[u][0], bf[u][1]);
  }
  // the warps' partial tiles summed in a fixed order; c0, c1: row g, channels 2t, 2t + 1; c2, c3: row g + 8
  __shared__ float part[kWarps][4][32];
#pragma unroll
  for (int j = 0; j < 4; ++j) part[warp][j][lane] = acc[j];
  __syncthreads();
  if (warp) return;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) s += part[k][j][lane];
    const int r = j >> 1, o = 2 * t + (j & 1);
    const int64_t pix = pix0 + g + 8 * r;
    if (pix >= p.M || o >= p.O) continue;
    store_out(p, pix, o, s);
  }
}

// The staged form (stride 1, the whole filter window's input rows in shared memory): a block takes kTw
// consecutive output pixels of one output row, stages the kh input rows under them ((kTw + kw - 1) pixels of
// C channels each, zeros past the borders) with 16-byte cp.async copies, one group per row so that a row's
// taps start once it landed; its warps read the A fragments with ldmatrix (a pixel's channels padded by 8
// halves: the 8 rows of each 8x8 matrix fall on distinct banks) and the B fragments (filter rows, a few tens
// of KB, L1-resident) from global memory. Warp w takes m-tile w % kMt of the kTw pixels and every
// (kWarps / kMt)-th 16-channel step of each tap (loops without divisions); the partial tiles are summed in a
// fixed order.
constexpr int kTw = 32, kMt = kTw / 16;

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&a)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n" : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
}

__global__ void __launch_bounds__(kWarps * 32) conv_narrow_staged_k(NarrowConv p) {
  dep_entry();
  extern __shared__ __align__(16) __half xs[];  // [kh][PW][CS]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int PW = kTw + p.kw - 1, CS = p.C + 8, Cv = p.C / 8;
  const int tiles_x = (p.Wo + kTw - 1) / kTw;
  const int tx = (int)(blockIdx.x % tiles_x);
  const int64_t row = blockIdx.x / tiles_x;  // (n, oy)
  const int oy = (int)(row % p.Ho);
  const int64_t n = row / p.Ho;
  const int ox0 = tx * kTw, ix0 = ox0 - p.pad_w, iy0 = oy - p.pad_h;
  const __half* xn = p.x + n * p.H * p.W * (int64_t)p.C;
  // one copy group per input row: the taps of row ky start once rows 0..ky landed
  for (int ky = 0; ky < p.kh; ++ky) {
    const int iy = iy0 + ky;
    const bool row_in = iy >= 0 && iy < p.H;
    for (int i = threadIdx.x; i < PW * Cv; i += blockDim.x) {
      const int c = i % Cv, px = i / Cv, ix = ix0 + px;
      const bool in = row_in && ix >= 0 && ix < p.W;
      flash::cp_async16(xs + (ky * PW + px) * CS + c * 8, in ? xn + ((int64_t)iy * p.W + ix) * p.C + c * 8 : p.x, in ? 16 : 0);
    }
    flash::cp_async_commit();
  }

  const int mt = warp % kMt, kstride = kWarps / kMt, cchunks = p.C / 16;
  // ldmatrix rows: lanes 0-7 matrix 0 (pixels 0-7, channels 0-7 of the step), 8-15 matrix 1 (pixels 8-15),
  // 16-23 matrix 2 (pixels 0-7, channels 8-15), 24-31 matrix 3: a0..a3 of mma.sync's A fragment
  const int lrow = mt * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), lk = 8 * (lane >> 4);
  const uint32_t xbase = (uint32_t)__cvta_generic_to_shared(xs) + (uint32_t)(lrow * CS + lk) * 2u;
  const bool ocol = g < p.O;
  const __half* wb = p.w + (int64_t)(ocol ? g : 0) * p.kh * p.kw * p.C + 2 * t;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int ky = 0; ky < p.kh; ++ky) {
    const int pending = p.kh - 1 - ky;  // row groups that may still be in flight
    if (pending >= 2) flash::cp_async_wait<2>();
    else if (pending == 1) flash::cp_async_wait<1>();
    else flash::cp_async_wait<0>();
    __syncthreads();
    for (int kx = 0; kx < p.kw; ++kx) {
      const uint32_t xa = xbase + (uint32_t)((ky * PW + kx) * CS) * 2u;
      const __half* w = wb + (int64_t)(ky * p.kw + kx) * p.C;
#pragma unroll 4
      for (int cc = warp / kMt; cc < cchunks; cc += kstride) {
        uint32_t a[4];
        ldmatrix_x4(a, xa + (uint32_t)cc * 32u);
        const uint32_t b0 = ocol ? ld32(w + cc * 16) : 0u, b1 = ocol ? ld32(w + cc * 16 + 8) : 0u;
        mma16816(acc, a, b0, b1);
      }
    }
  }
  __shared__ float part[kWarps][4][32];
#pragma unroll
  for (int j = 0; j < 4; ++j) part[warp][j][lane] = acc[j];
  __syncthreads();
  if (warp >= kMt) return;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float s = 0.f;
    for (int k = warp; k < kWarps; k += kMt) s += part[k][j][lane];
    const int o = 2 * t + (j & 1), ox = ox0 + mt * 16 + g + 8 * (j >> 1);
    if (ox >= p.Wo || o >= p.O) continue;
    const int64_t pix = row * p.Wo + ox;
    store_out(p, pix, o, s);
  }
}

// shared memory of the staged form, or 0 where it does not apply (stride 1, at most 110 KB: two blocks per SM)
size_t staged_smem(int64_t C, int64_t kh, int64_t kw, int64_t stride) {
  const size_t bytes = (size_t)kh * (kTw + kw - 1) * (C + 8) * 2;
  return stride == 1 && bytes <= (size_t)110 << 10 ? bytes : 0;
}

}  // namespace

bool conv_narrow_applies(int64_t C, int64_t O) { return O >= 1 && O <= 8 && C >= 16 && C % 16 == 0; }

void conv_narrow_nhwc(const __half* x, const __half* w, const __half* b, const __half* r, __half* y, int64_t N, int64_t H, int64_t W, int64_t C,
                      int64_t O, int64_t kh, int64_t kw, int64_t stride, int64_t pad_h, int64_t pad_w, int64_t Ho, int64_t Wo, cudaStream_t s) {
  NarrowConv p{x, w, b, r, y, N * Ho * Wo, (int)H, (int)W, (int)C, (int)O, (int)kh, (int)kw, (int)stride, (int)pad_h, (int)pad_w, (int)Ho, (int)Wo};
  if (const size_t smem = staged_smem(C, kh, kw, stride);
      smem > 0 && cudaFuncSetAttribute(conv_narrow_staged_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == cudaSuccess) {  // per device
    launch_kernel(conv_narrow_staged_k, (unsigned)(N * Ho * ((Wo + kTw - 1) / kTw)), kWarps * 32, smem, s, p);
  } else {
    launch_kernel(conv_narrow_k, (unsigned)((p.M + 15) / 16), kWarps * 32, 0, s, p);
  }
}

}  // namespace sdrt::cuda
