#include <cublasLt.h>

#include "backends/cuda/lt_gemm.h"

namespace sdrt::cuda {
namespace {

Status lt_status(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return Status(Code::Internal, std::string(what) + ": cuBLASLt error " + std::to_string((int)e));
}
#define LT_TRY(expr) SDRT_RETURN_IF_ERROR(lt_status((expr), #expr))

}  // namespace

struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool bias = false, residual = false;
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
  LT_TRY(cublasLtCreate(&h));
  g->handle_ = h;
  g->stream_ = stream;
  g->ws_ = workspace;
  g->ws_bytes_ = workspace_bytes;
  return Result<std::unique_ptr<LtGemm>>(std::move(g));
}

bool LtGemm::usable(int64_t M, int64_t N, int64_t K, const void* x, const void* w, const void* b, const void* r, const void* y) {
  auto al = [](const void* p) { return p == nullptr || ((uintptr_t)p & 15) == 0; };
  return M > 0 && N % 8 == 0 && K % 8 == 0 && M < (1ll << 31) && al(x) && al(w) && al(b) && al(r) && al(y);
}

Status LtGemm::prepare(int64_t M, int64_t N, int64_t K, bool bias, bool residual) {
  const auto key = std::make_tuple(M, N, K, bias, residual);
  if (plans_.count(key)) return Status::ok();
  auto p = std::make_unique<Plan>();
  p->bias = bias;
  p->residual = residual;
  LT_TRY(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // column-major view: y^T [N, M] = w [K, N]^T . x^T [K, M]
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bt = CUDA_R_16F;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
  }
  LT_TRY(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16F, (uint64_t)K, (uint64_t)N, K));
  LT_TRY(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16F, (uint64_t)K, (uint64_t)M, K));
  LT_TRY(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_16F, (uint64_t)N, (uint64_t)M, N));
  cublasLtMatmulPreference_t pref = nullptr;
  LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t align = 16;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes_, sizeof ws_bytes_);
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  LT_TRY(st);
  if (found < 1) return Status(Code::Unsupported, "cuBLASLt has no algorithm for this GEMM");
  p->algo = res.algo;
  plans_[key] = std::move(p);
  return Status::ok();
}

Status LtGemm::run(int64_t M, int64_t N, int64_t K, const void* x, const void* w, const void* b, const void* r, void* y) {
  auto it = plans_.find(std::make_tuple(M, N, K, b != nullptr, r != nullptr));
  if (it == plans_.end()) return Status(Code::Internal, "GEMM plan was not prepared");
  const Plan& p = *it->second;
  if (b) LT_TRY(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
  const float alpha = 1.f, beta = r ? 1.f : 0.f;
  LT_TRY(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.op, &alpha, w, p.a, x, p.b, &beta, r ? r : y, p.c, y, p.c, &p.algo, ws_, ws_bytes_,
                        stream_));
  return Status::ok();
}

}  // namespace sdrt::cuda
