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

std::string tactics_summary(const std::map<std::string, std::string>& tactics) {
  std::map<std::string, int> kinds;
  std::map<std::string, std::map<std::string, int>> forms;
  for (const auto& [k, v] : tactics) {
    const std::string kind = k.substr(0, k.find('/'));
    ++kinds[kind];
    if (kind == "attn_form" || kind == "conv_form" || kind == "geglu_form" || kind == "batch_split" || kind == "gn_form") ++forms[kind][v];
  }
  std::string out;
  for (const auto& [kind, n] : kinds) {
    out += (out.empty() ? "" : "; ") + kind + " " + std::to_string(n);
    if (forms.count(kind)) {
      std::string f;
      for (const auto& [v, c] : forms[kind]) f += (f.empty() ? "" : ", ") + v + " " + std::to_string(c);
      out += " (" + f + ")";
    }
  }
  return out.empty() ? "none" : out;
}

}  // namespace sdrt
