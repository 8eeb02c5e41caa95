// The driver's tensor-map encoder for the TMA-fed Hopper kernels (geglu_gemm_sm90.cu, conv_wx_sm90.cu), reached
// through the runtime so that nothing links libcuda.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>

namespace sdrt::cuda {

// cuTensorMapEncodeTiled, or null where the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder();

}  // namespace sdrt::cuda
