// Times the FP16 engine's NHWC GroupNorm on the shapes SD 1.5's UNet runs it at: the three-pass form
// (SDRT_GN_ONEPASS=0), the one-pass cooperative kernel and the kernel of thread-block clusters
// (SDRT_GN_CLUSTER=1), each as `calls` launches captured in a CUDA graph (as the engine runs them), and the
// largest difference of each output from the three-pass one.
//   bench_group_norm --batch 2 --repeats 20
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
#include "backends/cuda/nhwc_kernels.cuh"
#include "graph/backend.h"

namespace {

// deterministic values with a per-channel offset (a mean away from 0, as activations have)
__global__ void fill_k(__half* x, int64_t n, int64_t C, uint32_t seed) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t h = bench_hash((uint32_t)i, seed);
  x[i] = __float2half(((float)(h & 0xFFFF) / 65536.f - 0.5f) * 3.f + (float)(i % C % 7) * 0.5f);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GroupNorm benchmark"};
  int64_t batch = 2;
  int repeats = 20;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 512));
  app.add_option("--repeats", repeats, "graph launches timed; the median is printed")->check(CLI::Range(1, 10000));
  CLI11_PARSE(app, argc, argv);
  // (channels, side) of the UNet's GroupNorms, with how many of each one forward runs
  struct S {
    int64_t C, side;
    int count;
  };
  const S shapes[] = {{320, 64, 13}, {640, 64, 2}, {960, 64, 1}, {320, 32, 1}, {640, 32, 11}, {960, 32, 1}, {1280, 32, 1},
                      {1920, 32, 1}, {640, 16, 1}, {1280, 16, 11}, {1920, 16, 1}, {2560, 16, 2}, {1280, 8, 12}, {2560, 8, 3}};  // 61
  constexpr int kCalls = 10;  // launches per graph
  std::printf("GroupNorm (32 groups, + SiLU), batch %lld, %d launches per graph, median of %d\n", (long long)batch, kCalls, repeats);
  std::printf("%-18s %12s %12s %12s %10s %10s\n", "[C, H, W]", "3-pass us", "1-pass us", "cluster us", "1p diff", "cl diff");
  double total[3] = {0, 0, 0};
  for (const S& s : shapes) {
    const int64_t HW = s.side * s.side, n = batch * HW * s.C, G = 32;
    __half *x, *y[3], *gb;
    float* scratch;
    const int64_t scratch_floats = sdrt::cuda::group_norm_nhwc_scratch(batch, s.C, HW, G);
    CHECK(cudaMalloc(&x, n * 2));
    for (auto& p : y) CHECK(cudaMalloc(&p, n * 2));
    CHECK(cudaMalloc(&gb, 2 * s.C * 2));
    CHECK(cudaMalloc(&scratch, scratch_floats * 4));
    fill_k<<<(unsigned)((n + 255) / 256), 256>>>(x, n, s.C, 1);
    fill_k<<<(unsigned)((2 * s.C + 255) / 256), 256>>>(gb, 2 * s.C, 2 * s.C, 2);
    CHECK(cudaGetLastError());
    cudaStream_t st;
    CHECK(cudaStreamCreate(&st));
    double us[3];
    bool ran[3] = {true, true, true};
    for (int form = 0; form < 3; ++form) {  // three-pass, one-pass, clusters
      setenv("SDRT_GN_ONEPASS", form == 0 ? "0" : "1", 1);
      setenv("SDRT_GN_CLUSTER", form == 2 ? "1" : "0", 1);
      const int64_t c0 = sdrt::cuda_group_norm_cluster_launches(), o0 = sdrt::cuda_group_norm_onepass_launches();
      std::vector<float> t;
      for (int r = 0; r < repeats; ++r)
        t.push_back(sdrt::cuda::time_in_graph(st, kCalls, [&] {
          return sdrt::cuda::group_norm_nhwc(x, gb, gb + s.C, nullptr, y[form], batch, s.C, HW, G, 1e-5f, true, scratch, st);
        }));
      std::sort(t.begin(), t.end());
      if (t[0] < 0) return std::fprintf(stderr, "GroupNorm [%lld,%lld,%lld] failed\n", (long long)s.C, (long long)s.side, (long long)s.side), 1;
      us[form] = t[t.size() / 2] * 1000.0;
      if (form == 1) ran[1] = sdrt::cuda_group_norm_onepass_launches() > o0;  // else it fell back to three passes
      if (form == 2) ran[2] = sdrt::cuda_group_norm_cluster_launches() > c0;
    }
    unsetenv("SDRT_GN_CLUSTER");
    unsetenv("SDRT_GN_ONEPASS");
    CHECK(cudaStreamSynchronize(st));
    std::vector<__half> h0(n), h1(n);
    double md[3] = {0, 0, 0};
    CHECK(cudaMemcpy(h0.data(), y[0], n * 2, cudaMemcpyDeviceToHost));
    for (int form = 1; form < 3; ++form) {
      CHECK(cudaMemcpy(h1.data(), y[form], n * 2, cudaMemcpyDeviceToHost));
      for (int64_t i = 0; i < n; ++i) md[form] = std::max(md[form], (double)std::fabs(__half2float(h0[i]) - __half2float(h1[i])));
    }
    char name[48];
    std::snprintf(name, sizeof name, "[%lld,%lld,%lld] x%d", (long long)s.C, (long long)s.side, (long long)s.side, s.count);
    std::printf("%-18s %12.2f %11.2f%s %11.2f%s %10.4f %10.4f\n", name, us[0], us[1], ran[1] ? " " : "*", us[2], ran[2] ? " " : "*", md[1], md[2]);
    for (int form = 0; form < 3; ++form) total[form] += us[form] * s.count;
    for (void* p : {(void*)x, (void*)y[0], (void*)y[1], (void*)y[2], (void*)gb, (void*)scratch}) cudaFree(p);
    cudaStreamDestroy(st);
  }
  std::printf("one forward's GroupNorms (counts as above): 3-pass %.1f us, 1-pass %.1f us, cluster %.1f us (* = that form did not apply: the next one ran)\n",
              total[0], total[1], total[2]);
  return 0;
}
