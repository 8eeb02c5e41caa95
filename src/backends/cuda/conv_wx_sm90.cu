// The fused Winograd F(2, 3)-along-x convolution (see conv_wx.h).
//
// A region is R output rows x TW tiles (2 TW columns) x 64 output channels of one image; a block (one an SM,
// looping over regions) has two MMA
// warpgroups of 64 tiles each (warp w's 16 tiles are its A rows) and a producer warpgroup: 384 threads start
// with 168 registers each, then the producer gives back all but 40 and the MMA warpgroups take 232. K runs over
// chunks of 64 input channels; for each chunk the producer loads the input region under the block - (R + 2) rows x
// (2 TW + 2) columns x 64 channels, coordinates from (oy0 - 1, ox0 - 1), zeros past the image's border - with
// one TMA copy in the 128-byte swizzle (a pixel's 64 channels are one 128-byte row), and for each filter row
// ky the four positions' transformed weights (4 x [64 channels x 64 outputs], 32 KB) into the slot of that ky.
// Each K step of 16 channels (two at a time), a thread loads its two tiles' four input columns (four channels each: one
// 8-byte load per pixel) under row ky, forms V_p in half2 additions and issues the four positions' MMAs
// (m64n64k16, A from registers, B the slot's tile of position p). The channel order inside 16 is the one
// those 8-byte loads give (channels 4t..4t+3 of a thread are its fragment's columns 2t, 2t+1, 2t+8, 2t+9);
// conv_wx_prepare writes the weights' K in the same order.
#include "backends/cuda/conv_wx.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/sm90_common.cuh"
#include "backends/cuda/sm90_host.h"
#include "graph/backend.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace sdrt::cuda {
namespace {

constexpr int kBN = 64, kChunk = 64, kThreads = 384;  // two MMA warpgroups and the producer's
constexpr int kWSlot = 4 * kBN * 128;  // the four positions' [64 outputs x 64 channels] tiles of one ky

template <int R, int TW>
struct Cfg {
  static_assert(R * TW == 128, "two warpgroups of 64 tiles");
  static constexpr int kCols = 2 * TW + 2, kRows = R + 2;
  static constexpr int kInBytes = kRows * kCols * 128;
  static constexpr int kInSlot = (kInBytes + 1023) / 1024 * 1024;
  static constexpr int kBars = 2 * kInSlot + 3 * kWSlot;  // in_full[2], in_empty[2], w_full[3], w_empty[3]
  static constexpr size_t kSmem = (size_t)kBars + 10 * 8 + 1024;
};

struct WxArgs {
  const __half *b, *r;
  __half* y;
  int H, W, O, KC;  // KC: chunks of 64 input channels
  int nbx, nby;        // blocks across a row of tiles, down an image
  int nco, regions, blocks;  // output-channel blocks; regions (nco x spatial blocks); blocks launched
};

#ifdef SDRT_SM90A
#define SDRT_WX_WGMMA 1
using namespace sm90;
__device__ __forceinline__ uint2 lds64(uint32_t a) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(a));
  return v;
}
#endif

// KS: K steps of 16 channels whose MMAs are issued together before the wait for them (the next ones' input
// loads in between): fewer waits, each covering more MMAs. (Leaving one step's MMAs running while the next
// step's A fragments are built, ptxas serializes them: C7513.)
// Persistent: as many blocks as fit at once (one an SM), each looping over regions (output-channel block
// fastest), one every p.blocks, the producer loading the next region's first chunks while the MMA warps
// finish this one's and write it out.
// The third warpgroup is the producer: its first thread issues every copy, in the order the MMA warps use them,
// each once its slot is free (chunk gc's row-ky weights once all MMA warps are done with chunk gc - 1's, its
// input once they are done with chunk gc - 2's); the MMA warps only ever wait for data. Each K step's input
// loads are issued before the wait for the previous step's MMAs.
template <int R, int TW, int KS>
__global__ void __launch_bounds__(kThreads, 1)
    conv_wx_k(const __grid_constant__ CUtensorMap tx, const __grid_constant__ CUtensorMap tw, const WxArgs p) {
  dep_entry();
#ifdef SDRT_WX_WGMMA
  using C = Cfg<R, TW>;
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
  const uint32_t in_slot = sbase, w_slot = sbase + 2 * C::kInSlot, bars = sbase + C::kBars;
  const uint32_t in_full = bars, in_empty = bars + 16, w_full = bars + 32, w_empty = bars + 56;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (tid == 0) {
    for (int i = 0; i < 2; ++i) mbar_init(in_full + 8 * i, 1), mbar_init(in_empty + 8 * i, 8);
    for (int i = 0; i < 3; ++i) mbar_init(w_full + 8 * i, 1), mbar_init(w_empty + 8 * i, 8);  // empty: the 8 MMA warps
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  const int b0 = (int)blockIdx.x;
  const int J = b0 < p.regions ? (p.regions - 1 - b0) / p.blocks + 1 : 0;  // this block's regions
  struct Where {
    int co0, n, oy0, ox0;
  };
  auto where = [&](int j) {  // the block's j-th region: gi = b0 + j * blocks
    const int gi = b0 + j * p.blocks, sb = gi / p.nco;
    const int bx = sb % p.nbx, by = (sb / p.nbx) % p.nby;
    return Where{(gi % p.nco) * kBN, sb / (p.nbx * p.nby), by * R, bx * 2 * TW};
  };

  if (warp >= 8) {  // the producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp == 8 && lane == 0) {
      const int total = J * p.KC;
      auto load_input = [&](int gc, const Where& w) {  // chunk gc's input into slot gc % 2, once the MMA warps are done with chunk gc - 2
        const int is = gc & 1;
        if (gc >= 2) mbar_wait_bounded(in_empty + 8 * is, (uint32_t)((gc - 2) >> 1) & 1);
        mbar_expect_tx(in_full + 8 * is, C::kInBytes);
        tma_load_4d(in_slot + is * C::kInSlot, &tx, (gc % p.KC) * kChunk, w.ox0 - 1, w.oy0 - 1, w.n, in_full + 8 * is);
      };
      if (total > 0) load_input(0, where(0));
      for (int gc = 0; gc < total; ++gc) {
        const Where w = where(gc / p.KC);
        const int k0 = (gc % p.KC) * kChunk;
        for (int ky = 0; ky < 3; ++ky) {  // chunk gc's row-ky weights into slot ky, once (gc - 1, ky) is done with
          if (gc >= 1) mbar_wait_bounded(w_empty + 8 * ky, (uint32_t)(gc - 1) & 1);
          mbar_expect_tx(w_full + 8 * ky, kWSlot);
#pragma unroll
          for (int q = 0; q < 4; ++q) tma_load_2d(w_slot + ky * kWSlot + q * (kBN * 128), &tw, k0, (q * 3 + ky) * p.O + w.co0, w_full + 8 * ky);
        }
        if (gc + 1 < total) load_input(gc + 1, where((gc + 1) / p.KC));
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    // the MMA warps: warpgroup cw's tiles cw * 64 + 16 wq + g (+ 8)
    const int cw = warp >> 2, wq = warp & 3, g = lane >> 2, t = lane & 3;
    int pix[2];  // the tiles' first input pixel (row ty, column 2 tx) in the region, ky = 0
#pragma unroll
    for (int tl = 0; tl < 2; ++tl) {
      const int m = cw * 64 + wq * 16 + g + 8 * tl, tr = m / TW, tc = m % TW;
      pix[tl] = tr * C::kCols + 2 * tc;
    }
    const uint32_t half_off = 8u * (t & 1);
    float acc[4][32];
    for (int j = 0; j < J; ++j) {
      // (no zeroing: a region's first MMAs ignore the accumulators, so that only MMAs write them - ptxas would
      // serialize the MMAs otherwise)
      for (int c = 0; c < p.KC; ++c) {
        const int gc = j * p.KC + c, is = gc & 1;
        mbar_wait_bounded(in_full + 8 * is, (gc >> 1) & 1);
        const uint32_t in_base = in_slot + is * C::kInSlot;
#pragma unroll 1
        for (int ky = 0; ky < 3; ++ky) {
          mbar_wait_bounded(w_full + 8 * ky, gc & 1);
          const uint64_t db = desc_sw128(w_slot + ky * kWSlot);
          uint32_t d[KS][2][2][4];  // [sub-step][tile][channel pair][input column] of K steps ks..ks + KS - 1
          auto load = [&](int ks) {
#pragma unroll
            for (int u = 0; u < KS; ++u) {
              const uint32_t chunk = 2 * (ks + u) + (t >> 1);
#pragma unroll
              for (int tl = 0; tl < 2; ++tl)
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) {
                  const uint32_t P = (uint32_t)(pix[tl] + ky * C::kCols + jj);
                  const uint2 v = lds64(in_base + P * 128 + ((chunk ^ (P & 7)) << 4) + half_off);
                  d[u][tl][0][jj] = v.x, d[u][tl][1][jj] = v.y;
                }
            }
          };
          load(0);
#pragma unroll
          for (int ks = 0; ks < kChunk / 16; ks += KS) {
            // [sub-step][position][fragment register]: {tile 0 pair 0, tile 1 pair 0, tile 0 pair 1, tile 1 pair 1}
            uint32_t f[KS][4][4];
#pragma unroll
            for (int u = 0; u < KS; ++u)
#pragma unroll
              for (int tl = 0; tl < 2; ++tl)
#pragma unroll
                for (int cp = 0; cp < 2; ++cp) {
                  const int r = tl + 2 * cp;
                  f[u][0][r] = hsub2(d[u][tl][cp][0], d[u][tl][cp][2]);
                  f[u][1][r] = hadd2(d[u][tl][cp][1], d[u][tl][cp][2]);
                  f[u][2][r] = hsub2(d[u][tl][cp][2], d[u][tl][cp][1]);
                  f[u][3][r] = hsub2(d[u][tl][cp][1], d[u][tl][cp][3]);
                }
            wgmma_fence();
#pragma unroll
            for (int u = 0; u < KS; ++u)
#pragma unroll
              for (int q = 0; q < 4; ++q)
                wgmma_rs_n64(acc[q], f[u][q], db + (uint64_t)(q * (kBN * 128 / 16)) + 2 * (ks + u), (c | ky | ks | u) != 0);
            wgmma_commit();
            if (ks + KS < kChunk / 16) load(ks + KS);  // into d, which the MMAs in flight do not read
            wgmma_wait<0>();  // the fragments' registers are rewritten next step
          }
          if (lane == 0) mbar_arrive(w_empty + 8 * ky);
        }
        if (lane == 0) mbar_arrive(in_empty + 8 * is);
      }

      // the inverse transform, bias and residual: outputs (oy, ox) and (oy, ox + 1) of each tile
      const Where w = where(j);
#pragma unroll
      for (int tl = 0; tl < 2; ++tl) {
        const int m = cw * 64 + wq * 16 + g + 8 * tl, oy = w.oy0 + m / TW, ox = w.ox0 + 2 * (m % TW);
        if (oy >= p.H || ox >= p.W) continue;
        const int64_t base = (((int64_t)w.n * p.H + oy) * p.W + ox) * p.O;
        const bool second = ox + 1 < p.W;
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
          const int e = 4 * jj + 2 * tl, co = w.co0 + 8 * jj + 2 * t;
          float y0[2], y1[2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            y0[h] = acc[0][e + h] + acc[1][e + h] + acc[2][e + h];
            y1[h] = acc[1][e + h] - acc[2][e + h] - acc[3][e + h];
          }
          if (p.b) {
            const float2 bb = __half22float2(*reinterpret_cast<const __half2*>(p.b + co));
            y0[0] += bb.x, y0[1] += bb.y, y1[0] += bb.x, y1[1] += bb.y;
          }
          if (p.r) {
            const float2 r0 = __half22float2(*reinterpret_cast<const __half2*>(p.r + base + co));
            y0[0] += r0.x, y0[1] += r0.y;
            if (second) {
              const float2 r1 = __half22float2(*reinterpret_cast<const __half2*>(p.r + base + p.O + co));
              y1[0] += r1.x, y1[1] += r1.y;
            }
          }
          *reinterpret_cast<__half2*>(p.y + base + co) = __floats2half2_rn(y0[0], y0[1]);
          if (second) *reinterpret_cast<__half2*>(p.y + base + p.O + co) = __floats2half2_rn(y1[0], y1[1]);
        }
      }
    }
  }
#else
  (void)tx, (void)tw, (void)p;
#endif
}

// wt[(q * 3 + ky) * O + o][16 b + k] = U_q(o, ky, channel 16 b + phys(k)), U = G g over the filter row's taps
__global__ void conv_wx_prepare_k(const __half* __restrict__ w, __half* __restrict__ wt, int64_t O, int64_t C) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;  // over [O][3][C] (o, ky, logical channel)
  if (i >= O * 3 * C) return;
  const int64_t cl = i % C, ky = (i / C) % 3, o = i / (3 * C);
  const int k = (int)(cl & 15);
  const int64_t c = (cl & ~int64_t(15)) + (k < 8 ? 4 * (k >> 1) + (k & 1) : 4 * ((k - 8) >> 1) + 2 + (k & 1));
  const __half* src = w + ((o * 3 + ky) * 3) * C + c;
  const float g0 = __half2float(src[0]), g1 = __half2float(src[C]), g2 = __half2float(src[2 * C]);
  const float u[4] = {g0, 0.5f * (g0 + g1 + g2), 0.5f * (g0 - g1 + g2), g2};
#pragma unroll
  for (int q = 0; q < 4; ++q) wt[((q * 3 + ky) * O + o) * C + cl] = __float2half_rn(u[q]);
}

// y = conv(x) for one form: its kernel on the operands' tensor maps
template <int R, int TW, int KS>
cudaError_t launch(const __half* x, const __half* wt, const WxArgs& a, const ConvWxShape& s, cudaStream_t stream) {
  using C = Cfg<R, TW>;
  CUtensorMap tx, tw;
  const cuuint64_t xdims[4] = {(cuuint64_t)s.C, (cuuint64_t)s.W, (cuuint64_t)s.H, (cuuint64_t)s.N};
  const cuuint64_t xstrides[3] = {(cuuint64_t)s.C * 2, (cuuint64_t)(s.W * s.C * 2), (cuuint64_t)(s.H * s.W * s.C * 2)};
  const cuuint32_t xbox[4] = {(cuuint32_t)kChunk, (cuuint32_t)C::kCols, (cuuint32_t)C::kRows, 1};
  if (!half_tensor_map(&tx, x, 4, xdims, xstrides, xbox) || !half_matrix_map(&tw, wt, 12 * s.O, s.C, kBN)) return cudaErrorNotSupported;
  launch_kernel(conv_wx_k<R, TW, KS>, dim3((unsigned)a.blocks), kThreads, C::kSmem, stream, tx, tw, a);
  return cudaGetLastError();
}

struct Form {
  const char* name;
  int R, TW;
  const void* kernel;
  size_t smem;
  cudaError_t (*launch)(const __half*, const __half*, const WxArgs&, const ConvWxShape&, cudaStream_t);
};
template <int R, int TW, int KS>
constexpr Form form(const char* name) {
  return {name, R, TW, (const void*)conv_wx_k<R, TW, KS>, Cfg<R, TW>::kSmem, launch<R, TW, KS>};
}
// (R, TW, KS, name). Gone after the twenty-ninth session's measurements (bench_conv_wx on the H100,
// bench/results/session29): one K step a wait (2-9% slower than two), non-persistent forms (a block a region:
// 23-30% slower), clusters sharing the weights by multicast (1.7-2.6x slower).
#define SDRT_WX_FORMS(X) X(4, 32, 2, "wx4x32s2") X(8, 16, 2, "wx8x16s2") X(16, 8, 2, "wx16x8s2")
#define SDRT_WX_FORM(R, TW, KS, NAME) form<R, TW, KS>(NAME),
const Form kForms[] = {SDRT_WX_FORMS(SDRT_WX_FORM)};
#undef SDRT_WX_FORM
constexpr int kNumForms = sizeof(kForms) / sizeof(kForms[0]);

bool hopper_device() {
  static HopperOnce once;
  return hopper_once(once, [] {
    if (!tensor_map_encoder()) return false;
    for (const Form& f : kForms)
      if (cudaFuncSetAttribute(f.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)f.smem) != cudaSuccess) return false;
    return true;
  });
}

bool aligned(const void* p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

// How many blocks of form `form` the GPU holds at once (one an SM where the query fails).
int resident_blocks(int form) {
  static std::array<std::array<int, 64>, 64> cache{};  // [device][form], 0: not asked yet
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64 || form < 0 || form >= 64) return cudaGetLastError(), 1;
  int& n = cache[dev][form];
  if (n > 0) return n;
  const Form& f = kForms[form];
  int sms = 1, per_sm = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f.kernel, kThreads, f.smem) != cudaSuccess || per_sm < 1) per_sm = 1;
  cudaGetLastError();
  n = std::max(1, sms * per_sm);
  return n;
}

}  // namespace

int conv_wx_forms() { return kNumForms; }
const char* conv_wx_form_name(int form) { return form >= 0 && form < kNumForms ? kForms[form].name : "?"; }
int conv_wx_form_by_name(const char* name) {
  for (int i = 0; i < kNumForms; ++i)
    if (std::strcmp(kForms[i].name, name) == 0) return i;
  return -1;
}

bool conv_wx_applies(int form, const ConvWxShape& s) {
  if (form < 0 || form >= kNumForms) return false;
  const Form& f = kForms[form];
  constexpr int64_t kMax = int64_t(1) << 31;
  if (s.N <= 0 || s.H <= 0 || s.W <= 0 || s.C <= 0 || s.O <= 0 || s.C % kChunk || s.O % kBN) return false;
  if (s.N * s.H * s.W * s.C >= kMax || s.N * s.H * s.W * s.O >= kMax || 12 * s.O * s.C >= kMax) return false;
  const int64_t regions = s.N * ((s.H + f.R - 1) / f.R) * ((s.W + 2 * f.TW - 1) / (2 * f.TW)) * (s.O / kBN);
  if (regions >= kMax) return false;
  return hopper_device();
}

cudaError_t conv_wx_prepare(const __half* w, __half* wt, int64_t O, int64_t C, cudaStream_t stream) {
  if (O <= 0 || C <= 0 || C % 16 || 12 * O * C >= (int64_t(1) << 31)) return cudaErrorNotSupported;
  const int64_t n = O * 3 * C;
  conv_wx_prepare_k<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(w, wt, O, C);
  return cudaGetLastError();
}

cudaError_t conv_wx(int form, const __half* x, const __half* wt, const __half* b, const __half* r, __half* y, const ConvWxShape& s,
                    cudaStream_t stream) {
  if (!conv_wx_applies(form, s) || !aligned(x, 16) || !aligned(wt, 16) || !aligned(y, 16) || (r && !aligned(r, 16)) || (b && !aligned(b, 4)))
    return cudaErrorNotSupported;
  const Form& f = kForms[form];
  WxArgs a{b, r, y, (int)s.H, (int)s.W, (int)s.O, (int)(s.C / kChunk), (int)((s.W + 2 * f.TW - 1) / (2 * f.TW)), (int)((s.H + f.R - 1) / f.R),
           (int)(s.O / kBN), 0, 0};
  a.regions = a.nco * a.nbx * a.nby * (int)s.N;
  a.blocks = std::min(a.regions, resident_blocks(form));
  return f.launch(x, wt, a, s, stream);
}

}  // namespace sdrt::cuda

int sdrt::cuda_wx_conv_forms() { return sdrt::cuda::conv_wx_forms(); }
const char* sdrt::cuda_wx_conv_form_name(int form) { return sdrt::cuda::conv_wx_form_name(form); }
