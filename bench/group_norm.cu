// Times the FP16 engine's NHWC GroupNorm on the shapes SD 1.5's UNet runs it at: the three-pass form, the
// one-pass cooperative kernel (half2), the cluster kernel, the one-pass kernel in 16-byte vectors with
// batch slices ("onepass8") and a block per group ("block") - group_norm_nhwc's forms - each as `calls` launches
// captured in a CUDA graph (as the engine runs them), and the largest difference between their outputs. A
// form that does not apply to a shape is marked '*' and counted at the three-pass time (the engine's
// fallback); "timed" sums the fastest form per shape, what the engine's timed choice
// (choose_group_norm_form) gets.
//   bench_group_norm --batch 2 --repeats 20
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
#include "backends/cuda/nhwc_kernels.cuh"

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
  std::string only;
  app.add_option("--only", only, "one shape, C,side (e.g. 320,64): for profilers");
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
  constexpr int kForms = sdrt::cuda::kGroupNormForms;  // GroupNormForm order: 3pass, onepass, cluster, onepass8, block
  std::printf("%-18s", "[C, H, W]");
  for (int f = 0; f < kForms; ++f) std::printf(" %10s us", sdrt::cuda::group_norm_form_name(f));
  for (int f = 1; f < kForms; ++f) std::printf(" %9s x", sdrt::cuda::group_norm_form_name(f));
  std::printf(" %9s %10s\n", "max diff", "default us");
  double total[kForms + 1] = {}, total_default = 0;
  for (const S& s : shapes) {
    if (!only.empty() && only != std::to_string(s.C) + "," + std::to_string(s.side)) continue;
    const int64_t HW = s.side * s.side, n = batch * HW * s.C, G = 32;
    __half *x, *gb, *y[kForms];
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
    // form f (-1: group_norm_nhwc's untimed order, as the engine runs it by default) into out
    auto run = [&](int f, __half* out) { return sdrt::cuda::group_norm_nhwc(x, gb, gb + s.C, nullptr, 0, out, batch, s.C, HW, G, 1e-5f, true, scratch, st, 1, f); };
    auto median_us = [&](int f, __half* out) {  // of `repeats` graphs of kCalls launches; negative on a failure
      std::vector<float> t;
      for (int r = 0; r < repeats; ++r) t.push_back(sdrt::cuda::time_in_graph(st, kCalls, [&] { return run(f, out); }));
      std::sort(t.begin(), t.end());
      return t[0] < 0 ? -1.0 : t[t.size() / 2] * 1000.0;
    };
    double us[kForms];
    bool applies[kForms];
    for (int form = 0; form < kForms; ++form) {
      applies[form] = run(form, y[form]);
      CHECK(cudaStreamSynchronize(st));
      us[form] = median_us(applies[form] ? form : sdrt::cuda::kGnThreePass, y[form]);
      if (us[form] < 0) return std::fprintf(stderr, "GroupNorm [%lld,%lld,%lld] failed\n", (long long)s.C, (long long)s.side, (long long)s.side), 1;
    }
    CHECK(cudaStreamSynchronize(st));
    std::vector<__half> h[kForms];
    for (int f = 0; f < kForms; ++f) {
      h[f].resize(n);
      CHECK(cudaMemcpy(h[f].data(), y[f], n * 2, cudaMemcpyDeviceToHost));
    }
    double md = 0;  // the largest difference of either form from the three-pass one
    for (int f = 1; f < kForms; ++f)
      for (int64_t i = 0; i < n; ++i) md = std::max(md, (double)std::fabs(__half2float(h[0][i]) - __half2float(h[f][i])));
    const double us_default = median_us(-1, y[1]);
    char name[48];
    std::snprintf(name, sizeof name, "[%lld,%lld,%lld] x%d", (long long)s.C, (long long)s.side, (long long)s.side, s.count);
    std::printf("%-18s %12.2f", name, us[0]);
    for (int f = 1; f < kForms; ++f) std::printf(" %11.2f%c", us[f], applies[f] ? ' ' : '*');
    for (int f = 1; f < kForms; ++f) std::printf(" %9.2fx", us[0] / us[f]);
    std::printf(" %9.4f %10.2f\n", md, us_default);
    total_default += us_default * s.count;
    for (int f = 0; f < kForms; ++f) total[f] += us[f] * s.count;
    total[kForms] += *std::min_element(us, us + kForms) * s.count;
    for (void* p : y) cudaFree(p);
    for (void* p : {(void*)x, (void*)gb, (void*)scratch}) cudaFree(p);
    cudaStreamDestroy(st);
  }
  std::printf("one forward's GroupNorms (counts as above):");
  for (int f = 0; f < kForms; ++f) std::printf(" %s %.1f us,", sdrt::cuda::group_norm_form_name(f), total[f]);
  std::printf(" fastest per shape %.1f us, default order %.1f us\n", total[kForms], total_default);
  return 0;
}
