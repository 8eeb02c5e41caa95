// The engine cache: engines built on first use are written as one-graph plans under a folder and
// reused by later runs. A file is named by its graph key and a hash of everything compiled code
// depends on (model identity, GPU, compute capability, library versions, precision, engine version and
// plan format), so that a change of any of them builds afresh instead of running a stale engine.
#pragma once
#include <string>

#include "graph/backend.h"
#include "runtime/plan.h"

namespace sdrt {

PlanTarget backend_target(const Backend& be);
std::string engine_cache_path(const std::string& dir, const Backend& be, const std::string& model_id, const std::string& key);
std::string utc_now();  // "2026-11-24T10:00:00Z"

// The identity of a model's weights for cache keys: for files, each weight file's path, size and
// modification time (cheap, no hashing of gigabytes); random:* specs are their own identity.
std::string model_identity(const std::string& spec);

}  // namespace sdrt
