// UNet2DConditionModel (SD 1.x), diffusers module names. Shapes below are for SD 1.5 at 512x512,
// batch B: sample [B,4,64,64], context [B,77,768].
#include "graph/passes.h"
#include "models/blocks.h"

namespace sdrt {
namespace {

// diffusers Transformer2DModel with one BasicTransformerBlock: GroupNorm, proj_in, self-attention,
// cross-attention, GEGLU feed-forward, proj_out, residual.
int transformer2d(NetBuilder& nb, const std::string& p, int x, int ctx, int64_t C, int64_t ctx_dim, int64_t heads,
                  int64_t groups, bool linear_proj) {
  auto& b = nb.b;
  const int64_t H = b.shape(x)[2], W = b.shape(x)[3];
  int h = nb.group_norm(p + ".norm", x, C, groups, 1e-6f);  // [B, C, H, W]
  if (linear_proj) {
    h = nb.linear(p + ".proj_in", b.unary(Op::ToTokens, h), C, C);  // [B, HW, C]
  } else {
    h = b.unary(Op::ToTokens, nb.conv(p + ".proj_in", h, C, C, 1));
  }
  const std::string t = p + ".transformer_blocks.0";
  int n = nb.layer_norm(t + ".norm1", h, C, 1e-5f);
  h = b.add(h, nb.attention(t + ".attn1", n, n, C, C, heads, false));
  n = nb.layer_norm(t + ".norm2", h, C, 1e-5f);
  h = b.add(h, nb.attention(t + ".attn2", n, ctx, C, ctx_dim, heads, false));  // [B, HW, C] x [B, 77, ctx]
  n = nb.layer_norm(t + ".norm3", h, C, 1e-5f);
  int f = nb.linear(t + ".ff.net.0.proj", n, C, 8 * C);  // [B, HW, 8C]
  f = b.unary(Op::GEGLU, f);                            // [B, HW, 4C]
  h = b.add(h, nb.linear(t + ".ff.net.2", f, 4 * C, C));
  Attrs a;
  a.dims = {H, W};
  if (linear_proj) {
    h = b.add_node(Op::FromTokens, {nb.linear(p + ".proj_out", h, C, C)}, a);
  } else {
    h = nb.conv(p + ".proj_out", b.add_node(Op::FromTokens, {h}, a), C, C, 1);
  }
  return b.add(h, x);
}

}  // namespace

Result<std::shared_ptr<Graph>> build_unet(const Model& m, int64_t batch, int64_t h, int64_t w, int64_t ctx_len) {
  const UNetConfig& c = m.unet;
  const size_t levels = c.block_out.size();
  if (h < 1 || w < 1 || batch < 1 || ctx_len < 1) return invalid_argument("unet: empty input shape");
  auto g = std::make_shared<Graph>();
  NetBuilder nb(*g, *m.unet_w);
  auto& b = nb.b;
  const int64_t C0 = c.block_out[0], T = 4 * C0, L = c.layers_per_block, ctx_dim = c.cross_attention_dim;
  int sample = b.input("sample", {batch, c.in_channels, h, w});
  int timestep = b.input("timestep", {batch});
  int ctx = b.input("encoder_hidden_states", {batch, ctx_len, ctx_dim});

  Attrs ta;
  ta.dim = C0;
  ta.flip_sin_to_cos = c.flip_sin_to_cos;
  ta.freq_shift = c.freq_shift;
  int temb = b.add_node(Op::TimestepEmbedding, {timestep}, ta);  // [B, C0]
  temb = nb.linear("time_embedding.linear_2", b.unary(Op::SiLU, nb.linear("time_embedding.linear_1", temb, C0, T)), T, T);
  const int temb_act = b.unary(Op::SiLU, temb);  // every resnet's time_emb_proj sees silu(temb)  [B, T]

  int x = nb.conv("conv_in", sample, c.in_channels, C0, 3, 1, 1);  // [B, 320, 64, 64]
  std::vector<int> skips{x};
  int64_t ch = C0;
  for (size_t i = 0; i < levels; ++i) {
    const std::string p = "down_blocks." + std::to_string(i);
    for (int64_t j = 0; j < L; ++j) {
      x = nb.resnet(p + ".resnets." + std::to_string(j), x, ch, c.block_out[i], temb_act, T, c.groups, c.eps);
      ch = c.block_out[i];
      if (c.down_attn[i])
        x = transformer2d(nb, p + ".attentions." + std::to_string(j), x, ctx, ch, ctx_dim, c.heads[i], c.groups, c.use_linear_projection);
      skips.push_back(x);
    }
    if (i + 1 < levels) {
      x = nb.conv(p + ".downsamplers.0.conv", x, ch, ch, 3, 2, 1);  // halves H, W
      skips.push_back(x);
    }
  }
  // mid: [B, 1280, 8, 8]
  x = nb.resnet("mid_block.resnets.0", x, ch, ch, temb_act, T, c.groups, c.eps);
  x = transformer2d(nb, "mid_block.attentions.0", x, ctx, ch, ctx_dim, c.heads.back(), c.groups, c.use_linear_projection);
  x = nb.resnet("mid_block.resnets.1", x, ch, ch, temb_act, T, c.groups, c.eps);
  for (size_t i = 0; i < levels; ++i) {
    const std::string p = "up_blocks." + std::to_string(i);
    const int64_t out = c.block_out[levels - 1 - i], heads = c.heads[levels - 1 - i];
    for (int64_t j = 0; j <= L; ++j) {
      if (skips.empty() || x < 0) break;
      int skip = skips.back();
      skips.pop_back();
      const int64_t sc = nb.channels(skip);
      x = b.concat({x, skip}, 1);  // [B, ch + skip, H, W]
      x = nb.resnet(p + ".resnets." + std::to_string(j), x, ch + sc, out, temb_act, T, c.groups, c.eps);
      ch = out;
      if (c.up_attn[i])
        x = transformer2d(nb, p + ".attentions." + std::to_string(j), x, ctx, ch, ctx_dim, heads, c.groups, c.use_linear_projection);
    }
    if (i + 1 < levels && !skips.empty()) {
      // nearest upsampling to the next skip's size: 2x, or less when a size was odd (diffusers'
      // forward_upsample_size)
      Attrs ua;
      ua.dims = {b.shape(skips.back())[2], b.shape(skips.back())[3]};
      x = nb.conv(p + ".upsamplers.0.conv", b.add_node(Op::Upsample2x, {x}, ua), ch, ch, 3, 1, 1);
    }
  }
  x = b.unary(Op::SiLU, nb.group_norm("conv_norm_out", x, ch, c.groups, c.eps));
  x = nb.conv("conv_out", x, ch, c.out_channels, 3, 1, 1);  // [B, 4, 64, 64]
  b.output(x, "out");
  SDRT_RETURN_IF_ERROR(nb.status().with_context("unet"));
  return g;
}

Result<std::shared_ptr<Graph>> build_guided_unet(const Model& m, int64_t images, int64_t h, int64_t w, int64_t ctx_len) {
  if (images < 1) return invalid_argument("unet: empty input shape");
  SDRT_ASSIGN_OR_RETURN(auto whole, build_unet(m, 2 * images, h, w, ctx_len));
  SDRT_ASSIGN_OR_RETURN(Graph g, share_batch_halves(*whole, {"sample", "timestep"}, nullptr));
  return std::make_shared<Graph>(std::move(g));
}

}  // namespace sdrt
