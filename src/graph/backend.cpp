#include "graph/backend.h"

namespace sdrt {

Result<std::unique_ptr<Backend>> make_backend(const std::string& name) {
  if (name == "cpu") return make_cpu_backend();
  if (name == "cuda") {
    std::string why;
    auto b = make_cuda_backend({}, &why);
    if (!b) return unsupported("the cuda backend is not available: " + why);
    return b;
  }
  return invalid_argument("unknown backend '" + name + "' (cpu or cuda)");
}

}  // namespace sdrt
