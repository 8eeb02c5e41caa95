#include "graph/backend.h"

namespace sdrt {

Result<std::unique_ptr<Backend>> make_backend(std::string name, std::string precision, int device) {
  if (name == "auto") {  // the GPU where one is usable, else the CPU
    std::string why;
    CudaOptions probe;
    probe.device = device;
    name = make_cuda_backend(probe, &why) ? "cuda" : "cpu";
  }
  if (precision == "auto") precision = name == "cuda" ? "fp16" : "fp32";
  if (precision != "fp32" && precision != "fp16") return invalid_argument("unknown precision '" + precision + "' (fp32 or fp16)");
  if (name == "cpu") {
    if (precision != "fp32") return invalid_argument("the cpu backend runs fp32 only");
    return make_cpu_backend();
  }
  if (name == "cuda") {
    std::string why;
    CudaOptions o;
    o.precision = precision;
    o.device = device;
    auto b = make_cuda_backend(o, &why);
    if (!b) return unsupported("the cuda backend is not available: " + why);
    return b;
  }
  return invalid_argument("unknown backend '" + name + "' (auto, cpu or cuda)");
}

}  // namespace sdrt
