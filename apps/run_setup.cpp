#include "run_setup.h"

#include <algorithm>
#include <filesystem>

#include "backends/cuda/device_info.h"

namespace sdrt::app {

Result<RunChoice> choose_run(const std::string& model, const std::string& backend, const std::string& precision, const std::string& plan_path) {
  RunChoice c{nullptr, backend, precision, model};
  if (!plan_path.empty()) {  // the plan decides the precision and, unless given, the model
    SDRT_ASSIGN_OR_RETURN(Plan p, read_plan(plan_path));
    c.plan = std::make_shared<const Plan>(std::move(p));
    if (c.backend == "cpu") return invalid_argument("--plan runs on the cuda backend, not cpu");
    c.backend = "cuda";
    if (c.precision != "auto" && c.precision != c.plan->precision) return invalid_argument("the plan is " + c.plan->precision + ", not " + c.precision);
    c.precision = c.plan->precision;
    if (c.model.empty()) c.model = c.plan->model_spec;
  }
  if (c.model.empty()) c.model = kDefaultModel;
  return c;
}

Result<ResolvedModel> resolve_for_run(const RunChoice& c, const std::string& tokenizer_dir, bool engine_cache) {
  ResolveOptions ro;
  ro.tokenizer_dir = tokenizer_dir;
  ro.download.progress = true;
  SDRT_ASSIGN_OR_RETURN(ResolvedModel rm, resolve_model(c.model, ro));
  rm.options.plan = c.plan;
  if (engine_cache) rm.options.engine_cache_dir = (std::filesystem::path(sdrt_home()) / "engines").string();
  return rm;
}

Result<std::vector<int>> parse_devices(const std::string& spec, const std::string& backend) {
  if (spec.empty()) return std::vector<int>{0};
  if (backend == "cpu") return invalid_argument("--devices applies to the cuda backend, not cpu");
  std::string why;
  const auto gpus = list_gpus(&why);
  if (gpus.empty()) return unsupported("--devices " + spec + ": no CUDA device (" + why + ")");
  std::vector<int> out;
  if (spec == "all") {
    for (const auto& g : gpus) out.push_back(g.index);
    return out;
  }
  size_t at = 0;
  while (at <= spec.size()) {
    const size_t comma = std::min(spec.find(',', at), spec.size());
    const std::string item = spec.substr(at, comma - at);
    if (item.empty() || item.size() > 4 || item.find_first_not_of("0123456789") != std::string::npos)
      return invalid_argument("--devices takes all or device indices like 0,1; got '" + spec + "'");
    const int d = std::stoi(item);
    if (d >= (int)gpus.size())
      return invalid_argument("--devices: there is no CUDA device " + item + " (" + std::to_string(gpus.size()) + " found)");
    if (std::find(out.begin(), out.end(), d) != out.end()) return invalid_argument("--devices names device " + item + " twice");
    out.push_back(d);
    at = comma + 1;
  }
  return out;
}

}  // namespace sdrt::app
