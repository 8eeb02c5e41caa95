#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "backends/cuda/cudnn_conv.h"
#include "backends/cuda/cudnn_graph.h"
#include "backends/cuda/nhwc_kernels.cuh"

namespace sdrt::cuda {
namespace {

constexpr size_t kMaxWorkspace = size_t(256) << 20;  // algorithms needing more are passed over

Status cudnn_status(cudnnStatus_t e, const char* what) {
  if (e == CUDNN_STATUS_SUCCESS) return Status::ok();
  return Status(Code::Internal, std::string(what) + ": " + cudnnGetErrorString(e));
}
#define CUDNN_TRY(expr) SDRT_RETURN_IF_ERROR(cudnn_status((expr), #expr))

}  // namespace

std::string ConvShape::key() const {
  char b[160];
  std::snprintf(b, sizeof b, "n%lld c%lld h%lld w%lld o%lld k%lldx%lld s%lld p%lld,%lld", (long long)N, (long long)C, (long long)H, (long long)W,
                (long long)O, (long long)kh, (long long)kw, (long long)stride, (long long)pad_h, (long long)pad_w);
  return b;
}

std::string cudnn_version() {
  const size_t v = cudnnGetVersion();  // major*10000 + minor*100 + patch (cuDNN 9)
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

std::string ConvChoice::text() const {
  char b[96];
  std::snprintf(b, sizeof b, "algo=%d workspace=%zu ms=%.5f", algo, workspace, ms);
  return b;
}

Result<ConvChoice> ConvChoice::parse(const std::string& s) {
  ConvChoice c;
  unsigned long long ws = 0;
  int used = 0;
  if (std::sscanf(s.c_str(), "algo=%d workspace=%llu ms=%f%n", &c.algo, &ws, &c.ms, &used) != 3 || used != (int)s.size() || c.algo < 0 ||
      c.algo >= CUDNN_CONVOLUTION_FWD_ALGO_COUNT || ws > kMaxWorkspace)
    return Status(Code::Corrupt, "bad convolution tactic '" + s + "'");
  c.workspace = ws;
  c.seeded = true;
  return c;
}

const char* conv_form_name(ConvForm f) {
  switch (f) {
    case ConvForm::Gemm: return "im2col-gemm";
    case ConvForm::CudnnFused: return "cudnn-fused";
    case ConvForm::Graph: return "cudnn-graph";
    case ConvForm::Narrow: return "narrow";
    case ConvForm::Splitk: return "splitk";
    case ConvForm::Wx: return "winograd-x";
    default: return "cudnn";
  }
}

bool parse_conv_form(const std::string& s, ConvForm* f) {
  for (ConvForm c : {ConvForm::Cudnn, ConvForm::Gemm, ConvForm::CudnnFused, ConvForm::Graph, ConvForm::Narrow, ConvForm::Splitk, ConvForm::Wx})
    if (s == conv_form_name(c)) return *f = c, true;
  return false;
}

std::string graph_key(const ConvShape& s, bool bias, bool residual) {
  return s.key() + (bias ? " b1" : " b0") + (residual ? " r1" : " r0");
}

struct CudnnConv::Entry {
  ConvShape shape;
  int out[4] = {0, 0, 0, 0};  // the output's N, C, H, W
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnActivationDescriptor_t identity = nullptr;
  ConvChoice choice;
  bool fused = false;  // cudnnConvolutionBiasActivationForward accepts this shape
  size_t fused_workspace = 0;
  ~Entry() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (identity) cudnnDestroyActivationDescriptor(identity);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

// One graph-form convolution: its descriptors (owned by the pool) and execution plan.
struct CudnnConv::GraphEntry {
  dnn::Pool pool;
  dnn::Desc plan = nullptr;
  int64_t workspace = 0;
  bool bias = false, residual = false;
};

CudnnConv::~CudnnConv() {
  graphs_.clear();
  entries_.clear();
  if (handle_) cudnnDestroy(static_cast<cudnnHandle_t>(handle_));
}

Result<std::unique_ptr<CudnnConv>> CudnnConv::create(cudaStream_t stream) {
  std::unique_ptr<CudnnConv> c(new CudnnConv());
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t st = cudnnCreate(&h);
  if (st != CUDNN_STATUS_SUCCESS)
    return Status(Code::Unsupported, std::string("cuDNN could not start (") + cudnnGetErrorString(st) +
                                         "); the CUDA backend needs libcudnn 9 on the library path");
  c->handle_ = h;
  CUDNN_TRY(cudnnSetStream(h, stream));
  return Result<std::unique_ptr<CudnnConv>>(std::move(c));
}

Result<int> CudnnConv::prepare(const ConvShape& s, ConvTuning& tuning) {
  const std::string key = s.key();
  auto found = by_key_.find(key);
  if (found != by_key_.end()) return found->second;
  auto e = std::make_unique<Entry>();
  CUDNN_TRY(cudnnCreateTensorDescriptor(&e->x));
  CUDNN_TRY(cudnnCreateTensorDescriptor(&e->y));
  CUDNN_TRY(cudnnCreateFilterDescriptor(&e->w));
  CUDNN_TRY(cudnnCreateConvolutionDescriptor(&e->conv));
  CUDNN_TRY(cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, (int)s.N, (int)s.C, (int)s.H, (int)s.W));
  CUDNN_TRY(cudnnSetFilter4dDescriptor(e->w, CUDNN_DATA_HALF, CUDNN_TENSOR_NHWC, (int)s.O, (int)s.C, (int)s.kh, (int)s.kw));
  CUDNN_TRY(cudnnSetConvolution2dDescriptor(e->conv, (int)s.pad_h, (int)s.pad_w, (int)s.stride, (int)s.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
  CUDNN_TRY(cudnnSetConvolutionMathType(e->conv, CUDNN_TENSOR_OP_MATH));
  int on, oc, oh, ow;  // the output's dims
  CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(e->conv, e->x, e->w, &on, &oc, &oh, &ow));
  e->shape = s;
  e->out[0] = on, e->out[1] = oc, e->out[2] = oh, e->out[3] = ow;
  CUDNN_TRY(cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, on, oc, oh, ow));
  {  // the fused form: implicit precomputed GEMM is the one algorithm it has with an identity activation
    CUDNN_TRY(cudnnCreateTensorDescriptor(&e->bias));
    CUDNN_TRY(cudnnSetTensor4dDescriptor(e->bias, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, 1, (int)s.O, 1, 1));
    CUDNN_TRY(cudnnCreateActivationDescriptor(&e->identity));
    CUDNN_TRY(cudnnSetActivationDescriptor(e->identity, CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    size_t need = 0;
    e->fused = cudnnGetConvolutionForwardWorkspaceSize(static_cast<cudnnHandle_t>(handle_), e->x, e->w, e->conv, e->y,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &need) == CUDNN_STATUS_SUCCESS &&
               need <= kMaxWorkspace;
    e->fused_workspace = e->fused ? need : 0;
  }

  {
    std::lock_guard<std::mutex> lock(tuning.mu);
    auto t = tuning.choices.find(key);
    if (t != tuning.choices.end() && t->second.seeded) {  // from a plan or cache: still valid here?
      size_t need = 0;
      const auto st = cudnnGetConvolutionForwardWorkspaceSize(static_cast<cudnnHandle_t>(handle_), e->x, e->w, e->conv, e->y,
                                                              (cudnnConvolutionFwdAlgo_t)t->second.algo, &need);
      if (st == CUDNN_STATUS_SUCCESS && need <= kMaxWorkspace) {
        t->second.workspace = std::max(t->second.workspace, need);
        t->second.seeded = false;
        ++tuning.reused;
      } else {
        tuning.choices.erase(t);
        t = tuning.choices.end();
      }
    }
    if (t != tuning.choices.end()) {
      e->choice = t->second;
    } else {
      auto* h = static_cast<cudnnHandle_t>(handle_);
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
      int returned = 0;
      // timed on operands of a layer's magnitudes (cudnnFind's own buffers hold zeros or whatever was there;
      // zeros draw less power, and the GPU clocks higher on them), else as cudnnFind does
      void *x = nullptr, *w = nullptr, *y = nullptr, *ws = nullptr;
      const size_t xb = (size_t)(s.N * s.H * s.W * s.C) * 2, wb = (size_t)(s.O * s.kh * s.kw * s.C) * 2, yb = (size_t)on * oc * oh * ow * 2;
      cudaStream_t st = nullptr;
      const bool own = cudnnGetStream(h, &st) == CUDNN_STATUS_SUCCESS && cudaMalloc(&x, xb) == cudaSuccess && cudaMalloc(&w, wb) == cudaSuccess &&
                       cudaMalloc(&y, yb) == cudaSuccess && cudaMalloc(&ws, kMaxWorkspace) == cudaSuccess;
      cudnnStatus_t found;
      if (own) {
        fill_uniform(static_cast<__half*>(x), (int64_t)(xb / 2), 1.7f, 41, st);
        fill_uniform(static_cast<__half*>(w), (int64_t)(wb / 2), 1.7f / std::sqrt((float)(s.C * s.kh * s.kw)), 42, st);
        found = cudnnFindConvolutionForwardAlgorithmEx(h, e->x, x, e->w, w, e->conv, e->y, y, (int)perf.size(), &returned, perf.data(), ws, kMaxWorkspace);
        cudaStreamSynchronize(st);
      } else {
        found = cudnnFindConvolutionForwardAlgorithm(h, e->x, e->w, e->conv, e->y, (int)perf.size(), &returned, perf.data());
      }
      for (void* p : {x, w, y, ws})
        if (p) cudaFree(p);
      cudaGetLastError();
      CUDNN_TRY(found);
      for (int i = 0; i < returned; ++i)  // sorted fastest first
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kMaxWorkspace) {
          e->choice = {(int)perf[i].algo, perf[i].memory, perf[i].time};
          break;
        }
      if (e->choice.algo < 0) return Status(Code::Internal, "cuDNN has no algorithm for the convolution " + key);
      tuning.choices[key] = e->choice;
      ++tuning.timed;
    }
  }
  entries_.push_back(std::move(e));
  by_key_[key] = (int)entries_.size() - 1;
  return (int)entries_.size() - 1;
}

size_t CudnnConv::workspace(int plan) const { return std::max(entries_.at(plan)->choice.workspace, entries_.at(plan)->fused_workspace); }

namespace {
enum : int64_t { kUidX = 1, kUidW, kUidBias, kUidRes, kUidY, kUidT1, kUidT2 };

// y = conv(x, w) (+ bias) (+ res) of a prepared convolution as an operation graph on handle h (null where
// it does not build): the convolution into a float virtual tensor where an addition follows.
dnn::Desc build_conv_graph(dnn::Pool& pool, cudnnHandle_t h, const ConvShape& s, const int (&out)[4], bool bias, bool residual) {
  using namespace dnn;
  const int64_t N = out[0], O = out[1], Ho = out[2], Wo = out[3];
  Desc dx = tensor(pool, kUidX, CUDNN_DATA_HALF, s.N, s.C, s.H, s.W, false), dw = tensor(pool, kUidW, CUDNN_DATA_HALF, s.O, s.C, s.kh, s.kw, false);
  Desc dy = tensor(pool, kUidY, CUDNN_DATA_HALF, N, O, Ho, Wo, false);
  Desc conv = conv2d_desc(pool, s.pad_h, s.pad_w, s.stride);
  if (!dx || !dw || !dy || !conv) return nullptr;
  std::vector<Desc> ops;
  Desc t = bias || residual ? tensor(pool, kUidT1, CUDNN_DATA_FLOAT, N, O, Ho, Wo, true) : dy;
  if (!t) return nullptr;
  ops.push_back(conv_forward(pool, dx, dw, t, conv));
  if (bias) {
    Desc db = tensor(pool, kUidBias, CUDNN_DATA_HALF, 1, O, 1, 1, false);
    Desc t2 = residual ? tensor(pool, kUidT2, CUDNN_DATA_FLOAT, N, O, Ho, Wo, true) : dy;
    if (!db || !t2) return nullptr;
    ops.push_back(pointwise(pool, CUDNN_POINTWISE_ADD, t, db, t2));
    t = t2;
  }
  if (residual) {
    Desc dr = tensor(pool, kUidRes, CUDNN_DATA_HALF, N, O, Ho, Wo, false);
    if (!dr) return nullptr;
    ops.push_back(pointwise(pool, CUDNN_POINTWISE_ADD, t, dr, dy));
  }
  for (Desc op : ops)
    if (!op) return nullptr;
  return op_graph(pool, h, ops);
}
}  // namespace

int CudnnConv::graph_configs(int plan, bool bias, bool residual) {
  if (plan < 0 || plan >= (int)entries_.size()) return 0;
  const Entry& e = *entries_[plan];
  dnn::Pool pool;
  dnn::Desc g = build_conv_graph(pool, static_cast<cudnnHandle_t>(handle_), e.shape, e.out, bias, residual);
  return g ? (int)dnn::engine_configs(pool, g, CUDNN_HEUR_MODE_A, 64).size() : 0;
}

Result<int> CudnnConv::prepare_graph(int plan, bool bias, bool residual, int index) {
  if (plan < 0 || plan >= (int)entries_.size()) return Status(Code::Internal, "convolution was not prepared");
  const std::string key = std::to_string(plan) + (bias ? " 1" : " 0") + (residual ? " 1 " : " 0 ") + std::to_string(index);
  if (auto it = graph_by_key_.find(key); it != graph_by_key_.end()) return it->second;
  const Entry& e = *entries_[plan];
  auto ge = std::make_unique<GraphEntry>();
  ge->bias = bias, ge->residual = residual;
  auto* h = static_cast<cudnnHandle_t>(handle_);
  dnn::Desc g = build_conv_graph(ge->pool, h, e.shape, e.out, bias, residual);
  if (!g) return Status(Code::Unsupported, "cuDNN's graph API does not build the convolution " + e.shape.key());
  std::vector<dnn::Desc> cfgs = dnn::engine_configs(ge->pool, g, CUDNN_HEUR_MODE_A, index + 1);
  if (index < 0 || index >= (int)cfgs.size()) return Status(Code::Unsupported, "no engine configuration " + std::to_string(index) + " for " + e.shape.key());
  ge->plan = dnn::exec_plan(ge->pool, h, cfgs[index], &ge->workspace);
  cudaGetLastError();
  if (!ge->plan) return Status(Code::Unsupported, "engine configuration " + std::to_string(index) + " does not finalize for " + e.shape.key());
  if (ge->workspace < 0 || (size_t)ge->workspace > kMaxWorkspace) return Status(Code::Unsupported, "engine configuration needs too much workspace");
  graphs_.push_back(std::move(ge));
  graph_by_key_[key] = (int)graphs_.size() - 1;
  return (int)graphs_.size() - 1;
}

size_t CudnnConv::graph_workspace(int graph) const { return (size_t)graphs_.at(graph)->workspace; }

Status CudnnConv::run_graph(int graph, const void* x, const void* w, const void* bias, const void* res, void* y, void* workspace,
                            size_t workspace_bytes) {
  if (graph < 0 || graph >= (int)graphs_.size()) return Status(Code::Internal, "graph convolution was not prepared");
  const GraphEntry& ge = *graphs_[graph];
  if (workspace_bytes < (size_t)ge.workspace) return Status(Code::Internal, "convolution workspace too small");
  if ((ge.bias && !bias) || (ge.residual && !res)) return Status(Code::Internal, "graph convolution without its bias or residual");
  int64_t uids[5] = {kUidX, kUidW, kUidY, 0, 0};
  void* ptrs[5] = {const_cast<void*>(x), const_cast<void*>(w), y, nullptr, nullptr};
  int n = 3;
  if (ge.bias) uids[n] = kUidBias, ptrs[n++] = const_cast<void*>(bias);
  if (ge.residual) uids[n] = kUidRes, ptrs[n++] = const_cast<void*>(res);
  dnn::Pool pool;
  dnn::Desc vp = dnn::variant_pack(pool, n, uids, ptrs, workspace);
  if (!vp) return Status(Code::Internal, "cuDNN variant pack");
  CUDNN_TRY(cudnnBackendExecute(static_cast<cudnnHandle_t>(handle_), ge.plan, vp));
  return Status::ok();
}

bool CudnnConv::fused_available(int plan) const { return plan >= 0 && plan < (int)entries_.size() && entries_[plan]->fused; }

Status CudnnConv::run_fused(int plan, const void* x, const void* w, const void* bias, const void* res, void* y, void* workspace,
                            size_t workspace_bytes) {
  if (!fused_available(plan)) return Status(Code::Internal, "fused convolution was not prepared");
  const Entry& e = *entries_[plan];
  if (workspace_bytes < e.fused_workspace) return Status(Code::Internal, "convolution workspace too small");
  const float alpha1 = 1.f, alpha2 = res ? 1.f : 0.f;
  CUDNN_TRY(cudnnConvolutionBiasActivationForward(static_cast<cudnnHandle_t>(handle_), &alpha1, e.x, x, e.w, w, e.conv,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, workspace, workspace_bytes, &alpha2, e.y,
                                                  res ? res : y, e.bias, bias, e.identity, e.y, y));
  return Status::ok();
}

Status CudnnConv::set_stream(cudaStream_t stream) {
  CUDNN_TRY(cudnnSetStream(static_cast<cudnnHandle_t>(handle_), stream));
  return Status::ok();
}

Status CudnnConv::run(int plan, const void* x, const void* w, void* y, void* workspace, size_t workspace_bytes) {
  if (plan < 0 || plan >= (int)entries_.size()) return Status(Code::Internal, "convolution was not prepared");
  const Entry& e = *entries_[plan];
  if (workspace_bytes < e.choice.workspace) return Status(Code::Internal, "convolution workspace too small");
  const float alpha = 1.f, beta = 0.f;
  CUDNN_TRY(cudnnConvolutionForward(static_cast<cudnnHandle_t>(handle_), &alpha, e.x, x, e.w, w, e.conv, (cudnnConvolutionFwdAlgo_t)e.choice.algo,
                                    workspace, workspace_bytes, &beta, e.y, y));
  return Status::ok();
}

}  // namespace sdrt::cuda
