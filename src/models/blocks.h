// Building blocks shared by the networks, named after the diffusers modules they mirror. Each takes the
// module's weight-name prefix; expected weight shapes come from the channel counts passed in.
#pragma once
#include <string>

#include "graph/graph.h"
#include "models/model.h"

namespace sdrt {

class NetBuilder {
 public:
  NetBuilder(Graph& g, WeightSource& ws) : b(g), ws_(ws) {}
  GraphBuilder b;

  Status status() const { return st_.is_ok() ? b.status() : st_; }
  int weight(const std::string& name, Shape shape);

  // torch.nn.Conv2d (square kernel k, symmetric padding)
  int conv(const std::string& p, int x, int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0);
  // torch.nn.Linear
  int linear(const std::string& p, int x, int64_t in, int64_t out, bool bias = true);
  int group_norm(const std::string& p, int x, int64_t c, int64_t groups, float eps);
  int layer_norm(const std::string& p, int x, int64_t c, float eps);
  // diffusers ResnetBlock2D; temb_act = silu(time embedding) [B, T] or -1
  int resnet(const std::string& p, int x, int64_t in, int64_t out, int temb_act, int64_t temb_dim, int64_t groups, float eps);
  // diffusers Attention over tokens [B, L, dim]: to_q/to_k/to_v (bias optional), to_out.0
  int attention(const std::string& p, int x, int ctx, int64_t dim, int64_t ctx_dim, int64_t heads, bool qkv_bias, bool causal = false);
  int channels(int id) const { return (int)b.shape(id)[1]; }

 private:
  WeightSource& ws_;
  Status st_;
};

}  // namespace sdrt
