// Subcommands of the sdrt tool; each returns the process exit code and prints errors as one line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sdrt::app {

struct GenerateArgs {
  std::string model, prompt, negative_prompt, sampler = "euler_a", schedule_type, rng = "cpu", init_image, out_dir = "outputs";
  std::string tokenizer_dir, backend = "auto", prompt_file, precision = "auto", plan;
  bool engine_cache = true, decode_overlap = true;
  int steps = 20, width = 512, height = 512, batch_size = 1, batch_count = 1, clip_skip = 1;
  double cfg_scale = 7.0, strength = 0.75;
  int64_t seed = -1;
};

struct BenchArgs {
  std::string model = "random:sd15", backend = "auto", sampler = "pndm", out_dir = "bench-out", tokenizer_dir;
  std::string prompt = "a photo of an astronaut riding a horse on mars", command_line, precision = "auto";
  std::string devices;  // --devices: one engine per GPU, generating at once
  std::vector<int> batches{50};
  std::vector<std::string> opts{"baseline", "optimized"};
  int repeats = 100, warmup = 2, steps = 50, width = 512, height = 512;
  bool quick = false, size_given = false, engine_cache = true;  // --quick shrinks the image on the CPU unless a size was given
};

struct BuildArgs {
  std::string model = "random:sd15", out, precision = "fp16", timing_cache;
  std::vector<int> batches{1}, heights{512}, widths{512}, clip_skips{1};
  std::vector<std::string> guidance{"cfg"};  // UNets: "cfg" (both guidance halves), "none" (guidance scale <= 1)
};

struct ServeArgs {
  std::string model, host = "127.0.0.1", api_auth, backend = "auto", precision = "auto", plan, tokenizer_dir, output_dir;
  std::string devices;  // --devices: "" one engine, "all", "0,1"
  int port = 7860, max_queue = 32, max_batch = 8;
  double drain_timeout = 25;  // seconds SIGTERM waits for accepted jobs (below Kubernetes' 30 s grace period)
  bool engine_cache = true, decode_overlap = true;
};

int cmd_info(const std::string& model);
int cmd_pull(const std::string& model, const std::string& tokenizer_dir);
int cmd_serve(const ServeArgs& a);
int cmd_build(const BuildArgs& a);
int cmd_info_plan(const std::string& path);
int cmd_bench(const BenchArgs& a);
int cmd_info_png(const std::string& path);
int cmd_generate(const GenerateArgs& a);

}  // namespace sdrt::app
