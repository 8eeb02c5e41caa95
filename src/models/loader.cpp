// Model loading: a diffusers folder (model_index.json + unet/ vae/ text_encoder/ with config.json), a
// single-file LDM checkpoint (config detected from tensor shapes), or `random:sd15`.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "models/weights.h"

namespace sdrt {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Group count of GroupNorm, which shapes cannot show: 32 in every released SD model; test-sized models
// with fewer than 64 base channels (the conformance model) use half their base width.
int64_t detect_groups(int64_t base_channels) { return base_channels >= 64 ? 32 : std::max<int64_t>(1, base_channels / 2); }

Result<json> read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return not_found(p.string() + ": cannot open");
  json j = json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return corrupt(p.string() + ": malformed JSON");
  return j;
}

template <class T>
T get_or(const json& j, const char* key, T def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return def;
  }
}

Status parse_unet_config(const json& j, UNetConfig& c) {
  c.in_channels = get_or<int64_t>(j, "in_channels", 4);
  c.out_channels = get_or<int64_t>(j, "out_channels", 4);
  c.layers_per_block = get_or<int64_t>(j, "layers_per_block", 2);
  c.cross_attention_dim = get_or<int64_t>(j, "cross_attention_dim", 768);
  c.groups = get_or<int64_t>(j, "norm_num_groups", 32);
  c.eps = get_or<float>(j, "norm_eps", 1e-5f);
  c.block_out = get_or<std::vector<int64_t>>(j, "block_out_channels", c.block_out);
  c.use_linear_projection = get_or<bool>(j, "use_linear_projection", false);
  c.flip_sin_to_cos = get_or<bool>(j, "flip_sin_to_cos", true);
  c.freq_shift = get_or<float>(j, "freq_shift", 0.f);
  auto down = get_or<std::vector<std::string>>(j, "down_block_types", {});
  auto up = get_or<std::vector<std::string>>(j, "up_block_types", {});
  const size_t n = c.block_out.size();
  if (n == 0 || (down.size() && down.size() != n) || (up.size() && up.size() != n))
    return invalid_argument("unet config: block_out_channels and block types disagree");
  c.down_attn.assign(n, true);
  c.up_attn.assign(n, true);
  for (size_t i = 0; i < down.size(); ++i) c.down_attn[i] = down[i].find("CrossAttn") != std::string::npos;
  for (size_t i = 0; i < up.size(); ++i) c.up_attn[i] = up[i].find("CrossAttn") != std::string::npos;
  // diffusers' SD1 configs name the head count "attention_head_dim"; num_attention_heads wins when set.
  const char* key = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null() ? "num_attention_heads" : "attention_head_dim";
  c.heads.assign(n, 8);
  if (j.contains(key) && j[key].is_number_integer()) c.heads.assign(n, j[key].get<int64_t>());
  if (j.contains(key) && j[key].is_array()) c.heads = get_or<std::vector<int64_t>>(j, key, c.heads);
  if (c.heads.size() != n) return invalid_argument("unet config: head count list has the wrong length");
  auto tlpb = j.find("transformer_layers_per_block");
  if (tlpb != j.end() && !(tlpb->is_number_integer() && tlpb->get<int>() == 1))
    return unsupported("unet config: transformer_layers_per_block other than 1 (SDXL) is not supported yet");
  if (get_or<std::string>(j, "addition_embed_type", "") != "") return unsupported("unet config: addition embeddings (SDXL) are not supported yet");
  return Status::ok();
}

Status parse_vae_config(const json& j, VaeConfig& c) {
  c.in_channels = get_or<int64_t>(j, "in_channels", 3);
  c.out_channels = get_or<int64_t>(j, "out_channels", 3);
  c.latent_channels = get_or<int64_t>(j, "latent_channels", 4);
  c.layers_per_block = get_or<int64_t>(j, "layers_per_block", 2);
  c.groups = get_or<int64_t>(j, "norm_num_groups", 32);
  c.block_out = get_or<std::vector<int64_t>>(j, "block_out_channels", c.block_out);
  c.use_quant_conv = get_or<bool>(j, "use_quant_conv", true);
  c.use_post_quant_conv = get_or<bool>(j, "use_post_quant_conv", true);
  c.mid_attention = get_or<bool>(j, "mid_block_add_attention", true);
  c.scaling_factor = get_or<float>(j, "scaling_factor", 0.18215f);
  if (c.block_out.empty()) return invalid_argument("vae config: empty block_out_channels");
  return Status::ok();
}

Status parse_clip_config(const json& j, ClipConfig& c) {
  c.vocab = get_or<int64_t>(j, "vocab_size", 49408);
  c.max_positions = get_or<int64_t>(j, "max_position_embeddings", 77);
  c.hidden = get_or<int64_t>(j, "hidden_size", 768);
  c.intermediate = get_or<int64_t>(j, "intermediate_size", 3072);
  c.layers = get_or<int64_t>(j, "num_hidden_layers", 12);
  c.heads = get_or<int64_t>(j, "num_attention_heads", 12);
  c.act = get_or<std::string>(j, "hidden_act", "quick_gelu");
  c.eps = get_or<float>(j, "layer_norm_eps", 1e-5f);
  if (c.act != "quick_gelu" && c.act != "gelu") return unsupported("text encoder activation '" + c.act + "'");
  if (c.heads < 1 || c.hidden % c.heads) return invalid_argument("text encoder: hidden size not divisible by heads");
  return Status::ok();
}

Result<std::shared_ptr<SafeTensors>> open_st(const fs::path& p) {
  auto st = SafeTensors::open(p.string());
  if (!st) return st.status();
  return std::make_shared<SafeTensors>(std::move(st).value());
}

// The weights file of one diffusers component folder.
Result<fs::path> component_file(const fs::path& dir) {
  for (const char* n : {"diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                        "model.fp16.safetensors"})
    if (fs::exists(dir / n)) return dir / n;
  for (const char* n : {"diffusion_pytorch_model.bin", "pytorch_model.bin"})
    if (fs::exists(dir / n)) return unsupported((dir / n).string() + ": pickled .bin weights are not loaded (unsafe); convert to safetensors");
  return not_found(dir.string() + ": no safetensors weights file");
}

Result<Model> load_diffusers(const fs::path& dir) {
  Model m;
  m.layout = "diffusers";
  if (!fs::exists(dir / "model_index.json"))
    return not_found(dir.string() + ": not a diffusers model folder (no model_index.json)");
  SDRT_ASSIGN_OR_RETURN(json index, read_json(dir / "model_index.json"));
  (void)index;
  for (const char* sub : {"unet", "vae", "text_encoder"}) {
    const fs::path cdir = dir / sub;
    SDRT_ASSIGN_OR_RETURN(json cfg, read_json(cdir / "config.json"));
    Status st = std::string(sub) == "unet" ? parse_unet_config(cfg, m.unet)
                : std::string(sub) == "vae" ? parse_vae_config(cfg, m.vae)
                                            : parse_clip_config(cfg, m.clip);
    SDRT_RETURN_IF_ERROR(st.with_context((cdir / "config.json").string()));
    SDRT_ASSIGN_OR_RETURN(fs::path file, component_file(cdir));
    SDRT_ASSIGN_OR_RETURN(auto stf, open_st(file));
    auto w = std::make_shared<FileWeights>(file.string());
    w->add_file(stf);
    for (const auto& info : stf->tensors()) {
      std::string name = info.name;
      if (std::string(sub) == "vae") name = legacy_vae_attention_name(name);
      if (std::string(sub) == "text_encoder" && !name.starts_with("text_model.")) name = "text_model." + name;
      w->add(name, &info);
    }
    (std::string(sub) == "unet" ? m.unet_w : std::string(sub) == "vae" ? m.vae_w : m.clip_w) = w;
  }
  return m;
}

Result<Shape> shape_of(const FileWeights& w, const std::string& name) {
  const TensorInfo* i = w.info(name);
  if (!i) return not_found("missing tensor '" + name + "' in " + w.describe());
  return i->shape;
}

Status detect_unet(const FileWeights& w, UNetConfig& c) {
  SDRT_ASSIGN_OR_RETURN(Shape conv_in, shape_of(w, "conv_in.weight"));
  SDRT_ASSIGN_OR_RETURN(Shape conv_out, shape_of(w, "conv_out.weight"));
  if (conv_in.size() != 4 || conv_out.size() != 4) return invalid_argument("unet conv_in/conv_out are not 4-D");
  c.in_channels = conv_in[1];
  c.out_channels = conv_out[0];
  c.block_out.clear();
  c.down_attn.clear();
  for (int i = 0; w.has("down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight"); ++i) {
    SDRT_ASSIGN_OR_RETURN(Shape s, shape_of(w, "down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight"));
    c.block_out.push_back(s[0]);
    c.down_attn.push_back(w.has("down_blocks." + std::to_string(i) + ".attentions.0.norm.weight"));
  }
  if (c.block_out.empty()) return not_found("missing tensor 'down_blocks.0.resnets.0.conv1.weight' in " + w.describe());
  const size_t n = c.block_out.size();
  c.up_attn.assign(n, false);
  for (size_t i = 0; i < n; ++i) c.up_attn[i] = w.has("up_blocks." + std::to_string(i) + ".attentions.0.norm.weight");
  c.layers_per_block = 0;
  while (w.has("down_blocks.0.resnets." + std::to_string(c.layers_per_block) + ".conv1.weight")) ++c.layers_per_block;
  c.cross_attention_dim = 768;
  for (size_t i = 0; i < n; ++i)
    if (c.down_attn[i]) {
      SDRT_ASSIGN_OR_RETURN(Shape k, shape_of(w, "down_blocks." + std::to_string(i) + ".attentions.0.transformer_blocks.0.attn2.to_k.weight"));
      c.cross_attention_dim = k[1];
      SDRT_ASSIGN_OR_RETURN(Shape p, shape_of(w, "down_blocks." + std::to_string(i) + ".attentions.0.proj_in.weight"));
      c.use_linear_projection = p.size() == 2;
      break;
    }
  // SD 1.x: 8 heads everywhere; SD 2.x (1024-wide context): 64-wide heads.
  c.heads.clear();
  for (auto ch : c.block_out) c.heads.push_back(c.cross_attention_dim >= 1024 ? ch / 64 : 8);
  c.groups = detect_groups(c.block_out[0]);
  return Status::ok();
}

Status detect_vae(const FileWeights& w, VaeConfig& c) {
  c.block_out.clear();
  for (int i = 0; w.has("encoder.down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight"); ++i) {
    SDRT_ASSIGN_OR_RETURN(Shape s, shape_of(w, "encoder.down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight"));
    c.block_out.push_back(s[0]);
  }
  if (c.block_out.empty()) return not_found("missing tensor 'encoder.down_blocks.0.resnets.0.conv1.weight' in " + w.describe());
  c.layers_per_block = 0;
  while (w.has("encoder.down_blocks.0.resnets." + std::to_string(c.layers_per_block) + ".conv1.weight")) ++c.layers_per_block;
  SDRT_ASSIGN_OR_RETURN(Shape ci, shape_of(w, "decoder.conv_in.weight"));
  SDRT_ASSIGN_OR_RETURN(Shape eo, shape_of(w, "encoder.conv_in.weight"));
  c.latent_channels = ci[1];
  c.in_channels = eo[1];
  SDRT_ASSIGN_OR_RETURN(Shape co, shape_of(w, "decoder.conv_out.weight"));
  c.out_channels = co[0];
  c.use_quant_conv = w.has("quant_conv.weight");
  c.use_post_quant_conv = w.has("post_quant_conv.weight");
  c.mid_attention = w.has("decoder.mid_block.attentions.0.to_q.weight");
  c.groups = detect_groups(c.block_out[0]);
  return Status::ok();
}

Status detect_clip(const FileWeights& w, ClipConfig& c) {
  SDRT_ASSIGN_OR_RETURN(Shape tok, shape_of(w, "text_model.embeddings.token_embedding.weight"));
  SDRT_ASSIGN_OR_RETURN(Shape pos, shape_of(w, "text_model.embeddings.position_embedding.weight"));
  c.vocab = tok[0];
  c.hidden = tok[1];
  c.max_positions = pos[0];
  c.layers = 0;
  while (w.has("text_model.encoder.layers." + std::to_string(c.layers) + ".mlp.fc1.weight")) ++c.layers;
  SDRT_ASSIGN_OR_RETURN(Shape fc1, shape_of(w, "text_model.encoder.layers.0.mlp.fc1.weight"));
  c.intermediate = fc1[0];
  // OpenAI CLIP: 64-wide heads (ViT-L/14: 12 heads); test-sized encoders below 256 wide use 8-wide heads.
  c.heads = c.hidden >= 256 ? c.hidden / 64 : std::max<int64_t>(1, c.hidden / 8);
  c.act = "quick_gelu";
  return Status::ok();
}

Result<Model> load_single_file(const fs::path& file) {
  Model m;
  m.layout = "single-file";
  SDRT_ASSIGN_OR_RETURN(auto stf, open_st(file));
  // Structure numbers the LDM names depend on: layers per block from the first downsampler's index,
  // VAE levels from the decoder's up blocks.
  int64_t first_op = -1, vae_levels = 0;
  static const std::regex op_re(R"(^model\.diffusion_model\.input_blocks\.(\d+)\.0\.op\.weight$)"),
      up_re(R"(^first_stage_model\.decoder\.up\.(\d+)\.)");
  std::smatch mm;
  for (const auto& info : stf->tensors()) {
    if (std::regex_match(info.name, mm, op_re)) {
      int64_t k = std::stoll(mm[1]);
      first_op = first_op < 0 ? k : std::min(first_op, k);
    }
    if (std::regex_search(info.name, mm, up_re)) vae_levels = std::max<int64_t>(vae_levels, std::stoll(mm[1]) + 1);
  }
  bool has_unet = false, has_vae = false, has_clip = false;
  for (const auto& info : stf->tensors()) {
    has_unet |= info.name.starts_with("model.diffusion_model.");
    has_vae |= info.name.starts_with("first_stage_model.");
    has_clip |= info.name.starts_with("cond_stage_model.transformer.");
  }
  if (!has_unet) {
    bool sdxl = false;
    for (const auto& info : stf->tensors()) sdxl |= info.name.starts_with("conditioner.");
    return unsupported(file.string() + (sdxl ? ": an SDXL checkpoint; only SD 1.x is supported" : ": no UNet (model.diffusion_model.*) in this file"));
  }
  for (const auto& info : stf->tensors())
    if (info.name.starts_with("cond_stage_model.model.")) return unsupported(file.string() + ": OpenCLIP text encoder (SD 2.x) is not supported yet");
  if (!has_vae) return not_found(file.string() + ": no VAE (first_stage_model.*) in this file");
  if (!has_clip) return not_found(file.string() + ": no text encoder (cond_stage_model.transformer.*) in this file");
  if (first_op < 2) return corrupt(file.string() + ": cannot find the UNet's first downsampler (input_blocks.N.0.op)");
  const int64_t L = first_op - 1;

  auto unet = std::make_shared<FileWeights>(file.string() + " (unet)");
  auto vae = std::make_shared<FileWeights>(file.string() + " (vae)");
  auto clip = std::make_shared<FileWeights>(file.string() + " (text encoder)");
  unet->add_file(stf);
  vae->add_file(stf);
  clip->add_file(stf);
  for (const auto& info : stf->tensors()) {
    const std::string& n = info.name;
    std::string mapped;
    if (n.starts_with("model.diffusion_model.")) {
      mapped = ldm_unet_name(n.substr(22), L);
      if (!mapped.empty()) unet->add(mapped, &info);
    } else if (n.starts_with("first_stage_model.")) {
      mapped = ldm_vae_name(n.substr(18), vae_levels);
      if (!mapped.empty()) vae->add(mapped, &info);
    } else if (n.starts_with("cond_stage_model.transformer.")) {
      mapped = n.substr(29);
      if (!mapped.starts_with("text_model.")) mapped = "text_model." + mapped;
      if (!mapped.ends_with("position_ids")) clip->add(mapped, &info);
      else mapped.clear();
    }
    if (mapped.empty()) m.unused.push_back(n);
  }
  SDRT_RETURN_IF_ERROR(detect_unet(*unet, m.unet));
  SDRT_RETURN_IF_ERROR(detect_vae(*vae, m.vae));
  SDRT_RETURN_IF_ERROR(detect_clip(*clip, m.clip));
  m.unet_w = unet;
  m.vae_w = vae;
  m.clip_w = clip;
  return m;
}

}  // namespace

Result<Model> load_model(const std::string& spec) {
  Result<Model> r = [&]() -> Result<Model> {
    if (spec.starts_with("random:")) {
      std::string arch = spec.substr(7);
      bool count_only = false;
      if (arch.ends_with("@shapes")) {  // internal: shape-only weights for parameter counts
        count_only = true;
        arch = arch.substr(0, arch.size() - 7);
      }
      if (arch != "sd15") return not_found("unknown synthetic model '" + spec + "' (known: random:sd15)");
      Model m;
      m.layout = "random";
      auto w = std::make_shared<RandomWeights>(1234, !count_only);
      m.unet_w = w;
      m.vae_w = std::make_shared<RandomWeights>(5678, !count_only);
      m.clip_w = std::make_shared<RandomWeights>(91011, !count_only);
      return m;
    }
    fs::path p(spec);
    std::error_code ec;
    if (!fs::exists(p, ec)) return not_found(spec + ": no such file or directory");
    if (fs::is_directory(p, ec)) return load_diffusers(p);
    if (p.extension() != ".safetensors")
      return unsupported(spec + ": only .safetensors checkpoints are loaded (pickled .ckpt files are unsafe; convert them)");
    return load_single_file(p);
  }();
  if (r) r->spec = spec;
  return r;
}

std::string describe(const UNetConfig& c) {
  std::string s = "UNet2DConditionModel blocks [";
  for (size_t i = 0; i < c.block_out.size(); ++i) s += (i ? "," : "") + std::to_string(c.block_out[i]) + (c.down_attn[i] ? "a" : "");
  s += "] layers/block " + std::to_string(c.layers_per_block) + ", heads " + std::to_string(c.heads[0]) + ", context " +
       std::to_string(c.cross_attention_dim) + ", groups " + std::to_string(c.groups) + (c.use_linear_projection ? ", linear proj" : "");
  return s;
}
std::string describe(const VaeConfig& c) {
  std::string s = "AutoencoderKL blocks [";
  for (size_t i = 0; i < c.block_out.size(); ++i) s += (i ? "," : "") + std::to_string(c.block_out[i]);
  return s + "] latent " + std::to_string(c.latent_channels) + ", groups " + std::to_string(c.groups) + ", scaling " + std::to_string(c.scaling_factor);
}
std::string describe(const ClipConfig& c) {
  return "CLIPTextModel hidden " + std::to_string(c.hidden) + ", " + std::to_string(c.layers) + " layers, " + std::to_string(c.heads) +
         " heads, " + c.act + ", vocab " + std::to_string(c.vocab);
}

}  // namespace sdrt
