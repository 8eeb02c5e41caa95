// The Hopper kernels' host-side helpers (sm90_host.h).
#include "backends/cuda/sm90_host.h"

#include <cuda_runtime.h>

namespace sdrt::cuda {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess || q != cudaDriverEntryPointSuccess)
      return cudaGetLastError(), (PFN_cuTensorMapEncodeTiled_v12000) nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

bool hopper_once(HopperOnce& h, bool (*setup)()) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= (int)h.once.size()) return cudaGetLastError(), false;
  std::call_once(h.once[dev], [&] {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      return (void)cudaGetLastError();
    if (major != 9 || minor != 0) return;
    h.ok[dev] = setup();
    if (!h.ok[dev]) cudaGetLastError();
  });
  return h.ok[dev];
}

}  // namespace sdrt::cuda
