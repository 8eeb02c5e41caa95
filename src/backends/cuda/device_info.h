// What GPUs this process can see; empty where sdrt was built without CUDA or no driver is present.
#pragma once
#include <string>
#include <vector>

namespace sdrt {

struct GpuInfo {
  int index;
  std::string name;
  int cc_major, cc_minor;
  size_t total_bytes;
};

bool cuda_built();
std::vector<GpuInfo> list_gpus(std::string* why_none = nullptr);
std::string cuda_driver_version();  // "13.0" style, or "n/a"

}  // namespace sdrt
