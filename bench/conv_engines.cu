// Whether the engine's convolution choices leave time on the table: for each 3x3 convolution shape of the
// SD 1.5 UNet (NHWC, FP16, float accumulation), the algorithm the engine takes (the fastest of
// cudnnFindConvolutionForwardAlgorithmEx on the shape's operands, as src/backends/cuda/cudnn_conv.cu) against every engine
// configuration of the cuDNN graph API's heuristics (modes A and fallback), each timed the way the engine
// runs - five launches captured in a CUDA graph, median of the replays - and weighted by the shape's count
// in a forward. The fastest configuration's output is checked against the legacy algorithm's.
//   bench_conv_engines --batch 16 --repeats 10 [--limit 24]
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <vector>

#include "backends/cuda/common.cuh"
#include "cuda_bench.cuh"
#include "cudnn_graph.cuh"

namespace {

__global__ void fill_k(__half* p, int64_t n, uint32_t seed) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = __float2half((float)(bench_hash((uint32_t)i, seed) & 0xFFFF) / 32768.f - 1.f);
}

struct Best {
  float ms = -1.f;
  int tried = 0, ran = 0, index = -1;  // configurations tried / that ran; the fastest's index in the list
  int64_t workspace = 0;
};

// Every graph-API engine configuration (heuristics mode A, then fallback; at most `limit` of each) of y =
// conv(x, w), timed; y holds the fastest one's output.
Best graph_api(cudnnHandle_t h, cudaStream_t s, int64_t N, int64_t C, int64_t K, int64_t H, int64_t W, int64_t kh, int64_t pad, __half* x,
               __half* w, __half* y, int repeats, int limit) {
  Pool pool;
  Best best;
  enum : int64_t { kX = 1, kW = 2, kY = 3 };
  const int64_t Ho = H + 2 * pad - kh + 1, Wo = W + 2 * pad - kh + 1;
  Desc dx = tensor(pool, kX, CUDNN_DATA_HALF, N, C, H, W, false), dw = tensor(pool, kW, CUDNN_DATA_HALF, K, C, kh, kh, false);
  Desc dy = tensor(pool, kY, CUDNN_DATA_HALF, N, K, Ho, Wo, false);
  Desc conv = conv2d_desc(pool, pad, 1);
  if (!(dx && dw && dy && conv)) return best;
  Desc op = conv_forward(pool, dx, dw, dy, conv);
  Desc graph = op ? op_graph(pool, h, {op}) : nullptr;
  if (!graph) return best;
  std::vector<Desc> cfgs = engine_configs(pool, graph, CUDNN_HEUR_MODE_A, limit);
  for (Desc d : engine_configs(pool, graph, CUDNN_HEUR_MODE_FALLBACK, limit)) cfgs.push_back(d);
  for (size_t i = 0; i < cfgs.size(); ++i) {
    ++best.tried;
    int64_t ws_bytes = 0;
    Desc plan = exec_plan(pool, h, cfgs[i], &ws_bytes);
    if (!plan || ws_bytes > (int64_t(256) << 20)) continue;  // the engine's own bound
    void* ws = nullptr;
    if (ws_bytes > 0 && cudaMalloc(&ws, ws_bytes) != cudaSuccess) continue;
    const int64_t uids[3] = {kX, kW, kY};
    void* ptrs[3] = {x, w, y};
    float ms = -1.f;
    Desc vp = variant_pack(pool, 3, uids, ptrs, ws);
    if (vp)
      ms = median_in_graph(s, repeats, [&] { return cudnnBackendExecute(h, plan, vp) == CUDNN_STATUS_SUCCESS; });
    cudaGetLastError();
    if (ms > 0.f) {
      ++best.ran;
      if (best.ms < 0.f || ms < best.ms) {
        best.ms = ms, best.index = (int)i, best.workspace = ws_bytes;
        cudnnBackendExecute(h, plan, vp);  // y: the fastest configuration's output
        cudaStreamSynchronize(s);
      }
    }
    if (ws) cudaFree(ws);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"the engine's cuDNN convolution choices against every graph-API engine configuration"};
  int64_t batch = 16;
  int repeats = 10, limit = 24;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 256));
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 1000));
  app.add_option("--limit", limit, "configurations taken from each heuristics mode")->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);

  const auto& shapes = kUnetConv3x3;
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudnnHandle_t h = nullptr;
  if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS || cudnnSetStream(h, s) != CUDNN_STATUS_SUCCESS) return std::fprintf(stderr, "cuDNN could not start\n"), 1;
  std::printf("batch %lld; cuDNN %zu; graph API: up to %d configurations from heuristics mode A and %d from fallback\n", (long long)batch,
              cudnnGetVersion(), limit, limit);
  std::printf("%5s %5s %4s %3s %6s %10s %10s %6s %6s %7s %9s\n", "C", "K", "HW", "n", "algo", "legacy ms", "graph ms", "ran", "best", "gain", "rel diff");
  double sum_legacy = 0.0, sum_best = 0.0;
  for (const UnetConv3x3& sh : shapes) {
    const int64_t N = batch, nx = N * sh.HW * sh.HW * sh.C, nw = sh.K * 9 * sh.C, ny = N * sh.HW * sh.HW * sh.K;
    __half *x = nullptr, *w = nullptr, *y0 = nullptr, *y1 = nullptr;
    CHECK(cudaMalloc(&x, nx * 2));
    CHECK(cudaMalloc(&w, nw * 2));
    CHECK(cudaMalloc(&y0, ny * 2));
    CHECK(cudaMalloc(&y1, ny * 2));
    fill_k<<<(unsigned)((nx + 255) / 256), 256, 0, s>>>(x, nx, 1);
    fill_k<<<(unsigned)((nw + 255) / 256), 256, 0, s>>>(w, nw, 2);
    CHECK(cudaStreamSynchronize(s));

    // the engine's way (cudnn_conv.cu): the legacy API's fastest algorithm within 256 MiB of workspace
    const LegacyConv lc = legacy_conv3x3(h, s, N, sh.C, sh.K, sh.HW, x, w, y0, repeats);
    const int algo = lc.algo;
    const float legacy = lc.ms;
    const Best b = graph_api(h, s, N, sh.C, sh.K, sh.HW, sh.HW, 3, 1, x, w, y1, repeats, limit);
    const double rel = legacy > 0.f && b.ms > 0.f ? relative_l2_diff(y0, y1, ny) : -1.0;
    std::printf("%5lld %5lld %4lld %3d %6d %10.4f %10.4f %3d/%-3d %5d %6.2fx %9.2e\n", (long long)sh.C, (long long)sh.K, (long long)sh.HW, sh.count, algo,
                legacy, b.ms, b.ran, b.tried, b.index, legacy > 0.f && b.ms > 0.f ? legacy / b.ms : 0.0, rel);
    if (legacy > 0.f && b.ms > 0.f) sum_legacy += sh.count * legacy, sum_best += sh.count * std::min(legacy, b.ms);
    for (void* p : {(void*)x, (void*)w, (void*)y0, (void*)y1}) cudaFree(p);
  }
  std::printf("per forward (shapes x counts): the engine's algorithms %.3f ms; with the faster of them and the graph API's best %.3f ms (%.2fx)\n",
              sum_legacy, sum_best, sum_best > 0.0 ? sum_legacy / sum_best : 0.0);
  cudnnDestroy(h);
  cudaStreamDestroy(s);
  return 0;
}
