// Helpers shared by the tests: conformance data location and error measures.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "core/tensor.h"
#include "io/png.h"

namespace sdrt::test {

// The build's conformance folder, or $SDRT_CONFORMANCE_DIR (a copy carried to another machine).
inline std::filesystem::path conformance_dir() {
  const char* env = std::getenv("SDRT_CONFORMANCE_DIR");
  return env && *env ? std::filesystem::path(env) : std::filesystem::path(SDRT_CONFORMANCE_DIR);
}
inline std::filesystem::path tiny_dir() { return conformance_dir() / "tiny-sd15"; }
inline bool have_conformance() { return std::filesystem::exists(tiny_dir() / "reference.safetensors"); }

#define SDRT_REQUIRE_CONFORMANCE()                                                                             \
  if (!::sdrt::test::have_conformance())                                                                       \
  GTEST_SKIP() << "conformance data not found at " << ::sdrt::test::conformance_dir()                           \
               << " (set -DSDRT_CONFORMANCE_DIR)"

// max |a - b| / max |b|, NaN anywhere gives infinity.
inline double rel_err(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(shape_str(a.shape()), shape_str(b.shape()));
  if (a.shape() != b.shape()) return INFINITY;
  Tensor x = a.to_f32(), y = b.to_f32();
  double md = 0, mr = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (!std::isfinite(x.f32()[i])) return INFINITY;
    md = std::max(md, (double)std::fabs(x.f32()[i] - y.f32()[i]));
    mr = std::max(mr, (double)std::fabs(y.f32()[i]));
  }
  return md / std::max(mr, 1e-30);
}

// Normal(0, scale) values of a shape from a seeded generator.
inline Tensor randn(const Shape& s, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = nd(rng);
  return t;
}

inline Tensor to_i32(const Tensor& t) {
  Tensor out = Tensor::empty(DType::I32, t.shape());
  auto* o = static_cast<int32_t*>(out.mutable_data());
  if (t.dtype() == DType::I64) {
    auto* p = static_cast<const int64_t*>(t.data());
    for (int64_t i = 0; i < t.numel(); ++i) o[i] = (int32_t)p[i];
  } else {
    Tensor f = t.to_f32();
    for (int64_t i = 0; i < t.numel(); ++i) o[i] = (int32_t)f.f32()[i];
  }
  return out;
}

// A file path in a per-suite scratch folder under the temporary directory (the folder is created).
inline std::filesystem::path scratch_file(const std::string& folder, const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / folder;
  std::filesystem::create_directories(d);
  return d / name;
}

// The sdrt binary ($SDRT_BIN where set) run with arguments (stderr merged into the output).
struct CliRun {
  int code;  // exit status; 128+signal when killed
  std::string out;
};
inline CliRun sdrt_cli(const std::string& args) {
  const char* bin = std::getenv("SDRT_BIN");  // the build's binary, or a copy carried to another machine
  std::string cmd = std::string(bin && *bin ? bin : SDRT_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

// A PNG's RGB bytes (empty when it cannot be read).
inline std::string png_pixels(const std::filesystem::path& p) {
  auto img = sdrt::read_png(p.string());
  EXPECT_TRUE(img.is_ok()) << p;
  return img ? std::string(img->rgb.begin(), img->rgb.end()) : std::string();
}

}  // namespace sdrt::test
