#include "backends/cuda/device_info.h"

namespace sdrt {

bool cuda_built() { return false; }
std::string cuda_driver_version() { return "n/a"; }

std::vector<GpuInfo> list_gpus(std::string* why_none) {
  if (why_none) *why_none = "sdrt was built without CUDA";
  return {};
}

}  // namespace sdrt
