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

// A tensor map of halves at base with `rank` dimensions (dims innermost first, the first contiguous; strides:
// the bytes between steps of dims 1 and up), read in boxes of `box` in the 128-byte swizzle (box[0] at most 64
// halves), zeros outside the tensor. False where the driver has no encoder or rejects the layout.
bool half_tensor_map(CUtensorMap* map, const void* base, int rank, const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box);
// A [rows, K] row-major half matrix in boxes of 64 columns (128 bytes, the swizzle's span) x box_rows.
inline bool half_matrix_map(CUtensorMap* map, const void* base, int64_t rows, int64_t K, int box_rows) {
  const cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)K * 2};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
  return half_tensor_map(map, base, 2, dims, strides, box);
}

// Whether the current device has compute capability 9.0 and setup() - run once per device, e.g. to raise the
// caller's kernels' shared-memory limits - returned true. Each caller keeps its own HopperOnce.
struct HopperOnce {
  std::array<std::once_flag, 64> once;
  std::array<bool, 64> ok{};
};
bool hopper_once(HopperOnce& h, bool (*setup)());

}  // namespace sdrt::cuda
