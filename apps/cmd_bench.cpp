// `sdrt bench`: the lambda-diffusers methodology (one prompt repeated batch-size times in one call,
// whole-pipeline latency over repeats after warm-up, memory per configuration), with per-stage figures,
// percentiles, throughput, UNet TFLOP/s, and CSV / JSON / SVG outputs.
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <new>
#include <thread>

#include "bench_report.h"
#include "commands.h"
#include "io/png.h"
#include "backends/cuda/device_info.h"
#include "pipeline/resolve.h"
#include "run_setup.h"
#include "runtime/engine_cache.h"
#include "git_revision.h"  // generated at build time: SDRT_GIT_REVISION

namespace sdrt::app {
namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;

namespace {

// Peak resident memory of this configuration: the kernel's high-water mark (VmHWM), reset before each
// configuration through /proc/self/clear_refs; the process-wide getrusage peak where that is missing.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return (bool)f;
}
double peak_rss_gib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with("VmHWM:")) return std::atof(line.c_str() + 6) / 1048576.0;  // kB -> GiB
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1048576.0;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with("model name")) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// Datasheet peak of the arithmetic the engine uses (dense, no sparsity), TFLOP/s; 0 where unknown.
double peak_tflops(const std::string& device, bool fp32_engine) {
  struct Peak {
    const char* name;
    double fp16_tensor, fp32;
  };
  static const Peak peaks[] = {{"H100 80GB HBM3", 989.4, 66.9}, {"H100 PCIe", 756.5, 51.2}, {"H200", 989.4, 66.9},
                               {"A100", 312.0, 19.5},            {"L40S", 362.1, 91.6},      {"A10", 125.0, 31.2}};
  for (const auto& p : peaks)
    if (device.find(p.name) != std::string::npos) return fp32_engine ? p.fp32 : p.fp16_tensor;
  return 0;
}

// A short label for the model in titles: the file or folder name (".../tiny-sd15/diffusers" keeps its parent).
std::string model_label(const std::string& spec) {
  const fs::path p(spec);
  const std::string leaf = p.filename().string();
  if (leaf.empty()) return spec;
  return leaf == "diffusers" ? p.parent_path().filename().string() + "/diffusers" : leaf;
}

}  // namespace

// The SDRT_ variables set in the environment (but SDRT_HOME): switches that change the engine (SDRT_SPLIT,
// SDRT_ATTN_PIPE, ...), recorded with the figures they produced.
static std::string sdrt_environment() {
  std::vector<std::string> vars;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "SDRT_", 5) == 0 && std::strncmp(*e, "SDRT_HOME=", 10) != 0) vars.push_back(*e);
  std::sort(vars.begin(), vars.end());
  std::string out;
  for (const auto& v : vars) out += (out.empty() ? "" : " ") + v;
  return out.empty() ? "none" : out;
}

int cmd_bench(const BenchArgs& args) {
  auto devices = parse_devices(args.devices, args.backend);
  if (!devices) {
    std::fprintf(stderr, "sdrt: error: %s\n", devices.status().message().c_str());
    return 1;
  }
  auto backend = make_backend(args.backend, args.precision, devices->front());
  if (!backend) {
    std::fprintf(stderr, "sdrt: error: %s\n", backend.status().message().c_str());
    return 1;
  }
  BenchArgs a = args;  // with what "auto" resolved to
  a.backend = (*backend)->name();
  a.precision = (*backend)->precision();
  if (a.quick && a.backend == "cpu" && !a.size_given) a.width = a.height = 128;
  for (const auto& o : a.opts)
    if (o != "baseline" && o != "optimized") {
      std::fprintf(stderr, "sdrt: error: --opt takes baseline and/or optimized, got '%s'\n", o.c_str());
      return 1;
    }
  ResolveOptions ro;
  ro.tokenizer_dir = a.tokenizer_dir;
  ro.download.progress = true;
  auto rm = resolve_model(a.model, ro);
  if (!rm) {
    std::fprintf(stderr, "sdrt: error: %s\n", rm.status().message().c_str());
    return 1;
  }
  // `optimized` is the engine as configured; `baseline` the same engine with the optimizations off (on
  // CUDA: float32, no build passes, no cuDNN/flash-attention fp16 kernels, no CUDA graphs). Each opt gets
  // its own pipeline, made when its turn comes and dropped after, so device memory figures stay its own.
  std::unique_ptr<Backend> first_backend = std::move(backend).value();
  // With --devices, one pipeline per GPU; each timed run generates a batch on every GPU at once.
  auto make_pipe = [&](const std::string& opt, int dev) -> Result<std::unique_ptr<Pipeline>> {
    std::unique_ptr<Backend> be;
    if (opt == "baseline" && a.backend == "cuda") {
      CudaOptions o;
      o.device = dev;
      o.precision = "fp32";
      o.fuse = false;
      o.cuda_graphs = false;
      std::string why;
      be = make_cuda_backend(o, &why);
      if (!be) return unsupported("the cuda backend is not available: " + why);
    } else if (first_backend) {
      be = std::move(first_backend);
    } else {
      SDRT_ASSIGN_OR_RETURN(be, make_backend(a.backend, a.precision, dev));
    }
    PipelineOptions po = rm->options;
    if (opt != "baseline" && a.engine_cache) po.engine_cache_dir = (fs::path(sdrt_home()) / "engines").string();
    // the baseline keeps the sampling loop on the host; SDRT_HOST_LOOP=1 does so for both (to compare)
    po.device_loop = opt != "baseline" && !std::getenv("SDRT_HOST_LOOP");
    // the baseline's guidance halves compute everything (no shared prefix: build_guided_unet)
    if (opt == "baseline") po.share_guidance_prefix = false;
    return Pipeline::create(rm->model, po, std::move(be));
  };
  std::vector<std::unique_ptr<Pipeline>> pipes;
  auto make_pipes = [&](const std::string& opt) -> Status {
    pipes.clear();  // release the previous engines first
    for (int dev : *devices) {
      SDRT_ASSIGN_OR_RETURN(auto p, make_pipe(opt, dev));
      pipes.push_back(std::move(p));
    }
    return Status::ok();
  };
  if (Status st = make_pipes(a.opts.front()); !st) {
    std::fprintf(stderr, "sdrt: error: %s\n", st.message().c_str());
    return 1;
  }
  Pipeline* pipe = pipes.front().get();
  GenerateRequest base;
  base.prompt = a.prompt;
  base.steps = a.steps;
  base.sampler = a.sampler;
  base.width = a.width;
  base.height = a.height;
  base.seed = 0;
  base.cfg_scale = 7.5;
  for (int b : a.batches) {
    GenerateRequest r = base;
    r.batch_size = b;
    if (Status v = pipe->validate(r); !v) {
      std::fprintf(stderr, "sdrt: error: %s\n", v.message().c_str());
      return 1;
    }
  }

  BenchMeta meta;
  std::string device = cpu_name() + " (" + std::to_string(omp_get_max_threads()) + " threads)", driver = "n/a";
  if (a.backend == "cuda") {
    std::string why;
    auto gpus = list_gpus(&why);
    if (!gpus.empty()) {
      const GpuInfo& g = gpus[devices->front()];
      device = (devices->size() > 1 ? std::to_string(devices->size()) + "x " : "") + g.name + ", sm_" + std::to_string(g.cc_major) +
               std::to_string(g.cc_minor) + "; host " + device;
    }
    driver = cuda_driver_version();
  }
  std::string devs;
  for (int d : *devices) devs += (devs.empty() ? "" : ",") + std::to_string(d);
  meta.fields = {{"device", device},
                 {"devices", a.devices.empty() ? std::string("default") : devs + " (one engine each; batch is per device, img/s their sum)"},
                 {"driver", driver},
                 {"backend", a.backend},
                 {"engine", a.backend == "cpu" ? "CPU float32 reference"
                                               : "optimized: CUDA " + a.precision +
                                                     (a.precision == "fp16" ? " NHWC, cuDNN convolutions (timed algorithms), cuBLASLt GEMMs with fused "
                                                                              "bias/residual epilogues, flash attention, fused GroupNorm+SiLU"
                                                                            : " (fused graph)") +
                                                     ", CUDA graphs, guidance halves sharing their prefix; baseline: CUDA float32 NCHW, unfused, im2col + cuBLAS, "
                                                       "no graphs, no shared prefix"},
                 {"precision", a.precision},
                 {"note", a.backend == "cpu" ? "on the CPU baseline and optimized are the same engine, the baseline without the guidance halves' shared prefix" : "baseline and optimized each get their own pipeline"},
                 {"blas", openblas_get_config()},
                 {"compiler", __VERSION__},
                 {"sdrt_version", SDRT_VERSION},
                 {"git_revision", SDRT_GIT_REVISION},
                 {"model", model_label(a.model)},
                 {"model_path", a.model},
                 {"size", std::to_string(a.width) + "x" + std::to_string(a.height)},
                 {"steps", std::to_string(a.steps)},
                 {"sampler", a.sampler},
                 {"cfg_scale", "7.5"},
                 {"prompt", a.prompt},
                 {"repeats", std::to_string(a.repeats)},
                 {"warmup", std::to_string(a.warmup)},
                 {"date", utc_now()},
                 {"command", a.command_line},
                 {"sdrt_env", sdrt_environment()}};

  std::vector<BenchRow> rows;
  std::printf("%-10s %5s %9s %9s %9s %10s %8s %8s %8s %8s %8s %9s %8s %8s\n", "opt", "batch", "mean s", "p50 s", "p90 s", "unet step", "vae s",
              "text s", "png s", "img/s", "steps/s", "TFLOP/s", "host GiB", "dev GiB");
  for (size_t oi = 0; oi < a.opts.size(); ++oi) {
    const std::string& opt = a.opts[oi];
    if (oi > 0) {
      if (Status st = make_pipes(opt); !st) {
        std::fprintf(stderr, "sdrt: error: %s\n", st.message().c_str());
        return 1;
      }
      pipe = pipes.front().get();
    }
    for (int b : a.batches) {
      BenchRow row;
      row.opt = opt;
      row.batch = b;
      std::vector<double> whole, text, step, unet, sched, vae, png;
      Tensor::release_cached_blocks();
      reset_peak_rss();
      for (auto& p : pipes) p->backend().reset_peak_memory();
      double flops = 0, unet_s = 0;
      int evals = 0;
      try {
        for (int rep = 0; rep < a.warmup + a.repeats; ++rep) {
          GenerateRequest r = base;
          r.batch_size = b;
          // every device generates and encodes its batch at once; the run takes as long as the slowest
          std::vector<Result<GenerateResult>> results(pipes.size(), Result<GenerateResult>(GenerateResult{}));
          std::vector<double> png_times(pipes.size(), 0.0);
          auto one = [&](size_t d) {
            results[d] = pipes[d]->generate(r);
            if (!results[d]) return;
            auto tp = clk::now();
            for (auto& bytes : encode_pngs(results[d]->images, results[d]->infotexts))  // as sdrt serve: in parallel
              if (!bytes) {
                results[d] = bytes.status();
                return;
              }
            png_times[d] = std::chrono::duration<double>(clk::now() - tp).count();
          };
          auto t0 = clk::now();
          std::vector<std::thread> others;
          for (size_t d = 1; d < pipes.size(); ++d) others.emplace_back(one, d);
          one(0);
          for (auto& t : others) t.join();
          const double all = std::chrono::duration<double>(clk::now() - t0).count();
          for (auto& rd : results)
            if (!rd) throw std::runtime_error(rd.status().message());
          auto& res = results[0];  // stage times: the first device's
          const double png_s = png_times[0];
          if (rep < a.warmup) continue;
          const auto& t = res->times;
          whole.push_back(all);
          text.push_back(t.text_s);
          step.insert(step.end(), t.unet_step_s.begin(), t.unet_step_s.end());
          unet.push_back(t.unet_s);
          sched.push_back(t.scheduler_s);
          vae.push_back(t.vae_s);
          png.push_back(png_s);
          flops += t.unet_flops;
          unet_s += t.unet_s;
          evals = t.unet_evals;
        }
        row.whole = stats(whole);
        row.text = stats(text);
        row.unet_step = stats(step);
        row.unet = stats(unet);
        row.scheduler = stats(sched);
        row.vae = stats(vae);
        row.png = stats(png);
        row.unet_evals = evals;
        row.images_per_s = (double)b * pipes.size() / row.whole.mean;
        row.steps_per_s = evals / row.unet.mean;
        row.unet_tflops = flops / unet_s / 1e12;
        row.peak_tflops = a.backend == "cuda" ? peak_tflops(device, /*fp32_engine=*/a.precision == "fp32") : 0;
      } catch (const std::bad_alloc&) {
        row.status = "oom";
      } catch (const std::exception& e) {
        const std::string what = e.what();
        row.status = what.find("out of memory") != std::string::npos ? "oom" : "error: " + what;
      }
      row.peak_host_gib = peak_rss_gib();
      for (auto& p : pipes) {  // the most any one device needed
        const DeviceMemory dm = p->backend().memory();
        if (dm.peak_bytes >= 0) row.peak_device_gib = std::max(row.peak_device_gib, dm.peak_bytes / 1073741824.0);
        if (dm.used_bytes >= 0) row.device_used_gib = std::max(row.device_used_gib, dm.used_bytes / 1073741824.0);
      }
      rows.push_back(row);
      if (row.status == "ok")
        std::printf("%-10s %5d %9.3f %9.3f %9.3f %10.4f %8.3f %8.3f %8.4f %8.3f %8.2f %9.3f %8.2f %8.2f\n", opt.c_str(), b, row.whole.mean,
                    row.whole.p50, row.whole.p90, row.unet_step.mean, row.vae.mean, row.text.mean, row.png.mean, row.images_per_s, row.steps_per_s,
                    row.unet_tflops, row.peak_host_gib, row.peak_device_gib);
      else
        std::printf("%-10s %5d %s\n", opt.c_str(), b, row.status.c_str());
      std::fflush(stdout);
    }
  }

  meta.fields["tactics"] = tactics_summary(pipe->backend().tactics(nullptr));  // the last configuration's engine
  std::printf("engine tactics: %s\n", meta.fields["tactics"].c_str());
  std::error_code ec;
  fs::create_directories(a.out_dir, ec);
  const fs::path out(a.out_dir);
  for (Status s : {write_csv((out / "bench.csv").string(), meta, rows), write_json((out / "bench.json").string(), meta, rows),
                   write_svg((out / "bench.svg").string(), meta, rows)})
    if (!s) {
      std::fprintf(stderr, "sdrt: error: %s\n", s.message().c_str());
      return 1;
    }
  std::printf("wrote %s, %s, %s\n", (out / "bench.csv").c_str(), (out / "bench.json").c_str(), (out / "bench.svg").c_str());
  return 0;
}

}  // namespace sdrt::app
