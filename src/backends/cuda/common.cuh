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

}  // namespace sdrt::cuda

#define CUDA_TRY(expr) SDRT_RETURN_IF_ERROR(::sdrt::cuda::cuda_status((expr), #expr))
#define CUBLAS_TRY(expr) SDRT_RETURN_IF_ERROR(::sdrt::cuda::cublas_status((expr), #expr))
#define CUDA_LAUNCH_CHECK(what) SDRT_RETURN_IF_ERROR(::sdrt::cuda::cuda_status(cudaGetLastError(), what))
