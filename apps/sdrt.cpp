// sdrt: the command-line front end.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.h"
#include "git_revision.h"  // generated at build time: SDRT_GIT_REVISION

int main(int argc, char** argv) {
  CLI::App app{"sdrt: a Stable Diffusion inference engine"};
  app.require_subcommand(1);
#ifdef SDRT_HAVE_CUDA
  constexpr const char* kBackends = "cpu, cuda";
#else
  constexpr const char* kBackends = "cpu";
#endif
  app.set_version_flag("--version", std::string("sdrt ") + SDRT_VERSION + " (" + SDRT_GIT_REVISION + "; backends: " + kBackends + ")");

  std::string model;
  auto* info = app.add_subcommand("info", "Describe a model (layout, architecture, parameters, dtypes) or a PNG's generation parameters");
  info->add_option("model", model, "diffusers folder, .safetensors checkpoint, random:sd15, a .png image or a .plan")->required();

  std::string pull_model, pull_tokenizer;
  auto* pull = app.add_subcommand("pull", "Download a hub model (org/name) into $SDRT_HOME and check that it loads (a container's init step)");
  pull->add_option("model", pull_model, "hub id (org/name), or any model spec to check")->required();
  pull->add_option("--tokenizer", pull_tokenizer, "tokenizer folder (vocab.json, merges.txt) for a single-file checkpoint");

  sdrt::app::BuildArgs bd;
  auto* build = app.add_subcommand("build", "Compile a model into a plan for this GPU (fused graphs, timed kernels, weights in the engine's precision)");
  build->add_option("-m,--model", bd.model, "diffusers folder, .safetensors checkpoint, hub id or random:sd15")->capture_default_str();
  build->add_option("-o,--out", bd.out, "plan file to write")->required();
  build->add_option("--batch", bd.batches, "images per batch the plan serves, comma separated (the UNet runs both CFG halves: 2x)")->delimiter(',')->capture_default_str();
  build->add_option("-H,--height", bd.heights, "image heights, comma separated")->delimiter(',')->capture_default_str();
  build->add_option("-W,--width", bd.widths, "image widths, comma separated")->delimiter(',')->capture_default_str();
  build->add_option("--clip-skip", bd.clip_skips, "text encoder variants, comma separated")->delimiter(',')->capture_default_str();
  build->add_option("--guidance", bd.guidance,
                    "UNets for: cfg (classifier-free guidance, both halves in one batch) and/or none (a guidance scale of 1 or less: one "
                    "pass), comma separated")
      ->delimiter(',')
      ->capture_default_str();
  build->add_option("--precision", bd.precision, "fp16 or fp32")->capture_default_str();
  build->add_option("--timing-cache", bd.timing_cache, "file of kernel timings: read when present (for this GPU), updated after the build");

  sdrt::app::GenerateArgs g;
  auto* gen = app.add_subcommand("generate", "Text to image (image to image with --init-image)");
  gen->add_option("-m,--model", g.model, "diffusers folder, .safetensors checkpoint, hub id (org/name) or random:sd15 [default: SD 1.5 from the hub]");
  auto* prompt = gen->add_option("-p,--prompt", g.prompt, "prompt (WebUI syntax: (word:1.2), [word], BREAK)");
  gen->add_option("--prompt-file", g.prompt_file, "read the prompt from a file")->excludes(prompt);
  gen->add_option("-n,--negative-prompt", g.negative_prompt, "negative prompt");
  gen->add_option("--steps", g.steps, "sampling steps (1-1000)")->capture_default_str();
  gen->add_option("--cfg-scale,--guidance", g.cfg_scale, "classifier-free guidance scale")->capture_default_str();
  gen->add_option("--sampler", g.sampler, "ddim, pndm, euler, euler_a, dpmpp_2m_karras, lms (or WebUI names)")->capture_default_str();
  gen->add_option("--scheduler", g.schedule_type, "WebUI schedule type (Karras, with DPM++ 2M)");
  gen->add_option("--seed", g.seed, "seed; -1 picks one")->capture_default_str();
  gen->add_option("-W,--width", g.width, "width, a multiple of 8")->capture_default_str();
  gen->add_option("-H,--height", g.height, "height, a multiple of 8")->capture_default_str();
  gen->add_option("--batch-size", g.batch_size, "images per batch (seeds seed, seed+1, ...)")->capture_default_str();
  gen->add_option("--batch-count", g.batch_count, "batches")->capture_default_str();
  gen->add_option("--clip-skip", g.clip_skip, "stop the text encoder this many layers from the end (1 = last)")->capture_default_str();
  gen->add_option("--rng", g.rng, "noise source: cpu (torch CPU generator, as diffusers) or cuda (torch CUDA, the WebUI's GPU seed)")->capture_default_str();
  gen->add_option("--init-image", g.init_image, "PNG to start from (img2img)");
  gen->add_option("--strength", g.strength, "img2img denoising strength (0-1]")->capture_default_str();
  gen->add_option("-o,--out", g.out_dir, "output folder")->capture_default_str();
  gen->add_option("--tokenizer", g.tokenizer_dir, "folder with the CLIP vocab.json and merges.txt");
  gen->add_option("--backend", g.backend, "auto (cuda where a GPU is usable, else cpu), cpu or cuda")->capture_default_str();
  gen->add_option("--precision", g.precision, "auto (fp16 on cuda, fp32 on cpu; a plan's own), fp32 or fp16")->capture_default_str();
  gen->add_option("--plan", g.plan, "run the engines of a plan from `sdrt build` (cuda; the model defaults to the plan's)");
  bool gen_no_cache = false;
  gen->add_flag("--no-engine-cache", gen_no_cache, "do not read or write the engine cache ($SDRT_HOME/engines)");
  bool gen_no_overlap = false;
  gen->add_flag("--no-decode-overlap", gen_no_overlap,
                "with --batch-count > 1, decode each batch before sampling the next instead of beside it (less GPU memory)");

  sdrt::app::ServeArgs sv;
  auto* serve = app.add_subcommand("serve", "HTTP server with the AUTOMATIC1111 WebUI API (/sdapi/v1/...), a job queue and a web page");
  serve->add_option("-m,--model", sv.model, "model (as generate) [default: SD 1.5 from the hub, or the plan's]");
  serve->add_option("--host", sv.host, "address to listen on (loopback unless told otherwise)")->capture_default_str();
  serve->add_option("--port", sv.port, "port")->capture_default_str();
  serve->add_option("--api-auth", sv.api_auth, "user:password for HTTP basic auth on every endpoint but /health, /health/live and /metrics (or $SDRT_API_AUTH)")
      ->envname("SDRT_API_AUTH");
  serve->add_option("--max-queue", sv.max_queue, "jobs that may wait; more get 429")->capture_default_str();
  serve->add_option("--max-batch", sv.max_batch, "images of compatible requests run as one batch")->capture_default_str();
  serve->add_option("--drain-timeout", sv.drain_timeout,
                    "on SIGTERM/SIGINT, seconds to finish accepted jobs before handing the rest back (503)")
      ->capture_default_str();
  serve->add_option("--backend", sv.backend, "auto, cpu or cuda")->capture_default_str();
  serve->add_option("--precision", sv.precision, "auto, fp32 or fp16")->capture_default_str();
  serve->add_option("--devices", sv.devices, "GPUs to serve with, one engine each behind one queue: all or 0,1,... [default: one, device 0]");
  serve->add_option("--plan", sv.plan, "engines from `sdrt build`");
  serve->add_option("--tokenizer", sv.tokenizer_dir, "folder with the CLIP vocab.json and merges.txt");
  serve->add_option("--output-dir", sv.output_dir, "where requests with save_images write their PNGs (names chosen by the server)");
  bool serve_no_cache = false;
  serve->add_flag("--no-engine-cache", serve_no_cache, "do not read or write the engine cache");
  bool serve_no_overlap = false;
  serve->add_flag("--no-decode-overlap", serve_no_overlap,
                  "for requests of several batches (n_iter), decode each batch before sampling the next instead of beside it (less GPU memory)");

  sdrt::app::BenchArgs ba;
  bool quick = false;
  auto* bench = app.add_subcommand("bench", "Benchmark the pipeline (lambda-diffusers methodology): latency per stage, throughput, memory");
  bench->add_option("-m,--model", ba.model, "model (random:sd15 needs no download)")->capture_default_str();
  bench->add_option("--backend", ba.backend, "auto, cpu or cuda")->capture_default_str();
  bench->add_option("--precision", ba.precision, "auto (fp16 on cuda, fp32 on cpu), fp32 or fp16")->capture_default_str();
  bench->add_option("--devices", ba.devices, "GPUs to run on at once, one engine each: all or 0,1,... (throughput is their sum) [default: device 0]");
  auto* bb = bench->add_option("--batch", ba.batches, "batch sizes, comma separated [default: 50]")->delimiter(',');
  auto* brep = bench->add_option("--repeats", ba.repeats, "timed runs per configuration")->capture_default_str();
  auto* bwarm = bench->add_option("--warmup", ba.warmup, "untimed runs first")->capture_default_str();
  auto* bsteps = bench->add_option("--steps", ba.steps, "sampling steps")->capture_default_str();
  bench->add_option("--sampler", ba.sampler, "sampler")->capture_default_str();
  auto* bh = bench->add_option("-H,--height", ba.height, "height")->capture_default_str();
  auto* bw = bench->add_option("-W,--width", ba.width, "width")->capture_default_str();
  bench->add_option("--opt", ba.opts, "baseline,optimized")->delimiter(',');
  bench->add_option("--prompt", ba.prompt, "the prompt")->capture_default_str();
  bench->add_option("-o,--out", ba.out_dir, "output folder for bench.csv, bench.json, bench.svg")->capture_default_str();
  bench->add_option("--tokenizer", ba.tokenizer_dir, "folder with the CLIP vocab.json and merges.txt");
  bool bench_no_cache = false;
  bench->add_flag("--no-engine-cache", bench_no_cache, "do not read or write the engine cache ($SDRT_HOME/engines)");
  bench->add_flag("--quick", quick, "a run of under a minute: batch 1, 2 steps, 1 repeat, no warm-up, 128x128 on the CPU (options given still apply)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (*info) {
    if (model.ends_with(".png")) return sdrt::app::cmd_info_png(model);
    if (model.ends_with(".plan")) return sdrt::app::cmd_info_plan(model);
    return sdrt::app::cmd_info(model);
  }
  if (*build) return sdrt::app::cmd_build(bd);
  if (*serve) {
    sv.engine_cache = !serve_no_cache;
    sv.decode_overlap = !serve_no_overlap;
    return sdrt::app::cmd_serve(sv);
  }
  if (*pull) return sdrt::app::cmd_pull(pull_model, pull_tokenizer);
  if (*gen) {
    g.engine_cache = !gen_no_cache;
    g.decode_overlap = !gen_no_overlap;
    return sdrt::app::cmd_generate(g);
  }
  if (*bench) {
    ba.engine_cache = !bench_no_cache;
    for (int i = 0; i < argc; ++i) ba.command_line += (i ? " " : "") + std::string(argv[i]);
    if (quick) {  // quick defaults for whatever was not given
      if (!bb->count()) ba.batches = {1};
      if (!brep->count()) ba.repeats = 1;
      if (!bwarm->count()) ba.warmup = 0;
      if (!bsteps->count()) ba.steps = 2;
      ba.quick = true;
      ba.size_given = bh->count() || bw->count();
    }
    if (ba.repeats < 1 || ba.warmup < 0 || ba.batches.empty()) {
      std::fprintf(stderr, "sdrt: error: --repeats must be at least 1, --warmup at least 0, and --batch non-empty\n");
      return 1;
    }
    return sdrt::app::cmd_bench(ba);
  }
  return 2;
}
