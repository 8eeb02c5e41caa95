#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backends/cuda/common.cuh"
#include "backends/cuda/lt_gemm.h"
#include "backends/cuda/nhwc_kernels.cuh"

namespace sdrt::cuda {

std::string cublaslt_version() {
  const size_t v = cublasLtGetVersion();  // major*10000 + minor*100 + patch
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool bias = false, residual = false;
  size_t workspace = 0;  // bytes the chosen algorithm needs
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

Result<std::unique_ptr<LtGemm>> LtGemm::create(cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  std::unique_ptr<LtGemm> g(new LtGemm());
  cublasLtHandle_t h = nullptr;
  CUBLAS_TRY(cublasLtCreate(&h));
  g->handle_ = h;
  g->stream_ = stream;
  g->ws_ = workspace;
  g->ws_bytes_ = workspace_bytes;
  g->run_ws_ = workspace, g->run_bytes_ = workspace_bytes;
  return Result<std::unique_ptr<LtGemm>>(std::move(g));
}

bool LtGemm::usable(int64_t M, int64_t N, int64_t K, const void* x, const void* w, const void* b, const void* r, const void* y) {
  auto al = [](const void* p) { return p == nullptr || ((uintptr_t)p & 15) == 0; };
  return M > 0 && N % 8 == 0 && K % 8 == 0 && M < (1ll << 31) && al(x) && al(w) && al(b) && al(r) && al(y);
}

std::string LtGemm::key(int64_t M, int64_t N, int64_t K, bool bias, bool residual) {
  return "m" + std::to_string(M) + " n" + std::to_string(N) + " k" + std::to_string(K) + (bias ? " bias" : "") + (residual ? " residual" : "");
}

namespace {

std::string algo_hex(const cublasLtMatmulAlgo_t& a) {
  static_assert(sizeof(a) == 64, "cublasLtMatmulAlgo_t is 8 x uint64");
  const auto* b = reinterpret_cast<const unsigned char*>(&a);
  std::string s;
  char h[3];
  for (size_t i = 0; i < sizeof(a); ++i) {
    std::snprintf(h, sizeof h, "%02x", b[i]);
    s += h;
  }
  return s;
}

bool algo_from_hex(const std::string& s, cublasLtMatmulAlgo_t* a) {
  if (s.size() != 2 * sizeof(*a)) return false;
  auto* b = reinterpret_cast<unsigned char*>(a);
  for (size_t i = 0; i < sizeof(*a); ++i) {
    unsigned v = 0;
    if (std::sscanf(s.c_str() + 2 * i, "%2x", &v) != 1) return false;
    b[i] = (unsigned char)v;
  }
  return true;
}

}  // namespace

bool gemm_tactic_valid(const std::string& v) {
  cublasLtMatmulAlgo_t a;
  return algo_from_hex(v, &a);
}

Result<int> LtGemm::prepare(int64_t M, int64_t N, int64_t K, bool bias, bool residual, GemmTuning& tuning, bool timed) {
  const auto shape = std::make_tuple(M, N, K, bias, residual);
  auto known = by_shape_.find(shape);
  if (known != by_shape_.end()) return known->second;
  auto p = std::make_unique<Plan>();
  p->bias = bias;
  p->residual = residual;
  CUBLAS_TRY(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // column-major view: y^T [N, M] = w [K, N]^T . x^T [K, M]
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bt = CUDA_R_16F;
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
  }
  CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16F, (uint64_t)K, (uint64_t)N, K));
  CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16F, (uint64_t)K, (uint64_t)M, K));
  CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_16F, (uint64_t)N, (uint64_t)M, N));
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t align = 16;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes_, sizeof ws_bytes_);
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
  auto* h = static_cast<cublasLtHandle_t>(handle_);
  const std::string k = LtGemm::key(M, N, K, bias, residual);
  std::lock_guard<std::mutex> lock(tuning.mu);
  auto chosen = tuning.choices.find(k);
  bool have = false;
  if (chosen != tuning.choices.end() && algo_from_hex(chosen->second, &p->algo)) {
    have = true;
    if (tuning.seeded[k]) {  // from a plan: does it still hold here?
      cublasLtMatmulHeuristicResult_t check{};
      have = cublasLtMatmulAlgoCheck(h, p->op, p->a, p->b, p->c, p->c, &p->algo, &check) == CUBLAS_STATUS_SUCCESS &&
             check.workspaceSize <= ws_bytes_;
      tuning.seeded[k] = false;
    }
  }
  if (!have) {
    // cuBLASLt's first 16 heuristic candidates (SDRT_GEMM_CANDIDATES: up to 64, for benchmarks of the search)
    constexpr int kMaxCandidates = 64, kRuns = 5;
    const char* e = std::getenv("SDRT_GEMM_CANDIDATES");
    const int candidates = e && std::atoi(e) >= 1 ? std::min(std::atoi(e), kMaxCandidates) : 16;
    cublasLtMatmulHeuristicResult_t res[kMaxCandidates] = {};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, p->op, p->a, p->b, p->c, p->c, pref, candidates, res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    pref = nullptr;
    CUBLAS_TRY(st);
    if (found < 1) return Status(Code::Unsupported, "cuBLASLt has no algorithm for this GEMM");
    p->algo = res[0].algo;
    if (found > 1 && timed) {  // time the candidates on scratch operands inside CUDA graphs (as they run), keep the fastest
      void *x = nullptr, *w = nullptr, *y = nullptr, *b = nullptr;
      bool ok = cudaMalloc(&x, (size_t)M * K * 2) == cudaSuccess && cudaMalloc(&w, (size_t)N * K * 2) == cudaSuccess &&
                cudaMalloc(&y, (size_t)M * N * 2) == cudaSuccess && cudaMalloc(&b, (size_t)N * 2) == cudaSuccess;
      if (ok) {  // operands of a layer's magnitudes: zeros draw less power, and the GPU clocks higher on them
        fill_uniform(static_cast<__half*>(x), M * K, 1.7f, 21, stream_);
        fill_uniform(static_cast<__half*>(w), N * K, 1.7f / std::sqrt((float)K), 22, stream_);
        fill_uniform(static_cast<__half*>(y), M * N, 1.f, 23, stream_);
        fill_uniform(static_cast<__half*>(b), N, 0.1f, 24, stream_);
        if (bias) cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b);
        const float alpha = 1.f, beta = residual ? 1.f : 0.f;
        float best = 1e30f;
        for (int i = 0; i < found; ++i) {
          if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > ws_bytes_) continue;
          const float ms = time_in_graph(stream_, kRuns, [&] {
            return cublasLtMatmul(h, p->op, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c, &res[i].algo, ws_, ws_bytes_, stream_) == CUBLAS_STATUS_SUCCESS;
          });
          if (ms >= 0.f && ms < best) {
            best = ms;
            p->algo = res[i].algo;
          }
        }
      }
      cudaStreamSynchronize(stream_);
      for (void* q : {x, w, y, b})
        if (q) cudaFree(q);
      cudaGetLastError();
    }
    if (timed) tuning.choices[k] = algo_hex(p->algo);
  }
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatmulHeuristicResult_t need{};
  p->workspace = cublasLtMatmulAlgoCheck(h, p->op, p->a, p->b, p->c, p->c, &p->algo, &need) == CUBLAS_STATUS_SUCCESS ? need.workspaceSize : ws_bytes_;
  plans_.push_back(std::move(p));
  by_shape_[shape] = (int)plans_.size() - 1;
  return (int)plans_.size() - 1;
}

size_t LtGemm::workspace(int plan) const { return plan >= 0 && plan < (int)plans_.size() ? plans_[plan]->workspace : ws_bytes_; }

Status LtGemm::run(int plan, const void* x, const void* w, const void* b, const void* r, void* y) {
  if (plan < 0 || plan >= (int)plans_.size()) return Status(Code::Internal, "GEMM plan was not prepared");
  const Plan& p = *plans_[plan];
  if ((b != nullptr) != p.bias || (r != nullptr) != p.residual) return Status(Code::Internal, "GEMM plan does not match its operands");
  if (b) CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
  const float alpha = 1.f, beta = r ? 1.f : 0.f;
  CUBLAS_TRY(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.op, &alpha, w, p.a, x, p.b, &beta, r ? r : y, p.c, y, p.c, &p.algo, run_ws_, run_bytes_,
                        stream_));
  return Status::ok();
}

}  // namespace sdrt::cuda
