#include "models/blocks.h"

namespace sdrt {

int NetBuilder::weight(const std::string& name, Shape shape) {
  if (!st_.is_ok()) return -1;
  auto t = ws_.get(name, shape);
  if (!t) {
    st_ = t.status();
    return -1;
  }
  return b.weight(name, *t);
}

int NetBuilder::conv(const std::string& p, int x, int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  int w = weight(p + ".weight", {out, in, k, k});
  int bias = weight(p + ".bias", {out});
  return b.conv2d(x, w, bias, stride, pad);
}

int NetBuilder::linear(const std::string& p, int x, int64_t in, int64_t out, bool bias) {
  int w = weight(p + ".weight", {out, in});
  if (!bias) return b.linear(x, w, -1);
  int bb = weight(p + ".bias", {out});
  return bb < 0 ? -1 : b.linear(x, w, bb);
}

int NetBuilder::group_norm(const std::string& p, int x, int64_t c, int64_t groups, float eps) {
  int g = weight(p + ".weight", {c});
  int bb = weight(p + ".bias", {c});
  return b.group_norm(x, g, bb, groups, eps);
}

int NetBuilder::layer_norm(const std::string& p, int x, int64_t c, float eps) {
  int g = weight(p + ".weight", {c});
  int bb = weight(p + ".bias", {c});
  return b.layer_norm(x, g, bb, eps);
}

int NetBuilder::resnet(const std::string& p, int x, int64_t in, int64_t out, int temb_act, int64_t temb_dim, int64_t groups, float eps) {
  int h = b.unary(Op::SiLU, group_norm(p + ".norm1", x, in, groups, eps));  // [B, in, H, W]
  h = conv(p + ".conv1", h, in, out, 3, 1, 1);                             // [B, out, H, W]
  if (temb_act >= 0) {
    int t = linear(p + ".time_emb_proj", temb_act, temb_dim, out);  // [B, out]
    h = b.add(h, b.reshape(t, {b.shape(x)[0], out, 1, 1}));
  }
  h = b.unary(Op::SiLU, group_norm(p + ".norm2", h, out, groups, eps));
  h = conv(p + ".conv2", h, out, out, 3, 1, 1);
  int skip = in == out ? x : conv(p + ".conv_shortcut", x, in, out, 1);
  return b.add(skip, h);
}

int NetBuilder::attention(const std::string& p, int x, int ctx, int64_t dim, int64_t ctx_dim, int64_t heads, bool qkv_bias, bool causal) {
  int q = linear(p + ".to_q", x, dim, dim, qkv_bias);    // [B, Lq, dim]
  int k = linear(p + ".to_k", ctx, ctx_dim, dim, qkv_bias);  // [B, Lk, dim]
  int v = linear(p + ".to_v", ctx, ctx_dim, dim, qkv_bias);
  int o = b.attention(q, k, v, heads, causal);            // [B, Lq, dim]
  return linear(p + ".to_out.0", o, dim, dim);
}

}  // namespace sdrt
