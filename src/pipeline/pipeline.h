// Text-to-image and image-to-image: prompts -> CLIP conditioning, seeded noise per image, the sampler
// loop with classifier-free guidance, VAE decode. Follows diffusers' StableDiffusion(Img2Img)Pipeline
// so that a plain prompt and seed reproduce its latents, and the WebUI's prompt syntax and per-image
// seeds (seed, seed+1, ...) for batches.
#pragma once
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "graph/backend.h"
#include "io/png.h"
#include "models/model.h"
#include "pipeline/prompt.h"
#include "pipeline/rng.h"
#include "pipeline/scheduler.h"
#include "runtime/plan.h"

namespace sdrt {

struct GenerateRequest {
  std::string prompt, negative_prompt;
  int steps = 20;
  double cfg_scale = 7.0;
  int width = 512, height = 512;
  int64_t seed = -1;  // -1: a random seed, reported in the result
  std::string sampler = "euler_a";
  std::string schedule_type;  // WebUI "scheduler" field; only with "DPM++ 2M"
  int batch_size = 1, batch_count = 1;
  int clip_skip = 1;
  std::string rng = "cpu";  // "cpu" (torch CPU generator, diffusers) or "cuda" (torch CUDA, WebUI's "GPU")
  std::optional<Image> init_image;  // img2img when set (resized to width x height if needed)
  std::optional<Tensor> init_tensor;  // img2img from a float image [1,3,H,W] in [-1,1] (exact inputs)
  double strength = 0.75;
  // Per image of one batch (batch_size entries each, batch_count 1), how a server runs compatible
  // requests as one batch; empty: prompt / negative_prompt / seed + i for every image.
  std::vector<std::string> prompts, negative_prompts;
  std::vector<int64_t> seeds;
};

struct StageTimes {
  double text_s = 0, unet_s = 0, scheduler_s = 0, vae_s = 0;
  int unet_evals = 0;
  std::vector<double> unet_step_s;  // each guided UNet evaluation
  double unet_flops = 0;            // matrix FLOPs of all UNet evaluations
};

struct GenerateResult {
  std::vector<Image> images;
  std::vector<int64_t> seeds;
  std::vector<std::string> infotexts;
  std::vector<Tensor> latents;  // final latents per image [1,4,h,w], before 1/scaling_factor
  StageTimes times;
};

// Called after each sampler step (done, total, over all images); return false to interrupt.
using ProgressFn = std::function<bool(int done, int total)>;
// Called with each batch's images, seeds and infotexts once decoded, in batch order, before generate()
// returns (a caller writes them out as they come); an error fails the request. With overlap_decode it runs
// on the thread that decoded the batch, beside the next batch's sampling; calls never overlap each other.
using BatchFn = std::function<Status(const std::vector<Image>& images, const std::vector<int64_t>& seeds, const std::vector<std::string>& infotexts)>;

struct PipelineOptions {
  std::string tokenizer_dir;  // where vocab.json + merges.txt are; empty: CLIP's byte-level base
                              // vocabulary only (synthetic models, whose weights ignore token meaning)
  std::string scheduler_config;  // scheduler_config.json, or empty for SD 1.x defaults
  std::string model_name, model_hash;  // for infotexts
  std::string model_id;                // identity of the weights (engine cache keys, plan checks)
  // Engines from `sdrt build`: every graph the pipeline needs must be in it (checked on first use).
  std::shared_ptr<const Plan> plan;
  // Folder of the engine cache (runtime/engine_cache.h): engines are built on first use, written there
  // and reused; empty: off. Only backends with tactics to keep (CUDA) use it.
  std::string engine_cache_dir;
  // Keep the sampling loop on the device where the backend can (no host round trip per step).
  bool device_loop = true;
  // With several batches (batch_count > 1), decode each batch's latents on a thread of its own while the
  // next batch samples, where the backend lets the VAE decoder run beside the UNet (CUDA: a stream of its
  // own; the device then holds both engines' activations at once). Off, or on the CPU: one after the other.
  bool overlap_decode = true;
  // With guidance, run the UNet whose two halves compute what depends only on the latents and timestep
  // once (build_guided_unet); off: the whole batch computes everything (the benchmark's baseline). Plans
  // that hold only the whole-batch UNet run it either way.
  bool share_guidance_prefix = true;
};

class Pipeline {
 public:
  static Result<std::unique_ptr<Pipeline>> create(Model model, const PipelineOptions& opts, std::unique_ptr<Backend> backend);

  Status validate(const GenerateRequest& r) const;
  Result<GenerateResult> generate(GenerateRequest r, const ProgressFn& progress = {}, const BatchFn& on_batch = {});

  // Called with the first image's latents [4, h, w] (before 1/scaling_factor) every `every` sampling
  // steps, for live previews; on the device loop this adds one small download per call.
  using PreviewFn = std::function<void(const float* latents, int64_t channels, int64_t h, int64_t w)>;
  void set_preview(PreviewFn fn, int every) {
    preview_ = std::move(fn);
    preview_every_ = std::max(1, every);
  }
  // 75-token chunks a prompt encodes to (requests batch together only with equal counts).
  size_t prompt_chunks(const std::string& prompt) const;
  // [1, 77*chunks, C] conditioning of one prompt (WebUI weighting, clip skip).
  Result<Tensor> encode_prompt(const std::string& prompt, int clip_skip);
  const Model& model() const { return model_; }
  Backend& backend() { return *backend_; }
  std::string infotext(const GenerateRequest& r, int64_t seed) const;

 private:
  Result<Executable*> executable(const std::string& key, const std::function<Result<std::shared_ptr<Graph>>()>& build);
  Result<std::unique_ptr<Executable>> from_plan(const Plan& plan, const std::string& key, const std::string& where);
  Result<std::unique_ptr<Executable>> cached_or_built(const std::string& key, const std::function<Result<std::shared_ptr<Graph>>()>& build);
  Result<Tensor> unet(const Tensor& x, float t, const Tensor& ctx);  // x [B,4,h,w], ctx [B,L,C]
  // A UNet executable (its name `key`, for the FLOP count) on sample x at timestep t (x's rows) and ctx.
  Result<Tensor> run_unet(Executable& ex, const std::string& key, const Tensor& x, float t, const Tensor& ctx);
  // The UNet of a guidance batch of B images and conditioning length L at latent size h x w: the form
  // whose halves share their prefix (sample and timestep of B rows; *shared true) where it applies, else
  // the whole batch's (2 B rows).
  Result<Executable*> guidance_unet(int64_t B, int64_t h, int64_t w, int64_t L, bool* shared, std::string* key);
  // The guided UNet on latents x [B,4,h,w] (both halves' input) and conditioning ctx [2B,L,C] -> [2B,4,h,w].
  Result<Tensor> guided_unet(const Tensor& x, float t, const Tensor& ctx);
  // The sampling loop of one batch kept on the device (backends with a DeviceLoop): latents x [B,4,h,w]
  // in, final latents out; the UNet runs both CFG halves in one batch when cfg (its sample and timestep
  // inputs of one half when shared: build_guided_unet). The schedule's timesteps are staged once
  // (DeviceLoop::stage_input), the prompt held; each step selects its timestep, runs the UNet and enqueues the
  // scheduler's combinations with the guidance folded in, the last writing the next step's input too.
  Status sample_on_device(Executable& unet, const std::string& key, Scheduler& sched, size_t start, const GenerateRequest& r, bool cfg, bool shared, const Tensor& ctx,
                          std::vector<std::unique_ptr<Generator>>& gens, Tensor& x, const ProgressFn& progress, int& done, int total,
                          StageTimes& times);
  Result<Tensor> vae_encode_sample(const Tensor& img, Generator& g);  // img [1,3,H,W] in [-1,1]

  Model model_;
  PipelineOptions opts_;
  std::unique_ptr<Backend> backend_;
  ClipTokenizer tok_;
  BetaSchedule sched_;
  std::map<std::string, std::unique_ptr<Executable>> exes_;
  std::map<std::string, double> flops_;  // per executable
  double unet_flops_ = 0;
  PreviewFn preview_;
  int preview_every_ = 5;
};

// Names of the pipeline's executables (engine cache files and plan entries use them).
std::string text_encoder_key(int clip_skip);
std::string unet_key(int64_t batch, int64_t h, int64_t w, int64_t ctx_len);  // latent sizes
// The UNet of a guidance batch of `images` images whose halves share their prefix (build_guided_unet).
std::string guided_unet_key(int64_t images, int64_t h, int64_t w, int64_t ctx_len);
std::string vae_decoder_key(int64_t batch, int64_t h, int64_t w);
// Images per VAE decode call for a batch: the largest divisor of it up to 8 (the decoder's activations
// grow with the batch — 50 images at 512x512 exceed cuDNN's 2^31-element tensors — while its speed per
// image does not; one engine shape serves every slice).
int64_t vae_slice(int64_t batch);
std::string vae_encoder_key(int64_t H, int64_t W);                           // image sizes

// Validation limits, shared with the server.
constexpr int kMaxSteps = 1000, kMaxSide = 4096, kMaxBatch = 64, kMaxBatchCount = 1000;
constexpr size_t kMaxPromptBytes = 16384;

}  // namespace sdrt
