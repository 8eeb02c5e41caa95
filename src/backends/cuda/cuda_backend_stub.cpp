// Builds without CUDA: the CUDA backend is absent.
#include "graph/backend.h"

namespace sdrt {

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions&, std::string* why) {
  if (why) *why = "sdrt was built without CUDA";
  return nullptr;
}

int64_t cuda_group_norm_onepass_launches() { return 0; }

}  // namespace sdrt
