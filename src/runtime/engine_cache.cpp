#include "runtime/engine_cache.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <vector>

namespace sdrt {
namespace fs = std::filesystem;

PlanTarget backend_target(const Backend& be) {
  PlanTarget t;
  t.device = be.device_name();
  std::tie(t.cc_major, t.cc_minor) = be.compute_capability();
  t.libraries = be.libraries();
  return t;
}

std::string engine_cache_path(const std::string& dir, const Backend& be, const std::string& model_id, const std::string& key) {
  const PlanTarget t = backend_target(be);
  const std::string id = model_id + "\n" + t.device + "\n" + std::to_string(t.cc_major) + "." + std::to_string(t.cc_minor) + "\n" + t.libraries + "\n" +
                         be.precision() + "\n" + (be.variant().empty() ? "" : be.variant() + "\n") + key + "\n" SDRT_VERSION "\n" + std::to_string(kPlanFormat);
  std::string name = key;
  std::replace(name.begin(), name.end(), '/', '_');
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)plan_checksum(id.data(), id.size()));
  return (fs::path(dir) / (name + "-" + be.precision() + "-" + hex + ".plan")).string();
}

std::string utc_now() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string model_identity(const std::string& spec) {
  std::error_code ec;
  if (!fs::exists(spec, ec)) return spec;
  const fs::path root = fs::absolute(spec, ec).lexically_normal();
  std::vector<fs::path> files;
  if (fs::is_directory(root, ec)) {
    for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const auto ext = it->path().extension().string();
      if (it->is_regular_file(ec) && (ext == ".safetensors" || ext == ".json" || ext == ".ckpt" || ext == ".bin")) files.push_back(it->path());
    }
  } else {
    files.push_back(root);
  }
  std::sort(files.begin(), files.end());
  std::string id = root.string();
  for (const auto& f : files) {
    const auto size = fs::file_size(f, ec);
    const auto mtime = fs::last_write_time(f, ec).time_since_epoch().count();
    id += "\n" + f.lexically_relative(root).string() + " " + std::to_string(size) + " " + std::to_string(mtime);
  }
  return id;
}

}  // namespace sdrt
