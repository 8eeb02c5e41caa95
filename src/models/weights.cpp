#include "models/weights.h"

#include <cmath>
#include <cstring>
#include <regex>

namespace sdrt {

const TensorInfo* FileWeights::info(const std::string& name) const {
  auto it = map_.find(name);
  return it == map_.end() ? nullptr : it->second.second;
}

Result<Tensor> FileWeights::get(const std::string& name, const Shape& expected) {
  auto it = map_.find(name);
  if (it == map_.end()) return not_found("missing tensor '" + name + "' in " + label_);
  const auto& [fi, info] = it->second;
  Tensor t = files_[fi]->tensor(*info);
  if (t.dtype() != DType::F32 && t.dtype() != DType::F16 && t.dtype() != DType::BF16)
    return invalid_argument("tensor '" + name + "' in " + label_ + " has dtype " + dtype_name(t.dtype()) + ", expected a float type");
  if (t.shape() != expected) {
    // 1x1 convolutions stored where a linear layer is expected (LDM VAE attention), or the reverse.
    Shape a = t.shape(), b = expected;
    while (a.size() > 2 && a.back() == 1) a.pop_back();
    while (b.size() > 2 && b.back() == 1) b.pop_back();
    if (a != b)
      return invalid_argument("tensor '" + name + "' in " + label_ + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(expected));
    t = t.reshaped(expected);
  }
  return t.to_f32();
}

std::vector<WeightEntry> FileWeights::entries() const {
  std::vector<WeightEntry> out;
  for (const auto& [name, p] : map_) out.push_back({name, p.second->dtype, p.second->shape});
  return out;
}

namespace {
uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

Result<Tensor> RandomWeights::get(const std::string& name, const Shape& expected) {
  handed_[name] = expected;
  if (!materialize_) return Tensor::view(DType::F32, expected, nullptr, nullptr);
  uint64_t h = 1469598103934665603ull ^ seed_;
  for (char c : name) h = (h ^ (uint8_t)c) * 1099511628211ull;
  // Unit-variance-preserving uniform init for matrices; norms near 1, biases and embeddings small.
  float scale = 0.02f, offset = 0.f;
  const bool is_bias_or_norm = expected.size() == 1;
  if (is_bias_or_norm && name.find("norm") != std::string::npos && name.ends_with(".weight")) {
    scale = 0.1f;
    offset = 1.f;
  } else if (!is_bias_or_norm && name.find("embedding") == std::string::npos) {
    int64_t fan_in = numel(expected) / expected[0];
    scale = std::sqrt(3.f / (float)fan_in);
  }
  Tensor t = Tensor::empty(DType::F32, expected);
  float* p = t.f32();
  const int64_t n = t.numel();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    double u = (double)(splitmix(h + (uint64_t)i) >> 11) * (1.0 / 9007199254740992.0);  // [0,1)
    p[i] = offset + scale * (float)(2.0 * u - 1.0);
  }
  return t;
}

std::vector<WeightEntry> RandomWeights::entries() const {
  std::vector<WeightEntry> out;
  for (const auto& [name, s] : handed_) out.push_back({name, DType::F32, s});
  return out;
}

namespace {

std::string resnet_ldm(const std::string& r) {
  static const std::pair<const char*, const char*> map[] = {
      {"in_layers.0.", "norm1."}, {"in_layers.2.", "conv1."},          {"emb_layers.1.", "time_emb_proj."},
      {"out_layers.0.", "norm2."}, {"out_layers.3.", "conv2."},         {"skip_connection.", "conv_shortcut."}};
  for (auto [from, to] : map)
    if (r.starts_with(from)) return to + r.substr(strlen(from));
  return {};
}

}  // namespace

std::string ldm_unet_name(const std::string& rest, int64_t L) {
  std::smatch m;
  static const std::regex in_re(R"(^input_blocks\.(\d+)\.(\d+)\.(.+)$)"), out_re(R"(^output_blocks\.(\d+)\.(\d+)\.(.+)$)"),
      mid_re(R"(^middle_block\.(\d+)\.(.+)$)");
  if (rest.starts_with("time_embed.0.")) return "time_embedding.linear_1." + rest.substr(13);
  if (rest.starts_with("time_embed.2.")) return "time_embedding.linear_2." + rest.substr(13);
  if (rest.starts_with("out.0.")) return "conv_norm_out." + rest.substr(6);
  if (rest.starts_with("out.2.")) return "conv_out." + rest.substr(6);
  if (std::regex_match(rest, m, in_re)) {
    const int64_t k = std::stoll(m[1]), sub = std::stoll(m[2]);
    const std::string r = m[3];
    if (k == 0) return sub == 0 ? "conv_in." + r : std::string();
    const int64_t i = (k - 1) / (L + 1), j = (k - 1) % (L + 1);
    const std::string blk = "down_blocks." + std::to_string(i) + ".";
    if (j == L) return r.starts_with("op.") ? blk + "downsamplers.0.conv." + r.substr(3) : std::string();
    if (sub == 0) {
      std::string res = resnet_ldm(r);
      return res.empty() ? res : blk + "resnets." + std::to_string(j) + "." + res;
    }
    return sub == 1 ? blk + "attentions." + std::to_string(j) + "." + r : std::string();
  }
  if (std::regex_match(rest, m, mid_re)) {
    const int64_t k = std::stoll(m[1]);
    const std::string r = m[2];
    if (k == 1) return "mid_block.attentions.0." + r;
    std::string res = resnet_ldm(r);
    return res.empty() ? res : "mid_block.resnets." + std::to_string(k / 2) + "." + res;
  }
  if (std::regex_match(rest, m, out_re)) {
    const int64_t k = std::stoll(m[1]), sub = std::stoll(m[2]);
    const std::string r = m[3];
    const int64_t i = k / (L + 1), j = k % (L + 1);
    const std::string blk = "up_blocks." + std::to_string(i) + ".";
    if (sub == 0) {
      std::string res = resnet_ldm(r);
      return res.empty() ? res : blk + "resnets." + std::to_string(j) + "." + res;
    }
    if (r.starts_with("conv.")) return blk + "upsamplers.0.conv." + r.substr(5);
    return sub == 1 ? blk + "attentions." + std::to_string(j) + "." + r : std::string();
  }
  return {};
}

std::string ldm_vae_name(const std::string& rest, int64_t levels) {
  std::smatch m;
  static const std::regex down_re(R"(^encoder\.down\.(\d+)\.(block\.(\d+)|downsample)\.(.+)$)"),
      up_re(R"(^decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.(.+)$)"), mid_re(R"(^(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.+)$)"),
      out_re(R"(^(encoder|decoder)\.norm_out\.(.+)$)");
  auto res = [](const std::string& r) { return r.starts_with("nin_shortcut.") ? "conv_shortcut." + r.substr(13) : r; };
  if (std::regex_match(rest, m, down_re)) {
    const std::string blk = "encoder.down_blocks." + std::string(m[1]) + ".";
    if (m[3].matched) return blk + "resnets." + std::string(m[3]) + "." + res(m[4]);
    return blk + "downsamplers.0." + std::string(m[4]);
  }
  if (std::regex_match(rest, m, up_re)) {
    const std::string blk = "decoder.up_blocks." + std::to_string(levels - 1 - std::stoll(m[1])) + ".";
    if (m[3].matched) return blk + "resnets." + std::string(m[3]) + "." + res(m[4]);
    return blk + "upsamplers.0." + std::string(m[4]);
  }
  if (std::regex_match(rest, m, mid_re)) {
    const std::string pre = std::string(m[1]) + ".mid_block.", part = m[2], r = m[3];
    if (part == "block_1") return pre + "resnets.0." + res(r);
    if (part == "block_2") return pre + "resnets.1." + res(r);
    static const std::pair<const char*, const char*> attn[] = {
        {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}};
    for (auto [from, to] : attn)
      if (r.starts_with(from)) return pre + "attentions.0." + to + r.substr(strlen(from));
    return {};
  }
  if (std::regex_match(rest, m, out_re)) return std::string(m[1]) + ".conv_norm_out." + std::string(m[2]);
  return rest;  // conv_in, conv_out, quant_conv, post_quant_conv keep their names
}

std::string legacy_vae_attention_name(const std::string& name) {
  static const std::pair<const char*, const char*> map[] = {
      {".attentions.0.query.", ".attentions.0.to_q."}, {".attentions.0.key.", ".attentions.0.to_k."},
      {".attentions.0.value.", ".attentions.0.to_v."}, {".attentions.0.proj_attn.", ".attentions.0.to_out.0."}};
  for (auto [from, to] : map) {
    auto p = name.find(from);
    if (p != std::string::npos) return name.substr(0, p) + to + name.substr(p + strlen(from));
  }
  return name;
}

}  // namespace sdrt
