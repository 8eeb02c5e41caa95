// `sdrt generate`: prompt in, PNGs out (with the WebUI's "parameters" text), a progress bar on a
// terminal and a summary of the time each stage took.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include "commands.h"
#include "io/png.h"
#include "pipeline/resolve.h"
#include "run_setup.h"

namespace sdrt::app {
namespace fs = std::filesystem;

namespace {

int fail(const Status& s) {
  std::fprintf(stderr, "sdrt: error: %s\n", s.message().c_str());
  return 1;
}

// Next free index in the WebUI's naming: 00000-<seed>.png, 00001-<seed>.png, ...
int next_index(const fs::path& dir) {
  int next = 0;
  std::error_code ec;
  static const std::regex re(R"(^(\d{5,})-.*\.png$)");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string n = e.path().filename().string();
    if (std::regex_match(n, m, re)) next = std::max(next, std::stoi(m[1]) + 1);
  }
  return next;
}

}  // namespace

int cmd_generate(const GenerateArgs& a) {
  GenerateRequest r;
  r.prompt = a.prompt;
  if (!a.prompt_file.empty()) {
    std::error_code ec;
    const auto size = fs::file_size(a.prompt_file, ec);
    if (ec) return fail(io_error(a.prompt_file + ": " + ec.message()));
    if (size > kMaxPromptBytes) return fail(invalid_argument("prompt is longer than " + std::to_string(kMaxPromptBytes) + " bytes"));
    std::ifstream f(a.prompt_file);
    r.prompt.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    while (!r.prompt.empty() && (r.prompt.back() == '\n' || r.prompt.back() == '\r')) r.prompt.pop_back();
  }
  r.negative_prompt = a.negative_prompt;
  r.steps = a.steps;
  r.cfg_scale = a.cfg_scale;
  r.width = a.width;
  r.height = a.height;
  r.seed = a.seed;
  r.sampler = a.sampler;
  r.schedule_type = a.schedule_type;
  r.batch_size = a.batch_size;
  r.batch_count = a.batch_count;
  r.clip_skip = a.clip_skip;
  r.rng = a.rng;
  r.strength = a.strength;
  auto run = choose_run(a.model, a.backend, a.precision, a.plan);
  if (!run) return fail(run.status());
  auto backend = make_backend(run->backend, run->precision);
  if (!backend) return fail(backend.status());
  if (!a.init_image.empty()) {
    auto img = read_png(a.init_image);
    if (!img) return fail(img.status().with_context("init image"));
    r.init_image = std::move(img).value();
  }
  auto t0 = std::chrono::steady_clock::now();
  auto rm = resolve_for_run(*run, a.tokenizer_dir, a.engine_cache);
  if (!rm) return fail(rm.status());
  rm->options.overlap_decode = a.decode_overlap;
  auto pipe = Pipeline::create(std::move(rm->model), rm->options, std::move(backend).value());
  if (!pipe) return fail(pipe.status());
  if (Status v = (*pipe)->validate(r); !v) return fail(v);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const bool tty = isatty(2);
  auto start = std::chrono::steady_clock::now();
  auto progress = [&](int done, int total) {
    if (!tty) return true;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = done / std::max(secs, 1e-9);
    const int width = 30, fill = width * done / total;
    std::fprintf(stderr, "\r[%.*s%*s] step %d/%d  %.2f it/s  ETA %.0fs   ", fill, "##############################", width - fill, "", done,
                 total, rate, (total - done) / std::max(rate, 1e-9));
    if (done == total) std::fprintf(stderr, "\n");
    return true;
  };
  // Each batch's PNGs written as soon as it is decoded (on the decoding thread, beside the next batch's
  // sampling when there are several): files appear as batches finish, and an interrupted run keeps them.
  std::error_code ec;
  fs::create_directories(a.out_dir, ec);
  if (ec) return fail(io_error(a.out_dir + ": " + ec.message()));
  int idx = next_index(a.out_dir);
  double png_s = 0;
  auto write_batch = [&](const std::vector<Image>& images, const std::vector<int64_t>& seeds, const std::vector<std::string>& infos) -> Status {
    auto tp = std::chrono::steady_clock::now();
    auto pngs = encode_pngs(images, infos);  // the batch's images in parallel
    if (tty) std::fprintf(stderr, "\r%*s\r", 90, "");  // the progress line, redrawn at the next step
    for (size_t i = 0; i < images.size(); ++i) {
      const fs::path p = fs::path(a.out_dir) / (std::to_string(100000 + idx++).substr(1) + "-" + std::to_string(seeds[i]) + ".png");
      if (!pngs[i]) return pngs[i].status();
      SDRT_RETURN_IF_ERROR(write_file(p.string(), *pngs[i]));
      std::printf("%s\n", p.string().c_str());
    }
    std::fflush(stdout);
    png_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - tp).count();
    return Status::ok();
  };
  auto res = (*pipe)->generate(r, progress, write_batch);
  if (!res) return fail(res.status());
  const auto& t = res->times;
  std::fprintf(stderr,
               "seed %lld; load %.2fs, text encoder %.2fs, unet %.2fs (%d evals, %.2f it/s), scheduler %.3fs, vae %.2fs, png %.3fs\n",
               (long long)res->seeds[0], load_s, t.text_s, t.unet_s, t.unet_evals, t.unet_evals / std::max(t.unet_s, 1e-9), t.scheduler_s,
               t.vae_s, png_s);
  return 0;
}

int cmd_info_png(const std::string& path) {
  std::map<std::string, std::string> text;
  auto img = read_png(path, &text);
  if (!img) return fail(img.status());
  std::printf("image:        %s, %dx%d\n", path.c_str(), img->width, img->height);
  auto it = text.find("parameters");
  if (it == text.end()) {
    std::printf("parameters:   none\n");
    return 0;
  }
  std::printf("%s\n", it->second.c_str());
  return 0;
}

}  // namespace sdrt::app
