// Times the fused FP16 attention on SD 1.5's shapes with the portable mma.sync kernel (SDRT_ATTN_WGMMA=0)
// and with the engine's choice (the Hopper wgmma kernel where it applies), and compares the second's
// output with the first's (heads of 160: the mma.sync kernel's 64-row blocks, then its timed forms rows32,
// rows16, ks4, ks2 where they apply); then ("base2") the engine's choice on
// the queries multiplied by scale / ln 2 with the softmax scale ln 2, as after pass fold_attention_scale
// (the same softmax: where the late-maximum form runs, SDRT_ATTN_LATEMAX=1, its base-2 variant), and the
// FP16-score forms ("wgmma-s16", "pipe-s16" and their base-2 runs) where they apply. CUDA
// events around each launch (--graphs: around 10 launches in a CUDA graph); median of the repeats.
//   bench_attention --batch 16 --repeats 20
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_bench.cuh"
#include "backends/cuda/common.cuh"
#include "backends/cuda/flash_attention.cuh"

namespace {

// deterministic N(0, 1)-like values from a hash (sum of four uniforms, centred and scaled)
__global__ void fill_k(__half* x, int64_t n, uint32_t seed) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float acc = 0.f;
  for (uint32_t r = 0; r < 4; ++r) {
    acc += (float)(bench_hash((uint32_t)i, seed + r * 0x9E3779B9u) & 0xFFFFFF) / 16777216.f;
  }
  x[i] = __float2half((acc - 2.f) * 1.7320508f);
}

// columns [0, cols) of rows x[r * ld] multiplied by f (the queries brought to the base-2 domain)
__global__ void scale_cols_k(__half* x, int64_t rows, int64_t ld, int64_t cols, float f) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  __half* e = x + (i / cols) * ld + i % cols;
  *e = __float2half(__half2float(*e) * f);
}

struct Shape {
  const char* name;
  int64_t Lq, Lk, C, H;
  bool packed;  // q, k, v as one [B, L, 3C] tensor (self-attention after pack_qkv); else q [B, Lq, C], kv [B, Lk, 2C]
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fused attention benchmark"};
  int64_t batch = 16;
  int repeats = 20;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 512));
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 10000));
  bool graphs = false;
  app.add_flag("--graphs", graphs, "time 10 launches in a CUDA graph instead of one launch between events");
  CLI11_PARSE(app, argc, argv);

  const Shape shapes[] = {{"self [4096] d 40", 4096, 4096, 320, 8, true},
                          {"self [1024] d 80", 1024, 1024, 640, 8, true},
                          {"cross [4096]x[77] d 40", 4096, 77, 320, 8, false},
                          {"self [256] d 160", 256, 256, 1280, 8, true},
                          {"cross [256]x[77] d 160", 256, 77, 1280, 8, false},
                          {"self [64] d 160", 64, 64, 1280, 8, true}};
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::printf("%-24s %-9s %10s %9s %12s\n", "shape", "kernel", "ms", "TFLOP/s", "max |diff|");
  for (const Shape& sh : shapes) {
    const int64_t D = sh.C / sh.H, B = batch;
    const int64_t nq = B * sh.Lq * (sh.packed ? 3 * sh.C : sh.C), nkv = sh.packed ? 0 : B * sh.Lk * 2 * sh.C, no = B * sh.Lq * sh.C;
    __half *q = nullptr, *kv = nullptr, *o = nullptr;
    CHECK(cudaMalloc(&q, nq * sizeof(__half)));
    if (nkv) CHECK(cudaMalloc(&kv, nkv * sizeof(__half)));
    CHECK(cudaMalloc(&o, no * sizeof(__half)));
    fill_k<<<(unsigned)((nq + 255) / 256), 256>>>(q, nq, 1);
    if (nkv) fill_k<<<(unsigned)((nkv + 255) / 256), 256>>>(kv, nkv, 2);
    CHECK(cudaGetLastError());
    const __half* k = sh.packed ? q + sh.C : kv;
    const __half* v = sh.packed ? q + 2 * sh.C : kv + sh.C;
    const int64_t ldq = sh.packed ? 3 * sh.C : sh.C, ldkv = sh.packed ? 3 * sh.C : 2 * sh.C;
    const double flop = 4.0 * B * sh.H * sh.Lq * sh.Lk * D;
    std::vector<__half> ref, out(no);
    // the mma.sync kernel, then the engine's choice (the same kernel for heads of 160)
    // (and, where it applies, the pipelined kernel)
    // (and, where they apply, the kept Hopper kernel and its FP16-score form, on the scores as given and in base 2)
    std::vector<std::string> modes = {"mma.sync", "engine", "pipe", "wgmma", "wgmma-s16", "wgmma-s16w", "pipe-s16", "base2", "base2-s16", "base2-s16w",
                                      "base2-pipe-s16"};
    if (D > 80) modes = {"engine", "rows32", "rows16", "ks4", "ks2"};  // the 64-row blocks, then the timed forms (where they apply)
    float scale = 1.f / std::sqrt((float)D);
    for (const std::string& mode : modes) {
      if (mode == "mma.sync") setenv("SDRT_ATTN_WGMMA", "0", 1);
      else unsetenv("SDRT_ATTN_WGMMA");
      if (mode == "base2") {  // q scaled by scale / ln 2, the softmax scale ln 2
        const float ln2 = 0.693147180559945309f;
        scale_cols_k<<<(unsigned)((B * sh.Lq * sh.C + 255) / 256), 256, 0, stream>>>(q, B * sh.Lq, ldq, sh.C, scale / ln2);
        CHECK(cudaGetLastError());
        scale = ln2;
      }
      CHECK(cudaMemset(o, 0xFF, no * sizeof(__half)));  // NaNs: an unwritten element shows in the difference
      std::vector<float> ms;
      // -1: the default
      const int form = sdrt::cuda::attention_form_by_name(mode == "base2-s16" ? "wgmma-s16" : mode == "base2-s16w" ? "wgmma-s16w" : mode == "base2-pipe-s16" ? "pipe-s16" : mode);
      if (form >= 0 && !(sdrt::cuda::flash_attention_form_mask(B, sh.H, sh.Lq, sh.Lk, D, ldq, ldkv, ldkv, sh.C, false) >> form & 1)) continue;
      auto call = [&] {
        return sdrt::cuda::flash_attention(q, k, v, o, B, sh.H, sh.Lq, sh.Lk, D, ldq, ldkv, ldkv, sh.C, scale, false, stream, form) == cudaSuccess;
      };
      for (int i = 0; i < repeats + 3; ++i) {
        float t = 0.f;
        if (graphs) {  // 10 launches in a CUDA graph, as the engine runs them: launch costs do not count
          t = sdrt::cuda::time_in_graph(stream, 10, call);
          if (t < 0.f) return std::fprintf(stderr, "%s: attention failed\n", sh.name), 1;
        } else {
          CHECK(cudaEventRecord(e0, stream));
          if (!call()) return std::fprintf(stderr, "%s: attention failed\n", sh.name), 1;
          CHECK(cudaEventRecord(e1, stream));
          CHECK(cudaEventSynchronize(e1));
          CHECK(cudaEventElapsedTime(&t, e0, e1));
        }
        if (i >= 3) ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      const float med = ms[ms.size() / 2];
      CHECK(cudaMemcpy(out.data(), o, no * sizeof(__half), cudaMemcpyDeviceToHost));
      if (ref.empty()) ref = out;
      double maxd = 0.0;
      for (int64_t i = 0; i < no; ++i) {
        const double d = std::fabs((double)__half2float(out[i]) - (double)__half2float(ref[i]));
        maxd = std::isnan(d) ? INFINITY : std::max(maxd, d);
      }
      std::printf("%-24s %-9s %10.4f %9.1f %12.3g\n", sh.name, mode.c_str(), med, flop / (med * 1e-3) / 1e12, maxd);
    }
    cudaFree(q);
    if (kv) cudaFree(kv);
    cudaFree(o);
  }
  return 0;
}
