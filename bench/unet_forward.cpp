// Times full UNet forwards (CPU backend by default; --backend cuda --precision fp16 for the GPU engine), or
// with --vae the VAE decoder's (latents of height/8 x width/8 to images); with --guided the UNet of a
// guidance batch whose halves share their prefix (build_guided_unet), as the pipeline runs it.
//   bench_unet_forward --model random:sd15 --batch 1 --height 512 --width 512 --repeats 1
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#if SDRT_HAVE_CUDA
#include <cuda_profiler_api.h>
#endif

#include "graph/backend.h"
#include "graph/passes.h"
#include "graph/prelude.h"
#include "models/model.h"

using namespace sdrt;
using clk = std::chrono::steady_clock;

namespace {

// `steps` timesteps from 999 down towards 0, each repeated for the timestep input's `rows`: a schedule to stage.
std::vector<float> schedule(int steps, int64_t rows) {
  std::vector<float> tv((size_t)(steps * rows));
  for (int j = 0; j < steps; ++j)
    for (int64_t i = 0; i < rows; ++i) tv[(size_t)(j * rows + i)] = 999.f - 999.f * j / steps;
  return tv;
}

// --steps: `steps` forwards back to back, then `steps` steps of the sampling loop's device work around them
// (as Pipeline::sample_on_device enqueues it for PNDM with guidance: the staged timestep selected, the forward,
// the guided prediction into the history slot, the latents' update writing the next input), alternating, two
// rounds; ms per step.
// guided: the sample and timestep inputs hold one half of the batch (build_guided_unet).
Status loop_rounds(DeviceLoop& L, int64_t batch, int64_t h, int64_t w, int steps, bool guided) {
  SDRT_ASSIGN_OR_RETURN(float* in, L.input("sample"));
  SDRT_ASSIGN_OR_RETURN(float* out, L.output(0));
  const int64_t halves = batch % 2 == 0 ? 2 : 1, n = batch / halves * 4 * h * w;
  SDRT_ASSIGN_OR_RETURN(float* X, L.alloc(n));
  SDRT_ASSIGN_OR_RETURN(float* T, L.alloc((int64_t)steps * (guided ? batch / 2 : batch)));
  std::vector<float*> slot(4);
  for (auto& p : slot) {
    SDRT_ASSIGN_OR_RETURN(p, L.alloc(n));
  }
  const int64_t rows = guided ? batch / 2 : batch;  // the timestep input's
  const std::vector<float> tv = schedule(steps, rows);
  std::vector<float> x0((size_t)n, 0.5f);
  SDRT_RETURN_IF_ERROR(L.upload(T, tv.data(), (int64_t)tv.size()));
  SDRT_RETURN_IF_ERROR(L.stage_input("timestep", T, steps));  // as the pipeline does (its work ahead unless SDRT_STAGE=0)
  SDRT_RETURN_IF_ERROR(L.upload(X, x0.data(), n));
  for (auto* p : slot) SDRT_RETURN_IF_ERROR(L.upload(p, x0.data(), n));
  SDRT_RETURN_IF_ERROR(L.download(x0.data(), X, 1));  // uploads done before timing
  auto timed = [&](bool work) -> Result<double> {
    const auto s = clk::now();
    for (int j = 0; j < steps; ++j) {
      if (work) SDRT_RETURN_IF_ERROR(L.select_staged(j));
      SDRT_RETURN_IF_ERROR(L.run());
      if (work) {  // the guidance folded into the slot's copy, the next input written with the latents
        if (halves == 2) SDRT_RETURN_IF_ERROR(L.combine(slot[j % 4], n, {{out, -6.5f}, {out + n, 7.5f}}));
        else SDRT_RETURN_IF_ERROR(L.combine(slot[j % 4], n, {{out, 1.f}}));
        std::vector<std::pair<float*, float>> next{{in, 0.9f}};
        if (!guided && halves == 2) next.push_back({in + n, 0.9f});
        SDRT_RETURN_IF_ERROR(L.combine(X, n, {{X, 0.99f}, {slot[0], 0.01f}, {slot[1], -0.02f}, {slot[2], 0.015f}, {slot[3], -0.004f}}, next));
      }
    }
    SDRT_RETURN_IF_ERROR(L.mark(0));
    SDRT_RETURN_IF_ERROR(L.wait(0));
    return std::chrono::duration<double, std::milli>(clk::now() - s).count() / steps;
  };
  for (int r = 0; r < 2; ++r) {
    SDRT_ASSIGN_OR_RETURN(const double a, timed(false));
    SDRT_ASSIGN_OR_RETURN(const double b, timed(true));
    std::printf("%d back to back: %.3f ms per forward; with the sampling loop's work: %.3f ms per step\n", steps, a, b);
  }
  return L.release_scratch();
}

// The most bytes of activations alive at once when g's nodes run in order, each value allocated at its node
// and freed after its last reader (what the CUDA engine's stream-ordered allocations do), in fp16; shape-only
// ops (Reshape, ToTokens, FromTokens) counted as views. An estimate: the engine's pool rounds sizes and
// some of those ops copy in NHWC.
double live_peak_bytes(const Graph& g) {
  std::vector<int> last(g.nodes.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (int in : g.nodes[i].inputs) last[in] = (int)i;
  for (int o : g.outputs) last[o] = (int)g.nodes.size();
  auto bytes = [&](int i) {
    const Node& n = g.nodes[i];
    const bool view = n.op == Op::Reshape || n.op == Op::ToTokens || n.op == Op::FromTokens || n.op == Op::Weight;
    return view ? 0.0 : 2.0 * (double)numel(n.shape);
  };
  double live = 0, peak = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    live += bytes((int)i);
    peak = std::max(peak, live);
    std::vector<int> seen;
    for (int in : g.nodes[i].inputs)
      if (last[in] == (int)i && std::find(seen.begin(), seen.end(), in) == seen.end()) seen.push_back(in), live -= bytes(in);
  }
  return peak;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UNet forward benchmark"};
  std::string model = "random:sd15";
  int64_t batch = 1, height = 512, width = 512;
  int repeats = 1, warmup = 0;
  std::string backend = "cpu", precision = "fp32";
  bool profile_range = false, device_loop = false, vae = false;
  int steps = 0, staged = 0;
  app.add_option("--backend", backend, "cpu or cuda");
  app.add_option("--precision", precision, "fp32 or fp16 (cuda)");
  app.add_option("--model", model);
  app.add_option("--batch", batch);
  app.add_option("--height", height);
  app.add_option("--width", width);
  app.add_option("--repeats", repeats);
  app.add_option("--warmup", warmup);
  app.add_flag("--profile-range", profile_range,
               "mark the timed forwards as the CUDA profiler's range (ncu --profile-from-start off), leaving out compilation and warm-up");
  app.add_flag("--device-loop", device_loop,
               "time replays on the backend's device loop (inputs uploaded once, the prompt held: the UNet as sdrt's sampling loop runs "
               "it) instead of Executable::run with its copies to and from the host (CUDA)");
  app.add_flag("--vae", vae, "the VAE decoder instead of the UNet");
  bool guided = false, estimate = false;
  app.add_flag("--estimate", estimate,
               "print the graph's FLOPs and its peak of live activations (after the build passes, fp16, nodes in order) and exit "
               "without running it");
  app.add_flag("--guided", guided,
               "the UNet of a guidance batch (even --batch: both halves) whose halves compute what depends only on the latents and "
               "timestep once, as the pipeline runs it");
  std::string tactics_file;
  app.add_option("--tactics", tactics_file,
                 "a JSON object of the engine's tactics (key: choice): read where the file exists, so those are not timed again, then "
                 "written with every tactic of this build - so that a run under a profiler (ncu) makes the choices a plain run made");
  app.add_option("--steps", steps,
                 "with --device-loop, then also time this many forwards back to back (no wait between them), and as many steps of the "
                 "sampling loop's work (the guided input halves scaled, the timestep copied, the forward, the guidance combination and "
                 "PNDM's two combinations): how far a denoising step is from a forward")
      ->check(CLI::Range(0, 1000));
  app.add_option("--staged", staged,
                 "with --device-loop: stage this many timesteps (999 down to 0, DeviceLoop::stage_input, as the pipeline stages a "
                 "schedule) and select the next one before each forward, in the timed time; unless SDRT_STAGE=0 the work computed from "
                 "the timestep alone is then done for all of them ahead")
      ->check(CLI::Range(0, 1000));
  CLI11_PARSE(app, argc, argv);
  if (steps > 0 && (!device_loop || vae)) return std::fprintf(stderr, "error: --steps needs --device-loop and the UNet\n"), 1;
  if (staged > 0 && (!device_loop || vae)) return std::fprintf(stderr, "error: --staged needs --device-loop and the UNet\n"), 1;
  if (guided && (vae || batch % 2)) return std::fprintf(stderr, "error: --guided needs the UNet and an even --batch\n"), 1;
  const int64_t rows = guided ? batch / 2 : batch;  // the sample and timestep inputs' batch

  auto t0 = clk::now();
  auto m = load_model(model);
  if (!m) return std::fprintf(stderr, "error: %s\n", m.status().message().c_str()), 1;
  auto g = vae      ? build_vae_decoder(*m, batch, height / 8, width / 8)
           : guided ? build_guided_unet(*m, batch / 2, height / 8, width / 8)
                    : build_unet(*m, batch, height / 8, width / 8);
  if (!g) return std::fprintf(stderr, "error: %s\n", g.status().message().c_str()), 1;
  if (estimate) {
    const Graph opt = optimize_graph(**g);
    std::printf("%s, batch %lld, %lldx%lld latents: %.1f GFLOP per forward, peak live activations %.1f MiB (estimate)\n",
                vae ? "VAE decoder" : guided ? "UNet (guided: halves share their prefix)" : "UNet", (long long)batch, (long long)height / 8,
                (long long)width / 8, (*g)->flops() / 1e9, live_peak_bytes(opt) / 1048576.0);
    if (!vae) {  // what DeviceLoop::stage_input does ahead for a 50-step schedule
      auto p = input_prelude(opt, "timestep", 50);
      if (!p) return std::fprintf(stderr, "error: %s\n", p.status().message().c_str()), 1;
      double wbytes = 0, row = 0;
      for (const auto& [name, t] : p->graph.weights) wbytes += 2.0 * (double)t.numel();
      std::string shapes;
      for (int v : p->values) row += 2.0 * (double)numel(opt.nodes[v].shape), shapes += " " + shape_str(opt.nodes[v].shape);
      std::printf("timestep staged: %d nodes ahead (%.1f MB of fp16 weights read once per schedule, not per step); the rest reads%s "
                  "(%.1f KB a step)\n", p->computed, wbytes / 1e6, shapes.c_str(), row / 1e3);
    }
    return 0;
  }
  auto be = make_backend(backend, precision);
  if (!be) return std::fprintf(stderr, "error: %s\n", be.status().message().c_str()), 1;
  if (!tactics_file.empty() && std::filesystem::exists(tactics_file)) {
    std::map<std::string, std::string> seeded;
    try {
      std::ifstream f(tactics_file);
      seeded = nlohmann::json::parse(f).get<std::map<std::string, std::string>>();
    } catch (const std::exception& e) {
      return std::fprintf(stderr, "error: %s: not a JSON object of tactics (%s)\n", tactics_file.c_str(), e.what()), 1;
    }
    if (Status st = (*be)->add_tactics(seeded); !st) return std::fprintf(stderr, "error: %s: %s\n", tactics_file.c_str(), st.message().c_str()), 1;
  }
  auto exe = (*be)->compile(*g);
  if (!exe) return std::fprintf(stderr, "error: %s\n", exe.status().message().c_str()), 1;
  if (!tactics_file.empty()) {
    std::ofstream f(tactics_file);
    f << nlohmann::json((*be)->tactics(nullptr)).dump(1) << "\n";
    if (!f) return std::fprintf(stderr, "error: cannot write %s\n", tactics_file.c_str()), 1;
  }
  const double load_s = std::chrono::duration<double>(clk::now() - t0).count();

  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  auto randn = [&](Shape s) {
    Tensor t = Tensor::empty(DType::F32, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = nd(rng);
    return t;
  };
  std::map<std::string, Tensor> in;
  if (vae) {
    in["latent"] = randn({batch, m->vae.latent_channels, height / 8, width / 8});
  } else {
    in = {{"sample", randn({rows, 4, height / 8, width / 8})},
          {"timestep", Tensor::from_f32({rows}, std::vector<float>(rows, 500.f))},
          {"encoder_hidden_states", randn({batch, 77, m->unet.cross_attention_dim})}};
  }
  std::vector<double> times;
  DeviceLoop* L = nullptr;
  if (device_loop) {
    L = (*exe)->device_loop();
    if (!L) return std::fprintf(stderr, "error: the %s backend has no device loop\n", backend.c_str()), 1;
    for (const auto& [name, t] : in) {
      auto d = L->input(name);
      if (!d) return std::fprintf(stderr, "error: %s\n", d.status().message().c_str()), 1;
      if (Status st = L->upload(*d, t.f32(), t.numel()); !st) return std::fprintf(stderr, "error: %s\n", st.message().c_str()), 1;
    }
    if (!vae)
      if (Status st = L->hold_input("encoder_hidden_states"); !st) return std::fprintf(stderr, "error: %s\n", st.message().c_str()), 1;
    if (staged > 0) {
      const std::vector<float> tv = schedule(staged, rows);
      auto T = L->alloc((int64_t)tv.size());
      Status st = T.status();
      if (st) st = L->upload(*T, tv.data(), (int64_t)tv.size());
      if (st) st = L->stage_input("timestep", *T, staged);
      if (!st) return std::fprintf(stderr, "error: %s\n", st.message().c_str()), 1;
    }
  }
  for (int i = 0; i < warmup + repeats; ++i) {
#if SDRT_HAVE_CUDA
    if (profile_range && i == warmup) cudaProfilerStart();
#endif
    auto s = clk::now();
    if (L) {
      Status st = staged > 0 ? L->select_staged(i % staged) : Status::ok();
      if (st) st = L->run();
      if (st) st = L->mark(i);
      if (st) st = L->wait(i);
      if (!st) return std::fprintf(stderr, "error: %s\n", st.message().c_str()), 1;
    } else {
      auto out = (*exe)->run(in);
      if (!out) return std::fprintf(stderr, "error: %s\n", out.status().message().c_str()), 1;
    }
    if (i >= warmup) times.push_back(std::chrono::duration<double>(clk::now() - s).count());
  }
#if SDRT_HAVE_CUDA
  if (profile_range) cudaProfilerStop();
#endif
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  std::printf("backend %s %s: ", backend.c_str(), precision.c_str());
  std::printf("model %s, %s %lldx%lld latents, batch %lld, %d threads: %.1f M params, %.1f GFLOP per forward\n", model.c_str(),
              vae ? "VAE decoder" : guided ? "UNet (guided: halves share their prefix)" : "UNet", (long long)height / 8, (long long)width / 8, (long long)batch, omp_get_max_threads(), (*g)->weight_params() / 1e6,
              (*g)->flops() / 1e9);
  std::printf("engine tactics: %s\n", tactics_summary((*be)->tactics(nullptr)).c_str());
  std::printf("load+build %.2f s; forward median %.2f ms (min %.2f, max %.2f, %zu runs%s%s) = %.1f GFLOP/s\n", load_s, med * 1e3,
              times.front() * 1e3, times.back() * 1e3, times.size(), L ? ", device loop" : "",
              staged > 0 ? (cuda_staged_preludes() > 0 ? ", timestep staged: its work ahead" : ", timestep staged: copied") : "",
              (*g)->flops() / med / 1e9);
  if (steps > 0) {
    if (Status st = loop_rounds(*L, batch, height / 8, width / 8, steps, guided); !st) return std::fprintf(stderr, "error: %s\n", st.message().c_str()), 1;
  }
  return 0;
}
