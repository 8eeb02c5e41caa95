// How much an FP8 (E4M3) path could take off the UNet's linear layers: every distinct GEMM shape of the
// SD 1.5 UNet's transformer blocks (proj_in/out, packed q/k/v, the q of cross-attention, the attention
// outputs, the GEGLU projection and the feed-forward output) timed through cuBLASLt as the engine runs them
// (FP16 in and out, FP32 accumulation, bias epilogue, y^T = w^T x^T) and with FP8 E4M3 operands (FP16 out,
// per-tensor scales of 1), each form's fastest of cuBLASLt's candidates, weighted by how often the shape
// occurs in a forward. Quantising the activations to FP8 is not timed (it belongs in the kernels that
// produce them); the FP8 result is compared with the FP16 one on the same values.
//   bench_fp8_gemm --batch 16 --repeats 20
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fp8_bench.cuh"

#define LT_CHECK(x)                                                                  \
  do {                                                                               \
    const cublasStatus_t st_ = (x);                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "%s:%d: cuBLASLt status %d: %s\n", __FILE__, __LINE__, (int)st_, #x); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

namespace {

// Inside functions other than main(): a failed CUDA call prints itself and ends the program.
#define CK(x)                                                                                  \
  do {                                                                                         \
    const cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)), std::exit(1); \
  } while (0)

struct Shape {
  const char* what;
  int64_t tokens, N, K;
  int count;  // per UNet forward
};

struct Timed {
  float ms = -1.f;
  int candidates = 0;
};

// The fastest of cuBLASLt's candidates for y^T [N, M] = w [K, N]^T x^T [K, M] (+ bias) in the given types.
Timed time_gemm(cublasLtHandle_t h, cudaDataType_t ab, int64_t M, int64_t N, int64_t K, const void* w, const void* x, const __half* bias, __half* y,
                void* ws, size_t ws_bytes, int repeats, const float* scale) {
  cublasLtMatmulDesc_t op = nullptr;
  LT_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  const cudaDataType_t bt = CUDA_R_16F;
  LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
  LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  if (ab == CUDA_R_8F_E4M3) {  // per-tensor scales (device pointers)
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale, sizeof scale));
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale, sizeof scale));
  }
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  LT_CHECK(cublasLtMatrixLayoutCreate(&a, ab, (uint64_t)K, (uint64_t)N, K));
  LT_CHECK(cublasLtMatrixLayoutCreate(&b, ab, (uint64_t)K, (uint64_t)M, K));
  LT_CHECK(cublasLtMatrixLayoutCreate(&c, CUDA_R_16F, (uint64_t)N, (uint64_t)M, N));
  cublasLtMatmulPreference_t pref = nullptr;
  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
  constexpr int kCandidates = 16;
  cublasLtMatmulHeuristicResult_t res[kCandidates] = {};
  int found = 0;
  Timed t;
  if (cublasLtMatmulAlgoGetHeuristic(h, op, a, b, c, c, pref, kCandidates, res, &found) == CUBLAS_STATUS_SUCCESS) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    const float alpha = 1.f, beta = 0.f;
    for (int i = 0; i < found; ++i) {
      if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > ws_bytes) continue;
      auto run = [&] { return cublasLtMatmul(h, op, &alpha, w, a, x, b, &beta, y, c, y, c, &res[i].algo, ws, ws_bytes, 0); };
      if (run() != CUBLAS_STATUS_SUCCESS) continue;
      std::vector<float> ms;
      for (int r = 0; r < repeats; ++r) {
        CK(cudaEventRecord(e0));
        for (int k = 0; k < 10; ++k) run();  // 10 back to back: launch gaps mostly hidden
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float v = 0.f;
        CK(cudaEventElapsedTime(&v, e0, e1));
        ms.push_back(v / 10.f);
      }
      std::sort(ms.begin(), ms.end());
      ++t.candidates;
      if (t.ms < 0.f || ms[ms.size() / 2] < t.ms) t.ms = ms[ms.size() / 2];
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  cudaGetLastError();
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatmulDescDestroy(op);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"FP16 vs FP8 GEMMs on the SD 1.5 UNet's linear layers (cuBLASLt)"};
  int64_t batch = 16;
  int repeats = 20;
  app.add_option("--batch", batch, "the UNet's batch (2 per image with guidance)")->check(CLI::Range(1, 256));
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);

  // per level: tokens, channels C, transformer blocks; per block: proj_in, q (cross), the two attention
  // outputs and proj_out are [C x C] (5), packed q/k/v [3C x C], GEGLU [8C x C], feed-forward out [C x 4C]
  struct Level {
    int64_t tokens, C;
    int blocks;
  };
  const Level levels[] = {{4096, 320, 5}, {1024, 640, 5}, {256, 1280, 5}, {64, 1280, 1}};
  std::vector<Shape> shapes;
  for (const Level& l : levels) {
    shapes.push_back({"C x C (5 per block)", l.tokens, l.C, l.C, 5 * l.blocks});
    shapes.push_back({"q/k/v 3C x C", l.tokens, 3 * l.C, l.C, l.blocks});
    shapes.push_back({"GEGLU 8C x C", l.tokens, 8 * l.C, l.C, l.blocks});
    shapes.push_back({"ff out C x 4C", l.tokens, l.C, 4 * l.C, l.blocks});
  }

  cublasLtHandle_t h = nullptr;
  LT_CHECK(cublasLtCreate(&h));
  const size_t ws_bytes = size_t(32) << 20;
  void* ws = nullptr;
  CHECK(cudaMalloc(&ws, ws_bytes));
  float* scale = nullptr;
  const float one = 1.f;
  CHECK(cudaMalloc(&scale, sizeof(float)));
  CHECK(cudaMemcpy(scale, &one, sizeof one, cudaMemcpyHostToDevice));

  std::printf("batch %lld; cuBLASLt %zu\n", (long long)batch, cublasLtGetVersion());
  std::printf("%-22s %6s %6s %6s %3s %10s %10s %7s %9s %9s %10s\n", "shape", "M", "N", "K", "n", "fp16 ms", "fp8 ms", "ratio", "fp16 TF/s", "fp8 TF/s",
              "rel diff");
  double sum16 = 0.0, sum8 = 0.0;
  for (const Shape& s : shapes) {
    const int64_t M = batch * s.tokens, N = s.N, K = s.K;
    __half *x16 = nullptr, *w16 = nullptr, *bias = nullptr, *y16 = nullptr, *y8 = nullptr;
    __nv_fp8_e4m3 *x8 = nullptr, *w8 = nullptr;
    CHECK(cudaMalloc(&x16, M * K * 2));
    CHECK(cudaMalloc(&w16, N * K * 2));
    CHECK(cudaMalloc(&x8, M * K));
    CHECK(cudaMalloc(&w8, N * K));
    CHECK(cudaMalloc(&bias, N * 2));
    CHECK(cudaMalloc(&y16, M * N * 2));
    CHECK(cudaMalloc(&y8, M * N * 2));
    fill_fp8_pair(x16, x8, M * K, 1);
    fill_fp8_pair(w16, w8, N * K, 2);
    CHECK(cudaMemset(bias, 0, N * 2));
    CHECK(cudaGetLastError());
    const Timed t16 = time_gemm(h, CUDA_R_16F, M, N, K, w16, x16, bias, y16, ws, ws_bytes, repeats, scale);
    const Timed t8 = time_gemm(h, CUDA_R_8F_E4M3, M, N, K, w8, x8, bias, y8, ws, ws_bytes, repeats, scale);
    const double rel = relative_l2_diff(y16, y8, M * N);  // the two results on the same inputs
    const double flop = 2.0 * M * N * K;
    std::printf("%-22s %6lld %6lld %6lld %3d %10.4f %10.4f %7.2f %9.1f %9.1f %10.2e\n", s.what, (long long)M, (long long)N, (long long)K, s.count, t16.ms,
                t8.ms, t8.ms > 0.f ? t16.ms / t8.ms : 0.0, flop / (t16.ms * 1e9), t8.ms > 0.f ? flop / (t8.ms * 1e9) : 0.0,
                rel);
    sum16 += s.count * t16.ms;
    if (t8.ms > 0.f) sum8 += s.count * t8.ms;
    for (void* p : {(void*)x16, (void*)w16, (void*)x8, (void*)w8, (void*)bias, (void*)y16, (void*)y8}) cudaFree(p);
  }
  std::printf("per forward (shapes x counts): fp16 %.3f ms, fp8 %.3f ms (%.2fx)\n", sum16, sum8, sum8 > 0.0 ? sum16 / sum8 : 0.0);
  cudaFree(ws);
  cudaFree(scale);
  cublasLtDestroy(h);
  return 0;
}
