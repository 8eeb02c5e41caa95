// Flash-style attention (see flash_attention.cuh). One block takes 64 query rows of one (batch, head)
// with 4 warps of 16 rows, or, for long sequences with small heads, 128 rows with 4 warps of 32 rows (two
// MMA row tiles sharing every K/V fragment read from shared memory). Q fragments are held in registers.
// Key/value tiles of 64 rows are staged in shared memory, double-buffered: cp.async brings the next tile
// while this one is used; per tile a warp computes S = Q K^T with mma.sync into registers, updates its
// rows' running max and sum (the rows of an MMA fragment live in a quad of 4 lanes, so row reductions are
// two shuffles), turns S into P (FP16; the A operand layout of the next MMA matches the accumulator
// layout) and accumulates O += P V with V fragments from ldmatrix.trans. Head dims are padded with zeros
// to a multiple of 16 (DP) for Q K^T; P V computes only the 8-column tiles holding real columns (40 of 48
// for SD 1.x's first level). The softmax scale is folded into the exponent (one FMA per score).
#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/flash_attention.cuh"
#include "backends/cuda/flash_common.cuh"
#include "backends/cuda/launch.cuh"

namespace sdrt::cuda {
namespace {

using namespace flash;

constexpr int kKeys = 64;  // key rows per tile

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x2_trans(const __half* p, uint32_t& r0, uint32_t& r1) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(const __half* p, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ uint32_t lds32(const __half* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Stages rows [r0, r0 + ROWS) x columns [0, DP) of a [L, ld] matrix (column offset already applied) into
// shared memory with row stride LD; rows >= L and columns >= D read as zero. The vector path is
// asynchronous (cp.async; the caller commits and waits), the scalar one synchronous.
template <int ROWS, int DP, int LD>
__device__ __forceinline__ void load_tile(__half* sm, const __half* g, int64_t r0, int64_t L, int64_t ld, int D, bool vec) {
  if (vec) {  // D % 8 == 0, ld % 8 == 0, 16-byte aligned: whole 8-element chunks
    constexpr int kChunks = DP / 8;
    for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += blockDim.x) {
      const int r = idx / kChunks, c = (idx % kChunks) * 8;
      const bool in = r0 + r < L && c < D;
      cp_async16(sm + r * LD + c, in ? g + (r0 + r) * ld + c : g, in ? 16 : 0);
    }
  } else {
    for (int idx = threadIdx.x; idx < ROWS * DP; idx += blockDim.x) {
      const int r = idx / DP, c = idx % DP;
      sm[r * LD + c] = (r0 + r < L && c < D) ? g[(r0 + r) * ld + c] : __float2half(0.f);
    }
  }
}

struct Params {
  const __half *q, *k, *v;
  __half* o;
  int64_t H, Lq, Lk, ldq, ldk, ldv, ldo;
  int D;
  float scale_log2;
  bool causal, vec;
};

// ROWS query rows per block, MT 16-row MMA tiles per warp (ROWS / (16 MT) warps; with MT = 2 every K
// and V fragment read from shared memory feeds two MMAs, halving shared-memory traffic per FLOP, which
// bounds small head dims); DP: head dim padded to a multiple of 16 (Q K^T); NV: 8-column tiles of the
// output that hold real columns (P V skips the all-padding ones).
// KS > 1 ("ks4", "ks2": short sequences with big heads, SD's d-160 levels at small batches, where a warp per
// scheduler runs through every key tile alone): KS warps per 16-row tile, each taking every KS-th key tile
// (all KS tiles staged at once, no double buffer), their running maxima, sums and outputs merged through
// shared memory at the end - KS times the warps on as many rows, each with 1/KS of the serial chain.
template <int ROWS, int MT, int DP, int NV, int KS = 1>
__global__ void __launch_bounds__(ROWS * 2 / MT * KS) flash_k(Params p) {
  dep_entry();
  constexpr int kRows = ROWS, RW = ROWS / (16 * MT);  // warps per key split
  constexpr int LD = DP + 8;  // padded row stride: conflict-free fragment loads and ldmatrix rows
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* Qs = reinterpret_cast<__half*>(smem_raw);
  __half* Ks = Qs + kRows * LD;  // KS == 1: two (K, V) tile pairs, double-buffered; else KS pairs
  __half* Vs = Ks + kKeys * LD;

  const int64_t b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  const int64_t q0 = (int64_t)blockIdx.x * kRows;
  const __half* qg = p.q + b * p.Lq * p.ldq + h * p.D;
  const __half* kg = p.k + b * p.Lk * p.ldk + h * p.D;
  const __half* vg = p.v + b * p.Lk * p.ldv + h * p.D;
  __half* og = p.o + b * p.Lq * p.ldo + h * p.D;

  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int warp = KS > 1 ? (threadIdx.x >> 5) % RW : threadIdx.x >> 5, ks = KS > 1 ? (threadIdx.x >> 5) / RW : 0;  // row warp, key split
  const int64_t kend = p.causal ? min(p.Lk, q0 + kRows) : p.Lk;
  load_tile<kRows, DP, LD>(Qs, qg, q0, p.Lq, p.ldq, p.D, p.vec);
  if constexpr (KS == 1) {  // KS > 1: each round stages its KS tiles in the loop
    load_tile<kKeys, DP, LD>(Ks, kg, 0, p.Lk, p.ldk, p.D, p.vec);
    load_tile<kKeys, DP, LD>(Vs, vg, 0, p.Lk, p.ldv, p.D, p.vec);
  }
  cp_async_commit();

  float o[MT][NV][4];
  float m[MT][2], l[MT][2];
  int64_t rows[MT][2];
  uint32_t qa[MT][DP / 16][4];  // this warp's Q fragments, loaded once
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < NV; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
    rows[mt][0] = q0 + (warp * MT + mt) * 16 + g;
    rows[mt][1] = rows[mt][0] + 8;
  }

  for (int64_t base = 0, it = 0; base < kend; base += KS * kKeys, ++it) {
    const int64_t j0 = base + ks * kKeys;  // this warp's key tile
    __half *Kb, *Vb;
    if constexpr (KS == 1) {
      Kb = Ks + (it & 1) * (2 * kKeys * LD);
      Vb = Kb + kKeys * LD;
      if (j0 + kKeys < kend) {  // the next tile into the other buffer, while this one is used
        __half* Kn = Ks + ((it + 1) & 1) * (2 * kKeys * LD);
        load_tile<kKeys, DP, LD>(Kn, kg, j0 + kKeys, p.Lk, p.ldk, p.D, p.vec);
        load_tile<kKeys, DP, LD>(Kn + kKeys * LD, vg, j0 + kKeys, p.Lk, p.ldv, p.D, p.vec);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
    } else {
      Kb = Ks + ks * 2 * kKeys * LD;
      Vb = Kb + kKeys * LD;
#pragma unroll 1
      for (int sp = 0; sp < KS; ++sp) {  // this round's KS tiles (the buffers were released by the last round's barrier)
        load_tile<kKeys, DP, LD>(Ks + sp * 2 * kKeys * LD, kg, base + sp * kKeys, p.Lk, p.ldk, p.D, p.vec);
        load_tile<kKeys, DP, LD>(Ks + sp * 2 * kKeys * LD + kKeys * LD, vg, base + sp * kKeys, p.Lk, p.ldv, p.D, p.vec);
      }
      cp_async_commit();
      cp_async_wait<0>();
    }
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const __half* qw = Qs + ((warp * MT + mt) * 16) * LD;
#pragma unroll
        for (int kt = 0; kt < DP / 16; ++kt) {
          qa[mt][kt][0] = lds32(qw + g * LD + kt * 16 + t * 2);
          qa[mt][kt][1] = lds32(qw + (g + 8) * LD + kt * 16 + t * 2);
          qa[mt][kt][2] = lds32(qw + g * LD + kt * 16 + t * 2 + 8);
          qa[mt][kt][3] = lds32(qw + (g + 8) * LD + kt * 16 + t * 2 + 8);
        }
      }
    }

    if (KS > 1 && j0 >= kend) {  // this split has no tile this round (warp-uniform; no barrier inside)
      __syncthreads();
      continue;
    }
    float s[MT][kKeys / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
    for (int kt = 0; kt < DP / 16; ++kt) {
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
        const __half* kr = Kb + (n * 8 + g) * LD + kt * 16 + t * 2;
        const uint32_t b0 = lds32(kr), b1 = lds32(kr + 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma16816(s[mt][n], qa[mt][kt], b0, b1);
      }
    }

    const bool full = !p.causal && j0 + kKeys <= p.Lk;  // no key of this tile is masked
    uint32_t ph[MT][kKeys / 8][2];                       // P in half pairs: the A fragments of P V
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // mask, and the rows' maxima over this tile (raw scores; the scale is folded into the exponent)
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float val = s[mt][n][e];
          if (!full) {
            const int64_t key = j0 + n * 8 + t * 2 + (e & 1), row = rows[mt][e >> 1];
            if (key >= p.Lk || (p.causal && key > row)) val = -INFINITY;
            s[mt][n][e] = val;
          }
          if (e < 2) mx0 = fmaxf(mx0, val);
          else mx1 = fmaxf(mx1, val);
        }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 2));
      const float n0 = fmaxf(m[mt][0], mx0 * p.scale_log2), n1 = fmaxf(m[mt][1], mx1 * p.scale_log2);  // log2 domain (scale > 0)
      const float base0 = n0 == -INFINITY ? 0.f : n0, base1 = n1 == -INFINITY ? 0.f : n1;      // rows masked so far
      const float al0 = fast_exp2(m[mt][0] - base0), al1 = fast_exp2(m[mt][1] - base1);
      m[mt][0] = n0;
      m[mt][1] = n1;
      l[mt][0] *= al0;
      l[mt][1] *= al1;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        o[mt][i][0] *= al0;
        o[mt][i][1] *= al0;
        o[mt][i][2] *= al1;
        o[mt][i][3] *= al1;
      }
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
        const float e0 = fast_exp2(fmaf(s[mt][n][0], p.scale_log2, -base0)), e1 = fast_exp2(fmaf(s[mt][n][1], p.scale_log2, -base0));
        const float e2 = fast_exp2(fmaf(s[mt][n][2], p.scale_log2, -base1)), e3 = fast_exp2(fmaf(s[mt][n][3], p.scale_log2, -base1));
        l[mt][0] += e0 + e1;
        l[mt][1] += e2 + e3;
        ph[mt][n][0] = pack_half2(e0, e1);
        ph[mt][n][1] = pack_half2(e2, e3);
      }
    }

    // O += P V over 16-key slices: P's accumulator fragments are the A fragments of the next MMA
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const __half* vr = Vb + (kk * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
#pragma unroll
      for (int dt = 0; dt < NV; dt += 2) {
        uint32_t b0, b1, b2 = 0, b3 = 0;
        if (dt + 1 < NV) ldmatrix_x4_trans(vr + dt * 8, b0, b1, b2, b3);
        else ldmatrix_x2_trans(vr + dt * 8, b0, b1);  // an odd last tile
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint32_t a[4] = {ph[mt][2 * kk][0], ph[mt][2 * kk][1], ph[mt][2 * kk + 1][0], ph[mt][2 * kk + 1][1]};
          mma16816(o[mt][dt], a, b0, b1);
          if (dt + 1 < NV) mma16816(o[mt][dt + 1], a, b2, b3);
        }
      }
    }
    __syncthreads();  // this buffer is refilled two tiles on (KS > 1: next round)
  }

  if constexpr (KS > 1) {  // the splits' partial results into split 0's registers (the K/V buffers are free)
    constexpr int kVals = MT * (NV * 4 + 4);  // per lane: o, then the rows' maxima and partial sums
    static_assert((size_t)RW * (KS - 1) * kVals * 32 * sizeof(float) <= (size_t)KS * 2 * kKeys * LD * sizeof(__half), "merge scratch");
    float* red = reinterpret_cast<float*>(Ks);
    if (ks > 0) {
      float* w = red + (size_t)(warp * (KS - 1) + ks - 1) * kVals * 32 + lane;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int b = mt * (NV * 4 + 4);
#pragma unroll
        for (int dt = 0; dt < NV; ++dt)
#pragma unroll
          for (int e = 0; e < 4; ++e) w[(b + dt * 4 + e) * 32] = o[mt][dt][e];
        w[(b + NV * 4) * 32] = m[mt][0], w[(b + NV * 4 + 1) * 32] = m[mt][1];
        w[(b + NV * 4 + 2) * 32] = l[mt][0], w[(b + NV * 4 + 3) * 32] = l[mt][1];
      }
    }
    __syncthreads();
    if (ks > 0) return;
#pragma unroll 1
    for (int sp = 1; sp < KS; ++sp) {
      const float* r = red + (size_t)(warp * (KS - 1) + sp - 1) * kVals * 32 + lane;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int b = mt * (NV * 4 + 4);
        const float ms0 = r[(b + NV * 4) * 32], ms1 = r[(b + NV * 4 + 1) * 32];
        const float M0 = fmaxf(m[mt][0], ms0), M1 = fmaxf(m[mt][1], ms1);
        const float b0 = M0 == -INFINITY ? 0.f : M0, b1 = M1 == -INFINITY ? 0.f : M1;  // rows with every key masked
        const float f0 = fast_exp2(m[mt][0] - b0), g0 = fast_exp2(ms0 - b0), f1 = fast_exp2(m[mt][1] - b1), g1 = fast_exp2(ms1 - b1);
        l[mt][0] = l[mt][0] * f0 + r[(b + NV * 4 + 2) * 32] * g0;
        l[mt][1] = l[mt][1] * f1 + r[(b + NV * 4 + 3) * 32] * g1;
#pragma unroll
        for (int dt = 0; dt < NV; ++dt) {
          o[mt][dt][0] = o[mt][dt][0] * f0 + r[(b + dt * 4) * 32] * g0;
          o[mt][dt][1] = o[mt][dt][1] * f0 + r[(b + dt * 4 + 1) * 32] * g0;
          o[mt][dt][2] = o[mt][dt][2] * f1 + r[(b + dt * 4 + 2) * 32] * g1;
          o[mt][dt][3] = o[mt][dt][3] * f1 + r[(b + dt * 4 + 3) * 32] * g1;
        }
        m[mt][0] = M0, m[mt][1] = M1;
      }
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float l0 = l[mt][0], l1 = l[mt][1];
    l0 += __shfl_xor_sync(0xffffffff, l0, 1);
    l0 += __shfl_xor_sync(0xffffffff, l0, 2);
    l1 += __shfl_xor_sync(0xffffffff, l1, 1);
    l1 += __shfl_xor_sync(0xffffffff, l1, 2);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    const int64_t row0 = rows[mt][0], row1 = rows[mt][1];
#pragma unroll
    for (int dt = 0; dt < NV; ++dt) {
      const int c = dt * 8 + t * 2;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (c + e >= p.D) continue;
        if (row0 < p.Lq) og[row0 * p.ldo + c + e] = __float2half_rn(o[mt][dt][e] * inv0);
        if (row1 < p.Lq) og[row1 * p.ldo + c + e] = __float2half_rn(o[mt][dt][2 + e] * inv1);
      }
    }
  }
}

template <int ROWS, int MT, int DP, int NV, int KS = 1>
cudaError_t launch(const Params& p, int64_t B, cudaStream_t s) {
  constexpr size_t smem = (size_t)(ROWS + (KS > 1 ? 2 * KS : 4) * kKeys) * (DP + 8) * sizeof(__half);  // Q, 2 x (K, V) or KS x (K, V)
  const cudaError_t attr = cudaFuncSetAttribute(flash_k<ROWS, MT, DP, NV, KS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);  // per device (each GPU keeps its own), so on every launch
  if (attr != cudaSuccess) return attr;
  const dim3 grid((unsigned)((p.Lq + ROWS - 1) / ROWS), (unsigned)(B * p.H));
  launch_kernel(flash_k<ROWS, MT, DP, NV, KS>, grid, ROWS * 2 / MT * KS, smem, s, p);
  return cudaGetLastError();
}

// Forms 6 and 7 ("rows32", "rows16"; timed by the engine), else SDRT_ATTN_SMALL=32 or 16 (the engine then
// times neither): where 64-row blocks would leave SMs idle (SD's d-160 levels at batch 2: 16 to 64 blocks
// on 132 SMs), blocks of 32 or 16 rows instead - more blocks, each through all the keys.
int small_rows(int form) {
  if (form == 6) return 32;
  if (form == 7) return 16;
  const char* e = std::getenv("SDRT_ATTN_SMALL");  // read at each launch, as the other switches
  if (!e) return 0;
  return std::strcmp(e, "16") == 0 ? 16 : std::strcmp(e, "32") == 0 ? 32 : 0;
}
// Forms 8 and 9 ("ks4", "ks2"; timed by the engine, never under SDRT_ATTN_KSPLIT=0): 32-row blocks whose
// 16-row tiles each have 4 or 2 warps splitting the key tiles, where there are more key tiles than one
// (ks4: more than two).
int key_splits(int form, int64_t Lk) {
  if (form == 8 && Lk > 2 * kKeys) return 4;
  if (form == 9 && Lk > kKeys) return 2;
  return 0;
}
int device_sms() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  return sms;
}

// Long self-attention with small heads: 128 rows per block, 32 per warp (shared-memory traffic per FLOP
// halved; SD's d 40 is bound by it). The rest: 64 rows per block, 16 per warp (registers of big heads,
// more blocks for short sequences).
template <int DP, int NV>
cudaError_t launch_rows(const Params& p, int64_t B, cudaStream_t s, int form) {
  if constexpr (DP <= 64)
    if (p.Lq >= 1024 && p.Lk >= 256) return launch<128, 2, DP, NV>(p, B, s);
  if constexpr (DP >= 128) {  // heads of 81 to 160 (SD's d 160; smaller heads run Hopper's kernels or long sequences)
    if (const int r = small_rows(form); r > 0 && (p.Lq + 63) / 64 * B * p.H < device_sms())
      return r == 16 ? launch<16, 1, DP, NV>(p, B, s) : launch<32, 1, DP, NV>(p, B, s);
    if (const int k = key_splits(form, p.Lk); k > 0 && (p.Lq + 63) / 64 * B * p.H < device_sms())
      return k == 4 ? launch<32, 1, DP, NV, 4>(p, B, s) : launch<32, 1, DP, NV, 2>(p, B, s);
  }
  return launch<64, 1, DP, NV>(p, B, s);
}

}  // namespace

bool flash_attention_supported(int64_t D, int64_t Dv) { return D == Dv && D >= 1 && D <= 160; }

const char* attention_form_name(int form) {
  static const char* const names[] = {"wgmma", "pipe", "wgmma-e16", "pipe-e16", "wgmma-lm", "cross80", "rows32", "rows16", "ks4", "ks2", "wgmma-s16", "pipe-s16", "wgmma-s16w"};
  return form >= 0 && form < kAttentionForms ? names[form] : "?";
}
namespace {
// A form's switch: 1 where the variable is "1", 0 where "0", else -1 (unset or anything else)
int form_switch(const char* name) {
  const char* e = std::getenv(name);
  return !e ? -1 : std::strcmp(e, "1") == 0 ? 1 : std::strcmp(e, "0") == 0 ? 0 : -1;
}
}  // namespace
int attention_latemax_env() { return form_switch("SDRT_ATTN_LATEMAX"); }
int attention_s16_env() { return form_switch("SDRT_ATTN_S16"); }
int attention_s16w_env() { return form_switch("SDRT_ATTN_S16W"); }
int attention_cross80_env() { return form_switch("SDRT_ATTN_CROSS80"); }
int attention_ksplit_env() { return form_switch("SDRT_ATTN_KSPLIT"); }
int attention_rows256_env() { return form_switch("SDRT_ATTN_ROWS256"); }
bool attention_small_env() { return std::getenv("SDRT_ATTN_SMALL") != nullptr; }
int attention_exp16_env() {
  const char* e = std::getenv("SDRT_ATTN_EXP16");
  if (!e) return -1;
  return std::strcmp(e, "1") == 0 ? 1 : std::strcmp(e, "0") == 0 ? 0 : std::strcmp(e, "auto") == 0 ? 2 : -1;
}
int attention_form_by_name(const std::string& name) {
  for (int f = 0; f < kAttentionForms; ++f)
    if (name == attention_form_name(f)) return f;
  return -1;
}
int flash_attention_form_mask(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo,
                              bool causal) {
  if (!flash_attention_supported(D, D) || B * H > 65535 || Lq <= 0 || Lk <= 0) return 1;
  if (const int m = flash_attention_sm90_form_mask(B, H, Lq, Lk, D, ldq, ldk, ldv, ldo, causal)) return m;
  // the mma.sync kernel: heads of 81-160 (its 128- and 160-column tiles) in smaller blocks where 64-row ones
  // leave SMs idle (launch_rows)
  if (D > 80 && (Lq + 63) / 64 * B * H < device_sms())
    return 1 | 1 << 6 | 1 << 7 | (Lk > 2 * kKeys ? 1 << 8 : 0) | (Lk > kKeys ? 1 << 9 : 0);
  return 1;
}

cudaError_t flash_attention(const __half* q, const __half* k, const __half* v, __half* o, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                            int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo, float scale, bool causal, cudaStream_t s, int form) {
  if (!flash_attention_supported(D, D) || B * H > 65535 || Lq <= 0 || Lk <= 0) return cudaErrorInvalidValue;
  if (const cudaError_t e = flash_attention_sm90(q, k, v, o, B, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal, s, form);
      e != cudaErrorNotSupported)
    return e;
  cudaGetLastError();  // clear the "not supported"
  auto aligned = [](const void* ptr) { return ((uintptr_t)ptr & 15) == 0; };
  Params p{q, k, v, o, H, Lq, Lk, ldq, ldk, ldv, ldo, (int)D, scale * 1.4426950408889634f, causal,
           D % 8 == 0 && ldq % 8 == 0 && ldk % 8 == 0 && ldv % 8 == 0 && aligned(q) && aligned(k) && aligned(v)};
  switch ((D + 7) / 8) {  // 8-column tiles of real head columns
    case 1: return launch_rows<16, 1>(p, B, s, form);
    case 2: return launch_rows<16, 2>(p, B, s, form);
    case 3: return launch_rows<32, 3>(p, B, s, form);
    case 4: return launch_rows<32, 4>(p, B, s, form);
    case 5: return launch_rows<48, 5>(p, B, s, form);
    case 6: return launch_rows<48, 6>(p, B, s, form);
    case 7:
    case 8: return launch_rows<64, 8>(p, B, s, form);
    case 9:
    case 10: return launch_rows<80, 10>(p, B, s, form);
    case 11:
    case 12:
    case 13:
    case 14:
    case 15:
    case 16: return launch_rows<128, 16>(p, B, s, form);
    default: return launch_rows<160, 20>(p, B, s, form);
  }
}

}  // namespace sdrt::cuda
