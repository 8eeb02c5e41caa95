// The sdrt binary: `info` on good models, and a one-line error with exit code 1 (never a crash) on bad ones.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "io/png.h"
#include "test_util.h"

using namespace sdrt::test;
namespace fs = std::filesystem;

namespace {

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

// --devices: one engine per GPU; on the CPU backend it is refused, and malformed lists are named.
TEST(Cli, DevicesAreCheckedBeforeAnythingRuns) {
  SDRT_REQUIRE_CONFORMANCE();
  const std::string m = (tiny_dir() / "diffusers").string();
  expect_clean_error(sdrt_cli("serve -m " + m + " --backend cpu --devices 0 --port 0"), "--devices applies to the cuda backend");
  expect_clean_error(sdrt_cli("bench -m " + m + " --backend cpu --devices all --quick"), "--devices applies to the cuda backend");
  CliRun r = sdrt_cli("serve -m " + m + " --backend cuda --devices 0,x --port 0");  // without a GPU: no CUDA device
  expect_clean_error(r, "--devices");
  expect_clean_error(sdrt_cli("serve -m " + m + " --drain-timeout -1 --port 0"), "--drain-timeout must be between 0 and 3600");
}

// `sdrt pull`: a hub model into $SDRT_HOME (here a local folder: checked and loaded), errors as one line.
TEST(Cli, PullChecksAModelAndReportsErrors) {
  SDRT_REQUIRE_CONFORMANCE();
  CliRun ok = sdrt_cli("pull " + (tiny_dir() / "diffusers").string());
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_NE(ok.out.find("ready (diffusers"), std::string::npos) << ok.out;
  expect_clean_error(sdrt_cli("pull " + (fs::temp_directory_path() / "sdrt_no_model").string()), "no such file");
}

namespace {
fs::path cli_dir() {
  fs::path d = fs::temp_directory_path() / "sdrt_cli_gen";
  return d;
}
std::string gen_args(const std::string& model, const std::string& out) {
  return "generate --model " + model + " --prompt 'a photo of an astronaut riding a horse on mars' --seed 42 --sampler euler_a --steps 6 " +
         "-W 128 -H 128 -o " + out;
}
}  // namespace

TEST(Cli, GenerateDiffusersAndSingleFileGiveTheSameImage) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = cli_dir();
  fs::remove_all(d);
  fs::create_directories(d);
  setenv("SDRT_HOME", (d / "home").c_str(), 1);
  CliRun a = sdrt_cli(gen_args((tiny_dir() / "diffusers").string(), (d / "a").string()));
  ASSERT_EQ(a.code, 0) << a.out;
  CliRun b = sdrt_cli(gen_args((tiny_dir() / "tiny-sd15.safetensors").string(), (d / "b").string()));
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(a.out.find("unet"), std::string::npos) << a.out;  // the stage summary
  const std::string pa = png_pixels(d / "a" / "00000-42.png"), pb = png_pixels(d / "b" / "00000-42.png");
  ASSERT_EQ(pa.size(), 128u * 128 * 3);
  EXPECT_TRUE(pa == pb) << "pixels differ between the diffusers folder and the single-file checkpoint";
  // the parameters read back
  CliRun info = sdrt_cli("info " + (d / "a" / "00000-42.png").string());
  EXPECT_EQ(info.code, 0);
  EXPECT_NE(info.out.find("a photo of an astronaut riding a horse on mars\nSteps: 6, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 128x128, Model hash: "),
            std::string::npos)
      << info.out;
  // a second run numbers its file after the first
  CliRun again = sdrt_cli(gen_args((tiny_dir() / "diffusers").string(), (d / "a").string()));
  EXPECT_EQ(again.code, 0);
  EXPECT_TRUE(fs::exists(d / "a" / "00001-42.png"));
  EXPECT_EQ(png_pixels(d / "a" / "00001-42.png"), pa);  // same seed, same image
}

TEST(Cli, GenerateRejectsBadRequests) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = cli_dir() / "bad";
  fs::create_directories(d);
  setenv("SDRT_HOME", (cli_dir() / "home").c_str(), 1);
  const std::string base = "generate --model " + (tiny_dir() / "diffusers").string() + " -o " + d.string() + " -H 128 ";
  const std::string m = base + "-W 128 ";
  expect_clean_error(sdrt_cli(m + "-p x --steps 0"), "steps must be between 1 and 1000");
  expect_clean_error(sdrt_cli(m + "-p x --steps 1001"), "steps must be between 1 and 1000");
  expect_clean_error(sdrt_cli(base + "-p x -W 100"), "width must be a multiple of 8");
  expect_clean_error(sdrt_cli(base + "-p x -W 4104"), "width must be a multiple of 8 between 64 and 4096");
  expect_clean_error(sdrt_cli(m + "-p x --sampler nonsense"), "unknown sampler 'nonsense'");
  expect_clean_error(sdrt_cli(m + "-p x --sampler euler --scheduler karras"), "schedule type 'karras' is not available with sampler 'euler'");
  expect_clean_error(sdrt_cli(m + "-p x --rng tpu"), "rng must be cpu or cuda");
  CliRun g = sdrt_cli(m + "-p x --cfg-scale abc");  // CLI11's conversion error
  EXPECT_NE(g.code, 0);
  EXPECT_LT(g.code, 128) << "crashed: " << g.out;
  EXPECT_NE(g.out.find("--cfg-scale"), std::string::npos) << g.out;
  {
    std::ofstream f(d / "huge.txt");
    f << std::string(1 << 20, 'a');
  }
  expect_clean_error(sdrt_cli(m + "--prompt-file " + (d / "huge.txt").string()), "prompt is longer than 16384 bytes");
  std::ofstream(d / "not.png") << "this is not a png";
  expect_clean_error(sdrt_cli(m + "-p x --init-image " + (d / "not.png").string()), "not a PNG");
  // sdrt build checks its arguments before it looks for a GPU
  expect_clean_error(sdrt_cli("build -o " + (d / "x.plan").string() + " --guidance cfg,sometimes"), "--guidance takes cfg and/or none, got 'sometimes'");
  expect_clean_error(sdrt_cli("build -o " + (d / "x.plan").string() + " --batch 0"), "batch sizes must be between 1 and");
  EXPECT_TRUE(fs::is_empty(d / "..") || true);
}

TEST(Cli, SingleFileWithoutUnetIsRejected) {
  SDRT_REQUIRE_CONFORMANCE();
  // A VAE-only file given as a checkpoint.
  CliRun r = sdrt_cli("info " + (tiny_dir() / "vae_legacy_attention_names.safetensors").string());
  expect_clean_error(r, "no UNet");
}
