// The fused Winograd F(2, 3)-along-x convolution (src/backends/cuda/conv_wx.h) against the engine's cuDNN
// choice, for each 3x3 convolution shape of the SD 1.5 UNet (NHWC, FP16, float accumulation): cuDNN's fastest
// legacy algorithm (cudnnFindConvolutionForwardAlgorithmEx within 256 MiB of workspace, as the engine) and each
// wx form, timed the way the engine runs - five launches in a CUDA graph, median of the replays - weighted by
// the shape's count in a forward. Every wx output is checked against cuDNN's (relative L2 difference), and once
// per shape with a bias and a residual in the epilogue against cuDNN's output plus both (on the host).
//   bench_conv_wx --batch 16 --repeats 10
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/conv_wx.h"
#include "cuda_bench.cuh"
#include "cudnn_graph.cuh"

namespace {

__global__ void fill_k(__half* p, int64_t n, uint32_t seed, float scale) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = __float2half(scale * ((float)(bench_hash((uint32_t)i, seed) & 0xFFFF) / 32768.f - 1.f));
}

std::vector<float> to_host(const __half* d, int64_t n) {
  std::vector<__half> h(n);
  std::vector<float> f(n);
  if (cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost) != cudaSuccess) return {};
  for (int64_t i = 0; i < n; ++i) f[i] = __half2float(h[i]);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"the fused Winograd F(2,3)-along-x convolution against the engine's cuDNN choice"};
  int64_t batch = 16;
  int repeats = 10;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 256));
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 1000));
  std::string only_shape, only_form;
  app.add_option("--shape", only_shape, "only this shape, C:K:HW (e.g. 320:320:64; for a profiler)");
  app.add_option("--form", only_form, "only this wx form");
  CLI11_PARSE(app, argc, argv);
  namespace sc = sdrt::cuda;

  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudnnHandle_t h = nullptr;
  if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS || cudnnSetStream(h, s) != CUDNN_STATUS_SUCCESS) return std::fprintf(stderr, "cuDNN could not start\n"), 1;
  std::printf("batch %lld; cuDNN %zu; TFLOP/s counts the direct convolution's 2 x 9 x C x K x H x W per image\n", (long long)batch, cudnnGetVersion());
  std::printf("%5s %5s %4s %3s %10s %10s %10s %7s %8s %8s %9s %9s   (then each form's ms)\n", "C", "K", "HW", "n", "cuDNN ms", "best wx", "ms", "gain",
              "TFLOP/s", "wx TF/s", "rel diff", "bias+res");
  double sum_cudnn = 0.0, sum_best = 0.0;
  for (const UnetConv3x3& sh : kUnetConv3x3) {
    if (!only_shape.empty() && only_shape != std::to_string(sh.C) + ":" + std::to_string(sh.K) + ":" + std::to_string(sh.HW)) continue;
    const int64_t N = batch, nx = N * sh.HW * sh.HW * sh.C, nw = sh.K * 9 * sh.C, ny = N * sh.HW * sh.HW * sh.K;
    __half *x = nullptr, *w = nullptr, *wt = nullptr, *y0 = nullptr, *y1 = nullptr, *b = nullptr, *r = nullptr;
    CHECK(cudaMalloc(&x, nx * 2));
    CHECK(cudaMalloc(&w, nw * 2));
    CHECK(cudaMalloc(&wt, sc::conv_wx_weight_elems(sh.K, sh.C) * 2));
    CHECK(cudaMalloc(&y0, ny * 2));
    CHECK(cudaMalloc(&y1, ny * 2));
    CHECK(cudaMalloc(&b, sh.K * 2));
    CHECK(cudaMalloc(&r, ny * 2));
    fill_k<<<(unsigned)((nx + 255) / 256), 256, 0, s>>>(x, nx, 1, 1.7f);
    fill_k<<<(unsigned)((nw + 255) / 256), 256, 0, s>>>(w, nw, 2, 1.7f / std::sqrt(9.f * sh.C));
    fill_k<<<1, 256, 0, s>>>(b, sh.K, 3, 0.1f);
    fill_k<<<(unsigned)((ny + 255) / 256), 256, 0, s>>>(r, ny, 4, 1.f);
    CHECK(sc::conv_wx_prepare(w, wt, sh.K, sh.C, s));
    CHECK(cudaStreamSynchronize(s));

    const float cudnn_ms = legacy_conv3x3(h, s, N, sh.C, sh.K, sh.HW, x, w, y0, repeats).ms;
    std::string forms_line;
    double worst_rel = 0.0;
    const sc::ConvWxShape ws_{N, sh.HW, sh.HW, sh.C, sh.K};
    float best = -1.f;
    int best_form = -1;
    for (int f = 0; f < sc::conv_wx_forms(); ++f) {
      if (!only_form.empty() && only_form != sc::conv_wx_form_name(f)) continue;
      float ms = -1.f;
      double rel = -1.0;
      if (sc::conv_wx_applies(f, ws_)) {
        cudaMemsetAsync(y1, 0, ny * 2, s);
        const cudaError_t e = sc::conv_wx(f, x, wt, nullptr, nullptr, y1, ws_, s);
        if (e == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess) {
          rel = relative_l2_diff(y0, y1, ny);
          ms = median_in_graph(s, repeats, [&] { return sc::conv_wx(f, x, wt, nullptr, nullptr, y1, ws_, s) == cudaSuccess; });
        } else {
          std::printf("%s: %s\n", sc::conv_wx_form_name(f), cudaGetErrorString(e != cudaSuccess ? e : cudaGetLastError()));
          return 1;
        }
      }
      char item[64];
      std::snprintf(item, sizeof item, " %s %.4f", sc::conv_wx_form_name(f), ms);
      forms_line += item;
      if (rel > worst_rel || rel < 0.0) worst_rel = rel < 0.0 ? worst_rel : rel;
      if (ms > 0.f && (rel < 0.0 || rel >= 1e-2)) forms_line += " (disagrees)";
      if (ms > 0.f && rel >= 0.0 && rel < 1e-2 && (best < 0.f || ms < best)) best = ms, best_form = f;
    }
    // the fastest form with bias and residual against cuDNN's output plus both
    double rel_br = -1.0;
    if (best_form >= 0 && cudnn_ms > 0.f) {
      CHECK(sc::conv_wx(best_form, x, wt, b, r, y1, ws_, s));
      CHECK(cudaStreamSynchronize(s));
      const std::vector<float> c = to_host(y0, ny), got = to_host(y1, ny), rh = to_host(r, ny), bh = to_host(b, sh.K);
      double num = 0.0, den = 0.0;
      for (int64_t i = 0; i < ny; i += 7) {
        const double want = c[i] + bh[i % sh.K] + rh[i];
        num += (got[i] - want) * (got[i] - want), den += want * want;
      }
      rel_br = den > 0.0 ? std::sqrt(num / den) : -1.0;
    }
    const double flop = 2.0 * 9 * sh.C * sh.K * sh.HW * sh.HW * N;
    std::printf("%5lld %5lld %4lld %3d %10.4f %10s %10.4f %6.2fx %8.1f %8.1f %9.2e %9.2e\n     %s\n", (long long)sh.C, (long long)sh.K, (long long)sh.HW,
                sh.count, cudnn_ms, best_form >= 0 ? sc::conv_wx_form_name(best_form) : "-", best, cudnn_ms > 0.f && best > 0.f ? cudnn_ms / best : 0.0,
                cudnn_ms > 0.f ? flop / cudnn_ms / 1e9 : 0.0, best > 0.f ? flop / best / 1e9 : 0.0, worst_rel, rel_br, forms_line.c_str());
    if (cudnn_ms > 0.f) sum_cudnn += sh.count * cudnn_ms, sum_best += sh.count * (best > 0.f ? std::min(best, cudnn_ms) : cudnn_ms);
    for (void* p : {(void*)x, (void*)w, (void*)wt, (void*)y0, (void*)y1, (void*)b, (void*)r}) cudaFree(p);
  }
  std::printf("per forward (shapes x counts): cuDNN %.3f ms; with the faster of cuDNN and wx %.3f ms (%.2fx)\n", sum_cudnn, sum_best,
              sum_best > 0.0 ? sum_cudnn / sum_best : 0.0);
  cudnnDestroy(h);
  cudaStreamDestroy(s);
  return 0;
}
