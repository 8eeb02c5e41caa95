// A Stable Diffusion 1.x model as the engine sees it: the three networks' configurations and a weight
// source for each, loaded from a diffusers folder, a single-file LDM/AUTOMATIC1111 checkpoint or the
// synthetic `random:sd15`. Graph builders (clip_text.cpp, unet.cpp, vae.cpp) turn them into graphs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace sdrt {

struct ClipConfig {
  int64_t vocab = 49408, max_positions = 77, hidden = 768, intermediate = 3072, layers = 12, heads = 12;
  std::string act = "quick_gelu";
  float eps = 1e-5f;
};

struct UNetConfig {
  int64_t in_channels = 4, out_channels = 4, layers_per_block = 2, cross_attention_dim = 768, groups = 32;
  std::vector<int64_t> block_out{320, 640, 1280, 1280};
  std::vector<bool> down_attn{true, true, true, false};
  std::vector<bool> up_attn{false, true, true, true};
  std::vector<int64_t> heads{8, 8, 8, 8};  // per down block; up blocks use the reverse
  bool use_linear_projection = false;
  bool flip_sin_to_cos = true;
  float freq_shift = 0.f, eps = 1e-5f;
};

struct VaeConfig {
  int64_t in_channels = 3, out_channels = 3, latent_channels = 4, layers_per_block = 2, groups = 32;
  std::vector<int64_t> block_out{128, 256, 512, 512};
  bool use_quant_conv = true, use_post_quant_conv = true, mid_attention = true;
  float scaling_factor = 0.18215f;
};

struct WeightEntry {
  std::string name;  // canonical (diffusers) name
  DType dtype;
  Shape shape;
};

// Hands out float32 weights by canonical name, checking the shape the graph expects.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual Result<Tensor> get(const std::string& name, const Shape& expected) = 0;
  virtual std::vector<WeightEntry> entries() const = 0;
  virtual std::string describe() const = 0;
};

struct Model {
  std::string spec;    // what the user named
  std::string layout;  // "diffusers", "single-file", "random"
  ClipConfig clip;
  UNetConfig unet;
  VaeConfig vae;
  std::shared_ptr<WeightSource> clip_w, unet_w, vae_w;
  std::vector<std::string> unused;  // single-file entries no network uses (betas, model_ema.*, ...)
};

Result<Model> load_model(const std::string& spec);

// Graphs for fixed shapes. Latent sizes h, w are image sizes / 8.
// text encoder: input_ids [B,77] (I32) -> last_hidden_state [B,77,C]; clip_skip 1 = last layer.
Result<std::shared_ptr<Graph>> build_text_encoder(const Model& m, int64_t batch, int clip_skip = 1);
// unet: sample [B,4,h,w], timestep [B], encoder_hidden_states [B,ctx_len,ctx] -> out [B,4,h,w]
// (ctx_len is 77 per prompt chunk). Any latent size works: upsampling follows the skips' sizes.
Result<std::shared_ptr<Graph>> build_unet(const Model& m, int64_t batch, int64_t h, int64_t w, int64_t ctx_len = 77);
// The UNet of a classifier-free guidance batch of `images` images: sample [images,4,h,w] and timestep
// [images] (the same for both halves), encoder_hidden_states [2 images,ctx_len,ctx] (unconditional rows
// first) -> out [2 images,4,h,w], the first half unconditional. What depends only on the latents and the
// timestep (conv_in, the first ResNet, the first transformer up to its cross-attention, the time
// embedding) runs once per image instead of once per half (pass share_batch_halves).
Result<std::shared_ptr<Graph>> build_guided_unet(const Model& m, int64_t images, int64_t h, int64_t w, int64_t ctx_len = 77);
// vae decoder: latent [B,4,h,w] (already divided by the scaling factor) -> image [B,3,8h,8w]
Result<std::shared_ptr<Graph>> build_vae_decoder(const Model& m, int64_t batch, int64_t h, int64_t w);
// vae encoder: image [B,3,H,W] -> moments [B,8,H/8,W/8] (mean, then logvar unclamped)
Result<std::shared_ptr<Graph>> build_vae_encoder(const Model& m, int64_t batch, int64_t H, int64_t W);

std::string describe(const UNetConfig& c);
std::string describe(const VaeConfig& c);
std::string describe(const ClipConfig& c);

}  // namespace sdrt
