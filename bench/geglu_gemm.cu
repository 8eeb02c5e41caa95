// A GEGLU feed-forward projection as one kernel: y[M, F] = (x w_v^T + b_v) * gelu(x w_g^T + b_g), where w = [w_v; w_g]
// is the linear layer's [2F, K] weight (diffusers' GEGLU: the first half of the projection is the value, the
// second the gate) - against what the engine runs now, cuBLASLt's GEMM to [M, 2F] with the bias in its
// epilogue and then the GEGLU pass over that (geglu_fast). The fused form never writes or reads the
// [M, 2F] intermediate: at batch 16 the first level's is 335 MB per call, and the GEGLU passes took 1.22 ms
// of a 29 ms forward.
//
// The fused kernel is the engine's (src/backends/cuda/geglu_gemm_sm90.cu, Hopper only); every form of it is
// checked against the two-kernel output (max |diff| relative to the largest value, < 1e-2), then timed.
// Shapes: the SD 1.5 UNet's GEGLU projections, weighted by their count in a forward.
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
#include "backends/cuda/geglu_gemm.h"
#include "backends/cuda/lt_gemm.h"
#include "backends/cuda/nhwc_kernels.cuh"

namespace {

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
  const int nf = sdrt::cuda::geglu_gemm_forms();
  std::printf("%-36s %11s", "shape", "2-kernel us");
  for (int v = 0; v < nf; ++v) std::printf(" %9s", sdrt::cuda::geglu_gemm_form_name(v));
  std::printf(" %8s   %s\n", "best", "max rel diff (each)");
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
    sdrt::cuda::fill_uniform(x, M * K, 2.f, 1, st);
    sdrt::cuda::fill_uniform(w, 2 * F * K, 1.f / std::sqrt((float)K), 2, st);
    sdrt::cuda::fill_uniform(b, 2 * F, 0.5f, 3, st);
    CHECK(cudaGetLastError());
    auto plan = (*lt)->prepare(M, 2 * F, K, true, false, tuning);
    if (!plan) return std::fprintf(stderr, "cuBLASLt plan: %s\n", plan.status().message().c_str()), 1;
    auto two = [&] { return (*lt)->run(*plan, x, w, b, nullptr, mid).is_ok() && sdrt::cuda::geglu_fast(mid, y0, M, F, st); };
    auto median = [&](auto&& body) {
      std::vector<float> t;
      for (int r = 0; r < repeats; ++r) t.push_back(sdrt::cuda::time_in_graph(st, 10, body));
      std::sort(t.begin(), t.end());
      return t[0] < 0 ? -1.0 : t[t.size() / 2] * 1000.0;
    };
    const double us_ref = median(two);
    // correctness first: each fused form's output against the two-kernel one; only matching forms are timed
    std::vector<__half> h0(M * F), h1(M * F);
    std::vector<double> diff(nf), us(nf);
    double best = -1;
    for (int v = 0; v < nf; ++v) {
      std::fprintf(stderr, "  checking %s, form %s\n", sh.what, sdrt::cuda::geglu_gemm_form_name(v));  // a form that faults kills the context: which one
      CHECK(cudaMemsetAsync(y1, 0xFF, M * F * 2, st));  // NaNs: an unwritten element shows
      const cudaError_t e = sdrt::cuda::geglu_gemm(v, x, w, b, y1, M, K, F, st);
      if (e == cudaErrorNotSupported) {  // the form does not take this shape (e.g. K past what it holds): -1, not timed
        cudaGetLastError();
        diff[v] = 0, us[v] = -1.0;
        continue;
      }
      if (e != cudaSuccess) return std::fprintf(stderr, "%s: fused form %d failed: %s\n", sh.what, v, cudaGetErrorString(e)), 1;
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
      us[v] = diff[v] < 1e-2 ? median([&] { return sdrt::cuda::geglu_gemm(v, x, w, b, y1, M, K, F, st) == cudaSuccess; }) : -1.0;
      if (us[v] > 0 && (best < 0 || us[v] < best)) best = us[v];
    }
    std::printf("%-36s %11.2f", sh.what, us_ref);
    for (int v = 0; v < nf; ++v) std::printf(" %9.2f", us[v]);
    std::printf(" %7.2fx  ", best > 0 ? us_ref / best : 0.0);
    for (int v = 0; v < nf; ++v) std::printf(" %.2g", diff[v]);
    std::printf("%s\n", best > 0 ? "" : "  (no fused form matched: -1 = not timed)");
    sum_ref += us_ref * sh.count;
    sum_fused += (best > 0 ? best : us_ref) * sh.count;
    for (void* p : {(void*)x, (void*)w, (void*)b, (void*)mid, (void*)y0, (void*)y1}) cudaFree(p);
  }
  std::printf("one forward's GEGLU projections (counts as above): 2-kernel %.1f us, fused %.1f us\n", sum_ref, sum_fused);
  cudaFree(ws);
  return 0;
}
