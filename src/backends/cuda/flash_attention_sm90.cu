// Flash attention on Hopper's warpgroup MMAs (wgmma, sm_90a) for long attentions with heads of 40 and 80
// (SD 1.x's 4096- and 1024-token levels) and 64 (SD 2.x). One block takes 256 query rows of one (batch,
// head) with four warpgroups of 64; key/value tiles (128 rows for heads of 40, else 64) go through a ring
// of four shared-memory buffers (cp.async, mbarriers). Per tile a warpgroup computes S = Q K^T (FP32) with
// asynchronous m64n64k16 MMAs reading K (and Q, unless Q is held in registers) straight from shared memory, runs the online
// softmax on its registers (each warp's 16 rows live in quads of lanes, as in mma.sync's fragments), and
// accumulates O += P V with MMAs taking P from registers and V from shared memory. V carries one more
// 8-column block than the head: a column of ones then zeros, so P V also accumulates the row sums of P (in
// FP32, with the same P that weights V, rescaled with O for free) instead of 32 additions per tile.
// Compared with the mma.sync kernel this removes the shared-memory fragment loads and most MMA issue slots.
//
// Shared-memory layout (no swizzle): a tile of R rows is stored as 8-row x 8-column "core matrices" of 128
// contiguous bytes (row i of a core matrix at byte 16 i), core matrix (row block r8, column block c) at
// ((c * R / 8) + r8) * 128 bytes. Q (A, K-major) and K (B, K-major: keys are N, head columns are K) are
// read with the leading-dimension offset along columns (R * 16 bytes) and the stride offset along rows
// (128); V is read as an N-major B (keys are K, head columns are N): the leading offset is along keys
// (128) and the stride offset along columns (R * 16). Compiled for sm_90a only (its own object library)
// and used only on compute capability 9.0.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdlib>
#include <string>

#include "backends/cuda/flash_attention.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/flash_common.cuh"
#include "backends/cuda/sm90_common.cuh"
#include "graph/backend.h"

#ifdef SDRT_SM90A
#define SDRT_WGMMA 1
#endif

namespace sdrt::cuda {
namespace {

using namespace flash;

// Per head dim D and KEYS key rows per tile: query rows per block (256, four warpgroups, K/V in a ring of
// four buffers; 128, two warpgroups and two buffers where Q is held in registers), column blocks of Q and
// K (D padded to a multiple of 16 for the K-steps of Q K^T), of V (the head's and the ones block), the
// accumulator registers of P V, and the shared memory (Q's tile only where Q is not held in registers;
// the ring's eight mbarriers).
template <int D, int KEYS, bool QREG, int ROWS>
struct Dims {
  static constexpr int kRows = ROWS;
  static constexpr int kThreads = 2 * kRows;  // 64 query rows per warpgroup
  static constexpr int kStages = QREG ? 2 : 4;
  static_assert(!QREG || ROWS == 128, "Q in registers: 128-row blocks");
  static constexpr int kReal = D / 8;                   // column blocks loaded from memory
  static constexpr int kQK = (D + 15) / 16 * 2;         // 6 for 40, 8 for 64, 10 for 80
  static constexpr int kV = kReal + 1;                  // 6, 9, 11
  static constexpr int kO = kV * 4;                     // 24, 36, 44
  static constexpr int kBuf = KEYS * 8 * (kQK + kV);    // halves per K/V buffer
  static constexpr int kQs = QREG ? 0 : kRows * 8 * kQK;  // halves of Q's tile
  static constexpr size_t kSmem = (size_t)(kQs + kStages * kBuf) * sizeof(__half) + (QREG ? 0 : 8 * sizeof(uint64_t));
};

struct WParams {
  const __half *q, *k, *v;
  __half* o;
  int64_t H, Lq, Lk, ldq, ldk, ldv, ldo;
  float scale_log2;
};

#ifdef SDRT_WGMMA
using namespace sm90;
// arrives once this thread's earlier cp.async copies have landed (one of the barrier's expected arrivals)
__device__ __forceinline__ void mbar_arrive_cp_async(uint32_t a) { asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(a) : "memory"); }

// Matrix descriptor: start address, leading and stride byte offsets (all >> 4), no swizzle.
__device__ __forceinline__ uint64_t smem_desc(const __half* p, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  return (uint64_t)((a >> 4) & 0x3FFF) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) | ((uint64_t)((sbo >> 4) & 0x3FFF) << 32);
}

// d (64 x 64 per warpgroup, FP16: 16 registers of column pairs, laid out as the FP32 accumulator's pairs) =
// A B (+ d when acc): A and B from shared memory, both K-major; the form "wgmma-s16".
__device__ __forceinline__ void wgmma_s16(uint32_t (&d)[16], uint64_t a, uint64_t b, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f16.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]),
        "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
      : "l"(a), "l"(b), "r"(acc));
}
__device__ __forceinline__ __half2 u32_half2(uint32_t x) { return *reinterpret_cast<const __half2*>(&x); }
__device__ __forceinline__ uint32_t half2_u32(__half2 x) { return *reinterpret_cast<const uint32_t*>(&x); }
// 2^x of an FP16 pair, one ex2.approx.f16x2
__device__ __forceinline__ uint32_t exp2_h2(__half2 x) {
  uint32_t y;
  asm("ex2.approx.f16x2 %0, %1;" : "=r"(y) : "r"(*reinterpret_cast<const uint32_t*>(&x)));
  return y;
}

// d (64 x 80 per warpgroup, FP32) = A B (+ d when acc): A (FP16) from registers, B from shared memory, K-major.
__device__ __forceinline__ void wgmma_s80(float (&d)[40], const uint32_t (&a)[4], uint64_t b, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n80k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}, {%40, %41, %42, %43}, %44, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc));
}

// d (64 x 48 per warpgroup, FP32) += A B: A (FP16) from registers, B from shared memory, N-major.
__device__ __forceinline__ void wgmma_pv(float (&d)[24], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, {%24, %25, %26, %27}, %28, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
// d (64 x 88 per warpgroup, FP32) += A B: A (FP16) from registers, B from shared memory, N-major.
__device__ __forceinline__ void wgmma_pv(float (&d)[44], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %49, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n88k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43}, {%44, %45, %46, %47}, %48, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
// d (64 x 72 per warpgroup, FP32) += A B: A (FP16) from registers, B from shared memory, N-major.
__device__ __forceinline__ void wgmma_pv(float (&d)[36], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, {%36, %37, %38, %39}, %40, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// O's rows g and g + 8 of this warp (row0, row1) divided by their sums - V's ones column, column 8 * NREAL of
// O, held by each quad's first lane - and written as FP16 (rows past Lq left alone).
template <int NREAL, int NO>
__device__ __forceinline__ void store_rows(const float (&o)[NO], __half* og, int64_t row0, int64_t row1, int64_t Lq, int64_t ldo, int lane) {
  const int t = lane & 3;
  const float l0 = __shfl_sync(0xffffffff, o[4 * NREAL], lane & ~3), l1 = __shfl_sync(0xffffffff, o[4 * NREAL + 2], lane & ~3);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
  for (int i = 0; i < NREAL; ++i) {
    const int c = i * 8 + t * 2;
    if (row0 < Lq) *reinterpret_cast<__half2*>(og + row0 * ldo + c) = __floats2half2_rn(o[4 * i] * inv0, o[4 * i + 1] * inv0);
    if (row1 < Lq) *reinterpret_cast<__half2*>(og + row1 * ldo + c) = __floats2half2_rn(o[4 * i + 2] * inv1, o[4 * i + 3] * inv1);
  }
}

// Rows [r0, r0 + R) x head columns [0, 8 * NC) of a [L, ld] matrix into the core-matrix layout (rows >= L
// as zeros). Consecutive threads take consecutive rows of one column block: their 16-byte writes fill
// whole core matrices.
template <int R, int NC, int THREADS>
__device__ __forceinline__ void stage(__half* sm, const __half* g, int64_t r0, int64_t L, int64_t ld) {
#pragma unroll
  for (int k = 0; k < (R * NC + THREADS - 1) / THREADS; ++k) {
    const int idx = threadIdx.x + THREADS * k;
    if (R * NC % THREADS == 0 || idx < R * NC) {
      const int r = idx % R, c = idx / R;
      const bool in = r0 + r < L;
      cp_async16(sm + ((c * (R / 8) + r / 8) * 64 + (r % 8) * 8), in ? g + (r0 + r) * ld + c * 8 : g, in ? 16 : 0);
    }
  }
}

// The per-thread plan for staging K and V tiles (R key rows x NC column blocks) in the loop: thread t copies
// row r = t % R of column blocks c0 + (THREADS / R) k, c0 = t / R, so its global offset within a tile and
// its shared offset within a buffer are fixed, and a tile costs one pointer add and a few cp.async per
// thread (the generic stage() spends about 35 instructions of index arithmetic on each).
template <int R, int NC, int THREADS>
struct TileStager {
  static constexpr int kPer = THREADS / R;  // column blocks per pass of the block's threads
  static constexpr int kPasses = (NC + kPer - 1) / kPer;
  int32_t goff;   // r * ld + c0 * 8 (elements)
  uint32_t soff;  // (c0 * R + r) * 16 (bytes)
  int r, c0;
  __device__ __forceinline__ explicit TileStager(int64_t ld) {
    r = threadIdx.x % R;
    c0 = threadIdx.x / R;
    goff = (int32_t)(r * ld + c0 * 8);
    soff = (uint32_t)(c0 * R + r) * 16u;
  }
  // rows [j0, j0 + R) of g (whose row j0 exists) into the buffer at shared address sbase; rows >= L as zeros
  __device__ __forceinline__ void load(uint32_t sbase, const __half* g, int64_t j0, int64_t L, int64_t ld) const {
    const bool in = j0 + r < L;
    const __half* src = g + j0 * ld + (in ? goff : 0);
#pragma unroll
    for (int k = 0; k < kPasses; ++k)
      if (NC % kPer == 0 || c0 + kPer * k < NC)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sbase + soff + k * kPer * R * 16), "l"(src + k * kPer * 8),
                     "r"(in ? 16 : 0));
  }
};
#endif

#ifdef SDRT_WGMMA
// This thread's row maxima over one 64-key S accumulator (row g in s[4n], s[4n+1]; row g + 8 in s[4n+2],
// s[4n+3]) folded into mx0, mx1.
__device__ __forceinline__ void row_max(const float (&s)[32], float& mx0, float& mx1) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
    mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
  }
}

// P of one 64-key S accumulator against the bases b0 (row g) and b1 (row g + 8), packed to FP16 as the
// A fragments of P V.
template <bool E16>
__device__ __forceinline__ void p_of(const float (&s)[32], float scale_log2, float b0, float b1, uint32_t (&ph)[8][2]) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    ph[n][0] = exp2_pack<E16>(fmaf(s[4 * n], scale_log2, -b0), fmaf(s[4 * n + 1], scale_log2, -b0));
    ph[n][1] = exp2_pack<E16>(fmaf(s[4 * n + 2], scale_log2, -b1), fmaf(s[4 * n + 3], scale_log2, -b1));
  }
}

// P of one 64-key S accumulator whose scores are already the exponents (base-2, the running maxima taken
// off inside the MMAs), packed to FP16.
__device__ __forceinline__ void p_of_shifted(const float (&s)[32], uint32_t (&ph)[8][2]) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    ph[n][0] = pack_half2(fast_exp2(s[4 * n]), fast_exp2(s[4 * n + 1]));
    ph[n][1] = pack_half2(fast_exp2(s[4 * n + 2]), fast_exp2(s[4 * n + 3]));
  }
}

// Whether a P of this thread (packed FP16 pairs) exceeds 2^8: its maximum as paired FP16 maxima (15
// instructions for 32 values where the FP32 row maxima take 32); an overflowed P (infinity) counts.
__device__ __forceinline__ bool p_exceeds_256(const uint32_t (&ph)[8][2]) {
  __half2 h[8];
#pragma unroll
  for (int n = 0; n < 8; ++n) h[n] = __hmax2(*reinterpret_cast<const __half2*>(&ph[n][0]), *reinterpret_cast<const __half2*>(&ph[n][1]));
#pragma unroll
  for (int w = 4; w >= 1; w /= 2)
#pragma unroll
    for (int i = 0; i < w; ++i) h[i] = __hmax2(h[i], h[i + w]);
  return __hgt(__hmax(__low2half(h[0]), __high2half(h[0])), __float2half(256.f));
}

// The lazy running maxima of rows g and g + 8 (log2 domain), given this thread's raw score maxima mx0, mx1:
// they move only when a score of the warp exceeds them by more than 2^8 (warp-uniform, so no divergence;
// P <= 256 stays exact in FP16's range), and then to the row's maximum over its quad. al0, al1: the factor
// O's rows (and sums) need for the move, 1 when none.
__device__ __forceinline__ void lazy_max(float mx0, float mx1, float scale_log2, float& m0, float& m1, float& al0, float& al1) {
  al0 = al1 = 1.f;
  if (!__any_sync(0xffffffff, mx0 * scale_log2 > m0 + 8.f || mx1 * scale_log2 > m1 + 8.f)) return;
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 2));
  const float n0 = fmaxf(m0, mx0 * scale_log2), n1 = fmaxf(m1, mx1 * scale_log2);  // scale > 0
  al0 = n0 == -INFINITY ? 1.f : fast_exp2(m0 - n0);
  al1 = n1 == -INFINITY ? 1.f : fast_exp2(m1 - n1);
  m0 = n0;
  m1 = n1;
}

// Q's rows row0, row1 (this thread's g and g + 8) as the A fragments of KS K-steps of 16 head columns
// (mma.sync's m16n8k16 layout per warp: columns 2t and 2t + 8 of each step), columns >= D and rows past Lq
// as zeros: the kernels that hold Q in registers.
template <int D, int KS>
__device__ __forceinline__ void q_fragments(uint32_t (&qa)[KS][4], const __half* qg, int64_t row0, int64_t row1, int64_t Lq, int64_t ldq, int t) {
  auto ld2 = [&](int64_t row, int col) -> uint32_t {
    return row < Lq && col < D ? *reinterpret_cast<const uint32_t*>(qg + row * ldq + col) : 0u;
  };
#pragma unroll
  for (int kt = 0; kt < KS; ++kt) {
    qa[kt][0] = ld2(row0, kt * 16 + 2 * t);
    qa[kt][1] = ld2(row1, kt * 16 + 2 * t);
    qa[kt][2] = ld2(row0, kt * 16 + 8 + 2 * t);
    qa[kt][3] = ld2(row1, kt * 16 + 8 + 2 * t);
  }
}

// Whether pred holds for a thread of this warpgroup (named barrier id, its 128 threads; every warp of the
// warpgroup calls it with the same id): a barrier with an OR reduction, so a branch on it is uniform
// across the warpgroup, as branches around its MMAs must be.
__device__ __forceinline__ bool warpgroup_any(uint32_t id, bool pred) {
  uint32_t r;
  asm volatile(
      "{\n.reg .pred p, q;\nsetp.ne.u32 p, %1, 0;\nbar.red.or.pred q, %2, 128, p;\nselp.u32 %0, 1, 0, q;\n}\n"
      : "=r"(r)
      : "r"((uint32_t)pred), "r"(id)
      : "memory");
  return r != 0;
}

// The named barrier `id` of this warpgroup's 128 threads.
__device__ __forceinline__ void warpgroup_sync(uint32_t id) { asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory"); }

// O's rows g (al0) and g + 8 (al1) rescaled, in the P V accumulator layout (kV column blocks of four).
template <int NO>
__device__ __forceinline__ void rescale_rows(float (&o)[NO], float al0, float al1) {
#pragma unroll
  for (int i = 0; i < NO / 4; ++i) {
    o[4 * i] *= al0;
    o[4 * i + 1] *= al0;
    o[4 * i + 2] *= al1;
    o[4 * i + 3] *= al1;
  }
}

// FP16 scores (forms "wgmma-s16", "pipe-s16"): the online softmax's first half on NH 64-key accumulators of
// FP16 pairs (s16[hf][2n]: row g, keys 2t and 2t + 1 of block n; s16[hf][2n + 1]: row g + 8), keys from j0:
// those >= Lk masked to -inf, the row maxima as FP16-pair maxima, the running maxima m0, m1 moved lazily
// (lazy_max) and kept FP16-exact, so that P's FP16 multiply-add takes -m exactly; al0, al1: the factor O's
// rows need for the move (1 when none). A score past FP16's range (+inf: |s| > 65504, which no softmax of a
// sane model reaches, scale folded or not) is clamped to 65504 in its row rather than turning it into NaNs.
template <int NH>
__device__ __forceinline__ void softmax16(uint32_t (&s16)[NH][16], int64_t j0, int64_t Lk, int t, float scale_log2, float& m0, float& m1,
                                          float& al0, float& al1) {
  if (j0 + NH * 64 > Lk) {
#pragma unroll
    for (int hf = 0; hf < NH; ++hf)
#pragma unroll
      for (int n = 0; n < 8; ++n)
        for (int e = 0; e < 2; ++e)  // the pair's low half is key 2t of the block, its high half 2t + 1
          if (j0 + hf * 64 + n * 8 + t * 2 + e >= Lk) {
            const uint32_t keep = e ? 0x0000FFFFu : 0u, ninf = e ? 0xFC000000u : 0xFC00FC00u;
            s16[hf][2 * n] = (s16[hf][2 * n] & keep) | ninf;
            s16[hf][2 * n + 1] = (s16[hf][2 * n + 1] & keep) | ninf;
            break;
          }
  }
  __half2 h0 = u32_half2(0xFC00FC00u), h1 = h0;  // rows g and g + 8: maxima over pairs
#pragma unroll
  for (int hf = 0; hf < NH; ++hf)
#pragma unroll
    for (int n = 0; n < 8; ++n) h0 = __hmax2(h0, u32_half2(s16[hf][2 * n])), h1 = __hmax2(h1, u32_half2(s16[hf][2 * n + 1]));
  float mx0 = __half2float(__hmax(__low2half(h0), __high2half(h0))), mx1 = __half2float(__hmax(__low2half(h1), __high2half(h1)));
  if (mx0 == INFINITY || mx1 == INFINITY) {  // rare: clamp the overflowed row(s)
    const __half2 top = u32_half2(0x7BFF7BFFu);  // 65504
#pragma unroll
    for (int hf = 0; hf < NH; ++hf)
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        if (mx0 == INFINITY) s16[hf][2 * n] = half2_u32(__hmin2(u32_half2(s16[hf][2 * n]), top));
        if (mx1 == INFINITY) s16[hf][2 * n + 1] = half2_u32(__hmin2(u32_half2(s16[hf][2 * n + 1]), top));
      }
    mx0 = fminf(mx0, 65504.f), mx1 = fminf(mx1, 65504.f);
  }
  const float pm0 = m0, pm1 = m1;
  lazy_max(mx0, mx1, scale_log2, m0, m1, al0, al1);
  if (pm0 != m0 || pm1 != m1) {
    m0 = m0 == -INFINITY ? m0 : __half2float(__float2half_rn(m0));
    m1 = m1 == -INFINITY ? m1 : __half2float(__float2half_rn(m1));
    al0 = pm0 == -INFINITY || pm0 == m0 ? 1.f : fast_exp2(pm0 - m0);
    al1 = pm1 == -INFINITY || pm1 == m1 ? 1.f : fast_exp2(pm1 - m1);
  }
}

// P of one 64-key accumulator of FP16 scores against the (FP16-exact) running maxima m0, m1: 2^(s scale - m)
// as one FP16-pair multiply-add and one ex2.approx.f16x2 per two scores, already P V's A fragments.
__device__ __forceinline__ void p_of16(const uint32_t (&s16)[16], float scale_log2, float m0, float m1, uint32_t (&ph)[8][2]) {
  const __half2 sc = __float2half2_rn(scale_log2);
  const __half2 nb0 = __float2half2_rn(m0 == -INFINITY ? 0.f : -m0), nb1 = __float2half2_rn(m1 == -INFINITY ? 0.f : -m1);
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    ph[n][0] = exp2_h2(__hfma2(u32_half2(s16[2 * n]), sc, nb0));
    ph[n][1] = exp2_h2(__hfma2(u32_half2(s16[2 * n + 1]), sc, nb1));
  }
}
#endif

// KEYS key rows per tile: 128 for heads of 40 (half the per-tile barriers, waits and shuffles; S as two
// m64n64 halves), 64 for wider heads (128 spill registers). QREG: Q's fragments held in registers for the
// whole block (read once from global memory) instead of a shared tile read by every S = Q K^T; used for
// cross-attention, whose one key tile makes staging Q a large part of the work. A row's running maximum
// moves (and O and the row sums are rescaled) only when a score of the warp exceeds it by more than 2^8
// ("lazy rescale"): P <= 256 stays exact in FP16's range with sums in FP32, and most tiles skip the quad
// shuffles and the rescale.
//
// Blocks of 256 query rows (four warpgroups, one block per SM) read each K/V tile once for 256 rows: half
// the L2 requests of 128-row blocks, whose 16-byte cp.async requests kept L2 at 86% of its throughput.
// The K/V tiles go through a ring of four buffers with mbarriers instead of a block-wide barrier per tile
// (full: every thread's copies of the tile landed; empty: all 16 warps are done with it), so the
// warpgroups drift apart and one's MMAs overlap another's softmax. Tile it + 1 is loaded at the start of
// iteration it into the buffer of tile it - 3, whose empty barrier is long complete unless a warpgroup
// falls three tiles behind. Cross-attention (QREG, one tile) keeps 128-row blocks, two per SM, each taking
// RT row tiles in turn with K and V staged once; self-attentions with too few 256-row blocks to fill the
// SMs take 128-row blocks too (ROWS 128).
//
// LATE (heads of 40, the "wgmma-lm" form): after the first tile, P made against the running maxima before
// they are checked, on P's FP16 pairs; a tile where a P exceeds 2^8 is done again the kept way (in the loop).
// LATE 2, for scores already in the base-2 domain (scale * log2 e == 1: pass fold_attention_scale), also
// takes the running maxima off inside the MMAs: Q's first padding column holds -m (m rounded to FP16) and
// K's a one, so S = q k^T - m and P = 2^S needs no multiply-add per score.
//
// S16 (the "wgmma-s16" form, heads of 40 and 80): S accumulated in FP16 and the softmax's maxima and
// exponentials on its FP16 pairs (softmax16, p_of16), P handed to P V as the MMAs left it.
template <int D, int KEYS, bool QREG, int ROWS, int RT, bool E16, int LATE, bool S16>
__global__ void __launch_bounds__(2 * ROWS, ROWS >= 256 ? 1 : 2) flash_wgmma_k(WParams p) {
  dep_entry();
#ifdef SDRT_WGMMA
  using Dm = Dims<D, KEYS, QREG, ROWS>;
  constexpr int kQK = Dm::kQK, kReal = Dm::kReal, kO = Dm::kO, kBuf = Dm::kBuf;
  constexpr int kRows = Dm::kRows, kThreads = Dm::kThreads, kStages = Dm::kStages;
  constexpr bool kRing = !QREG;
  constexpr int kHalves = KEYS / 64;  // 64-key halves of a tile: one m64n64 S accumulator each
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __half* Qs = reinterpret_cast<__half*>(smem_raw);  // kRows rows x kQK column blocks (unless QREG)
  __half* KV = Qs + Dm::kQs;                          // kStages buffers of K (KEYS rows x kQK blocks) then V (KEYS x kV)
  const uint32_t bars = (uint32_t)__cvta_generic_to_shared(KV + kStages * kBuf);  // the ring's full[4], then empty[4]

  const int64_t b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  static_assert(QREG || RT == 1, "row tiles per block: Q in registers only");
  static_assert(!S16 || (!QREG && !E16 && !LATE), "FP16 scores: the kept kernel with Q in shared memory");
  const int64_t q0 = (int64_t)blockIdx.x * kRows * RT;
  const __half* qg = p.q + b * p.Lq * p.ldq + h * D;
  const __half* kg = p.k + b * p.Lk * p.ldk + h * D;
  const __half* vg = p.v + b * p.Lk * p.ldv + h * D;
  __half* og = p.o + b * p.Lq * p.ldo + h * D;
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int64_t row0 = q0 + wg * 64 + warp * 16 + g, row1 = row0 + 8;

  const TileStager<KEYS, kReal, kThreads> kst(p.ldk), vst(p.ldv);
  const uint32_t kv_s = (uint32_t)__cvta_generic_to_shared(KV);  // buffer 0's K; its V kVOff bytes on
  constexpr uint32_t kVOff = KEYS * 16 * kQK, kBufBytes = kBuf * sizeof(__half);
  if (kRing && threadIdx.x == 0) {
    for (int i = 0; i < 4; ++i) {
      mbar_init(bars + 8 * i, kThreads);            // full: every thread, once its copies of the tile landed
      mbar_init(bars + 32 + 8 * i, kThreads / 32);  // empty: one arrival per warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (!QREG) stage<kRows, kReal, kThreads>(Qs, qg, q0, p.Lq, p.ldq);
  kst.load(kv_s, kg, 0, p.Lk, p.ldk);
  vst.load(kv_s + kVOff, vg, 0, p.Lk, p.ldv);
  cp_async_commit();
  // The column blocks never loaded: Q's (in shared memory) and K's padding to the K-steps (zeros), and V's
  // last block, a column of ones then zeros.
  constexpr int kPadQK = kQK - kReal;  // 1 for 40, 0 for 64 and 80
  constexpr int kPadQ = QREG ? 0 : kPadQK * kRows;
  for (int r = threadIdx.x; r < kPadQ + kPadQK * kStages * KEYS + kStages * KEYS; r += blockDim.x) {
    __half* row;
    bool ones = false;
    if (r < kPadQ) {
      row = Qs + (kReal * (kRows / 8) + r / 8) * 64 + (r % 8) * 8;
    } else if (r < kPadQ + kPadQK * kStages * KEYS) {  // K's padding, every buffer (LATE 2: its first column ones)
      const int k = r - kPadQ, buf = k / KEYS, kr = k % KEYS;
      row = KV + buf * kBuf + (kReal * (KEYS / 8) + kr / 8) * 64 + (kr % 8) * 8;
      ones = LATE == 2;
    } else {  // V's ones block, every buffer
      const int k = r - kPadQ - kPadQK * kStages * KEYS, buf = k / KEYS, kr = k % KEYS;
      row = KV + buf * kBuf + KEYS * 8 * kQK + (kReal * (KEYS / 8) + kr / 8) * 64 + (kr % 8) * 8;
      ones = true;
    }
    *reinterpret_cast<uint4*>(row) = make_uint4(ones ? 0x3C00u : 0u, 0u, 0u, 0u);  // 0x3C00: FP16 1.0 in the low half
  }

  // Descriptors, made once: Q's for the K-steps of this warpgroup's rows; K's and V's for buffer 0, the
  // other an offset away (the start address sits in the low bits, in 16-byte units). Offsets (bytes): Q's
  // core matrices are 128 apart along rows, 128 * 16 along columns; K's and V's 128 along keys, KEYS * 16
  // along columns.
  constexpr uint32_t kQCol = kRows * 16, kKVCol = KEYS * 16;
  constexpr uint64_t kBufUnits = (kBuf * sizeof(__half)) >> 4;
  uint64_t dq[QREG ? 1 : kQK / 2];
  if constexpr (!QREG) {
#pragma unroll
    for (int kt = 0; kt < kQK / 2; ++kt) dq[kt] = smem_desc(Qs + (2 * kt * (kRows / 8) + 8 * wg) * 64, kQCol, 128);
  }
  const uint64_t dk0 = smem_desc(KV, kKVCol, 128);
  const uint64_t dv0 = smem_desc(KV + KEYS * 8 * kQK, 128, kKVCol);

  if constexpr (kRing) {
    cp_async_wait<0>();  // Q and this thread's part of tile 0
    fence_proxy_async();
    __syncthreads();  // the barriers' initialisation, Q and the constant blocks seen by all
    mbar_arrive_cp_async(bars);  // tile 0 (landed already)
  }

  // RT row tiles of kRows rows per block (QREG: K and V, one tile, staged once for all of them)
  for (int rt = 0; rt < RT; ++rt, row0 += kRows, row1 += kRows) {
    if (RT > 1 && q0 + rt * kRows >= p.Lq) break;  // the same for the whole block
    uint32_t qa[QREG ? kQK / 2 : 1][4];  // Q as A fragments (QREG)
    if constexpr (QREG) q_fragments<D>(qa, qg, row0, row1, p.Lq, p.ldq, t);

    float o[kO];  // the head's output columns, then the row sums (column D) and zeros
#pragma unroll
    for (int i = 0; i < kO; ++i) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY;  // running maxima (log2 domain) of rows g and g + 8
    [[maybe_unused]] bool shifted = false;  // LATE 2: Q's padding column holds -m0, -m1 (else 0)
    const int64_t tiles = (p.Lk + KEYS - 1) / KEYS;
    for (int64_t it = 0; it < tiles; ++it) {
      const int64_t j0 = it * KEYS;
      const uint64_t buf = (kRing ? it % 4 : it & 1) * kBufUnits;
      if constexpr (kRing) {
        if (it + 1 < tiles) {  // tile n = it + 1 into the buffer of tile n - 4, once all warps are done with that
          const int64_t n = it + 1;
          if (n >= 4) mbar_wait(bars + 32 + 8 * (n % 4), (uint32_t)((n / 4 - 1) & 1));
          const uint32_t kn = kv_s + (uint32_t)(n % 4) * kBufBytes;
          kst.load(kn, kg, n * KEYS, p.Lk, p.ldk);
          vst.load(kn + kVOff, vg, n * KEYS, p.Lk, p.ldv);
          mbar_arrive_cp_async(bars + 8 * (n % 4));
        }
        mbar_wait(bars + 8 * (it % 4), (uint32_t)((it / 4) & 1));  // tile it landed
        fence_proxy_async();  // the copies (generic proxy) before the MMAs' reads (async proxy)
      } else {
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();  // tile it is in; every warpgroup is done with tile it - 1 (its MMAs waited for)
        if (it + 1 < tiles) {
          const uint32_t kn = kv_s + (uint32_t)((it + 1) & 1) * kBufBytes;
          kst.load(kn, kg, j0 + KEYS, p.Lk, p.ldk);
          vst.load(kn + kVOff, vg, j0 + KEYS, p.Lk, p.ldv);
          cp_async_commit();
        }
      }

      // O += P V of half hf (P in ph)
      auto issue_pv = [&](const uint32_t(&ph)[8][2], int hf) {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const uint32_t a[4] = {ph[2 * kk][0], ph[2 * kk][1], ph[2 * kk + 1][0], ph[2 * kk + 1][1]};
          wgmma_pv(o, a, dv0 + buf + (hf * 4 + kk) * (256 >> 4));
        }
        wgmma_commit();
      };
      if constexpr (S16) {
        // S16: S = Q K^T accumulated in FP16 (m64n64k16.f16: 16 registers of FP16 pairs per 64 keys, the
        // pairs laid out as P's A fragments), the row maxima as FP16-pair maxima, P = 2^(s scale - m) as one
        // FP16-pair multiply-add and one ex2.approx.f16x2 per two scores - no conversions, no packing. The
        // running maxima are kept FP16-exact (O rescaled by the rounded values), as the late form's shifted
        // variant keeps them.
        uint32_t s16[kHalves][16];
        wgmma_fence();
#pragma unroll
        for (int kt = 0; kt < kQK / 2; ++kt)
#pragma unroll
          for (int hf = 0; hf < kHalves; ++hf)
            wgmma_s16(s16[hf], dq[QREG ? 0 : kt], dk0 + buf + kt * ((2 * kKVCol) >> 4) + hf * ((8 * 128) >> 4), kt > 0);
        wgmma_commit();
        wgmma_wait<0>();
        float al0, al1;
        softmax16<kHalves>(s16, j0, p.Lk, t, p.scale_log2, m0, m1, al0, al1);
        if (al0 != 1.f || al1 != 1.f) rescale_rows(o, al0, al1);
#pragma unroll
        for (int hf = 0; hf < kHalves; ++hf) {
          uint32_t ph[8][2];
          p_of16(s16[hf], p.scale_log2, m0, m1, ph);
          issue_pv(ph, hf);
        }
      } else {
        // S: keys [64 hf, 64 hf + 64) of the tile in s[hf] (that half of K starts 8 core matrices, 1024 bytes, on)
        auto issue_s = [&](float(&sh)[32], int hf, int kt) {
          const uint64_t dk = dk0 + buf + kt * ((2 * kKVCol) >> 4) + hf * ((8 * 128) >> 4);
          if constexpr (QREG) wgmma_rs_n64(sh, qa[kt], dk, kt > 0);
          else wgmma_n64(sh, dq[kt], dk, kt > 0);
        };
        // keys past Lk (the last tile) masked
        auto mask = [&](float(&sh)[32], int hf) {
          if (j0 + KEYS > p.Lk) {
#pragma unroll
            for (int n = 0; n < 8; ++n)
#pragma unroll
              for (int e = 0; e < 4; ++e)
                if (j0 + hf * 64 + n * 8 + t * 2 + (e & 1) >= p.Lk) sh[4 * n + e] = -INFINITY;
          }
        };
        float s[kHalves][32];
        // the tile's scores, masked (the late form's rare path computes them again)
        auto scores = [&]() {
          wgmma_fence();
#pragma unroll
          for (int kt = 0; kt < kQK / 2; ++kt)
#pragma unroll
            for (int hf = 0; hf < kHalves; ++hf) issue_s(s[hf], hf, kt);
          wgmma_commit();
          wgmma_wait<0>();
#pragma unroll
          for (int hf = 0; hf < kHalves; ++hf) mask(s[hf], hf);
        };
        // online softmax of this warp's 16 rows (row g in s[hf][4n], s[hf][4n+1]; row g + 8 in s[hf][4n+2],
        // s[hf][4n+3]; n the 8-key block of the half)
        scores();
        // The running maxima moved to this tile's row maxima where lazy_max moves them, O rescaled. LATE 2:
        // the scores plus the rows' shifts sh0, sh1 (scale 1), the maxima kept FP16-exact and O rescaled by
        // the rounded values.
        [[maybe_unused]] auto round16 = [](float x) { return fabsf(x) < 16384.f ? __half2float(__float2half_rn(x)) : x; };
        auto move_maxima = [&](float sh0, float sh1) {
          float mx0 = -INFINITY, mx1 = -INFINITY, al0, al1;
#pragma unroll
          for (int hf = 0; hf < kHalves; ++hf) row_max(s[hf], mx0, mx1);
          if constexpr (LATE == 2) mx0 += sh0, mx1 += sh1;
          [[maybe_unused]] const float pm0 = m0, pm1 = m1;
          lazy_max(mx0, mx1, p.scale_log2, m0, m1, al0, al1);
          if constexpr (LATE == 2) {
            m0 = round16(m0), m1 = round16(m1);
            al0 = pm0 == -INFINITY || pm0 == m0 ? 1.f : fast_exp2(pm0 - m0);
            al1 = pm1 == -INFINITY || pm1 == m1 ? 1.f : fast_exp2(pm1 - m1);
          }
          if (al0 != 1.f || al1 != 1.f) rescale_rows(o, al0, al1);
        };
        if constexpr (!LATE) {
          move_maxima(0.f, 0.f);
          // P of each 64-key half packed to FP16 and its P V issued before the next half's exponentials (they
          // overlap its MMAs, and one half's P is live at a time)
#pragma unroll
          for (int hf = 0; hf < kHalves; ++hf) {
            uint32_t ph[8][2];
            p_of<E16>(s[hf], p.scale_log2, m0 == -INFINITY ? 0.f : m0, m1 == -INFINITY ? 0.f : m1, ph);
            issue_pv(ph, hf);
          }
        } else {
          // The late form: after the first tile (which sets the running maxima), P made against the running
          // maxima as they stand and checked afterwards, on its FP16 pairs. Only where a P of the warpgroup
          // exceeds 2^8 (rare) the whole warpgroup computes the tile's scores again (its MMAs are the
          // warpgroup's; keeping S for this would take the registers that keep them asynchronous) and takes
          // the kept path. No FP32 row maxima on most tiles, and the exponentials need not wait for them; both
          // halves' P are made before their P V.
          //
          // LATE 2: S comes out of the MMAs less the shift sh of its row that Q's padding column holds (-sh):
          // sh = m for every row of the warp while `shifted`, else 0 (a maximum FP16 cannot hold). The running
          // maxima are kept FP16-exact (sh is m exactly), and the moves of the rare path rescale O by the
          // rounded values.
          uint32_t ph[kHalves][8][2];
          // LATE 2: Q's padding column of this warp's rows set to -m where every m of the warp fits FP16, else
          // 0; seen by the warpgroup's next MMAs (every warp of the warpgroup calls this)
          auto set_shift = [&]() {
            shifted = __all_sync(0xffffffff, fabsf(m0) < 16384.f && fabsf(m1) < 16384.f);
            if (t == 0) {
              const int lr0 = wg * 64 + warp * 16 + g, lr1 = lr0 + 8;
              Qs[(kReal * (kRows / 8) + lr0 / 8) * 64 + (lr0 % 8) * 8] = __float2half_rn(shifted ? -m0 : 0.f);
              Qs[(kReal * (kRows / 8) + lr1 / 8) * 64 + (lr1 % 8) * 8] = __float2half_rn(shifted ? -m1 : 0.f);
            }
            fence_proxy_async();
            warpgroup_sync(1 + wg);
          };
          if (it == 0) {
            move_maxima(0.f, 0.f);  // Q's padding column is 0 on the first tile
#pragma unroll
            for (int hf = 0; hf < kHalves; ++hf) p_of<E16>(s[hf], p.scale_log2, m0 == -INFINITY ? 0.f : m0, m1 == -INFINITY ? 0.f : m1, ph[hf]);
            if constexpr (LATE == 2) set_shift();
          } else {
            if (LATE == 2 && shifted) {
#pragma unroll
              for (int hf = 0; hf < kHalves; ++hf) p_of_shifted(s[hf], ph[hf]);
            } else {
#pragma unroll
              for (int hf = 0; hf < kHalves; ++hf) p_of<E16>(s[hf], p.scale_log2, m0, m1, ph[hf]);
            }
            bool over = false;
#pragma unroll
            for (int hf = 0; hf < kHalves; ++hf) over |= p_exceeds_256(ph[hf]);
            if (warpgroup_any(1 + wg, over)) {
              scores();
              const float sh0 = LATE == 2 && shifted ? m0 : 0.f, sh1 = LATE == 2 && shifted ? m1 : 0.f;
              move_maxima(sh0, sh1);
              // P = 2^(s scale + sh - m): the scores' shift replaced by the new maxima
#pragma unroll
              for (int hf = 0; hf < kHalves; ++hf) p_of<E16>(s[hf], p.scale_log2, m0 - sh0, m1 - sh1, ph[hf]);
              if constexpr (LATE == 2) set_shift();
            }
          }
#pragma unroll
          for (int hf = 0; hf < kHalves; ++hf) issue_pv(ph[hf], hf);
        }
      }
      wgmma_wait<0>();
      if constexpr (kRing) {  // this warp is done with the tile's buffer
        __syncwarp();
        if ((threadIdx.x & 31) == 0) mbar_arrive(bars + 32 + 8 * (it % 4));
      }
    }

    store_rows<kReal>(o, og, row0, row1, p.Lq, p.ldo, lane);
  }  // row tiles
#endif
}

// Intra-warpgroup pipelining (FlashAttention-3's ordering), heads of 40 (and 80): per tile a
// warpgroup issues S' = Q K'^T for the NEXT tile and O += P V for this one (each its own wgmma stage),
// waits for S' alone, runs S''s softmax while P V is still in the tensor cores, then waits for P V and
// rescales O by the step of the row maxima. The softmax's exponentials (the MUFU pipe) so overlap the
// MMAs within each warpgroup instead of only across the four. 64-key tiles (S', P, P' and O fit 128
// registers: 114); K/V through a ring of PipeDims::kStages buffers, tile it + 2 loaded at iteration it
// (tiles it and it + 1 are in use), so the warpgroups may drift up to kStages - 3 tiles apart. Nothing is in
// flight across the loop's edge, and P and P' are two arrays taking turns (a copy of P' into P let the
// register allocator compute P' into P's registers while P V still read them: ptxas then serialised
// the MMAs, C7513). Heads of 80 the same way (125 registers; the 1024-token level). The engine times it
// against the kept kernel per shape (form "pipe"; with S16, FP16 scores as in the kept kernel's S16, form
// "pipe-s16"); SDRT_ATTN_PIPE=1 forces it for heads of 40, 2 for heads of 40 and 80. (A quarter of the
// exponentials on the FMA pipe instead of MUFU was 15-25% slower on the H200; on FP16 pairs beside the FP16
// scores, an eighth or a quarter 4-5% slower on the H100, twenty-fourth session.)
std::atomic<int64_t> g_pipe_launches{0};
std::atomic<int64_t> g_late_launches{0};     // the kept kernel's late-maximum form (flash_wgmma_k's LATE)
std::atomic<int64_t> g_shifted_launches{0};  // of those, LATE 2 (the maxima taken off in the MMAs)
std::atomic<int64_t> g_s16_launches{0};      // the kept kernel with FP16 scores ("wgmma-s16")
std::atomic<int64_t> g_s16w_launches{0};     // of those, in 320-row blocks ("wgmma-s16w")

// ROWS 256: four warpgroups, one block per SM, a ring of 8 buffers; ROWS 128 (where 256-row blocks are
// too few for the SMs, e.g. one image's half of a guided batch): two warpgroups, two blocks per SM, a ring
// of 6 (heads of 40) or 4 (80: 104 KB a block).
template <int D, int ROWS>
struct PipeDims {
  static constexpr int kKeys = 64, kRows = ROWS, kThreads = 2 * ROWS, kStages = ROWS == 256 ? 8 : D > 64 ? 4 : 6;
  static constexpr int kReal = D / 8, kQK = (D + 15) / 16 * 2, kV = kReal + 1, kO = kV * 4;
  static constexpr int kBuf = kKeys * 8 * (kQK + kV);
  static constexpr int kQs = kRows * 8 * kQK;
  static constexpr size_t kSmem = (size_t)(kQs + kStages * kBuf) * sizeof(__half) + 2 * kStages * sizeof(uint64_t);
};

#ifdef SDRT_WGMMA
// Pins registers at this point of the compiler's instruction order (as CUTLASS's warpgroup_fence_operand):
// accumulators are read only after the wait that ends their MMAs, values an MMA reads are defined before
// the fence that starts it (plain register code may otherwise move past the asm statements; ptxas would
// then serialise the kernel's MMAs). It emits nothing, so it does not extend a register's life for ptxas.
template <int N>
__device__ __forceinline__ void reg_fence(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
__device__ __forceinline__ void reg_fence(uint32_t (&r)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
__device__ __forceinline__ void reg_fence(uint32_t (&r)[8][2]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) asm volatile("" : "+r"(r[i][0]), "+r"(r[i][1])::"memory");
}

// Online softmax of one 64-key tile's scores (this thread's rows g and g + 8: s[4n], s[4n+1] and s[4n+2],
// s[4n+3] for key block n), keys from j0 (those >= Lk masked): the running maxima m0, m1 move lazily
// (only when a score of the warp exceeds them by 2^8), al0 / al1 the factor O's rows need for the move
// (1 when none); P packed to FP16 as the A fragments of P V (E16: exponentials in FP16, exp2_half2).
template <bool E16>
__device__ __forceinline__ void pipe_softmax(float (&s)[32], int64_t j0, int64_t Lk, int t, float scale_log2, float& m0, float& m1, float& al0,
                                             float& al1, uint32_t (&ph)[8][2]) {
  if (j0 + 64 > Lk) {
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (j0 + n * 8 + t * 2 + (e & 1) >= Lk) s[4 * n + e] = -INFINITY;
  }
  float mx0 = -INFINITY, mx1 = -INFINITY;
  row_max(s, mx0, mx1);
  lazy_max(mx0, mx1, scale_log2, m0, m1, al0, al1);
  p_of<E16>(s, scale_log2, m0 == -INFINITY ? 0.f : m0, m1 == -INFINITY ? 0.f : m1, ph);
}
#endif

template <int D, int ROWS, bool E16, bool S16>
__global__ void __launch_bounds__(2 * ROWS, ROWS == 256 ? 1 : 2) flash_wgmma_pipe_k(WParams p) {
  dep_entry();
#ifdef SDRT_WGMMA
  using Dm = PipeDims<D, ROWS>;
  constexpr int KEYS = Dm::kKeys, kRows = Dm::kRows, kThreads = Dm::kThreads, R = Dm::kStages;
  constexpr int kQK = Dm::kQK, kReal = Dm::kReal, kO = Dm::kO, kBuf = Dm::kBuf;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __half* Qs = reinterpret_cast<__half*>(smem_raw);  // kRows rows x kQK column blocks
  __half* KV = Qs + Dm::kQs;                          // R buffers of K (KEYS rows x kQK blocks) then V (KEYS x kV)
  const uint32_t bars = (uint32_t)__cvta_generic_to_shared(KV + R * kBuf);  // full[R], then empty[R]
  auto full = [&](int64_t n) { return bars + 8u * (uint32_t)(n % R); };
  auto empty = [&](int64_t n) { return bars + 8u * (uint32_t)(R + n % R); };

  const int64_t b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  const int64_t q0 = (int64_t)blockIdx.x * kRows;
  const __half* qg = p.q + b * p.Lq * p.ldq + h * D;
  const __half* kg = p.k + b * p.Lk * p.ldk + h * D;
  const __half* vg = p.v + b * p.Lk * p.ldv + h * D;
  __half* og = p.o + b * p.Lq * p.ldo + h * D;
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t row0 = q0 + wg * 64 + warp * 16 + g, row1 = row0 + 8;

  const TileStager<KEYS, kReal, kThreads> kst(p.ldk), vst(p.ldv);
  const uint32_t kv_s = (uint32_t)__cvta_generic_to_shared(KV);
  constexpr uint32_t kVOff = KEYS * 16 * kQK, kBufBytes = kBuf * sizeof(__half);
  if (threadIdx.x == 0) {
    for (int i = 0; i < R; ++i) {
      mbar_init(bars + 8 * i, kThreads);            // full: every thread, once its copies of the tile landed
      mbar_init(bars + 8 * (R + i), kThreads / 32);  // empty: one arrival per warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  const int64_t tiles = (p.Lk + KEYS - 1) / KEYS;
  stage<kRows, kReal, kThreads>(Qs, qg, q0, p.Lq, p.ldq);
  kst.load(kv_s, kg, 0, p.Lk, p.ldk);
  vst.load(kv_s + kVOff, vg, 0, p.Lk, p.ldv);
  cp_async_commit();
  // the column blocks never loaded: Q's and K's padding to the K-steps (zeros), V's ones block
  constexpr int kPadQK = kQK - kReal;
  for (int r = threadIdx.x; r < kPadQK * kRows + kPadQK * R * KEYS + R * KEYS; r += blockDim.x) {
    __half* row;
    bool ones = false;
    if (r < kPadQK * kRows) {
      row = Qs + (kReal * (kRows / 8) + r / 8) * 64 + (r % 8) * 8;
    } else if (r < kPadQK * kRows + kPadQK * R * KEYS) {
      const int k = r - kPadQK * kRows, buf = k / KEYS, kr = k % KEYS;
      row = KV + buf * kBuf + (kReal * (KEYS / 8) + kr / 8) * 64 + (kr % 8) * 8;
    } else {
      const int k = r - kPadQK * kRows - kPadQK * R * KEYS, buf = k / KEYS, kr = k % KEYS;
      row = KV + buf * kBuf + KEYS * 8 * kQK + (kReal * (KEYS / 8) + kr / 8) * 64 + (kr % 8) * 8;
      ones = true;
    }
    *reinterpret_cast<uint4*>(row) = make_uint4(ones ? 0x3C00u : 0u, 0u, 0u, 0u);
  }
  constexpr uint32_t kQCol = kRows * 16, kKVCol = KEYS * 16;
  constexpr uint64_t kBufUnits = (kBuf * sizeof(__half)) >> 4;
  uint64_t dq[kQK / 2];
#pragma unroll
  for (int kt = 0; kt < kQK / 2; ++kt) dq[kt] = smem_desc(Qs + (2 * kt * (kRows / 8) + 8 * wg) * 64, kQCol, 128);
  const uint64_t dk0 = smem_desc(KV, kKVCol, 128);
  const uint64_t dv0 = smem_desc(KV + KEYS * 8 * kQK, 128, kKVCol);
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  mbar_arrive_cp_async(full(0));
  if (tiles > 1) {
    kst.load(kv_s + kBufBytes, kg, KEYS, p.Lk, p.ldk);
    vst.load(kv_s + kBufBytes + kVOff, vg, KEYS, p.Lk, p.ldv);
    mbar_arrive_cp_async(full(1));
  }

  float o[kO];
#pragma unroll
  for (int i = 0; i < kO; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, al0, al1;
  uint32_t ph[8][2];
  // S = Q K^T of the tile in buffer dk issued and committed (S16: accumulated in FP16), and its softmax
  // once the MMAs landed: P to pc, the step of the maxima in al0, al1
  [[maybe_unused]] uint32_t s16[1][16];
  [[maybe_unused]] float s[32];
  auto issue_s = [&](uint64_t dk) {
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < kQK / 2; ++kt) {
      if constexpr (S16) wgmma_s16(s16[0], dq[kt], dk + kt * ((2 * kKVCol) >> 4), kt > 0);
      else wgmma_n64(s, dq[kt], dk + kt * ((2 * kKVCol) >> 4), kt > 0);
    }
    wgmma_commit();
  };
  auto softmax = [&](int64_t j0, uint32_t(&pc)[8][2]) {
    if constexpr (S16) {
      reg_fence(s16[0]);
      softmax16<1>(s16, j0, p.Lk, t, p.scale_log2, m0, m1, al0, al1);
      p_of16(s16[0], p.scale_log2, m0, m1, pc);
    } else {
      reg_fence(s);
      pipe_softmax<E16>(s, j0, p.Lk, t, p.scale_log2, m0, m1, al0, al1, pc);
    }
  };
  {  // tile 0's scores and P
    mbar_wait(full(0), 0);
    fence_proxy_async();
    issue_s(dk0);
    wgmma_wait<0>();
    softmax(0, ph);
    reg_fence(ph);
    reg_fence(o);
  }
  // O += P V of tile it (P in pc) - its MMAs only issued and committed
  auto issue_pv = [&](int64_t it, const uint32_t (&pc)[8][2]) {
    wgmma_fence();  // a pipeline stage of its own: S''s ends at the wait for it, not at this one's
    const uint64_t dv = dv0 + (uint64_t)(it % R) * kBufUnits;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t a[4] = {pc[2 * kk][0], pc[2 * kk][1], pc[2 * kk + 1][0], pc[2 * kk + 1][1]};
      wgmma_pv(o, a, dv + kk * (256 >> 4));
    }
    wgmma_commit();
  };
  // Tile it (P in pc) and the next tile's scores, whose P goes to pn: two P arrays taking turns, so no
  // copy of P' into P, which the register allocator would merge with P while P V still reads it.
  auto step = [&](int64_t it, const uint32_t (&pc)[8][2], uint32_t (&pn)[8][2]) {
    if (it + 2 < tiles) {  // tile n = it + 2 into the buffer of tile n - R, once every warp is done with that
      const int64_t n = it + 2;
      if (n >= R) mbar_wait(empty(n), (uint32_t)((n / R - 1) & 1));
      const uint32_t kn = kv_s + (uint32_t)(n % R) * kBufBytes;
      kst.load(kn, kg, n * KEYS, p.Lk, p.ldk);
      vst.load(kn + kVOff, vg, n * KEYS, p.Lk, p.ldv);
      mbar_arrive_cp_async(full(n));
    }
    mbar_wait(full(it + 1), (uint32_t)(((it + 1) / R) & 1));
    fence_proxy_async();
    issue_s(dk0 + (uint64_t)((it + 1) % R) * kBufUnits);  // S' = Q K'^T of the next tile
    issue_pv(it, pc);
    wgmma_wait<1>();  // S' landed; P V may still run: S''s softmax beside it
    softmax((it + 1) * KEYS, pn);
    wgmma_wait<0>();
    reg_fence(o);
    __syncwarp();
    if (lane == 0) mbar_arrive(empty(it));  // this warp is done with tile it's buffer
    if (al0 != 1.f || al1 != 1.f) rescale_rows(o, al0, al1);
  };
  // every tile but the last, two per turn (no branch around an MMA but the turn's own test)
  uint32_t ph2[8][2];
  int64_t it = 0;
  for (; it + 2 < tiles; it += 2) {
    step(it, ph, ph2);
    step(it + 1, ph2, ph);
  }
  if (it + 1 < tiles) {
    step(it, ph, ph2);
    issue_pv(tiles - 1, ph2);
  } else {
    issue_pv(tiles - 1, ph);
  }
  wgmma_wait<0>();
  reg_fence(o);
  store_rows<kReal>(o, og, row0, row1, p.Lq, p.ldo, lane);
#endif
}

// Cross-attention over at most 80 keys with heads of 40 (SD's 77-token prompts at the 4096-token level;
// form "cross80"): K and V staged once per block as one 80-key tile, Q's fragments in registers, and per
// row tile one m64n80 S (40 registers, where the kept kernel's 128-key tile holds 64 and spends 51 of its
// 128 exponentials and MMA columns on masked keys), its exact row maxima (one tile: no running maxima), P
// and five m64n48 P V steps; V's extra column of ones gives the row sums as in the kept kernel. Blocks of
// 128 rows (two warpgroups) taking RT row tiles in turn, two blocks or more per SM (15 KB of shared memory).
std::atomic<int64_t> g_cross80_launches{0};

template <int RT>
__global__ void __launch_bounds__(256, 2) flash_cross80_k(WParams p) {
  dep_entry();
#ifdef SDRT_WGMMA
  constexpr int D = 40, KEYS = 80, kRows = 128, kThreads = 256, kReal = D / 8, kQK = 6, kO = (kReal + 1) * 4;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __half* Ks = reinterpret_cast<__half*>(smem_raw);  // KEYS rows x kQK column blocks (core matrices)
  __half* Vs = Ks + KEYS * 8 * kQK;                   // KEYS rows x (kReal + 1) column blocks
  const int64_t b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  const int64_t q0 = (int64_t)blockIdx.x * kRows * RT;
  const __half* qg = p.q + b * p.Lq * p.ldq + h * D;
  __half* og = p.o + b * p.Lq * p.ldo + h * D;
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  stage<KEYS, kReal, kThreads>(Ks, p.k + b * p.Lk * p.ldk + h * D, 0, p.Lk, p.ldk);  // keys >= Lk as zeros
  stage<KEYS, kReal, kThreads>(Vs, p.v + b * p.Lk * p.ldv + h * D, 0, p.Lk, p.ldv);
  cp_async_commit();
  // K's padding block (zeros) and V's last block (a column of ones, then zeros)
  for (int r = threadIdx.x; r < 2 * KEYS; r += kThreads) {
    const bool v = r >= KEYS;
    const int kr = r % KEYS;
    *reinterpret_cast<uint4*>((v ? Vs : Ks) + (kReal * (KEYS / 8) + kr / 8) * 64 + (kr % 8) * 8) = make_uint4(v ? 0x3C00u : 0u, 0u, 0u, 0u);
  }
  // descriptors as the kept kernel's: K's core matrices 128 bytes apart along keys, KEYS * 16 along columns
  const uint64_t dk = smem_desc(Ks, KEYS * 16, 128), dv = smem_desc(Vs, 128, KEYS * 16);
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  int64_t row0 = q0 + wg * 64 + warp * 16 + g, row1 = row0 + 8;
  for (int rt = 0; rt < RT; ++rt, row0 += kRows, row1 += kRows) {
    if (RT > 1 && q0 + rt * kRows >= p.Lq) break;  // the same for the whole block
    uint32_t qa[kQK / 2][4];  // Q as A fragments
    q_fragments<D>(qa, qg, row0, row1, p.Lq, p.ldq, t);
    float s[40];
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < kQK / 2; ++kt) wgmma_s80(s, qa[kt], dk + kt * ((2 * KEYS * 16) >> 4), kt > 0);
    wgmma_commit();
    wgmma_wait<0>();
    // keys past Lk masked; the rows' maxima over the quad (one tile: exact)
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < KEYS / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (n * 8 + t * 2 + (e & 1) >= p.Lk) s[4 * n + e] = -INFINITY;
        if (e < 2) mx0 = fmaxf(mx0, s[4 * n + e]);
        else mx1 = fmaxf(mx1, s[4 * n + e]);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 2));
    const float b0 = mx0 * p.scale_log2, b1 = mx1 * p.scale_log2;  // key 0 exists (Lk >= 1): finite
    uint32_t ph[KEYS / 8][2];
#pragma unroll
    for (int n = 0; n < KEYS / 8; ++n) {
      ph[n][0] = exp2_pack<false>(fmaf(s[4 * n], p.scale_log2, -b0), fmaf(s[4 * n + 1], p.scale_log2, -b0));
      ph[n][1] = exp2_pack<false>(fmaf(s[4 * n + 2], p.scale_log2, -b1), fmaf(s[4 * n + 3], p.scale_log2, -b1));
    }
    float o[kO];
#pragma unroll
    for (int i = 0; i < kO; ++i) o[i] = 0.f;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < KEYS / 16; ++kk) {
      const uint32_t a[4] = {ph[2 * kk][0], ph[2 * kk][1], ph[2 * kk + 1][0], ph[2 * kk + 1][1]};
      wgmma_pv(o, a, dv + kk * (256 >> 4));
    }
    wgmma_commit();
    wgmma_wait<0>();
    store_rows<kReal>(o, og, row0, row1, p.Lq, p.ldo, lane);
  }
#endif
}

template <int RT>
cudaError_t launch_cross80(const WParams& p, int64_t B, cudaStream_t s) {
  constexpr size_t smem = (size_t)80 * 8 * (6 + 6) * sizeof(__half);
  const dim3 grid((unsigned)((p.Lq + 128 * RT - 1) / (128 * RT)), (unsigned)(B * p.H));
  launch_kernel(flash_cross80_k<RT>, grid, 256, smem, s, p);
  const cudaError_t r = cudaGetLastError();
  if (r == cudaSuccess) ++g_cross80_launches;
  return r;
}

bool wgmma_device(int* sms) {
  // read at each launch (launches happen when graphs are captured), so a benchmark can compare kernels
  const char* e = std::getenv("SDRT_ATTN_WGMMA");
  if (e && std::string(e) == "0") return false;
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;  // sm_90a code runs on 9.0 only
}

template <int D, int KEYS, bool QREG, int ROWS, int RT = 1, bool E16 = false, int LATE = 0, bool S16 = false>
cudaError_t launch(const WParams& p, int64_t B, cudaStream_t s) {
  constexpr size_t smem = Dims<D, KEYS, QREG, ROWS>::kSmem;
  auto* k = flash_wgmma_k<D, KEYS, QREG, ROWS, RT, E16, LATE, S16>;
  const cudaError_t attr = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);  // per device (each GPU keeps its own), so on every launch
  if (attr != cudaSuccess) return attr;
  const dim3 grid((unsigned)((p.Lq + ROWS * RT - 1) / (ROWS * RT)), (unsigned)(B * p.H));
  launch_kernel(k, grid, 2 * ROWS, smem, s, p);
  return cudaGetLastError();
}

template <int D, int ROWS, bool E16 = false, bool S16 = false>
cudaError_t launch_pipe(const WParams& p, int64_t B, cudaStream_t s) {
  constexpr size_t smem = PipeDims<D, ROWS>::kSmem;
  auto* k = flash_wgmma_pipe_k<D, ROWS, E16, S16>;
  const cudaError_t attr = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (attr != cudaSuccess) return attr;
  launch_kernel(k, dim3((unsigned)((p.Lq + ROWS - 1) / ROWS), (unsigned)(B * p.H)), 2 * ROWS, smem, s, p);
  return cudaGetLastError();
}

// The kept kernel with Q in shared memory, or the pipelined one, in blocks of 256 rows or 128 (Sm90Plan::rows256).
template <int D, int KEYS, bool E16 = false, int LATE = 0, bool S16 = false>
cudaError_t launch_rows(bool rows256, const WParams& p, int64_t B, cudaStream_t s) {
  return rows256 ? launch<D, KEYS, false, 256, 1, E16, LATE, S16>(p, B, s) : launch<D, KEYS, false, 128, 1, E16, LATE, S16>(p, B, s);
}
template <int D, bool E16 = false, bool S16 = false>
cudaError_t launch_pipe_rows(bool rows256, const WParams& p, int64_t B, cudaStream_t s) {
  return rows256 ? launch_pipe<D, 256, E16, S16>(p, B, s) : launch_pipe<D, 128, E16, S16>(p, B, s);
}

}  // namespace

namespace {
// Where the Hopper kernel applies to a shape (pointers aside) and how it runs: Q in registers (cross-
// attention, one key tile), blocks of 256 or 128 rows; false where it does not apply.
struct Sm90Plan {
  bool qreg = false, rows256 = false;
  int sms = 0;
};
bool sm90_plan(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo, bool causal,
               Sm90Plan* pl) {
  if (causal || (D != 40 && D != 64 && D != 80) || ldq % 8 || ldk % 8 || ldv % 8 || ldo % 2 || Lq < 512 || Lk < 1 || B * H > 65535 ||
      !wgmma_device(&pl->sms))
    return false;
  // A block of 256 rows (or two of 128, Q in registers) fills an SM. Blocks of 256 rows wherever there are
  // more of them than half the SMs: two blocks of 128 rows on one SM each load every K/V tile for half the
  // rows, and take about 1.45x as long as one of 256 (H100, eighteenth session: the guided batch-2 UNet's
  // shared [1, 4096] d-40 self-attention, 128 blocks of 256 rows on 132 SMs); with at most half the SMs'
  // worth, blocks of 128 rows (two warpgroups) as long as they reach half the SMs; below that the mma.sync
  // kernel's 64-row blocks spread the work better. SDRT_ATTN_ROWS256=0: 256-row blocks only where they
  // reach every SM (as before the eighteenth session).
  pl->qreg = D == 40 && Lk <= 128;
  const int64_t heads = B * H, b256 = heads * ((Lq + 255) / 256), b128 = heads * ((Lq + 127) / 128);
  pl->rows256 = attention_rows256_env() == 0 ? b256 >= pl->sms : 2 * b256 > pl->sms;
  return !(pl->qreg ? b256 < pl->sms : !pl->rows256 && 2 * b128 < pl->sms);
}
}  // namespace

int flash_attention_sm90_form_mask(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo,
                                   bool causal) {
  Sm90Plan pl;
  if (!sm90_plan(B, H, Lq, Lk, D, ldq, ldk, ldv, ldo, causal, &pl)) return 0;
  if (pl.qreg) return Lk <= 80 ? 1 | 1 << 5 : 1;  // the kept kernel with Q in registers, "cross80"
  // d 80: wgmma, pipe; d 40: also the FP16-exponential and late forms; both: FP16 scores in the kept and the
  // pipelined kernel. Not for heads of 64 (SD 2.x, SDXL): SD 2.x's attention is the one known to overflow FP16
  // in PyTorch's half-precision path, and wide scores lose what FP16 cannot hold.
  // d 40 where 256-row blocks run: the kept kernel's FP16-score form in 320-row blocks too.
  return D == 64 ? 1 : (D == 80 ? 0b11 : 0b11111) | 1 << 10 | 1 << 11 | (D == 40 && pl.rows256 ? 1 << 12 : 0);
}

cudaError_t flash_attention_sm90(const __half* q, const __half* k, const __half* v, __half* o, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                                 int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo, float scale, bool causal, cudaStream_t s, int form) {
  auto aligned = [](const void* ptr) { return ((uintptr_t)ptr & 15) == 0; };
  Sm90Plan pl;
  if (!aligned(q) || !aligned(k) || !aligned(v) || ((uintptr_t)o & 3) || !sm90_plan(B, H, Lq, Lk, D, ldq, ldk, ldv, ldo, causal, &pl))
    return cudaErrorNotSupported;
  const bool rows256 = pl.rows256;
  const WParams p{q, k, v, o, H, Lq, Lk, ldq, ldk, ldv, ldo, scale * 1.4426950408889634f};
  if (pl.qreg) {  // row tiles per block: four where that still gives every SM two blocks, else two where every SM
                  // gets one (SDRT_ATTN_RT=1/2/4 overrides, for benchmarks)
    const int64_t heads = B * H;
    const char* e = std::getenv("SDRT_ATTN_RT");
    int rt = heads * ((Lq + 511) / 512) >= 2 * pl.sms ? 4 : heads * ((Lq + 255) / 256) >= pl.sms ? 2 : 1;
    if (e && (e[0] == '1' || e[0] == '2' || e[0] == '4') && !e[1]) rt = e[0] - '0';
    // "cross80" (at most 80 keys): given as the form, else under SDRT_ATTN_CROSS80=1
    if (Lk <= 80 && (form == 5 || (form < 0 && attention_cross80_env() == 1)))
      return rt == 4 ? launch_cross80<4>(p, B, s) : rt == 2 ? launch_cross80<2>(p, B, s) : launch_cross80<1>(p, B, s);
    return rt == 4 ? launch<40, 128, true, 128, 4>(p, B, s) : rt == 2 ? launch<40, 128, true, 128, 2>(p, B, s) : launch<40, 128, true, 128, 1>(p, B, s);
  }
  // the form: given (a timed choice: attention_form_name's), else SDRT_ATTN_PIPE (1 the pipelined kernel
  // for heads of 40, 2 also 80), SDRT_ATTN_EXP16=1 (the d-40 exponentials in FP16, two per instruction) and
  // SDRT_ATTN_LATEMAX=1 (the d-40 kept kernel checking P against the running maxima afterwards)
  int pipe = form == 1 || form == 3 || form == 11;
  bool e16 = form == 2 || form == 3, late = form == 4, s16 = form == 10 || form == 11 || form == 12, wide = form == 12;
  if (form < 0) {
    s16 = attention_s16_env() == 1;
    wide = s16 && attention_s16w_env() == 1;
    const char* e = std::getenv("SDRT_ATTN_PIPE");
    const char m = e && (e[0] == '1' || e[0] == '2') && !e[1] ? e[0] : '0';
    pipe = m == '0' || (D == 80 && m == '1') ? 0 : 1;
    e16 = attention_exp16_env() == 1;
    late = attention_latemax_env() == 1;
  }
  if (D == 64) pipe = 0, s16 = false;  // no pipelined or FP16-score form for this head size
  if (D != 40) e16 = late = false;
  if (s16) e16 = false;  // both forced (SDRT_ATTN_S16=1, SDRT_ATTN_EXP16=1): the FP16 scores
  if (pipe > 0 || e16 || s16) late = false;
  if (pipe > 0) {
    const cudaError_t r = D == 80 ? (s16 ? launch_pipe_rows<80, false, true>(rows256, p, B, s) : launch_pipe_rows<80>(rows256, p, B, s))
                          : s16   ? launch_pipe_rows<40, false, true>(rows256, p, B, s)
                          : e16   ? launch_pipe_rows<40, true>(rows256, p, B, s)
                                  : launch_pipe_rows<40>(rows256, p, B, s);
    if (r == cudaSuccess) ++g_pipe_launches, g_s16_launches += s16;
    return r;
  }
  if (s16 && wide && D == 40 && rows256) {  // FP16 scores in the kept kernel, 320-row blocks
    const cudaError_t r = launch<40, 128, false, 320, 1, false, 0, true>(p, B, s);
    if (r == cudaSuccess) ++g_s16_launches, ++g_s16w_launches;
    return r;
  }
  if (s16) {  // FP16 scores in the kept kernel
    const cudaError_t r = D == 40 ? launch_rows<40, 128, false, 0, true>(rows256, p, B, s) : launch_rows<80, 64, false, 0, true>(rows256, p, B, s);
    if (r == cudaSuccess) ++g_s16_launches;
    return r;
  }
  if (D == 40 && e16) return launch_rows<40, 128, true>(rows256, p, B, s);
  if (D == 40 && late) {  // scores in the base-2 domain (pass fold_attention_scale): the maxima taken off in the MMAs
    const bool base2 = p.scale_log2 == 1.f;
    const cudaError_t r = base2 ? launch_rows<40, 128, false, 2>(rows256, p, B, s) : launch_rows<40, 128, false, 1>(rows256, p, B, s);
    if (r == cudaSuccess) ++g_late_launches, g_shifted_launches += base2;
    return r;
  }
  if (D == 40) return launch_rows<40, 128>(rows256, p, B, s);
  if (D == 64) return launch_rows<64, 64>(rows256, p, B, s);
  return launch_rows<80, 64>(rows256, p, B, s);
}

}  // namespace sdrt::cuda

int64_t sdrt::cuda_attention_pipe_launches() { return sdrt::cuda::g_pipe_launches.load(); }
int64_t sdrt::cuda_attention_late_launches() { return sdrt::cuda::g_late_launches.load(); }
int64_t sdrt::cuda_attention_shifted_launches() { return sdrt::cuda::g_shifted_launches.load(); }
int64_t sdrt::cuda_attention_cross80_launches() { return sdrt::cuda::g_cross80_launches.load(); }
int64_t sdrt::cuda_attention_s16_launches() { return sdrt::cuda::g_s16_launches.load(); }
int64_t sdrt::cuda_attention_s16w_launches() { return sdrt::cuda::g_s16w_launches.load(); }
