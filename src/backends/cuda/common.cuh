// CUDA error handling for the CUDA backend: every runtime and cuBLAS call is checked and turned into a
// Status naming the call; kernels are followed by a launch check.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "sdrt/status.h"

namespace sdrt::cuda {

inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::ok();
  return Status(Code::Internal, std::string(what) + ": " + cudaGetErrorString(e));
}
inline Status cublas_status(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return Status(Code::Internal, std::string(what) + ": cuBLAS error " + std::to_string((int)e));
}

// GPU milliseconds per run of body (work enqueued on s, returning true on success), timed as the engine
// runs it: `runs` calls captured into a CUDA graph, launched once to warm up and once between events, so
// the libraries' host-side launch costs do not count. Negative where the body or the capture failed.
template <class F>
float time_in_graph(cudaStream_t s, int runs, F&& body) {
  if (!body()) return cudaGetLastError(), -1.f;  // also warms the library up
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return cudaGetLastError(), -1.f;
  bool good = true;
  for (int i = 0; i < runs; ++i) good = good && body();
  good = cudaStreamEndCapture(s, &graph) == cudaSuccess && good;
  good = good && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  good = good && cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess;
  good = good && cudaGraphLaunch(exec, s) == cudaSuccess;  // warm
  good = good && cudaEventRecord(e0, s) == cudaSuccess && cudaGraphLaunch(exec, s) == cudaSuccess && cudaEventRecord(e1, s) == cudaSuccess;
  float ms = -1.f;
  if (good && cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess) ms /= runs;
  else ms = -1.f;
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  for (auto ev : {e0, e1})
    if (ev) cudaEventDestroy(ev);
  cudaGetLastError();
  return ms;
}

}  // namespace sdrt::cuda

#define CUDA_TRY(expr) SDRT_RETURN_IF_ERROR(::sdrt::cuda::cuda_status((expr), #expr))
#define CUBLAS_TRY(expr) SDRT_RETURN_IF_ERROR(::sdrt::cuda::cublas_status((expr), #expr))
#define CUDA_LAUNCH_CHECK(what) SDRT_RETURN_IF_ERROR(::sdrt::cuda::cuda_status(cudaGetLastError(), what))
