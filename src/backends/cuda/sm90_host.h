// Host-side helpers of the Hopper (sm_90a) kernels: the driver's tensor-map encoder for the TMA-fed ones
// (geglu_gemm_sm90.cu, conv_wx_sm90.cu), reached through the runtime so that nothing links libcuda, and a
// once-per-device check that the current GPU runs sm_90a code (conv_splitk_sm90.cu, conv_wx_sm90.cu).
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>

#include <array>
#include <mutex>

namespace sdrt::cuda {

// cuTensorMapEncodeTiled, or null where the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder();

// Whether the current device has compute capability 9.0 and setup() - run once per device, e.g. to raise the
// caller's kernels' shared-memory limits - returned true. Each caller keeps its own HopperOnce.
struct HopperOnce {
  std::array<std::once_flag, 64> once;
  std::array<bool, 64> ok{};
};
bool hopper_once(HopperOnce& h, bool (*setup)());

}  // namespace sdrt::cuda
