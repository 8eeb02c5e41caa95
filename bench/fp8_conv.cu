// How much FP8 (E4M3) could take off the UNet's 3x3 convolutions: the stride-1 3x3 convolution shapes of
// the SD 1.5 UNet (NHWC), each built as a cuDNN operation graph twice - FP16 x and w to an FP16 y (FP32
// accumulation), and FP8 E4M3 x and w to an FP32 virtual y scaled by a per-tensor factor into FP16 - and
// timed with each of the heuristic's engine configurations (the fastest kept), weighted by how often the
// shape occurs in a forward. Quantising the activations is not timed (it belongs in the kernel that
// produces them, the GroupNorm + SiLU before each of these convolutions); the FP8 result is compared with
// the FP16 one on the same (FP8-representable) values.
//   bench_fp8_conv --batch 16 --repeats 10
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cudnn_graph.cuh"
#include "fp8_bench.cuh"

namespace {

struct Timed {
  float ms = -1.f;
  int engines = 0;   // configurations that ran
  const char* why = "";
};

// y = conv3x3(x, w) (pad 1), FP16 (fp8 false) or FP8 operands scaled by *scale into FP16; the fastest engine.
Timed run_conv(cudnnHandle_t h, bool fp8, int64_t N, int64_t C, int64_t K, int64_t H, int64_t W, void* x, void* w, float* scale, __half* y,
               int repeats) {
  Pool pool;
  Timed t;
  const cudnnDataType_t in = fp8 ? CUDNN_DATA_FP8_E4M3 : CUDNN_DATA_HALF;
  enum : int64_t { kX = 1, kW = 2, kY = 3, kT = 4, kS = 5 };
  Desc dx = tensor(pool, kX, in, N, C, H, W, false), dw = tensor(pool, kW, in, K, C, 3, 3, false);
  Desc dy = tensor(pool, kY, CUDNN_DATA_HALF, N, K, H, W, false);
  Desc dt = fp8 ? tensor(pool, kT, CUDNN_DATA_FLOAT, N, K, H, W, true) : nullptr;
  Desc ds = nullptr;
  if (fp8) ds = tensor(pool, kS, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false);  // a [1,1,1,1] float
  if (!dx || !dw || !dy || (fp8 && (!dt || !ds))) return t.why = "tensor descriptors", t;

  Desc conv = conv2d_desc(pool, 1, 1);
  if (!conv) return t.why = "convolution descriptor", t;

  Desc op = conv_forward(pool, dx, dw, fp8 ? dt : dy, conv);
  if (!op) return t.why = "convolution operation", t;
  std::vector<Desc> ops{op};
  if (fp8) {  // y = t * scale
    Desc pop = pointwise(pool, CUDNN_POINTWISE_MUL, dt, ds, dy);
    if (!pop) return t.why = "scale operation", t;
    ops.push_back(pop);
  }
  Desc graph = op_graph(pool, h, ops);
  if (!graph) return t.why = "operation graph (not supported)", t;
  std::vector<Desc> cfgs = engine_configs(pool, graph, CUDNN_HEUR_MODE_A, 6);
  const int64_t got = (int64_t)cfgs.size();
  if (got == 0) return t.why = "no engine configurations", t;

  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int64_t i = 0; i < got; ++i) {
    int64_t ws_bytes = 0;
    Desc plan = exec_plan(pool, h, cfgs[i], &ws_bytes);
    if (!plan || ws_bytes > (int64_t(1) << 30)) continue;
    void* ws = nullptr;
    if (ws_bytes > 0 && cudaMalloc(&ws, ws_bytes) != cudaSuccess) continue;
    const int64_t uids[4] = {kX, kW, kY, kS};
    void* ptrs[4] = {x, w, y, scale};
    Desc vp = variant_pack(pool, fp8 ? 4 : 3, uids, ptrs, ws);
    if (vp && cudnnBackendExecute(h, plan, vp) == CUDNN_STATUS_SUCCESS && cudaDeviceSynchronize() == cudaSuccess) {
      std::vector<float> ms;
      for (int r = 0; r < repeats; ++r) {
        cudaEventRecord(e0);
        for (int k = 0; k < 5; ++k) cudnnBackendExecute(h, plan, vp);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float v = 0.f;
        cudaEventElapsedTime(&v, e0, e1);
        ms.push_back(v / 5.f);
      }
      std::sort(ms.begin(), ms.end());
      ++t.engines;
      if (t.ms < 0.f || ms[ms.size() / 2] < t.ms) t.ms = ms[ms.size() / 2];
    }
    cudaGetLastError();
    if (ws) cudaFree(ws);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (t.engines == 0) t.why = "no engine ran";
  return t;  // y holds the last engine's result: every engine computes the same convolution
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"FP16 vs FP8 3x3 convolutions of the SD 1.5 UNet (cuDNN graph API)"};
  int64_t batch = 16;
  int repeats = 10;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 256));
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);

  const auto& shapes = kUnetConv3x3;
  cudnnHandle_t h = nullptr;
  if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) return std::fprintf(stderr, "cuDNN could not start\n"), 1;
  float* scale = nullptr;
  const float one = 1.f;
  CHECK(cudaMalloc(&scale, sizeof(float)));
  CHECK(cudaMemcpy(scale, &one, sizeof one, cudaMemcpyHostToDevice));
  std::printf("batch %lld; cuDNN %zu\n", (long long)batch, cudnnGetVersion());
  std::printf("%5s %5s %4s %3s %10s %10s %7s %9s %9s %9s  %s\n", "C", "K", "HW", "n", "fp16 ms", "fp8 ms", "ratio", "fp16 TF/s", "fp8 TF/s", "rel diff",
              "note");
  double sum16 = 0.0, sum8 = 0.0, sum16_both = 0.0;
  for (const UnetConv3x3& s : shapes) {
    const int64_t N = batch, nx = N * s.HW * s.HW * s.C, nw = s.K * 9 * s.C, ny = N * s.HW * s.HW * s.K;
    __half *x16 = nullptr, *w16 = nullptr, *y16 = nullptr, *y8 = nullptr;
    __nv_fp8_e4m3 *x8 = nullptr, *w8 = nullptr;
    CHECK(cudaMalloc(&x16, nx * 2));
    CHECK(cudaMalloc(&w16, nw * 2));
    CHECK(cudaMalloc(&x8, nx));
    CHECK(cudaMalloc(&w8, nw));
    CHECK(cudaMalloc(&y16, ny * 2));
    CHECK(cudaMalloc(&y8, ny * 2));
    fill_fp8_pair(x16, x8, nx, 1);
    fill_fp8_pair(w16, w8, nw, 2);
    CHECK(cudaGetLastError());
    const Timed t16 = run_conv(h, false, N, s.C, s.K, s.HW, s.HW, x16, w16, scale, y16, repeats);
    const Timed t8 = run_conv(h, true, N, s.C, s.K, s.HW, s.HW, x8, w8, scale, y8, repeats);
    const double rel = t16.ms > 0.f && t8.ms > 0.f ? relative_l2_diff(y16, y8, ny) : -1.0;
    const double flop = 2.0 * N * s.HW * s.HW * s.K * s.C * 9;
    std::printf("%5lld %5lld %4lld %3d %10.4f %10.4f %7.2f %9.1f %9.1f %9.2e  %s%s%s\n", (long long)s.C, (long long)s.K, (long long)s.HW, s.count, t16.ms, t8.ms,
                t16.ms > 0.f && t8.ms > 0.f ? t16.ms / t8.ms : 0.0, t16.ms > 0.f ? flop / (t16.ms * 1e9) : 0.0, t8.ms > 0.f ? flop / (t8.ms * 1e9) : 0.0,
                rel, t16.why, t16.ms > 0.f && t8.ms < 0.f ? "fp8: " : "", t8.ms < 0.f ? t8.why : "");
    if (t16.ms > 0.f) sum16 += s.count * t16.ms;
    if (t16.ms > 0.f && t8.ms > 0.f) sum8 += s.count * t8.ms, sum16_both += s.count * t16.ms;
    for (void* p : {(void*)x16, (void*)w16, (void*)x8, (void*)w8, (void*)y16, (void*)y8}) cudaFree(p);
  }
  std::printf("per forward (shapes x counts): fp16 %.3f ms; where FP8 ran: fp16 %.3f ms, fp8 %.3f ms (%.2fx)\n", sum16, sum16_both, sum8,
              sum8 > 0.0 ? sum16_both / sum8 : 0.0);
  cudaFree(scale);
  cudnnDestroy(h);
  return 0;
}
