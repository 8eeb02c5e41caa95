#include "pipeline/pipeline.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <random>
#include <sstream>

#include "pipeline/rng.h"
#include "runtime/engine_cache.h"

namespace sdrt {
namespace {

using clk = std::chrono::steady_clock;
double since(clk::time_point t) { return std::chrono::duration<double>(clk::now() - t).count(); }

// Python-style float text: 7 -> "7.0", 7.5 -> "7.5"
std::string pyfloat(double v) {
  std::ostringstream s;
  s.precision(15);
  s << v;
  std::string r = s.str();
  if (r.find_first_of(".eE") == std::string::npos && r.find("inf") == std::string::npos && r.find("nan") == std::string::npos) r += ".0";
  return r;
}

// Bilinear resize of an RGB8 image (init images of another size).
Image resize(const Image& in, int w, int h) {
  if (in.width == w && in.height == h) return in;
  Image out{w, h, std::vector<uint8_t>((size_t)w * h * 3)};
  for (int y = 0; y < h; ++y) {
    const float sy = std::max(0.f, (y + 0.5f) * in.height / h - 0.5f);
    const int y0 = std::min((int)sy, in.height - 1), y1 = std::min(y0 + 1, in.height - 1);
    const float fy = sy - y0;
    for (int x = 0; x < w; ++x) {
      const float sx = std::max(0.f, (x + 0.5f) * in.width / w - 0.5f);
      const int x0 = std::min((int)sx, in.width - 1), x1 = std::min(x0 + 1, in.width - 1);
      const float fx = sx - x0;
      for (int c = 0; c < 3; ++c) {
        auto px = [&](int yy, int xx) { return (float)in.rgb[((size_t)yy * in.width + xx) * 3 + c]; };
        const float v = (px(y0, x0) * (1 - fx) + px(y0, x1) * fx) * (1 - fy) + (px(y1, x0) * (1 - fx) + px(y1, x1) * fx) * fy;
        out.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)std::lround(std::clamp(v, 0.f, 255.f));
      }
    }
  }
  return out;
}

// Final latents x [B, C4, h, w] (before 1/scaling_factor) to 8-bit images through the VAE decoder `dec`, in
// slices of S images; the seconds it took in *secs.
Result<std::vector<Image>> decode_images(Executable& dec, const Tensor& x, int64_t S, float scaling_factor, double* secs) {
  const auto t0 = clk::now();
  const int64_t B = x.dim(0), C4 = x.dim(1), h = x.dim(2), w = x.dim(3), per = C4 * h * w;
  const int W = (int)w * 8, H = (int)h * 8;
  const int64_t HW = (int64_t)W * H;
  // SDRT_TRACE_TIMES=1: each slice's run and the conversion to 8 bits on stderr
  static const bool trace = std::getenv("SDRT_TRACE_TIMES") != nullptr;
  std::string line = "decode:";
  std::vector<Tensor> decoded;
  for (int64_t s0 = 0; s0 < B; s0 += S) {
    const auto ts = clk::now();
    Tensor z = Tensor::empty(DType::F32, {S, C4, h, w});
    for (int64_t k = 0; k < S * per; ++k) z.f32()[k] = x.f32()[s0 * per + k] / scaling_factor;
    SDRT_ASSIGN_OR_RETURN(auto img, dec.run({{"latent", z}}));
    decoded.push_back(std::move(img[0]));
    if (trace) {
      char b[32];
      std::snprintf(b, sizeof b, " %.3f", 1e3 * since(ts));
      line += b;
    }
  }
  const auto tc = clk::now();
  // one image a thread (a 512x512 image is about 0.5 ms on one core)
  std::vector<Image> images((size_t)B);
#pragma omp parallel for schedule(static) if (B > 1)
  for (int64_t i = 0; i < B; ++i) images[(size_t)i] = image_from_planes(decoded[i / S].f32() + (i % S) * 3 * HW, W, H);
  *secs = since(t0);
  if (trace) std::fprintf(stderr, "%s ms; to 8 bits %.3f ms\n", line.c_str(), 1e3 * since(tc));
  return images;
}

}  // namespace

std::string text_encoder_key(int clip_skip) { return "clip/" + std::to_string(clip_skip); }
std::string unet_key(int64_t B, int64_t h, int64_t w, int64_t L) {
  return "unet/" + std::to_string(B) + "x" + std::to_string(h) + "x" + std::to_string(w) + "/" + std::to_string(L);
}
std::string guided_unet_key(int64_t images, int64_t h, int64_t w, int64_t L) { return unet_key(2 * images, h, w, L) + "/cfg"; }
int64_t vae_slice(int64_t batch) {
  for (int64_t s = std::min<int64_t>(batch, 8); s > 1; --s)
    if (batch % s == 0) return s;
  return 1;
}
std::string vae_decoder_key(int64_t B, int64_t h, int64_t w) { return "vae_dec/" + std::to_string(B) + "x" + std::to_string(h) + "x" + std::to_string(w); }
std::string vae_encoder_key(int64_t H, int64_t W) { return "vae_enc/" + std::to_string(W) + "x" + std::to_string(H); }

Result<std::unique_ptr<Pipeline>> Pipeline::create(Model model, const PipelineOptions& opts, std::unique_ptr<Backend> backend) {
  auto p = std::unique_ptr<Pipeline>(new Pipeline());
  p->model_ = std::move(model);
  p->opts_ = opts;
  if (const char* e = std::getenv("SDRT_SHARE_PREFIX"); e && std::string(e) == "0") p->opts_.share_guidance_prefix = false;  // A/B measurements
  p->backend_ = std::move(backend);
  if (opts.tokenizer_dir.empty()) {
    p->tok_ = ClipTokenizer::byte_level();
  } else {
    auto tok = ClipTokenizer::load(opts.tokenizer_dir);
    if (!tok) return tok.status();
    p->tok_ = std::move(tok).value();
  }
  SDRT_ASSIGN_OR_RETURN(p->sched_, load_beta_schedule(opts.scheduler_config));
  return p;
}

Status Pipeline::validate(const GenerateRequest& r) const {
  if (r.steps < 1 || r.steps > kMaxSteps) return invalid_argument("steps must be between 1 and " + std::to_string(kMaxSteps) + ", got " + std::to_string(r.steps));
  for (auto [name, v] : {std::pair{"width", r.width}, std::pair{"height", r.height}}) {
    if (v < 64 || v > kMaxSide || v % 8)
      return invalid_argument(std::string(name) + " must be a multiple of 8 between 64 and " + std::to_string(kMaxSide) + ", got " + std::to_string(v));
  }
  if (!std::isfinite(r.cfg_scale) || std::fabs(r.cfg_scale) > 100) return invalid_argument("CFG scale must be a finite number within [-100, 100]");
  if (r.batch_size < 1 || r.batch_size > kMaxBatch) return invalid_argument("batch size must be between 1 and " + std::to_string(kMaxBatch));
  if (r.batch_count < 1 || r.batch_count > kMaxBatchCount) return invalid_argument("batch count must be between 1 and " + std::to_string(kMaxBatchCount));
  if ((int64_t)r.width * r.height * r.batch_size > (int64_t)2048 * 2048 * 16) return invalid_argument("batch size x image size is too large for one batch");
  if (r.prompt.size() > kMaxPromptBytes || r.negative_prompt.size() > kMaxPromptBytes)
    return invalid_argument("prompt is longer than " + std::to_string(kMaxPromptBytes) + " bytes");
  if (r.clip_skip < 1 || r.clip_skip > model_.clip.layers) return invalid_argument("clip skip must be between 1 and " + std::to_string(model_.clip.layers));
  if (r.seed < -1) return invalid_argument("seed must be -1 (random) or a non-negative integer");
  for (auto [what, n] : {std::pair{"prompts", r.prompts.size()}, std::pair{"negative prompts", r.negative_prompts.size()}, std::pair{"seeds", r.seeds.size()}})
    if (n && (n != (size_t)r.batch_size || r.batch_count != 1))
      return invalid_argument(std::string("per-image ") + what + " need one entry per image of a single batch");
  for (const auto* v : {&r.prompts, &r.negative_prompts})
    for (const auto& p : *v)
      if (p.size() > kMaxPromptBytes) return invalid_argument("prompt is longer than " + std::to_string(kMaxPromptBytes) + " bytes");
  for (int64_t sd : r.seeds)
    if (sd < 0) return invalid_argument("per-image seeds must be non-negative");
  if (r.rng != "cpu" && r.rng != "cuda" && r.rng != "gpu") return invalid_argument("rng must be cpu or cuda, got '" + r.rng + "'");
  if (r.init_tensor && (r.init_tensor->shape() != Shape{1, 3, r.height, r.width} || r.init_tensor->dtype() != DType::F32))
    return invalid_argument("init image tensor must be F32 [1, 3, height, width]");
  if ((r.init_image || r.init_tensor) && !(r.strength > 0 && r.strength <= 1)) return invalid_argument("denoising strength must be in (0, 1]");
  auto s = parse_sampler(r.sampler, r.schedule_type);
  if (!s) return s.status();
  return Status::ok();
}

Result<Executable*> Pipeline::executable(const std::string& key, const std::function<Result<std::shared_ptr<Graph>>()>& build) {
  auto it = exes_.find(key);
  if (it != exes_.end()) return it->second.get();
  std::unique_ptr<Executable> exe;
  if (opts_.plan) {
    SDRT_ASSIGN_OR_RETURN(exe, from_plan(*opts_.plan, key, "the plan"));
  } else if (!opts_.engine_cache_dir.empty() && backend_->name() == "cuda") {
    SDRT_ASSIGN_OR_RETURN(exe, cached_or_built(key, build));
  } else {
    SDRT_ASSIGN_OR_RETURN(auto g, build());
    flops_[key] = g->flops();
    SDRT_ASSIGN_OR_RETURN(exe, backend_->compile(g));
  }
  auto* raw = exe.get();
  exes_[key] = std::move(exe);
  return raw;
}

Result<std::unique_ptr<Executable>> Pipeline::from_plan(const Plan& plan, const std::string& key, const std::string& where) {
  if (plan.precision != backend_->precision())
    return invalid_argument(where + " is " + plan.precision + ", the backend runs " + backend_->precision());
  SDRT_RETURN_IF_ERROR(check_plan_target(plan, backend_target(*backend_)));
  if (!opts_.model_id.empty() && !plan.model_id.empty() && plan.model_id != opts_.model_id)
    return invalid_argument(where + " was built from another model (" + plan.model_spec + ") or the model's files changed since; rebuild it");
  const PlanEntry* e = plan.find(key);
  if (!e) {
    std::string have;
    for (const auto& k : plan.keys()) have += (have.empty() ? "" : ", ") + k;
    // a UNet of one pass (no "/cfg"): for a guidance scale of 1 or less, which `sdrt build --guidance none` makes
    const bool one_pass = key.rfind("unet/", 0) == 0 && !key.ends_with("/cfg");
    return not_found(where + " has no engine for " + key + " (it holds " + have + "); build one with `sdrt build` for this batch size and image size" +
                     (one_pass ? " (a guidance scale of 1 or less needs `--guidance none`)" : ""));
  }
  SDRT_RETURN_IF_ERROR(backend_->add_tactics(plan.tactics).with_context(where));
  flops_[key] = e->graph->flops();
  return backend_->compile(e->graph);
}

Result<std::unique_ptr<Executable>> Pipeline::cached_or_built(const std::string& key, const std::function<Result<std::shared_ptr<Graph>>()>& build) {
  namespace fs = std::filesystem;
  const std::string path = engine_cache_path(opts_.engine_cache_dir, *backend_, opts_.model_id, key);
  std::error_code ec;
  if (fs::exists(path, ec)) {
    auto plan = read_plan(path);
    if (plan) {
      auto exe = from_plan(*plan, key, "cached engine " + path);
      if (exe) return exe;
      plan = exe.status();
    }
    std::fprintf(stderr, "sdrt: note: rebuilding the %s engine: %s\n", key.c_str(), plan.status().message().c_str());
  }
  auto t0 = clk::now();
  SDRT_ASSIGN_OR_RETURN(auto g0, build());
  std::shared_ptr<const Graph> g = backend_->optimize(g0);
  g0.reset();
  flops_[key] = g->flops();
  SDRT_ASSIGN_OR_RETURN(auto exe, backend_->compile(g));
  Plan plan;
  plan.target = backend_target(*backend_);
  plan.precision = backend_->precision();
  plan.model_spec = model_.spec;
  plan.model_id = opts_.model_id;
  plan.created = utc_now();
  plan.shapes = key;
  plan.tactics = backend_->tactics(g.get());
  plan.entries.push_back({key, std::const_pointer_cast<Graph>(g)});
  fs::create_directories(opts_.engine_cache_dir, ec);
  if (Status s = write_plan(plan, path); !s) std::fprintf(stderr, "sdrt: note: the engine cache is not written: %s\n", s.message().c_str());
  else std::fprintf(stderr, "sdrt: built the %s engine in %.1f s; cached as %s\n", key.c_str(), since(t0), path.c_str());
  return exe;
}

size_t Pipeline::prompt_chunks(const std::string& prompt) const { return tokenize_prompt(tok_, prompt).ids.size(); }

Result<Tensor> Pipeline::encode_prompt(const std::string& prompt, int clip_skip) {
  PromptChunks chunks = tokenize_prompt(tok_, prompt);
  if (chunks.ids.size() > 32) return invalid_argument("prompt is longer than 32 chunks of 75 tokens");
  SDRT_ASSIGN_OR_RETURN(Executable * te, executable(text_encoder_key(clip_skip), [&] { return build_text_encoder(model_, 1, clip_skip); }));
  const int64_t C = model_.clip.hidden, L = 77;
  Tensor out = Tensor::empty(DType::F32, {1, L * (int64_t)chunks.ids.size(), C});
  const bool weighted = chunks.weighted();
  for (size_t k = 0; k < chunks.ids.size(); ++k) {
    Tensor ids = Tensor::empty(DType::I32, {1, L});
    std::memcpy(ids.mutable_data(), chunks.ids[k].data(), L * 4);
    SDRT_ASSIGN_OR_RETURN(auto z, te->run({{"input_ids", ids}}));
    float* dst = out.f32() + k * L * C;
    std::memcpy(dst, z[0].f32(), L * C * 4);
    if (weighted) {  // the WebUI's "Original" emphasis: scale tokens, then restore the chunk's mean
      double before = 0, after = 0;
      for (int64_t i = 0; i < L * C; ++i) before += dst[i];
      for (int64_t t = 0; t < L; ++t)
        for (int64_t c = 0; c < C; ++c) dst[t * C + c] *= chunks.multipliers[k][t];
      for (int64_t i = 0; i < L * C; ++i) after += dst[i];
      const float f = (float)(before / after);
      for (int64_t i = 0; i < L * C; ++i) dst[i] *= f;
    }
  }
  return out;
}

Result<Tensor> Pipeline::run_unet(Executable& ex, const std::string& key, const Tensor& x, float t, const Tensor& ctx) {
  const int64_t rows = x.dim(0);  // the sample's and timestep's rows
  unet_flops_ += flops_[key];
  SDRT_ASSIGN_OR_RETURN(auto out, ex.run({{"sample", x}, {"timestep", Tensor::from_f32({rows}, std::vector<float>(rows, t))}, {"encoder_hidden_states", ctx}}));
  return out[0];
}

Result<Tensor> Pipeline::unet(const Tensor& x, float t, const Tensor& ctx) {
  const int64_t B = x.dim(0), h = x.dim(2), w = x.dim(3), L = ctx.dim(1);
  const std::string key = unet_key(B, h, w, L);
  SDRT_ASSIGN_OR_RETURN(Executable * ex, executable(key, [&] { return build_unet(model_, B, h, w, L); }));
  return run_unet(*ex, key, x, t, ctx);
}

Result<Executable*> Pipeline::guidance_unet(int64_t B, int64_t h, int64_t w, int64_t L, bool* shared, std::string* key) {
  const std::string whole = unet_key(2 * B, h, w, L), half = guided_unet_key(B, h, w, L);
  *shared = opts_.share_guidance_prefix && !(opts_.plan && !opts_.plan->find(half) && opts_.plan->find(whole));
  *key = *shared ? half : whole;
  if (*shared) return executable(half, [&] { return build_guided_unet(model_, B, h, w, L); });
  return executable(whole, [&] { return build_unet(model_, 2 * B, h, w, L); });
}

Result<Tensor> Pipeline::guided_unet(const Tensor& x, float t, const Tensor& ctx) {
  const int64_t B = x.dim(0), h = x.dim(2), w = x.dim(3), L = ctx.dim(1);
  bool shared = false;
  std::string key;
  SDRT_ASSIGN_OR_RETURN(Executable * ex, guidance_unet(B, h, w, L, &shared, &key));
  if (shared) return run_unet(*ex, key, x, t, ctx);
  Tensor both = Tensor::empty(DType::F32, {2 * B, x.dim(1), h, w});  // the whole batch: both halves' latents
  std::memcpy(both.f32(), x.f32(), x.numel() * 4);
  std::memcpy(both.f32() + x.numel(), x.f32(), x.numel() * 4);
  return run_unet(*ex, key, both, t, ctx);
}

// diffusers img2img: the latent distribution's sample (mean + std * randn from the image's generator).
Result<Tensor> Pipeline::vae_encode_sample(const Tensor& x, Generator& g) {
  const int64_t H = x.dim(2), W = x.dim(3);
  SDRT_ASSIGN_OR_RETURN(Executable * enc, executable(vae_encoder_key(H, W), [&] { return build_vae_encoder(model_, 1, H, W); }));
  SDRT_ASSIGN_OR_RETURN(auto mom, enc->run({{"image", x}}));
  const int64_t n = mom[0].numel() / 2;
  auto noise = g.randn(n);
  Tensor z = Tensor::empty(DType::F32, {1, model_.vae.latent_channels, H / 8, W / 8});
  for (int64_t i = 0; i < n; ++i) {
    const float logvar = std::clamp(mom[0].f32()[n + i], -30.f, 20.f);
    z.f32()[i] = (mom[0].f32()[i] + std::exp(0.5f * logvar) * noise[i]) * model_.vae.scaling_factor;
  }
  return z;
}

Status Pipeline::sample_on_device(Executable& unet, const std::string& key, Scheduler& sched, size_t start, const GenerateRequest& r, bool cfg, bool shared, const Tensor& ctx,
                                  std::vector<std::unique_ptr<Generator>>& gens, Tensor& x, const ProgressFn& progress, int& done, int total,
                                  StageTimes& times) {
  DeviceLoop& L = *unet.device_loop();
  // SDRT_TRACE_TIMES=1: where the loop's time goes besides its steps (host wall times; the device is waited
  // for before the loop and after its first step, so a traced loop runs a little differently)
  static const bool trace = std::getenv("SDRT_TRACE_TIMES") != nullptr;
  const auto tr0 = clk::now();
  // The loop's vectors live for this call: freed on the way out (an error included), so a long-running
  // server does not accumulate one set per request.
  struct Release {
    DeviceLoop& l;
    ~Release() { (void)l.release_scratch(); }
  } release{L};
  const auto& ts = sched.timesteps();
  // Bu: the UNet's sample and timestep rows (one half of a guidance batch when its halves share them)
  const int64_t B = x.dim(0), n = x.numel(), per = n / B, Bu = cfg && !shared ? 2 * B : B, steps = (int64_t)(ts.size() - start);
  // Everything the loop reads is uploaded first: latents, conditioning, timesteps, noise.
  SDRT_ASSIGN_OR_RETURN(float* X, L.alloc(n));
  SDRT_ASSIGN_OR_RETURN(float* E, L.alloc(n));
  SDRT_ASSIGN_OR_RETURN(float* T, L.alloc(steps * Bu));
  std::vector<float*> slots;
  for (int s = 0; s < sched.slots(); ++s) {
    SDRT_ASSIGN_OR_RETURN(float* p, L.alloc(n));
    slots.push_back(p);
  }
  float* N = nullptr;
  if (sched.needs_noise()) {  // per step, per image, from each image's generator (the host loop's order)
    // [steps, B, per]; each image's generator draws its steps in order, the images side by side (one a thread)
    std::vector<float> noise((size_t)(steps * n));
#pragma omp parallel for schedule(static) if (B > 1)
    for (int64_t i = 0; i < B; ++i)
      for (int64_t j = 0; j < steps; ++j) {
        auto ni = gens[i]->randn(per);
        std::copy(ni.begin(), ni.end(), noise.begin() + (j * B + i) * per);
      }
    SDRT_ASSIGN_OR_RETURN(N, L.alloc(steps * n));
    SDRT_RETURN_IF_ERROR(L.upload(N, noise.data(), steps * n));
  }
  std::vector<float> tv;
  for (int64_t j = 0; j < steps; ++j) tv.insert(tv.end(), Bu, ts[start + j]);
  SDRT_ASSIGN_OR_RETURN(float* in, L.input("sample"));
  SDRT_ASSIGN_OR_RETURN(float* ctx_in, L.input("encoder_hidden_states"));
  SDRT_RETURN_IF_ERROR(L.hold_input("encoder_hidden_states"));  // the same for every step
  SDRT_ASSIGN_OR_RETURN(float* out, L.output(0));
  SDRT_RETURN_IF_ERROR(L.upload(T, tv.data(), steps * Bu));
  const double setup_ms = trace ? 1e3 * since(tr0) : 0.0;
  const auto tr1 = clk::now();
  // every step's timestep at once: the time embedding and its projections for all of them, before the loop
  SDRT_RETURN_IF_ERROR(L.stage_input("timestep", T, steps));
  const double stage_host_ms = trace ? 1e3 * since(tr1) : 0.0;
  SDRT_RETURN_IF_ERROR(L.upload(X, x.f32(), n));
  SDRT_RETURN_IF_ERROR(L.upload(ctx_in, ctx.f32(), ctx.numel()));
  double stage_ms = 0.0, first_launch_ms = 0.0, first_step_ms = 0.0;
  if (trace) {  // the staged prelude and the uploads finished on the device
    SDRT_RETURN_IF_ERROR(L.mark(0));
    SDRT_RETURN_IF_ERROR(L.wait(0));
    stage_ms = 1e3 * since(tr1);
  }
  float* P = nullptr;  // the first image's latents at preview steps
  std::vector<float> preview_host;
  if (preview_) {
    SDRT_ASSIGN_OR_RETURN(P, L.alloc(per));
    preview_host.resize(per);
  }
  auto preview_step = [&](int64_t j) { return (j + 1) % preview_every_ == 0; };

  auto t0 = clk::now();
  const float g = (float)r.cfg_scale;
  // The UNet's input for evaluation j: the latents scaled (both halves where they do not share it) - as
  // further outputs of the kernel that updates the latents, or on its own.
  auto inputs_of = [&](int64_t j) {
    const float s = sched.input_scale(start + (size_t)j);
    std::vector<std::pair<float*, float>> v{{in, s}};
    if (Bu > B) v.push_back({in + n, s});
    return v;
  };
  auto write_input = [&](int64_t j) {
    std::vector<std::pair<float*, float>> half;
    if (Bu > B) half.push_back({in + n, 1.f});
    return L.combine(in, n, {{X, sched.input_scale(start + (size_t)j)}}, half);
  };
  SDRT_RETURN_IF_ERROR(write_input(0));
  for (int64_t j = 0; j < steps; ++j) {
    const size_t i = start + (size_t)j;
    SDRT_RETURN_IF_ERROR(L.select_staged(j));
    SDRT_RETURN_IF_ERROR(L.run());
    if (trace && j == 0) first_launch_ms = 1e3 * since(t0);  // the held inputs' work enqueued with the first graph
    auto vec = [&](int id) -> float* {
      if (id == kX) return X;
      if (id == kEps) return E;
      if (id == kNoise) return N + j * n;
      return slots[id - kSlot0];
    };
    // The step's ops with the guided prediction folded in where it is read (uncond + g (cond - uncond), or
    // the output itself without guidance): no vector of its own, one kernel fewer. Where an op would then
    // take too many terms, E holds it first.
    std::vector<LinOp> ops = sched.program(i);
    bool fold = true;
    for (const LinOp& op : ops) {
      size_t t = op.terms.size();
      for (const auto& term : op.terms) t += cfg && term.src == kEps;
      fold = fold && op.dst != kEps && t <= 8;
    }
    if (!fold) SDRT_RETURN_IF_ERROR(cfg ? L.combine(E, n, {{out, 1.f - g}, {out + n, g}}) : L.copy(E, out, n));
    bool next_in = j + 1 == steps;  // the next evaluation's input written
    for (size_t k = 0; k < ops.size(); ++k) {
      const LinOp& op = ops[k];
      std::vector<std::pair<const float*, float>> terms;
      for (const auto& t : op.terms) {
        if (t.src != kEps || !fold) terms.push_back({vec(t.src), t.coef});
        else if (cfg) terms.push_back({out, (1.f - g) * t.coef}), terms.push_back({out + n, g * t.coef});
        else terms.push_back({out, t.coef});
      }
      if (k + 1 == ops.size() && op.dst == kX && !next_in) {  // the latents' update writes the next input too
        SDRT_RETURN_IF_ERROR(L.combine(X, n, terms, inputs_of(j + 1)));
        next_in = true;
      } else {
        SDRT_RETURN_IF_ERROR(L.combine(vec(op.dst), n, terms));
      }
    }
    if (!next_in) SDRT_RETURN_IF_ERROR(write_input(j + 1));
    if (P && preview_step(j)) SDRT_RETURN_IF_ERROR(L.copy(P, X, per));
    SDRT_RETURN_IF_ERROR(L.mark(j));
    if (trace && j == 0) {
      SDRT_RETURN_IF_ERROR(L.wait(0));
      first_step_ms = 1e3 * since(t0);
    }
    unet_flops_ += flops_[key];
    if ((progress || P) && j > 0) {  // report the step before this one, which the device is past or nearly
      SDRT_RETURN_IF_ERROR(L.wait(j - 1));
      if (P && preview_step(j - 1)) {
        SDRT_RETURN_IF_ERROR(L.download(preview_host.data(), P, per));
        preview_(preview_host.data(), x.dim(1), x.dim(2), x.dim(3));
      }
      if (progress && !progress(++done, total)) return Status(Code::OutOfRange, "interrupted");
    }
  }
  SDRT_RETURN_IF_ERROR(L.download(x.f32(), X, n));
  const double loop_s = since(t0);
  if (trace)
    std::fprintf(stderr,
                 "sample: setup %.3f ms, staging %.3f ms (host %.3f), first step %.3f ms (host launch %.3f), "
                 "steps 2..%lld %.4f ms each, loop %.3f ms\n",
                 setup_ms, stage_ms, stage_host_ms, first_step_ms, first_launch_ms, (long long)steps,
                 steps > 1 ? (loop_s * 1e3 - first_step_ms) / (double)(steps - 1) : 0.0, loop_s * 1e3);
  done += progress ? 1 : (int)steps;
  if (progress && !progress(done, total)) return Status(Code::OutOfRange, "interrupted");
  // per-step times are the loop's mean: the host does not wait for each step
  times.unet_s += loop_s;
  times.unet_evals += (int)steps;
  for (int64_t j = 0; j < steps; ++j) times.unet_step_s.push_back(loop_s / steps);
  return Status::ok();
}

std::string Pipeline::infotext(const GenerateRequest& r, int64_t seed) const {
  auto kind = parse_sampler(r.sampler, r.schedule_type);
  std::string s = r.prompt;
  if (!r.negative_prompt.empty()) s += "\nNegative prompt: " + r.negative_prompt;
  s += "\nSteps: " + std::to_string(r.steps) + ", Sampler: " + (kind ? sampler_webui_name(*kind) : r.sampler);
  s += ", CFG scale: " + pyfloat(r.cfg_scale) + ", Seed: " + std::to_string(seed) + ", Size: " + std::to_string(r.width) + "x" + std::to_string(r.height);
  if (!opts_.model_hash.empty()) s += ", Model hash: " + opts_.model_hash;
  if (!opts_.model_name.empty()) s += ", Model: " + opts_.model_name;
  if (r.init_image || r.init_tensor) s += ", Denoising strength: " + pyfloat(r.strength);
  if (r.clip_skip > 1) s += ", Clip skip: " + std::to_string(r.clip_skip);
  if (r.rng == "cpu") s += ", RNG: CPU";
  s += ", Version: sdrt " SDRT_VERSION;
  return s;
}

Result<GenerateResult> Pipeline::generate(GenerateRequest r, const ProgressFn& progress, const BatchFn& on_batch) {
  // SDRT_TRACE_TIMES=1: wall time between points of the call on stderr (where an image's time goes
  // besides the stage times the benchmark reports)
  static const bool trace = std::getenv("SDRT_TRACE_TIMES") != nullptr;
  std::vector<std::pair<const char*, clk::time_point>> marks;
  auto mark = [&](const char* what) {
    if (trace) marks.push_back({what, clk::now()});
  };
  struct Print {
    const std::vector<std::pair<const char*, clk::time_point>>& m;
    ~Print() {
      std::string line = "generate:";
      for (size_t i = 1; i < m.size(); ++i)
        line += std::string(" ") + m[i].first + " " + std::to_string(std::chrono::duration<double, std::milli>(m[i].second - m[i - 1].second).count()) + " ms";
      if (m.size() > 1) std::fprintf(stderr, "%s\n", line.c_str());
    }
  } print{marks};
  mark("start");
  SDRT_RETURN_IF_ERROR(validate(r));
  mark("validate");
  GenerateResult res;
  unet_flops_ = 0;
  if (r.seed == -1) r.seed = std::random_device{}() & 0xffffffffu;
  SDRT_ASSIGN_OR_RETURN(SamplerKind kind, parse_sampler(r.sampler, r.schedule_type));
  const int64_t C4 = model_.vae.latent_channels, h = r.height / 8, w = r.width / 8, per = C4 * h * w;
  const bool cfg = r.cfg_scale > 1.0;  // diffusers skips the unconditional pass at guidance <= 1

  auto t0 = clk::now();
  const int B = r.batch_size;
  // Conditioning per image (one encoding per distinct prompt): [B, L, C] each, all images the same L.
  std::map<std::string, Tensor> encoded;
  auto stack = [&](const std::vector<std::string>& per, const std::string& one, const char* what) -> Result<Tensor> {
    std::vector<const Tensor*> e(B);
    for (int i = 0; i < B; ++i) {
      const std::string& p = per.empty() ? one : per[i];
      auto it = encoded.find(p);
      if (it == encoded.end()) {
        SDRT_ASSIGN_OR_RETURN(Tensor t, encode_prompt(p, r.clip_skip));
        it = encoded.emplace(p, std::move(t)).first;
      }
      e[i] = &it->second;
      if (e[i]->dim(1) != e[0]->dim(1))
        return invalid_argument(std::string(what) + "s of one batch must have the same number of 75-token chunks");
    }
    Tensor t = Tensor::empty(DType::F32, {B, e[0]->dim(1), e[0]->dim(2)});
    for (int i = 0; i < B; ++i) std::memcpy(t.f32() + i * e[0]->numel(), e[i]->f32(), e[0]->numel() * 4);
    return t;
  };
  SDRT_ASSIGN_OR_RETURN(Tensor ctx_c, stack(r.prompts, r.prompt, "prompt"));
  Tensor ctx_u;
  if (cfg) {
    SDRT_ASSIGN_OR_RETURN(ctx_u, stack(r.negative_prompts, r.negative_prompt, "negative prompt"));
  }
  res.times.text_s = since(t0);
  mark("text");

  const int evals_per_batch = (int)make_scheduler(kind, sched_, r.steps)->timesteps().size();
  if (r.init_image && !r.init_tensor) {  // 8-bit RGB -> [-1, 1] at the requested size
    Image img = resize(*r.init_image, r.width, r.height);
    Tensor t = Tensor::empty(DType::F32, {1, 3, r.height, r.width});
    const int64_t HW = (int64_t)r.width * r.height;
    for (int c = 0; c < 3; ++c)
      for (int64_t p = 0; p < HW; ++p) t.f32()[c * HW + p] = img.rgb[p * 3 + c] / 255.f * 2.f - 1.f;
    r.init_tensor = t;
  }
  int start = 0;
  if (r.init_tensor) {  // diffusers get_timesteps: skip the first (1 - strength) of the schedule
    const int init_t = std::min((int)(r.steps * r.strength), r.steps);
    start = std::max(r.steps - init_t, 0);
  }
  const int total = r.batch_count * (evals_per_batch - start);
  int done = 0;

  // The conditioning batch: [uncond x B, cond x B] when both have the same length, as diffusers does.
  const bool joint = cfg && ctx_u.dim(1) == ctx_c.dim(1);
  Tensor ctx_joint;
  if (joint) {
    ctx_joint = Tensor::empty(DType::F32, {2 * B, ctx_c.dim(1), ctx_c.dim(2)});
    std::memcpy(ctx_joint.f32(), ctx_u.f32(), ctx_u.numel() * 4);
    std::memcpy(ctx_joint.f32() + ctx_u.numel(), ctx_c.f32(), ctx_c.numel() * 4);
  }

  // A batch's seeds and infotexts (known before its decode).
  auto batch_text = [&](int bc, std::vector<int64_t>* seeds, std::vector<std::string>* infos) {
    for (int i = 0; i < B; ++i) {
      const int64_t seed = res.seeds[bc * B + i];
      seeds->push_back(seed);
      if (r.prompts.empty() && r.negative_prompts.empty()) {
        infos->push_back(infotext(r, seed));
      } else {
        GenerateRequest ri = r;
        if (!r.prompts.empty()) ri.prompt = r.prompts[i];
        if (!r.negative_prompts.empty()) ri.negative_prompt = r.negative_prompts[i];
        infos->push_back(infotext(ri, seed));
      }
    }
  };
  // A batch's decode, then on_batch: on the calling thread, or (overlap_decode) on a thread of its own.
  auto decode_task = [&on_batch, sf = model_.vae.scaling_factor](Executable* dec, Tensor x, int64_t S, std::vector<int64_t> seeds,
                                                                   std::vector<std::string> infos, double* secs) -> Result<std::vector<Image>> {
    SDRT_ASSIGN_OR_RETURN(auto images, decode_images(*dec, x, S, sf, secs));
    if (on_batch) SDRT_RETURN_IF_ERROR(on_batch(images, seeds, infos));
    return images;
  };
  // Each batch's images, latents and infotexts, in batch order.
  auto add_batch = [&](const Tensor& x, std::vector<Image> images, std::vector<std::string> infos) {
    for (int i = 0; i < B; ++i) {
      res.images.push_back(std::move(images[i]));
      Tensor lat = Tensor::empty(DType::F32, {1, C4, h, w});
      std::memcpy(lat.f32(), x.f32() + i * per, per * 4);
      res.latents.push_back(lat);
      res.infotexts.push_back(std::move(infos[i]));
    }
  };
  // overlap_decode: the batch being decoded beside the sampling (a future from std::async waits for its
  // thread when destroyed, so an early return - an error, an interruption - leaves no decode running).
  bool overlap = false;
  double pending_s = 0;
  Tensor pending_x;
  std::vector<std::string> pending_infos;
  std::future<Result<std::vector<Image>>> pending;  // last: destroyed (waited for) before what its thread writes
  auto collect = [&]() -> Status {
    if (!pending.valid()) return Status::ok();
    Result<std::vector<Image>> images = pending.get();
    SDRT_RETURN_IF_ERROR(images.status());
    res.times.vae_s += pending_s;
    mark("vae");
    add_batch(pending_x, std::move(images).value(), std::move(pending_infos));
    return Status::ok();
  };

  for (int bc = 0; bc < r.batch_count; ++bc) {
    auto sched = make_scheduler(kind, sched_, r.steps);
    std::vector<std::unique_ptr<Generator>> gens;
    Tensor x = Tensor::empty(DType::F32, {B, C4, h, w});
    for (int i = 0; i < B; ++i) {
      const int64_t seed = r.seeds.empty() ? r.seed + (int64_t)bc * B + i : r.seeds[i];
      res.seeds.push_back(seed);
      gens.push_back(make_generator(r.rng == "gpu" ? "cuda" : r.rng, (uint64_t)seed));
    }
    if (r.init_tensor) {
      for (int i = 0; i < B; ++i) {
        auto tv = clk::now();
        SDRT_ASSIGN_OR_RETURN(Tensor x0, vae_encode_sample(*r.init_tensor, *gens[i]));
        res.times.vae_s += since(tv);
        auto noise = gens[i]->randn(per);
        sched->add_noise(start, x0.f32(), noise.data(), x.f32() + i * per, per);
      }
    } else {  // each image's noise from its own generator: one image a thread (Philox on the host, ~0.7 ms an image)
      const float s = sched->init_noise_sigma();
#pragma omp parallel for schedule(static) if (B > 1)
      for (int i = 0; i < B; ++i) {
        auto noise = gens[i]->randn(per);
        float* xi = x.f32() + i * per;
        for (int64_t k = 0; k < per; ++k) xi[k] = noise[k] * s;
      }
    }
    const auto& ts = sched->timesteps();
    // On the device when the backend keeps work there and the guidance is one batch (or none); noise
    // for ancestral samplers is drawn up front, so it must fit.
    const int64_t noise_floats = sched->needs_noise() ? (int64_t)(ts.size() - start) * B * per : 0;
    Executable* on_device = nullptr;
    bool shared = false;
    std::string key;
    if (opts_.device_loop && (joint || !cfg) && noise_floats <= (int64_t(1) << 26)) {
      Executable* ex = nullptr;
      if (joint) {
        SDRT_ASSIGN_OR_RETURN(ex, guidance_unet(B, h, w, ctx_joint.dim(1), &shared, &key));
      } else {
        key = unet_key(B, h, w, ctx_c.dim(1));
        SDRT_ASSIGN_OR_RETURN(ex, executable(key, [&] { return build_unet(model_, B, h, w, ctx_c.dim(1)); }));
      }
      if (ex->device_loop()) on_device = ex;
    }
    mark("setup");
    if (on_device) {
      SDRT_RETURN_IF_ERROR(
          sample_on_device(*on_device, key, *sched, start, r, joint, shared, joint ? ctx_joint : ctx_c, gens, x, progress, done, total, res.times));
    }
    for (size_t j = on_device ? ts.size() : start; j < ts.size(); ++j) {
      auto tu = clk::now();
      const float scale = sched->input_scale(j);
      Tensor eps;
      if (joint) {
        Tensor xin = Tensor::empty(DType::F32, {B, C4, h, w});
        for (int64_t k = 0; k < B * per; ++k) xin.f32()[k] = x.f32()[k] * scale;
        SDRT_ASSIGN_OR_RETURN(Tensor o, guided_unet(xin, ts[j], ctx_joint));
        eps = Tensor::empty(DType::F32, {B, C4, h, w});
        const float g = (float)r.cfg_scale;
        for (int64_t k = 0; k < B * per; ++k) eps.f32()[k] = o.f32()[k] + g * (o.f32()[B * per + k] - o.f32()[k]);
      } else {
        Tensor xin = Tensor::empty(DType::F32, {B, C4, h, w});
        for (int64_t k = 0; k < B * per; ++k) xin.f32()[k] = x.f32()[k] * scale;
        SDRT_ASSIGN_OR_RETURN(eps, unet(xin, ts[j], ctx_c));
        if (cfg) {  // prompt and negative prompt of different lengths: two passes, as the WebUI does
          SDRT_ASSIGN_OR_RETURN(Tensor u, unet(xin, ts[j], ctx_u));
          const float g = (float)r.cfg_scale;
          for (int64_t k = 0; k < B * per; ++k) eps.f32()[k] = u.f32()[k] + g * (eps.f32()[k] - u.f32()[k]);
        }
      }
      res.times.unet_s += since(tu);
      res.times.unet_step_s.push_back(since(tu));
      res.times.unet_evals += 1;
      auto tsch = clk::now();
      std::vector<float> noise;
      if (sched->needs_noise()) {
        for (int i = 0; i < B; ++i) {
          auto ni = gens[i]->randn(per);
          noise.insert(noise.end(), ni.begin(), ni.end());
        }
      }
      sched->step(j, eps.f32(), x.f32(), B * per, noise.empty() ? nullptr : noise.data());
      res.times.scheduler_s += since(tsch);
      ++done;
      if (preview_ && done % preview_every_ == 0) preview_(x.f32(), C4, h, w);
      if (progress && !progress(done, total)) return Status(Code::OutOfRange, "interrupted");
    }
    mark("sampling");
    // VAE decode in slices of the batch: latents / scaling_factor -> [-1, 1] -> 8-bit
    const int64_t S = vae_slice(B);
    SDRT_ASSIGN_OR_RETURN(Executable * dec, executable(vae_decoder_key(S, h, w), [&] { return build_vae_decoder(model_, S, h, w); }));
    if (bc == 0) overlap = opts_.overlap_decode && r.batch_count > 1 && dec->set_concurrent();
    std::vector<int64_t> seeds;
    std::vector<std::string> infos;
    batch_text(bc, &seeds, &infos);
    if (!overlap) {
      double secs = 0;
      SDRT_ASSIGN_OR_RETURN(auto images, decode_task(dec, x, S, std::move(seeds), infos, &secs));
      res.times.vae_s += secs;
      mark("vae");
      add_batch(x, std::move(images), std::move(infos));
      continue;
    }
    // this batch's decode on a thread of its own while the next batch samples (one decode at a time)
    SDRT_RETURN_IF_ERROR(collect());
    pending_x = x;
    pending_infos = infos;
    pending = std::async(std::launch::async, decode_task, dec, x, S, std::move(seeds), std::move(infos), &pending_s);
  }
  SDRT_RETURN_IF_ERROR(collect());
  mark("images");
  res.times.unet_flops = unet_flops_;
  return res;
}

}  // namespace sdrt
