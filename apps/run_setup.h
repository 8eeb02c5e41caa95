// What `generate` and `serve` run: a plan (--plan) fixes the backend (cuda), the precision and, unless
// given, the model; the model is resolved with the plan and the engine cache in its pipeline options.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "pipeline/resolve.h"
#include "runtime/plan.h"

namespace sdrt::app {

struct RunChoice {
  std::shared_ptr<const Plan> plan;
  std::string backend, precision, model;  // model: the spec to resolve (kDefaultModel when none was given)
};

Result<RunChoice> choose_run(const std::string& model, const std::string& backend, const std::string& precision, const std::string& plan_path);
Result<ResolvedModel> resolve_for_run(const RunChoice& c, const std::string& tokenizer_dir, bool engine_cache);

// --devices: "" (one engine on the default device), "all" (every GPU) or "0,1,..." (CUDA device indices,
// each once). Several devices need the cuda backend; backend is the one asked for ("auto" means cuda then).
Result<std::vector<int>> parse_devices(const std::string& spec, const std::string& backend);

}  // namespace sdrt::app
