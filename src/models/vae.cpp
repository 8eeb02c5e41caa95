// AutoencoderKL (diffusers): encoder to latent moments and decoder to an image. Shapes for SD 1.5 at
// 512x512: latent [B,4,64,64] <-> image [B,3,512,512].
#include "models/blocks.h"

namespace sdrt {
namespace {

constexpr float kVaeEps = 1e-6f;

// VAE mid-block attention: single head over H*W tokens, biases on q/k/v.
int vae_attention(NetBuilder& nb, const std::string& p, int x, int64_t C, int64_t groups) {
  auto& b = nb.b;
  const int64_t H = b.shape(x)[2], W = b.shape(x)[3];
  int t = b.unary(Op::ToTokens, nb.group_norm(p + ".group_norm", x, C, groups, kVaeEps));  // [B, HW, C]
  int o = nb.attention(p, t, t, C, C, 1, true);
  Attrs a;
  a.dims = {H, W};
  return b.add(b.add_node(Op::FromTokens, {o}, a), x);
}

int mid_block(NetBuilder& nb, const std::string& p, int x, int64_t C, const VaeConfig& c) {
  x = nb.resnet(p + ".resnets.0", x, C, C, -1, 0, c.groups, kVaeEps);
  if (c.mid_attention) x = vae_attention(nb, p + ".attentions.0", x, C, c.groups);
  return nb.resnet(p + ".resnets.1", x, C, C, -1, 0, c.groups, kVaeEps);
}

}  // namespace

Result<std::shared_ptr<Graph>> build_vae_decoder(const Model& m, int64_t batch, int64_t h, int64_t w) {
  const VaeConfig& c = m.vae;
  if (h < 1 || w < 1) return invalid_argument("latent size must be positive");
  auto g = std::make_shared<Graph>();
  NetBuilder nb(*g, *m.vae_w);
  auto& b = nb.b;
  const size_t levels = c.block_out.size();
  int z = b.input("latent", {batch, c.latent_channels, h, w});
  if (c.use_post_quant_conv) z = nb.conv("post_quant_conv", z, c.latent_channels, c.latent_channels, 1);
  int64_t ch = c.block_out.back();
  int x = nb.conv("decoder.conv_in", z, c.latent_channels, ch, 3, 1, 1);  // [B, 512, 64, 64]
  x = mid_block(nb, "decoder.mid_block", x, ch, c);
  for (size_t i = 0; i < levels; ++i) {
    const std::string p = "decoder.up_blocks." + std::to_string(i);
    const int64_t out = c.block_out[levels - 1 - i];
    for (int64_t j = 0; j <= c.layers_per_block; ++j) {
      x = nb.resnet(p + ".resnets." + std::to_string(j), x, ch, out, -1, 0, c.groups, kVaeEps);
      ch = out;
    }
    if (i + 1 < levels) x = nb.conv(p + ".upsamplers.0.conv", b.unary(Op::Upsample2x, x), ch, ch, 3, 1, 1);
  }
  x = b.unary(Op::SiLU, nb.group_norm("decoder.conv_norm_out", x, ch, c.groups, kVaeEps));
  x = nb.conv("decoder.conv_out", x, ch, c.out_channels, 3, 1, 1);  // [B, 3, 512, 512]
  b.output(x, "image");
  SDRT_RETURN_IF_ERROR(nb.status().with_context("vae decoder"));
  return g;
}

Result<std::shared_ptr<Graph>> build_vae_encoder(const Model& m, int64_t batch, int64_t H, int64_t W) {
  const VaeConfig& c = m.vae;
  const size_t levels = c.block_out.size();
  const int64_t f = 1 << (levels - 1);
  if (H < f || W < f || H % f || W % f)
    return invalid_argument("image size " + std::to_string(W) + "x" + std::to_string(H) + " must be a multiple of " + std::to_string(f));
  auto g = std::make_shared<Graph>();
  NetBuilder nb(*g, *m.vae_w);
  auto& b = nb.b;
  int img = b.input("image", {batch, c.in_channels, H, W});
  int64_t ch = c.block_out[0];
  int x = nb.conv("encoder.conv_in", img, c.in_channels, ch, 3, 1, 1);
  for (size_t i = 0; i < levels; ++i) {
    const std::string p = "encoder.down_blocks." + std::to_string(i);
    for (int64_t j = 0; j < c.layers_per_block; ++j) {
      x = nb.resnet(p + ".resnets." + std::to_string(j), x, ch, c.block_out[i], -1, 0, c.groups, kVaeEps);
      ch = c.block_out[i];
    }
    if (i + 1 < levels) {
      // diffusers Downsample2D(padding=0): pad right and bottom by one, then a stride-2 3x3 conv.
      int wt = nb.weight(p + ".downsamplers.0.conv.weight", {ch, ch, 3, 3});
      int bs = nb.weight(p + ".downsamplers.0.conv.bias", {ch});
      Attrs a;
      a.stride = 2;
      a.pad[0] = 0, a.pad[1] = 0, a.pad[2] = 1, a.pad[3] = 1;
      x = b.add_node(Op::Conv2d, {x, wt, bs}, a);
    }
  }
  x = mid_block(nb, "encoder.mid_block", x, ch, c);
  x = b.unary(Op::SiLU, nb.group_norm("encoder.conv_norm_out", x, ch, c.groups, kVaeEps));
  x = nb.conv("encoder.conv_out", x, ch, 2 * c.latent_channels, 3, 1, 1);
  if (c.use_quant_conv) x = nb.conv("quant_conv", x, 2 * c.latent_channels, 2 * c.latent_channels, 1);
  b.output(x, "moments");
  SDRT_RETURN_IF_ERROR(nb.status().with_context("vae encoder"));
  return g;
}

}  // namespace sdrt
