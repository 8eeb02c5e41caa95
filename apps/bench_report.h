// Rows of `sdrt bench` and their outputs: CSV, JSON and an SVG chart of latency and memory by batch
// size, baseline vs optimized.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "sdrt/status.h"

namespace sdrt::app {

struct Stat {
  double mean = 0, p50 = 0, p90 = 0;
};
Stat stats(std::vector<double> v);

struct BenchRow {
  std::string opt;
  int batch = 0;
  std::string status = "ok";  // ok, oom, error: ...
  Stat whole, text, unet_step, unet, scheduler, vae, png;
  double images_per_s = 0, steps_per_s = 0, unet_tflops = 0, peak_tflops = 0;
  int unet_evals = 0;
  double peak_host_gib = 0, peak_device_gib = -1, device_used_gib = -1;  // -1: not applicable
};

struct BenchMeta {
  std::map<std::string, std::string> fields;  // device, driver, versions, model, git revision, command...
};

Status write_csv(const std::string& path, const BenchMeta& meta, const std::vector<BenchRow>& rows);
Status write_json(const std::string& path, const BenchMeta& meta, const std::vector<BenchRow>& rows);
Status write_svg(const std::string& path, const BenchMeta& meta, const std::vector<BenchRow>& rows);

}  // namespace sdrt::app
