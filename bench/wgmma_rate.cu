// Warpgroup-MMA rates for a fused Winograd F(2x2, 3x3) convolution's inner loop (sm_90a; a probe, not an engine
// path). Winograd F(2x2, 3x3) makes a 3x3 convolution 16 GEMMs (one per transformed position) of
// [tiles, Cin] x [Cin, Cout] with 2.25x fewer multiplies than direct; fused, each output needs 16 FP32
// accumulators until the inverse transform, so a warpgroup of 64 tiles holds all 16 positions only for 16 output
// channels (m64n16k16, 128 accumulator registers a thread) - or 8 positions for 32, 4 for 64. This measures:
//   ss:  both operands in shared memory (m64nNk16, SETS accumulator sets in turn, the same A and B tiles);
//   rs:  A from registers (a constant fragment), B in shared memory;
//   rs+t: A from registers computed each K step as the kernel would: every thread loads its two tiles' 4x4
//        input patches (two adjacent tiles share two columns: 24 values) for its two channel pairs from shared
//        memory (48 32-bit loads) and applies B^T d B in half2 adds (128 HADD2), giving the 16 positions' A
//        fragments.
//   rs+t8, rs+t4: the same for the shapes that keep the MMAs at full rate - a warpgroup with 8 positions (two
//        rows of B^T d B) for 32 output channels, or 4 positions (one row) for 64: input rows 0-2 (or 0 and 2),
//        each pixel's two channel pairs in one 8-byte load (18 or 12 loads), 64 or 32 HADD2 a thread a K step.
//   rs+x: Winograd F(2, 3) along x only (1.5x fewer multiplies; 4 positions per pair of output columns, the
//        filter rows summed in the GEMM's K, so a warpgroup keeps all 4 positions of 64 tiles x 64 channels): a
//        thread's 2 tiles x 4 input columns in 8-byte loads (8) and 16 HADD2 a K step, 4 MMAs of N 64.
// TFLOP/s counts the MMAs' multiply-adds (2 x 64 x N x 16 each); a Winograd MMA does the work of 2.25 direct ones.
//   bench_wgmma_rate [--iters N]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>

#include "backends/cuda/sm90_common.cuh"

namespace {

#ifdef SDRT_SM90A
using namespace sdrt::cuda::sm90;
__device__ __forceinline__ void rs_n16(float (&d)[8], const uint32_t (&a)[4], uint64_t b, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}
__device__ __forceinline__ void ss_n16(float (&d)[8], uint64_t a, uint64_t b, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
               : "l"(a), "l"(b), "r"(scale_d));
}
__device__ __forceinline__ void rs_n32(float (&d)[16], const uint32_t (&a)[4], uint64_t b, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}
__device__ __forceinline__ void ss_n32(float (&d)[16], uint64_t a, uint64_t b, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
               : "l"(a), "l"(b), "r"(scale_d));
}
__device__ __forceinline__ void rs_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t b, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}

template <int N>
__device__ __forceinline__ void rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int sd) {
  if constexpr (N == 16) rs_n16(d, a, b, sd);
  else if constexpr (N == 32) rs_n32(d, a, b, sd);
  else if constexpr (N == 64) wgmma_rs_n64(d, a, b, sd);  // sm90_common.cuh's
  else rs_n128(d, a, b, sd);
}
template <int N>
__device__ __forceinline__ void ss(float (&d)[N / 2], uint64_t a, uint64_t b, int sd) {
  if constexpr (N == 16) ss_n16(d, a, b, sd);
  else if constexpr (N == 32) ss_n32(d, a, b, sd);
  else if constexpr (N == 64) wgmma_n64(d, a, b, sd);  // sm90_common.cuh's
  else wgmma_n128(d, a, b, sd);
}
// B^T d B of one 4x4 patch (half2: two channels), in place: rows, then columns
__device__ __forceinline__ void winograd_in(uint32_t (&d)[16]) {
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const uint32_t d0 = d[c], d1 = d[4 + c], d2 = d[8 + c], d3 = d[12 + c];
    d[c] = hsub2(d0, d2), d[4 + c] = hadd2(d1, d2), d[8 + c] = hsub2(d2, d1), d[12 + c] = hsub2(d1, d3);
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const uint32_t d0 = d[4 * r], d1 = d[4 * r + 1], d2 = d[4 * r + 2], d3 = d[4 * r + 3];
    d[4 * r] = hsub2(d0, d2), d[4 * r + 1] = hadd2(d1, d2), d[4 * r + 2] = hsub2(d2, d1), d[4 * r + 3] = hsub2(d1, d3);
  }
}
#endif

constexpr int kSmemA = 64 * 128, kSmemB = 128 * 128, kPatchWords = 4096;

// MODE 0: ss, 1: rs, 2: rs+t (N 16, SETS 16 only), 3: rs+t8 (N 32, SETS 8), 4: rs+t4 (N 64, SETS 4),
// 5: rs+x (N 64, SETS 4)
template <int N, int SETS, int WGS, int MODE>
__global__ void __launch_bounds__(128 * WGS, 1) rate_k(int iters, float* out) {
#ifdef SDRT_SM90A
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* base = (unsigned char*)(((uintptr_t)smem + 1023) & ~(uintptr_t)1023);
  const int tid = threadIdx.x;
  for (int i = tid; i < (kSmemA + kSmemB) / 4 + kPatchWords; i += blockDim.x) ((uint32_t*)base)[i] = 0x3c003c00u * ((i & 7) == 0);
  __syncthreads();
  const uint32_t sa = (uint32_t)__cvta_generic_to_shared(base), sb = sa + kSmemA;
  const uint32_t* patch = (const uint32_t*)(base + kSmemA + kSmemB);
  const uint64_t da = desc_sw128(sa), db = desc_sw128(sb);
  float acc[SETS][N / 2];
#pragma unroll
  for (int s = 0; s < SETS; ++s)
#pragma unroll
    for (int e = 0; e < N / 2; ++e) acc[s][e] = 0.f;
  uint32_t a[4] = {0x3c003c00u, 0u, 0u, 0x3c003c00u};
  const int lane = tid & 127;
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if constexpr (MODE == 2) {
        // two tiles (adjacent: 4x6 values) x two channel pairs; then the 16 positions' fragments
        uint32_t p[2][2][16];
        const int off = (it * 4 + kk) * 48 + lane;
#pragma unroll
        for (int cp = 0; cp < 2; ++cp)
#pragma unroll
          for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int c = 0; c < 6; ++c) {
              const uint32_t v = patch[(off + ((cp * 4 + r) * 6 + c) * 128) & (kPatchWords - 1)];
              if (c < 4) p[0][cp][4 * r + c] = v;
              if (c >= 2) p[1][cp][4 * r + c - 2] = v;
            }
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int cp = 0; cp < 2; ++cp) winograd_in(p[t][cp]);
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < SETS; ++s) {
          const uint32_t f[4] = {p[0][0][s], p[1][0][s], p[0][1][s], p[1][1][s]};
          rs<N>(acc[s], f, db + 2 * kk, 1);
        }
      } else if constexpr (MODE == 3 || MODE == 4) {
        // the warpgroup's share of the positions: rows i of B^T d B (MODE 3: i = 0, 1 with N 32, 8 sets - input
        // rows 0-2; MODE 4: i = 0 with N 64, 4 sets - input rows 0 and 2), each pixel's two channel pairs in one
        // 8-byte load (the K order permuted so that a thread's four channels are adjacent)
        constexpr int NR = MODE == 3 ? 3 : 2, NI = MODE == 3 ? 2 : 1;
        uint32_t p[2][2][NR][4];  // [tile][channel pair][input row][column]
        const uint2* patch2 = (const uint2*)patch;
        const int off = (it * 4 + kk) * 24 + lane;
#pragma unroll
        for (int r = 0; r < NR; ++r)
#pragma unroll
          for (int c = 0; c < 6; ++c) {
            const uint2 v = patch2[(off + (r * 6 + c) * 128) & (kPatchWords / 2 - 1)];
            if (c < 4) p[0][0][r][c] = v.x, p[0][1][r][c] = v.y;
            if (c >= 2) p[1][0][r][c - 2] = v.x, p[1][1][r][c - 2] = v.y;
          }
        uint32_t v[2][2][NI][4];  // [tile][channel pair][i][j]
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int cp = 0; cp < 2; ++cp)
#pragma unroll
            for (int i = 0; i < NI; ++i) {
              uint32_t r4[4];
#pragma unroll
              for (int b = 0; b < 4; ++b)  // row i of B^T d: i = 0: d0 - d2 (input rows 0, 2 of MODE 4's two); i = 1: d1 + d2
                r4[b] = MODE == 4 ? hsub2(p[t][cp][0][b], p[t][cp][1][b]) : i == 0 ? hsub2(p[t][cp][0][b], p[t][cp][2][b]) : hadd2(p[t][cp][1][b], p[t][cp][2][b]);
              v[t][cp][i][0] = hsub2(r4[0], r4[2]), v[t][cp][i][1] = hadd2(r4[1], r4[2]);
              v[t][cp][i][2] = hsub2(r4[2], r4[1]), v[t][cp][i][3] = hsub2(r4[1], r4[3]);
            }
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < SETS; ++s) {
          const int i = s / 4, j = s % 4;
          const uint32_t f[4] = {v[0][0][i][j], v[1][0][i][j], v[0][1][i][j], v[1][1][i][j]};
          rs<N>(acc[s], f, db + 2 * kk, 1);
        }
      } else if constexpr (MODE == 5) {
        // two tiles (adjacent pairs of output columns: input columns 0-3 and 2-5) x two channel pairs
        uint32_t p[2][2][4];  // [tile][channel pair][input column]
        const uint2* patch2 = (const uint2*)patch;
        const int off = (it * 4 + kk) * 8 + lane;
#pragma unroll
        for (int c = 0; c < 6; ++c) {
          const uint2 v = patch2[(off + c * 128) & (kPatchWords / 2 - 1)];
          if (c < 4) p[0][0][c] = v.x, p[0][1][c] = v.y;
          if (c >= 2) p[1][0][c - 2] = v.x, p[1][1][c - 2] = v.y;
        }
        uint32_t v[4][2][2];  // [position][tile][channel pair]
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int cp = 0; cp < 2; ++cp) {
            v[0][t][cp] = hsub2(p[t][cp][0], p[t][cp][2]), v[1][t][cp] = hadd2(p[t][cp][1], p[t][cp][2]);
            v[2][t][cp] = hsub2(p[t][cp][2], p[t][cp][1]), v[3][t][cp] = hsub2(p[t][cp][1], p[t][cp][3]);
          }
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < SETS; ++s) {
          const uint32_t f[4] = {v[s][0][0], v[s][1][0], v[s][0][1], v[s][1][1]};
          rs<N>(acc[s], f, db + 2 * kk, 1);
        }
      } else {
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < SETS; ++s) {
          if constexpr (MODE == 0) ss<N>(acc[s], da + 2 * kk, db + 2 * kk, 1);
          else rs<N>(acc[s], a, db + 2 * kk, 1);
        }
      }
      wgmma_commit();
      // A from registers: all of a step's MMAs retired before the next step's (with one group left in flight,
      // ptxas serializes them: C7512, not enough registers to keep both groups' operands)
      if constexpr (MODE == 0) wgmma_wait<1>();
      else wgmma_wait<0>();
    }
  }
  wgmma_wait<0>();
  float sum = 0.f;
#pragma unroll
  for (int s = 0; s < SETS; ++s)
#pragma unroll
    for (int e = 0; e < N / 2; ++e) sum += acc[s][e];
  if (sum == 12345.f) out[blockIdx.x * blockDim.x + tid] = sum;  // never, but the compiler cannot know
#else
  (void)iters, (void)out;
#endif
}

template <int N, int SETS, int WGS, int MODE>
void run(const char* name, int sms, int iters, float* out) {
  auto k = rate_k<N, SETS, WGS, MODE>;
  const int smem = kSmemA + kSmemB + kPatchWords * 4 + 1024;
  cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  k<<<sms, 128 * WGS, smem>>>(iters, out);  // warm-up
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  float best = 1e30f;
  for (int r = 0; r < 5; ++r) {
    cudaEventRecord(e0);
    k<<<sms, 128 * WGS, smem>>>(iters, out);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    best = ms < best ? ms : best;
  }
  const cudaError_t err = cudaGetLastError();
  const double flops = 2.0 * 64 * N * 16 * 4.0 * SETS * WGS * (double)iters * sms;
  std::printf("%-6s N %3d  sets %2d  warpgroups %d   %8.3f ms  %7.1f TFLOP/s%s%s\n", name, N, SETS, WGS, best, flops / best / 1e9,
              err == cudaSuccess ? "" : "  error: ", err == cudaSuccess ? "" : cudaGetErrorString(err));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"warpgroup-MMA rates for a fused Winograd convolution's inner loop"};
  int iters = 2000;
  app.add_option("--iters", iters, "K steps of 64 per warpgroup");
  CLI11_PARSE(app, argc, argv);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9) {
    std::printf("needs a compute capability 9.0 GPU\n");
    return 0;
  }
  float* out = nullptr;
  cudaMalloc(&out, 1 << 20);
  const int sms = prop.multiProcessorCount;
  std::printf("%s, %d SMs; one block of 128 x warpgroups threads per SM\n", prop.name, sms);
  run<128, 2, 2, 0>("ss", sms, iters, out);
  run<64, 4, 2, 0>("ss", sms, iters, out);
  run<32, 8, 2, 0>("ss", sms, iters, out);
  run<16, 16, 2, 0>("ss", sms, iters, out);
  run<128, 2, 2, 1>("rs", sms, iters, out);  // (234 registers)
  run<64, 4, 2, 1>("rs", sms, iters, out);
  run<32, 8, 2, 1>("rs", sms, iters, out);
  run<16, 16, 2, 1>("rs", sms, iters, out);
  run<16, 16, 2, 2>("rs+t", sms, iters, out);
  run<32, 8, 2, 3>("rs+t8", sms, iters, out);
  run<64, 4, 2, 4>("rs+t4", sms, iters, out);
  run<64, 4, 2, 5>("rs+x", sms, iters, out);
  cudaFree(out);
  return 0;
}
