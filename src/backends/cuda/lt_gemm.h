// Linear layers of the FP16 path through cuBLASLt: y[M,N] = x[M,K] w[N,K]^T + b[N] (+ r[M,N]) in one
// call, the bias as a GEMM epilogue and the residual as the C operand (beta = 1). Half in and out,
// float accumulation. For each distinct shape the heuristic's best candidates are timed on the GPU and
// the fastest kept (shared by a backend's executables, recorded in plans).
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "sdrt/status.h"

namespace sdrt::cuda {

std::string cublaslt_version();  // "13.1.0"

// Chosen cuBLASLt algorithms by shape key ("m.. n.. k.. bias residual"), as the 64 opaque bytes of a
// cublasLtMatmulAlgo_t in hex; seeded ones (from a plan) are checked before use.
struct GemmTuning {
  std::mutex mu;
  std::map<std::string, std::string> choices;
  std::map<std::string, bool> seeded;
  // Linear layers with a fused GEGLU, by the projection's GEMM key: the fused kernel's form
  // (geglu_gemm.h), or "split" for the cuBLASLt GEMM and then the GEGLU pass.
  std::map<std::string, std::string> geglu;
  // Graphs whose batch split was timed (CUDA backend, SDRT_SPLIT=auto), by the graph's key: the parts it
  // runs in (1: whole). Kept here with the other timed choices (the backend's one tuning record besides
  // the convolutions').
  std::map<std::string, int> split;
  // Attentions on the Hopper kernel, by attention_key: the form that runs (flash_attention.cuh's names).
  std::map<std::string, std::string> attn;
  // GroupNorms by group_norm_key: the form that runs (nhwc_kernels.cuh's group_norm_form_name).
  std::map<std::string, std::string> gn;
  // Linear layers and 1x1 convolutions by GEMM key: the split-K kernel's form that runs them (conv_splitk.h,
  // as a 1x1 convolution over the rows), or "lt" for the cuBLASLt plan.
  std::map<std::string, std::string> splitk;
};

bool gemm_tactic_valid(const std::string& hex);

class LtGemm {
 public:
  ~LtGemm();
  static Result<std::unique_ptr<LtGemm>> create(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  // Whether a shape/pointer set can go through this path (multiples of 8, 16-byte aligned pointers).
  static bool usable(int64_t M, int64_t N, int64_t K, const void* x, const void* w, const void* b, const void* r, const void* y);
  // Plans a shape (or finds its plan); returns the id for run(). timed = false: a shape not chosen yet takes
  // the heuristic's first candidate, not timed and not recorded (work run once per request).
  Result<int> prepare(int64_t M, int64_t N, int64_t K, bool bias, bool residual, GemmTuning& tuning, bool timed = true);
  static std::string key(int64_t M, int64_t N, int64_t K, bool bias, bool residual);
  Status run(int plan, const void* x, const void* w, const void* b, const void* r, void* y);
  size_t workspace(int plan) const;  // bytes of workspace the plan's algorithm needs
  // Where run() enqueues from now on: a stream and a workspace (one per stream, since GEMMs on two
  // streams may run at once) of at least workspace(plan) bytes for the plans run there.
  void bind(cudaStream_t stream, void* workspace, size_t bytes) { stream_ = stream, run_ws_ = workspace, run_bytes_ = bytes; }

 private:
  struct Plan;
  LtGemm() = default;
  void* handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* ws_ = nullptr;  // prepare()'s (the size candidates may use)
  size_t ws_bytes_ = 0;
  void* run_ws_ = nullptr;  // run()'s (bind)
  size_t run_bytes_ = 0;
  std::vector<std::unique_ptr<Plan>> plans_;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool, bool>, int> by_shape_;
};

}  // namespace sdrt::cuda
