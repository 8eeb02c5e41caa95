#include <cuda_runtime.h>

#include "backends/cuda/device_info.h"

namespace sdrt {

bool cuda_built() { return true; }

std::string cuda_driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess || v == 0) return "n/a";
  return "CUDA driver " + std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::vector<GpuInfo> list_gpus(std::string* why_none) {
  std::vector<GpuInfo> out;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why_none) *why_none = std::string("no usable NVIDIA driver or GPU (") + cudaGetErrorString(e) + ")";
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back({i, p.name, p.major, p.minor, p.totalGlobalMem});
  }
  if (out.empty() && why_none) *why_none = "no CUDA device";
  return out;
}

}  // namespace sdrt
