// Text-to-image and image-to-image: prompts -> CLIP conditioning, seeded noise per image, the sampler
// loop with classifier-free guidance, VAE decode. Follows diffusers' StableDiffusion(Img2Img)Pipeline
// so that a plain prompt and seed reproduce its latents, and the WebUI's prompt syntax and per-image
// seeds (seed, seed+1, ...) for batches.
#pragma once
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

struct PipelineOptions {
  std::string tokenizer_dir;  // where vocab.json + merges.txt are; empty: CLIP's byte-level base
                              // vocabulary only (synthetic models, whose weights ignore token meaning)
  std::string scheduler_config;  // scheduler_config.json, or empty for SD 1.x defaults
  std::string model_name, model_hash;  // for infotexts
};

class Pipeline {
 public:
  static Result<std::unique_ptr<Pipeline>> create(Model model, const PipelineOptions& opts, std::unique_ptr<Backend> backend);

  Status validate(const GenerateRequest& r) const;
  Result<GenerateResult> generate(GenerateRequest r, const ProgressFn& progress = {});

  // [1, 77*chunks, C] conditioning of one prompt (WebUI weighting, clip skip).
  Result<Tensor> encode_prompt(const std::string& prompt, int clip_skip);
  const Model& model() const { return model_; }
  Backend& backend() { return *backend_; }
  std::string infotext(const GenerateRequest& r, int64_t seed) const;

 private:
  Result<Executable*> executable(const std::string& key, const std::function<Result<std::shared_ptr<Graph>>()>& build);
  Result<Tensor> unet(const Tensor& x, float t, const Tensor& ctx);  // x [B,4,h,w], ctx [B,L,C]
  Result<Tensor> vae_encode_sample(const Tensor& img, Generator& g);  // img [1,3,H,W] in [-1,1]

  Model model_;
  PipelineOptions opts_;
  std::unique_ptr<Backend> backend_;
  ClipTokenizer tok_;
  BetaSchedule sched_;
  std::map<std::string, std::unique_ptr<Executable>> exes_;
  std::map<std::string, double> flops_;  // per executable
  double unet_flops_ = 0;
};

// Validation limits, shared with the server.
constexpr int kMaxSteps = 1000, kMaxSide = 4096, kMaxBatch = 64, kMaxBatchCount = 1000;
constexpr size_t kMaxPromptBytes = 16384;

}  // namespace sdrt
