// Plan files: what `sdrt build` writes and the runtime loads. A plan holds one or more graphs after the
// build passes (keyed as the pipeline names its executables, e.g. "unet/2x64x64/77"), the tactics the
// backend chose for them on one GPU, and their weights in the precision the engine stores (fp16 plans
// hold half weights), shared by name between graphs.
//
// Layout: "SDRTPLAN" | u32 format | u32 0 | u64 header bytes | u64 data bytes | header JSON | zero
// padding to 64 bytes | weight data (each weight 64-byte aligned) | u64 checksum of everything before.
// Reading checks the magic, format, engine version, size (truncation), checksum (corruption), then
// every graph's shapes; the target check refuses a plan made for another GPU.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "sdrt/status.h"

namespace sdrt {

constexpr uint32_t kPlanFormat = 1;

struct PlanTarget {
  std::string device;           // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  std::string libraries;        // "cuDNN 9.19.0, cuBLASLt 130000": informative, part of cache keys
};

struct PlanEntry {
  std::string key;
  std::shared_ptr<Graph> graph;
};

struct Plan {
  std::string engine_version = SDRT_VERSION;
  PlanTarget target;
  std::string precision;         // "fp16" | "fp32"
  std::string model_spec, model_id;  // what it was built from, and that model's identity (cache key)
  std::string created;           // UTC time
  std::string shapes;            // what was asked for, e.g. "batch 1,2; 512x512" (informative)
  std::map<std::string, std::string> tactics;  // backend tactic choices by op-instance key
  std::vector<PlanEntry> entries;

  const PlanEntry* find(const std::string& key) const;
  std::vector<std::string> keys() const;
};

// Writes atomically (a temporary file renamed into place). fp16 plans store F32 weights as half
// (round to nearest even, as the CUDA backend rounds them).
Status write_plan(const Plan& plan, const std::string& path);
// Maps the file; weights are views into the mapping, which the graphs keep alive.
Result<Plan> read_plan(const std::string& path);
// A plan runs only on the GPU (name and compute capability) it was built for.
Status check_plan_target(const Plan& plan, const PlanTarget& here);

// The 64-bit checksum plans use (own word-at-a-time mix; not cryptographic).
uint64_t plan_checksum(const void* data, size_t bytes, uint64_t seed = 0);

}  // namespace sdrt
