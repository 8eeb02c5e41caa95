// The sdrt binary: `info` on good models, and a one-line error with exit code 1 (never a crash) on bad ones.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "test_util.h"

using namespace sdrt::test;
namespace fs = std::filesystem;

namespace {

struct CliRun {
  int code;  // exit status; 128+signal when killed
  std::string out;
};

CliRun sdrt_cli(const std::string& args) {
  std::string cmd = std::string(SDRT_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

void expect_clean_error(const CliRun& r, const std::string& needle) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "not one line: " << r.out;
  EXPECT_NE(r.out.find("error: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << r.out;
}

}  // namespace

TEST(Cli, InfoDiffusersAndSingleFile) {
  SDRT_REQUIRE_CONFORMANCE();
  for (const char* sub : {"diffusers", "tiny-sd15.safetensors"}) {
    CliRun r = sdrt_cli("info " + (tiny_dir() / sub).string());
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("UNet2DConditionModel blocks [32a,64a,64a,64]"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("groups 16"), std::string::npos) << r.out;
  }
  CliRun r = sdrt_cli("info " + (tiny_dir() / "tiny-sd15.safetensors").string());
  EXPECT_NE(r.out.find("single-file"), std::string::npos);
  EXPECT_NE(r.out.find("6 entries no network reads"), std::string::npos) << r.out;
}

TEST(Cli, InfoRandomSd15) {
  CliRun r = sdrt_cli("info random:sd15");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("859,520,964 parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("123,060,480 parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Stable Diffusion 1.x"), std::string::npos) << r.out;
}

TEST(Cli, BadInputsGiveOneLineErrors) {
  fs::path d = fs::temp_directory_path() / "sdrt_cli";
  fs::remove_all(d);
  fs::create_directories(d);
  expect_clean_error(sdrt_cli("info " + (d / "nope.safetensors").string()), "no such file");
  fs::create_directories(d / "emptydir");
  expect_clean_error(sdrt_cli("info " + (d / "emptydir").string()), "no model_index.json");
  std::ofstream(d / "tiny.safetensors") << "abc";
  expect_clean_error(sdrt_cli("info " + (d / "tiny.safetensors").string()), "truncated");
  {
    std::ofstream f(d / "len.safetensors", std::ios::binary);
    uint64_t n = 1 << 20;
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << "{}";
  }
  expect_clean_error(sdrt_cli("info " + (d / "len.safetensors").string()), "exceeds the file size");
  {
    std::ofstream f(d / "dtype.safetensors", std::ios::binary);
    std::string h = R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})";
    uint64_t n = h.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << h << 'x';
  }
  expect_clean_error(sdrt_cli("info " + (d / "dtype.safetensors").string()), "unknown dtype 'Q4'");
  expect_clean_error(sdrt_cli("info " + (d / "model.ckpt").string()), "no such file");
  std::ofstream(d / "model.ckpt") << "pickle";
  expect_clean_error(sdrt_cli("info " + (d / "model.ckpt").string()), "only .safetensors");
  expect_clean_error(sdrt_cli("info random:sdxl"), "unknown synthetic model");
}

TEST(Cli, SingleFileWithoutUnetIsRejected) {
  SDRT_REQUIRE_CONFORMANCE();
  // A VAE-only file given as a checkpoint.
  CliRun r = sdrt_cli("info " + (tiny_dir() / "vae_legacy_attention_names.safetensors").string());
  expect_clean_error(r, "no UNet");
}
