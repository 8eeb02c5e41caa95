// The GEGLU projection as one Hopper kernel (see geglu_gemm.h). Blocks of 128 rows x BN output columns,
// two warpgroups of 64 rows; each warpgroup's m64n(2 BN)k16 MMAs compute the BN value and the BN matching
// gate columns of its rows at once (B's rows: BN value rows of w, then the BN gate rows), so a thread holds
// each value beside its gate in registers and the epilogue (bias, value * gelu(gate)) is elementwise. K in
// steps of 64 through a ring of shared-memory stages filled by cp.async in the 128-byte-swizzled layout
// the MMAs read (8 rows of 128 bytes per 1024-byte atom, 16-byte chunk c of row r at chunk c ^ (r % 8):
// a warp's copies are whole rows, coalesced, without bank conflicts).
//
// Below them: staged-epilogue forms (a third warpgroup for the GEGLU, fed by cp.async or by TMA) and the
// experimental warp-specialized ones.
//
// Persistent forms: a block takes tiles blockIdx.x, + gridDim.x, ... and its K steps form one stream
// across tiles, so the next tile's first stages load during a tile's last MMAs and its epilogue (SD's
// K = 320 level has five K steps per tile: per-tile prologues would dominate). Synchronous forms wait for
// each step's MMAs before the next barrier (two blocks per SM overlap each other); asynchronous ones keep
// one step's MMAs in flight and load two steps ahead into the stage freed two steps back.
#include "backends/cuda/geglu_gemm.h"
#include "backends/cuda/gelu_poly.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/sm90_common.cuh"
#include "backends/cuda/sm90_host.h"
#include "graph/backend.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <mutex>

namespace sdrt::cuda {
namespace {

constexpr int kBM = 128, kBK = 64, kThreads = 256;

#ifdef SDRT_SM90A
#define SDRT_GG_WGMMA 1
using namespace sm90;
template <int BN>
__device__ __forceinline__ void mma_step(float (&acc)[BN], uint64_t a, uint64_t b, int scale_d) {
  if constexpr (BN == 64) wgmma_n128(acc, a, b, scale_d);
  else wgmma_n256(acc, a, b, scale_d);
}
#endif

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
// The tanh form of GELU on the MUFU pipe (an experiment: how much of the kernel the epilogue's erf costs).
__device__ __forceinline__ float gelu_tanh(float v) {
  float th;
  const float u = 0.7978845608f * v * (1.f + 0.044715f * v * v);
  asm("tanh.approx.f32 %0, %1;" : "=f"(th) : "f"(u));
  return 0.5f * v * (1.f + th);
}
// GELU through a branch-free erf (Numerical Recipes' erfc: t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), P of degree
// 9, fractional error < 1.2e-7): one reciprocal and one exponential on the MUFU pipe and ten FMAs, where erff
// takes one of two polynomial paths by |x| (both, in a warp of mixed values). Against erf-GELU in double over
// [-12, 12] in steps of 0.00137: max absolute error 8.2e-8 (a Python model of the float arithmetic).
__device__ __forceinline__ float gelu_erf_nr(float v) {
  const float x = v * 0.70710678118654752f, z = fabsf(x), t = __fdividef(1.f, fmaf(0.5f, z, 1.f));
  float p = 0.17087277f;
  p = fmaf(p, t, -0.82215223f), p = fmaf(p, t, 1.48851587f), p = fmaf(p, t, -1.13520398f), p = fmaf(p, t, 0.27886807f);
  p = fmaf(p, t, -0.18628806f), p = fmaf(p, t, 0.09678418f), p = fmaf(p, t, 0.37409196f), p = fmaf(p, t, 1.00002368f);
  p = fmaf(p, t, -1.26551223f);
  const float r = t * __expf(p - z * z);  // erfc(z)
  return 0.5f * v * (1.f + copysignf(1.f - r, x));
}
// GELU forms: 0 erff, 1 the tanh approximation (experiments only: not the model's function), 2 the
// branch-free erf above, 3 the polynomial for log2 Phi (gelu_poly.h)
template <int FAST>
__device__ __forceinline__ float gelu(float v) {
  return FAST == 1 ? gelu_tanh(v) : FAST == 2 ? gelu_erf_nr(v) : FAST == 3 ? gelu_poly(v) : gelu_erf(v);
}

// A block's tiles - blockIdx.x, + gridDim.x, ... of the (row block, column block) grid, column blocks
// fastest - and their K steps as one sequence; cursors advance without divisions (an integer division is
// ~20 instructions per thread, per step).
struct TileWalk {
  int tiles_n, KT, step_m, step_n, total;  // total: this block's K steps over all its tiles
  struct Cursor {
    int m, n, kt;
  };
  __device__ TileWalk(int M, int K, int F, int BN) {
    tiles_n = F / BN, KT = K / kBK;
    const int tiles = tiles_n * ((M + kBM - 1) / kBM), step = gridDim.x;
    step_m = step / tiles_n, step_n = step % tiles_n;
    total = (tiles - (int)blockIdx.x + step - 1) / step * KT;
  }
  __device__ Cursor first() const { return {(int)blockIdx.x / tiles_n, (int)blockIdx.x % tiles_n, 0}; }
  __device__ void advance(Cursor& q) const {
    if (++q.kt < KT) return;
    q.kt = 0, q.m += step_m, q.n += step_n;
    if (q.n >= tiles_n) q.n -= tiles_n, ++q.m;
  }
};

// The epilogue: acc[4j + e] is row g (e < 2) or g + 8 of the warp's 16 rows (row_a = the first), column
// 8j + 2t + (e & 1) of the warpgroup's 2 BN (j < BN / 8: value, then the gate at + BN / 2):
// y = (value + b_v) * gelu(gate + b_g).
template <int BN, int FAST>
__device__ __forceinline__ void store_geglu(const float (&acc)[BN], const __half* __restrict__ bias, __half* __restrict__ y, int M, int F, int row_a, int n0,
                                            int t) {
  const int row_b = row_a + 8;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + 8 * j + 2 * t;
    const float2 bv = __half22float2(*reinterpret_cast<const __half2*>(bias + col));
    const float2 bg = __half22float2(*reinterpret_cast<const __half2*>(bias + F + col));
    constexpr int G = BN / 2;
    if (row_a < M)
      *reinterpret_cast<__half2*>(y + (int64_t)row_a * F + col) = __floats2half2_rn((acc[4 * j] + bv.x) * gelu<FAST>(acc[4 * j + G] + bg.x),
                                                                                    (acc[4 * j + 1] + bv.y) * gelu<FAST>(acc[4 * j + 1 + G] + bg.y));
    if (row_b < M)
      *reinterpret_cast<__half2*>(y + (int64_t)row_b * F + col) = __floats2half2_rn((acc[4 * j + 2] + bv.x) * gelu<FAST>(acc[4 * j + 2 + G] + bg.x),
                                                                                    (acc[4 * j + 3] + bv.y) * gelu<FAST>(acc[4 * j + 3 + G] + bg.y));
  }
}

#ifdef SDRT_GG_WGMMA
// The persistent cp.async mainloop of geglu_gemm_k and geglu_se_k, run by the kThreads MMA threads (two
// warpgroups): the block's K steps over all its tiles through a ring of STAGES stages. sync(): the barrier
// among those threads before each step's MMAs; tile_end(acc, cursor): a tile's finished accumulators.
template <int BN, int STAGES, bool ASYNC, class Sync, class TileEnd>
__device__ __forceinline__ void cp_mainloop(const __half* __restrict__ x, const __half* __restrict__ w, int M, int K, int F, uint32_t sbase,
                                            const TileWalk& walk, Sync sync, TileEnd tile_end) {
  constexpr int kStage = (kBM + 2 * BN) * kBK * 2;  // A's 128 rows and B's 2 BN rows of 128 bytes
  constexpr int kAhead = ASYNC ? STAGES - 2 : STAGES - 1;  // steps loaded ahead of the one computed
  const int tid = threadIdx.x, wg = tid >> 7;
  const int c = tid & 7, r0 = tid >> 3;  // this thread's 16-byte chunk of rows r0 + 32 i
  const int KT = walk.KT, total = walk.total;
  TileWalk::Cursor ld = walk.first(), mm = ld;  // the next step to load; the step computed

  auto load = [&](int stage) {  // step `ld` into `stage`, then on to the next
    const int m0 = ld.m * kBM, n0 = ld.n * BN;
    const uint32_t a_s = sbase + stage * kStage, b_s = a_s + kBM * 128;
    const int64_t k0 = (int64_t)ld.kt * kBK + c * 8;
#pragma unroll
    for (int i = 0; i < kBM / 32; ++i) {
      const int r = r0 + 32 * i, gm = m0 + r;
      cp_async_to(a_s + r * 128 + ((c ^ (r & 7)) << 4), x + (int64_t)(gm < M ? gm : 0) * K + k0, gm < M);
    }
#pragma unroll
    for (int i = 0; i < 2 * BN / 32; ++i) {
      const int r = r0 + 32 * i, wr = r < BN ? n0 + r : F + n0 + (r - BN);  // value rows, then their gate rows
      cp_async_to(b_s + r * 128 + ((c ^ (r & 7)) << 4), w + (int64_t)wr * K + k0, true);
    }
    walk.advance(ld);
  };

  float acc[BN];
#pragma unroll
  for (int i = 0; i < BN; ++i) acc[i] = 0.f;
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < total) load(s);
    cp_async_commit_group();
  }
  int stage = 0, ld_stage = kAhead % STAGES;  // it % STAGES, (it + kAhead) % STAGES
  for (int it = 0; it < total; ++it) {
    cp_async_wait_group<kAhead - 1>();  // this thread's copies of step it
    fence_proxy_async();          // made visible to the MMAs (async proxy)
    // Everyone's copies; and every warpgroup is done with the stage refilled next: step it - 1's
    // (synchronous forms) or it - 2's (asynchronous: each waited for it before this barrier).
    sync();
    const int kt = mm.kt;
    const uint32_t st0 = sbase + stage * kStage;
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    const uint64_t da = desc_sw128(st0 + wg * 64 * 128), db = desc_sw128(st0 + kBM * 128);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) mma_step<BN>(acc, da + kk * 2, db + kk * 2, kt > 0 || kk > 0);
    wgmma_commit();
    // the copies of a later step go out while these MMAs run (their stage's MMAs are done: see above)
    if (it + kAhead < total) load(ld_stage);
    cp_async_commit_group();
    ld_stage = ld_stage + 1 == STAGES ? 0 : ld_stage + 1;
    if (kt != KT - 1) {
      if (ASYNC) wgmma_wait<1>();
      else wgmma_wait<0>();
      walk.advance(mm);
      continue;
    }
    wgmma_wait<0>();
    tile_end(acc, mm);
    walk.advance(mm);
  }
  wgmma_wait<0>();  // nothing is in flight here; said so, or ptxas adds the wait itself (C7517)
}
#endif

template <int BN, int STAGES, bool ASYNC, bool TWO, int FAST = 0>
__global__ void __launch_bounds__(kThreads, TWO ? 2 : 1)
    geglu_gemm_k(const __half* __restrict__ x, const __half* __restrict__ w, const __half* __restrict__ bias, __half* __restrict__ y, int M, int K, int F) {
  dep_entry();
#ifdef SDRT_GG_WGMMA
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;  // the swizzle atoms' alignment
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const TileWalk walk(M, K, F, BN);
  cp_mainloop<BN, STAGES, ASYNC>(
      x, w, M, K, F, sbase, walk, [] { __syncthreads(); },
      [&](const float(&acc)[BN], const TileWalk::Cursor& mm) {
        store_geglu<BN, FAST>(acc, bias, y, M, F, mm.m * kBM + wg * 64 + warp * 16 + g, mm.n * BN, t);
      });
#endif
}


// Staged-epilogue forms (seNxS): the persistent cp.async kernel above with a third warpgroup for the
// epilogue. The two MMA warpgroups round a finished tile's accumulators to FP16 into a shared staging
// buffer (value columns, then their gates; a padded row so the fragment writes miss each other's banks)
// and go straight on to the next tile's K steps, while the epilogue warpgroup reads the buffer in 16-byte
// rows, adds the biases, applies value * gelu(gate) and writes whole 32-byte sectors of y. So the GELU
// arithmetic (most of a tile's instructions at K = 320) runs beside the MMAs instead of between them (the
// forms above overlap it only through a second block per SM, which 128 x 2 BN tiles leave no room for). The
// buffer is handed over through named barriers: 2 "full" (MMA warpgroups arrive, the epilogue waits), 3
// "empty" (the reverse; the MMA warpgroups wait only from their second tile on); 1 is the MMA warpgroups'
// own per-step barrier. Rounding the pre-activations to FP16 before the bias is what the split form (GEMM
// to FP16, then the GEGLU pass) does too.
constexpr int kEpiThreads = 128;
__host__ __device__ constexpr int se_row(int bn) { return 2 * bn + 8; }  // halves per staging row (+16 bytes: rows 4 banks apart)

#ifdef SDRT_GG_WGMMA
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
#endif

// An MMA warpgroup's accumulators (acc[4j + e]: row g (e < 2) or g + 8 of the warp's 16, column 8j + 2t + (e & 1)
// of the 2 BN: the BN value columns, then their gates - the staging row's order) as FP16 into the buffer.
template <int BN>
__device__ __forceinline__ void stage_acc(const float (&acc)[BN], __half* stg, int wg, int warp, int g, int t) {
  constexpr int kRow = se_row(BN);
  const int ra = wg * 64 + warp * 16 + g;
#pragma unroll
  for (int j = 0; j < BN / 4; ++j) {
    const int cv = 8 * j + 2 * t;
    *reinterpret_cast<__half2*>(stg + ra * kRow + cv) = __floats2half2_rn(acc[4 * j], acc[4 * j + 1]);
    *reinterpret_cast<__half2*>(stg + (ra + 8) * kRow + cv) = __floats2half2_rn(acc[4 * j + 2], acc[4 * j + 3]);
  }
}

// The epilogue threads' part (thread e of ET) of one staged tile: rows m0.. of y, output columns n0..n0 + BN, each
// thread 8 columns of every (ET / (BN / 8))-th row; the biases added in FP32, then value * gelu(gate).
template <int BN, int FAST, int ET>
__device__ __forceinline__ void epilogue_tile(const __half* stg, const __half* __restrict__ bias, __half* __restrict__ y, int M, int F, int m0, int n0,
                                              int e) {
  constexpr int kRow = se_row(BN), kRStep = ET / (BN / 8);
  const int c = e % (BN / 8), col = n0 + 8 * c;
  float bv[8], bg[8];
  {
    const uint4 v4 = *reinterpret_cast<const uint4*>(bias + col), g4 = *reinterpret_cast<const uint4*>(bias + F + col);
    const __half2* vh = reinterpret_cast<const __half2*>(&v4);
    const __half2* gh = reinterpret_cast<const __half2*>(&g4);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = __half22float2(vh[i]), b = __half22float2(gh[i]);
      bv[2 * i] = a.x, bv[2 * i + 1] = a.y, bg[2 * i] = b.x, bg[2 * i + 1] = b.y;
    }
  }
#pragma unroll 4
  for (int r = e / (BN / 8); r < kBM; r += kRStep) {
    const uint4 v4 = *reinterpret_cast<const uint4*>(stg + r * kRow + 8 * c);
    const uint4 g4 = *reinterpret_cast<const uint4*>(stg + r * kRow + BN + 8 * c);
    const __half2* vh = reinterpret_cast<const __half2*>(&v4);
    const __half2* gh = reinterpret_cast<const __half2*>(&g4);
    uint4 o4;
    __half2* oh = reinterpret_cast<__half2*>(&o4);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = __half22float2(vh[i]), b = __half22float2(gh[i]);
      oh[i] = __floats2half2_rn((a.x + bv[2 * i]) * gelu<FAST>(b.x + bg[2 * i]), (a.y + bv[2 * i + 1]) * gelu<FAST>(b.y + bg[2 * i + 1]));
    }
    if (m0 + r < M) *reinterpret_cast<uint4*>(y + (int64_t)(m0 + r) * F + col) = o4;
  }
}

template <int BN, int STAGES, bool ASYNC, int FAST>
__global__ void __launch_bounds__(kThreads + kEpiThreads, 1)
    geglu_se_k(const __half* __restrict__ x, const __half* __restrict__ w, const __half* __restrict__ bias, __half* __restrict__ y, int M, int K, int F) {
  dep_entry();
#ifdef SDRT_GG_WGMMA
  constexpr int kStage = (kBM + 2 * BN) * kBK * 2;
  constexpr int kAll = kThreads + kEpiThreads;
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
  __half* stg = reinterpret_cast<__half*>(smem + (sbase - (uint32_t)__cvta_generic_to_shared(smem)) + STAGES * kStage);  // kBM rows of kRow
  const int tid = threadIdx.x;
  const TileWalk walk(M, K, F, BN);
  const int KT = walk.KT, total = walk.total;
  if (tid >= kThreads) {  // the epilogue warpgroup
    TileWalk::Cursor cur = walk.first();
    const int tiles = total / KT;
    for (int tile = 0; tile < tiles; ++tile) {
      named_sync(2, kAll);  // the tile's pre-activations are in the buffer
      epilogue_tile<BN, FAST, kEpiThreads>(stg, bias, y, M, F, cur.m * kBM, cur.n * BN, tid - kThreads);
      if (tile + 1 < tiles) named_arrive(3, kAll);  // the buffer is free again (after the last tile nobody waits)
      for (int k = 0; k < KT; ++k) walk.advance(cur);
    }
    return;
  }
  const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  bool first = true;
  cp_mainloop<BN, STAGES, ASYNC>(
      x, w, M, K, F, sbase, walk, [] { named_sync(1, kThreads); },  // among the MMA warpgroups only
      [&](const float(&acc)[BN], const TileWalk::Cursor&) {
        if (!first) named_sync(3, kAll);  // the epilogue is done with the previous tile's buffer
        first = false;
        stage_acc<BN>(acc, stg, wg, warp, g, t);
        named_arrive(2, kAll);
      });
#endif
}

// Warp-specialized form (experimental: SDRT_GEGLU_EXPERIMENTAL=1 lists it): one producer thread moves each
// K step's tiles with the tensor memory accelerator (TMA: one instruction per tile, the 128-byte swizzle
// applied by the copy engine, rows past M filled with zeros) into a ring of STAGES stages guarded by
// mbarriers ("full": the step's bytes arrived; "empty": both consumer warpgroups' MMAs on it are done); two
// consumer warpgroups (64 rows each) only issue MMAs and run the epilogue, while the producer is already
// loading the next tile's steps. Persistent over tiles in the same order as the forms above.

#ifdef SDRT_GG_WGMMA
// The TMA producer (one thread) of the warp-specialized forms: every K step of the block's tiles (from cur, the
// walk's first) into the ring of STAGES stages at sbase, guarded by full[STAGES] and empty[STAGES] mbarriers at bars.
template <int BN, int STAGES>
__device__ __forceinline__ void tma_produce(const CUtensorMap* ta, const CUtensorMap* tb, int F, uint32_t sbase, uint32_t bars, const TileWalk& walk,
                                            TileWalk::Cursor cur) {
  constexpr int kStage = (kBM + 2 * BN) * kBK * 2;
  const int total = walk.total;
  int stage = 0;
  uint32_t phase = 0;
  for (int it = 0; it < total; ++it) {
    mbar_wait_bounded(bars + 8 * (STAGES + stage), phase ^ 1);  // the consumers released it (a fresh barrier passes)
    const uint32_t full = bars + 8 * stage, a_s = sbase + stage * kStage, b_s = a_s + kBM * 128;
    mbar_expect_tx(full, kStage);
    const int k0 = cur.kt * kBK;
    tma_load_2d(a_s, ta, k0, cur.m * kBM, full);
    tma_load_2d(b_s, tb, k0, cur.n * BN, full);               // the value rows
    tma_load_2d(b_s + BN * 128, tb, k0, F + cur.n * BN, full);  // their gate rows
    walk.advance(cur);
    if (++stage == STAGES) stage = 0, phase ^= 1;
  }
}

// The MMA warpgroup cw (0 or 1: its 64 rows of the tile) of the warp-specialized forms, from cur (the walk's
// first step) on: waits for each step's stage, issues its MMAs and releases the stage once they are done (one
// arrival per warp); tile_end(acc, cursor) takes a tile's finished accumulators.
template <int BN, int STAGES, class TileEnd>
__device__ __forceinline__ void tma_consume(uint32_t sbase, uint32_t bars, const TileWalk& walk, TileWalk::Cursor cur, int cw, TileEnd tile_end) {
  constexpr int kStage = (kBM + 2 * BN) * kBK * 2;
  const int lane = threadIdx.x & 31, KT = walk.KT, total = walk.total;
  float acc[BN];
#pragma unroll
  for (int i = 0; i < BN; ++i) acc[i] = 0.f;
  int stage = 0, prev = -1;
  uint32_t phase = 0;
  for (int it = 0; it < total; ++it) {
    mbar_wait_bounded(bars + 8 * stage, phase);
    const int kt = cur.kt;
    const uint32_t st0 = sbase + stage * kStage;
    const uint64_t da = desc_sw128(st0 + cw * 64 * 128), db = desc_sw128(st0 + kBM * 128);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) mma_step<BN>(acc, da + kk * 2, db + kk * 2, kt > 0 || kk > 0);
    wgmma_commit();
    wgmma_wait<1>();  // the previous step's MMAs are done: its stage goes back to the producer
    if (prev >= 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + prev));
    prev = stage;
    if (kt == KT - 1) {
      wgmma_wait<0>();
      if (lane == 0) mbar_arrive(bars + 8 * (STAGES + stage));
      prev = -1;
      tile_end(acc, cur);
    }
    walk.advance(cur);
    if (++stage == STAGES) stage = 0, phase ^= 1;
  }
  wgmma_wait<0>();
}
#endif

template <int BN, int STAGES>
__global__ void __launch_bounds__(384, 1)
    geglu_ws_k(const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb, const __half* __restrict__ bias, __half* __restrict__ y, int M,
               int K, int F) {
  dep_entry();
#ifdef SDRT_GG_WGMMA
  constexpr int kStage = (kBM + 2 * BN) * kBK * 2;
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
  const uint32_t bars = sbase + STAGES * kStage;  // full[STAGES], then empty[STAGES]
  const int tid = threadIdx.x, wg = tid >> 7;
  if (tid == 0) {
    for (int i = 0; i < STAGES; ++i) mbar_init(bars + 8 * i, 1), mbar_init(bars + 8 * (STAGES + i), 8);  // empty: 8 consumer warps
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  const TileWalk walk(M, K, F, BN);
  const TileWalk::Cursor cur = walk.first();
  if (wg == 0) {  // producer warpgroup: one thread issues every copy
    if (tid == 0) tma_produce<BN, STAGES>(&ta, &tb, F, sbase, bars, walk, cur);
    return;
  }
  const int cw = wg - 1, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  tma_consume<BN, STAGES>(sbase, bars, walk, cur, cw, [&](const float(&acc)[BN], const TileWalk::Cursor& cur) {
    store_geglu<BN, 0>(acc, bias, y, M, F, cur.m * kBM + cw * 64 + warp * 16 + g, cur.n * BN, t);
  });
#endif
}

// TMA-fed staged-epilogue forms (wseNxS): the warp-specialized kernel's mainloop - one producer thread moving
// each K step's tiles with the tensor memory accelerator into a ring of mbarrier-guarded stages, the two MMA
// warpgroups only waiting, issuing MMAs and releasing stages - with seNxS's staged epilogue: the block's third
// warpgroup is the producer's warp and three epilogue warps (96 threads) that apply the GEGLU from the staging
// buffer while the MMA warpgroups go on. No cp.async, no per-step barrier among the MMA warpgroups.
template <int BN, int STAGES, int FAST>
__global__ void __launch_bounds__(kThreads + kEpiThreads, 1)
    geglu_wse_k(const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb, const __half* __restrict__ bias, __half* __restrict__ y,
                int M, int K, int F) {
  dep_entry();
#ifdef SDRT_GG_WGMMA
  constexpr int kStage = (kBM + 2 * BN) * kBK * 2;
  constexpr int kEpi = kEpiThreads - 32, kAll = kThreads + kEpi;  // named barriers 2 and 3: MMA warpgroups and epilogue warps
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
  __half* stg = reinterpret_cast<__half*>(smem + (sbase - (uint32_t)__cvta_generic_to_shared(smem)) + STAGES * kStage);
  const uint32_t bars = sbase + STAGES * kStage + kBM * se_row(BN) * 2;  // full[STAGES], then empty[STAGES]
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int i = 0; i < STAGES; ++i) mbar_init(bars + 8 * i, 1), mbar_init(bars + 8 * (STAGES + i), 8);  // empty: the 8 MMA warps
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  const TileWalk walk(M, K, F, BN);
  TileWalk::Cursor cur = walk.first();
  if (tid >= kThreads) {
    const int e = tid - kThreads;
    if (e < 32) {  // the producer's warp: one thread issues every copy
      if (e == 0) tma_produce<BN, STAGES>(&ta, &tb, F, sbase, bars, walk, cur);
      return;
    }
    // the epilogue warps
    const int tiles = walk.total / walk.KT;
    for (int tile = 0; tile < tiles; ++tile) {
      named_sync(2, kAll);
      epilogue_tile<BN, FAST, kEpi>(stg, bias, y, M, F, cur.m * kBM, cur.n * BN, e - 32);
      if (tile + 1 < tiles) named_arrive(3, kAll);
      for (int k = 0; k < walk.KT; ++k) walk.advance(cur);
    }
    return;
  }
  const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  bool first = true;
  tma_consume<BN, STAGES>(sbase, bars, walk, cur, wg, [&](const float(&acc)[BN], const TileWalk::Cursor&) {
    if (!first) named_sync(3, kAll);  // the epilogue is done with the previous tile's buffer
    first = false;
    stage_acc<BN>(acc, stg, wg, warp, g, t);
    named_arrive(2, kAll);
  });
#endif
}

struct Form;
struct DeviceInfo;
using Launch = cudaError_t (*)(const Form&, int grid, const __half*, const __half*, const __half*, __half*, int, int, int, cudaStream_t);

struct Form {
  const char* name;
  const void* kernel;
  Launch launch;
  int bn, stages, threads;
  bool persistent, exact;  // exact: GELU through erf, as the model defines it (else the tanh form: experiments)
  bool experimental;       // listed only with SDRT_GEGLU_EXPERIMENTAL=1 (correct on the H200, no faster)
  bool staged = false;     // the staged-epilogue forms: a shared buffer of kBM FP16 rows besides the stages
  bool poly = false;       // GELU through the polynomial for log2 Phi (gelu_poly)
};

template <int BN, int STAGES, bool ASYNC, bool TWO, int FAST>
cudaError_t launch_cp(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s);
template <int BN, int STAGES>
cudaError_t launch_ws(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s);
template <int BN, int STAGES, bool ASYNC, int FAST>
cudaError_t launch_se(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s);
template <int BN, int STAGES, int FAST>
cudaError_t launch_wse(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s);

template <int BN, int STAGES, bool ASYNC, bool TWO, int FAST = 0>
constexpr Form form(const char* name, bool persistent) {
  return {name, (const void*)geglu_gemm_k<BN, STAGES, ASYNC, TWO, FAST>, launch_cp<BN, STAGES, ASYNC, TWO, FAST>, BN, STAGES, kThreads, persistent, FAST != 1, false};
}
template <int BN, int STAGES, bool ASYNC, int FAST = 0>
constexpr Form se_form(const char* name) {
  return {name, (const void*)geglu_se_k<BN, STAGES, ASYNC, FAST>, launch_se<BN, STAGES, ASYNC, FAST>, BN, STAGES, kThreads + kEpiThreads, true, FAST != 1, false, true};
}
template <int BN, int STAGES, int FAST = 0>
constexpr Form wse_form(const char* name) {
  return {name, (const void*)geglu_wse_k<BN, STAGES, FAST>, launch_wse<BN, STAGES, FAST>, BN, STAGES, kThreads + kEpiThreads, true, FAST != 1, false, true, FAST == 3};
}
template <int BN, int STAGES>
constexpr Form ws_form(const char* name) {
  return {name, (const void*)geglu_ws_k<BN, STAGES>, launch_ws<BN, STAGES>, BN, STAGES, 384, true, true, true};
}

// tiled: one tile per block; pNxS: persistent, N-column tiles, S stages, a = asynchronous MMAs; t = the
// tanh form of GELU (not the model's function: measured by bench_geglu_gemm, never chosen by the engine);
// e = GELU through the branch-free erf; p = through the polynomial for log2 Phi (gelu_poly);
// seNxS(a): staged epilogue (a third warpgroup applies the GEGLU while the MMAs go on); wseNxS: the same
// epilogue behind a TMA producer;
// wsNxS: warp-specialized with TMA (experimental, last)
const Form kForms[] = {
    form<64, 3, false, true>("tiled64x3", false), form<64, 3, false, true>("p64x3", true),  form<64, 3, true, true>("p64x3a", true),
    form<64, 4, true, false>("p64x4a", true),     form<128, 3, true, false>("p128x3a", true), form<128, 4, true, false>("p128x4a", true),
    form<64, 3, false, true, 1>("tiled64x3t", false), form<64, 3, false, true, 1>("p64x3t", true), form<128, 4, true, false, 1>("p128x4at", true),
    form<64, 3, false, true, 2>("tiled64x3e", false), form<64, 3, false, true, 2>("p64x3e", true), form<128, 4, true, false, 2>("p128x4ae", true),
    se_form<128, 3, true>("se128x3a"), se_form<128, 3, false>("se128x3"), se_form<64, 5, true>("se64x5a"), se_form<64, 4, false>("se64x4"),
    wse_form<128, 3>("wse128x3"), wse_form<64, 5>("wse64x5"), wse_form<128, 3, 3>("wse128x3p"), wse_form<64, 5, 3>("wse64x5p"),
    ws_form<64, 4>("ws64x4"), ws_form<64, 6>("ws64x6"),
};
constexpr int kNumForms = sizeof(kForms) / sizeof(kForms[0]);

size_t smem_bytes(const Form& f) {  // + alignment slack, mbarriers
  const size_t staging = f.staged ? (size_t)kBM * se_row(f.bn) * 2 : 0;
  return (size_t)f.stages * (kBM + 2 * f.bn) * kBK * 2 + 1024 + 16 * f.stages + staging;
}

// Per device: whether it runs sm_90a code, its SM count, and each form's blocks per SM (0: not yet known).
struct DeviceInfo {
  std::once_flag once;
  bool hopper = false;
  int sms = 0;
  int per_sm[kNumForms] = {};
};
std::array<DeviceInfo, 64> g_dev;

DeviceInfo* device_info() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= (int)g_dev.size()) return cudaGetLastError(), nullptr;
  DeviceInfo& d = g_dev[dev];
  std::call_once(d.once, [&] {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return (void)cudaGetLastError();
    if (major != 9 || minor != 0) return;
    for (int i = 0; i < kNumForms; ++i) {
      const Form& f = kForms[i];
      if (cudaFuncSetAttribute(f.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_bytes(f)) != cudaSuccess ||
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&d.per_sm[i], f.kernel, f.threads, smem_bytes(f)) != cudaSuccess)
        d.per_sm[i] = 0, cudaGetLastError();
    }
    d.hopper = true;
  });
  return &d;
}

bool aligned(const void* p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }
// whether the environment variable `name` is set to 0
bool switched_off(const char* name) {
  const char* e = std::getenv(name);
  return e && std::strcmp(e, "0") == 0;
}

template <int BN, int STAGES, bool ASYNC, bool TWO, int FAST>
cudaError_t launch_cp(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s) {
  launch_kernel(geglu_gemm_k<BN, STAGES, ASYNC, TWO, FAST>, (unsigned)grid, kThreads, smem_bytes(f), s, x, w, b, y, M, K, F);
  return cudaGetLastError();
}

template <int BN, int STAGES, bool ASYNC, int FAST>
cudaError_t launch_se(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s) {
  if (!aligned(b, 16)) return cudaErrorNotSupported;  // the epilogue reads 8 biases at a time
  launch_kernel(geglu_se_k<BN, STAGES, ASYNC, FAST>, (unsigned)grid, kThreads + kEpiThreads, smem_bytes(f), s, x, w, b, y, M, K, F);
  return cudaGetLastError();
}

template <int BN, int STAGES>
cudaError_t launch_ws(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s) {
  CUtensorMap ta, tb;
  if (!half_matrix_map(&ta, x, M, K, kBM) || !half_matrix_map(&tb, w, 2 * (int64_t)F, K, BN)) return cudaErrorNotSupported;
  launch_kernel(geglu_ws_k<BN, STAGES>, (unsigned)grid, 384, smem_bytes(f), s, ta, tb, b, y, M, K, F);
  return cudaGetLastError();
}

template <int BN, int STAGES, int FAST>
cudaError_t launch_wse(const Form& f, int grid, const __half* x, const __half* w, const __half* b, __half* y, int M, int K, int F, cudaStream_t s) {
  CUtensorMap ta, tb;
  if (!aligned(b, 16) || !half_matrix_map(&ta, x, M, K, kBM) || !half_matrix_map(&tb, w, 2 * (int64_t)F, K, BN)) return cudaErrorNotSupported;
  launch_kernel(geglu_wse_k<BN, STAGES, FAST>, (unsigned)grid, kThreads + kEpiThreads, smem_bytes(f), s, ta, tb, b, y, M, K, F);
  return cudaGetLastError();
}

std::atomic<int64_t> g_launches{0};

}  // namespace

int geglu_gemm_forms() {
  const char* e = std::getenv("SDRT_GEGLU_EXPERIMENTAL");
  if (e && std::strcmp(e, "1") == 0) return kNumForms;
  int n = 0;
  while (n < kNumForms && !kForms[n].experimental) ++n;
  return n;
}
const char* geglu_gemm_form_name(int form) { return form >= 0 && form < kNumForms ? kForms[form].name : "?"; }
bool geglu_gemm_form_exact(int form) { return form >= 0 && form < kNumForms && kForms[form].exact; }
int geglu_gemm_form_by_name(const char* name) {  // among the forms listed now (geglu_gemm_forms)
  for (int i = 0, n = geglu_gemm_forms(); i < n; ++i)
    if (std::strcmp(kForms[i].name, name) == 0) return i;
  return -1;
}

bool geglu_gemm_supported(int64_t M, int64_t K, int64_t F, const void* x, const void* w, const void* b, const void* y) {
  if (M <= 0 || K <= 0 || F <= 0 || K % kBK || F % 128 || M >= (int64_t(1) << 31) || K >= (int64_t(1) << 31) || F >= (int64_t(1) << 30)) return false;
  if (!aligned(x, 16) || !aligned(w, 16) || !aligned(y, 16) || !aligned(b, 4)) return false;
  const DeviceInfo* d = device_info();
  return d && d->hopper;
}

cudaError_t geglu_gemm(int form, const __half* x, const __half* w, const __half* b, __half* y, int64_t M, int64_t K, int64_t F, cudaStream_t s) {
  if (form < 0 || form >= kNumForms || !geglu_gemm_supported(M, K, F, x, w, b, y)) return cudaErrorNotSupported;
  const DeviceInfo* d = device_info();
  const Form& f = kForms[form];
  if (d->per_sm[form] <= 0) return cudaErrorNotSupported;
  // A/B switches: SDRT_GEGLU_STAGED=0, the staged-epilogue forms not run (so not chosen by the timing);
  // SDRT_GEGLU_POLY=0, the forms with the polynomial GELU
  if ((f.staged && switched_off("SDRT_GEGLU_STAGED")) || (f.poly && switched_off("SDRT_GEGLU_POLY"))) return cudaErrorNotSupported;
  const int64_t tiles = (F / f.bn) * ((M + kBM - 1) / kBM);
  if (tiles >= (int64_t(1) << 31) / kBK) return cudaErrorNotSupported;  // K steps of a block counted in int
  const int64_t grid = f.persistent ? std::min<int64_t>(tiles, (int64_t)d->per_sm[form] * d->sms) : tiles;
  const cudaError_t e = f.launch(f, (int)grid, x, w, b, y, (int)M, (int)K, (int)F, s);
  if (e == cudaSuccess) ++g_launches;
  return e;
}

}  // namespace sdrt::cuda

int sdrt::cuda_geglu_gemm_forms() { return sdrt::cuda::geglu_gemm_forms(); }
const char* sdrt::cuda_geglu_gemm_form_name(int form) { return sdrt::cuda::geglu_gemm_form_name(form); }
int64_t sdrt::cuda_geglu_gemm_launches() { return sdrt::cuda::g_launches.load(); }
