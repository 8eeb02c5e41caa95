// `sdrt bench`: the CSV / JSON / SVG it writes, and that its times add up (the stages fit in the whole).
#include <sys/wait.h>

#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

using namespace sdrt::test;
namespace fs = std::filesystem;

namespace {
int run(const std::string& args, std::string* out) {
  FILE* p = popen((std::string(SDRT_BIN) + " " + args + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out->append(buf.data(), n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
std::vector<std::string> csv_fields(const std::string& line) {  // quoted fields may hold commas
  std::vector<std::string> f(1);
  bool q = false;
  for (char c : line) {
    if (c == '"') q = !q;
    else if (c == ',' && !q) f.emplace_back();
    else f.back() += c;
  }
  return f;
}
}  // namespace

TEST(Bench, QuickRunWritesConsistentFiles) {
  SDRT_REQUIRE_CONFORMANCE();
  const fs::path out = fs::temp_directory_path() / "sdrt_bench_test";
  fs::remove_all(out);
  std::string log;
  ASSERT_EQ(run("bench --model " + (tiny_dir() / "diffusers").string() + " --quick --batch 1,2 -o " + out.string(), &log), 0) << log;

  auto j = nlohmann::json::parse(std::ifstream(out / "bench.json"));
  for (const char* k :
       {"device", "driver", "backend", "sdrt_version", "git_revision", "model", "size", "steps", "sampler", "date", "command", "sdrt_env", "tactics"})
    EXPECT_TRUE(j["meta"].contains(k)) << k;
  ASSERT_EQ(j["rows"].size(), 4u);  // baseline and optimized x batch 1, 2
  for (const auto& r : j["rows"]) {
    ASSERT_EQ(r["status"], "ok") << r.dump();
    const double whole = r["whole_s"]["mean"];
    double stages = 0;
    for (const char* k : {"text_encoder_s", "unet_total_s", "scheduler_s", "vae_decode_s", "png_encode_s"}) {
      const double m = r[k]["mean"];
      EXPECT_GE(m, 0.0) << k;
      EXPECT_LE(r[k]["p50"].get<double>(), r[k]["p90"].get<double>() + 1e-12) << k;
      stages += m;
    }
    EXPECT_LE(stages, whole * 1.001 + 1e-4) << "stages exceed the whole: " << r.dump();
    EXPECT_GE(stages, whole * 0.5) << "stages miss most of the whole: " << r.dump();
    // per-step figures add up to the UNet total
    const double per_step = r["unet_step_s"]["mean"].get<double>() * r["unet_evals"].get<int>();
    EXPECT_NEAR(per_step, r["unet_total_s"]["mean"].get<double>(), 0.01 * per_step + 1e-4);
    EXPECT_EQ(r["unet_evals"], 3);  // PNDM: steps + 1 evaluations
    EXPECT_NEAR(r["images_per_s"].get<double>(), r["batch"].get<int>() / whole, 1e-6 * r["batch"].get<int>() / whole);
    EXPECT_GT(r["unet_tflops"].get<double>(), 0);
    EXPECT_GT(r["peak_host_gib"].get<double>(), 0);
    EXPECT_TRUE(r["peak_device_gib"].is_null());  // CPU backend
  }

  std::ifstream csv(out / "bench.csv");
  std::string header, line;
  std::getline(csv, header);
  const auto cols = csv_fields(header);
  EXPECT_EQ(cols[0], "opt");
  EXPECT_NE(std::find(cols.begin(), cols.end(), "whole_p90_s"), cols.end());
  EXPECT_NE(std::find(cols.begin(), cols.end(), "git_revision"), cols.end());
  int rows = 0;
  while (std::getline(csv, line)) {
    EXPECT_EQ(csv_fields(line).size(), cols.size()) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 4);

  std::stringstream svg;
  svg << std::ifstream(out / "bench.svg").rdbuf();
  EXPECT_TRUE(svg.str().starts_with("<svg")) << svg.str().substr(0, 80);
  EXPECT_NE(svg.str().find("batch size"), std::string::npos);
  EXPECT_NE(svg.str().find("<polyline"), std::string::npos);
  EXPECT_NE(svg.str().find("</svg>"), std::string::npos);
}

TEST(Bench, BadOptionsAreErrors) {
  std::string log;
  EXPECT_EQ(run("bench --model random:sd15 --opt fast", &log), 1) << log;
  EXPECT_NE(log.find("--opt takes baseline and/or optimized"), std::string::npos) << log;
  log.clear();
  EXPECT_EQ(run("bench --model random:sd15 --repeats 0", &log), 1) << log;
}
