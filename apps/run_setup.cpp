#include "run_setup.h"

#include <filesystem>

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

}  // namespace sdrt::app
