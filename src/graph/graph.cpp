#include "graph/graph.h"

#include <cmath>

namespace sdrt {

const OpInfo& op_info(Op op) {
  static const OpInfo table[] = {
      {"Input", 0, 0},      {"Weight", 0, 0},      {"Conv2d", 2, 4},     {"Linear", 2, 4},
      {"GroupNorm", 3, 4},  {"LayerNorm", 3, 3},   {"SiLU", 1, 1},       {"GELU", 1, 1},
      {"QuickGELU", 1, 1},  {"GEGLU", 1, 1},       {"Attention", 1, 3},  {"Upsample2x", 1, 1},
      {"Concat", 1, 64},    {"Add", 2, 2},         {"Mul", 2, 2},        {"Scale", 1, 1},
      {"Reshape", 1, 1},    {"ToTokens", 1, 1},    {"FromTokens", 1, 1}, {"TimestepEmbedding", 1, 1},
      {"Embedding", 2, 2},  {"Slice", 1, 1},         {"PhaseInterleave", 1, 1},
  };
  static_assert(sizeof(table) / sizeof(table[0]) == (size_t)Op::kCount, "op table out of sync with Op");
  return table[(size_t)op];
}

namespace {

Status mismatch(const Node& n, const std::string& why) {
  return invalid_argument(std::string(op_info(n.op).name) + (n.name.empty() ? "" : " '" + n.name + "'") + ": " + why);
}

// PhaseInterleave's input [N,4C,H+1,W+1] (H, W >= 1)
bool phase_planes(const Shape& x) { return x.size() == 4 && x[1] >= 4 && x[1] % 4 == 0 && x[2] >= 2 && x[3] >= 2; }

// numpy broadcasting of two shapes
Result<Shape> broadcast(const Node& n, const Shape& x, const Shape& y) {
  size_t r = std::max(x.size(), y.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t a = i < r - x.size() ? 1 : x[i - (r - x.size())];
    int64_t b = i < r - y.size() ? 1 : y[i - (r - y.size())];
    if (a != b && a != 1 && b != 1) return mismatch(n, "cannot broadcast " + shape_str(x) + " with " + shape_str(y));
    out[i] = std::max(a, b);
  }
  return out;
}

}  // namespace

Result<AttentionViews> attention_views(const std::vector<const Shape*>& in) {
  for (const Shape* x : in)
    if (x->size() != 3) return Status(Code::InvalidArgument, "attention inputs must be [B, L, width]");
  AttentionViews v;
  const Shape& q = *in[0];
  v.B = q[0], v.Lq = q[1];
  if (in.size() == 3) {
    const Shape &k = *in[1], &vv = *in[2];
    if (q[0] != k[0] || k[0] != vv[0] || k[1] != vv[1] || q[2] != k[2])
      return Status(Code::InvalidArgument, "q " + shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(vv) + " disagree");
    v.HD = q[2], v.HDv = vv[2], v.Lk = k[1];
    v.ldq = v.ldk = q[2], v.ldv = vv[2];
  } else if (in.size() == 2) {
    const Shape& kv = *in[1];
    if (q[0] != kv[0] || kv[2] != 2 * q[2]) return Status(Code::InvalidArgument, "q " + shape_str(q) + " and packed kv " + shape_str(kv) + " disagree");
    v.HD = v.HDv = q[2], v.Lk = kv[1];
    v.k_in = v.v_in = 1, v.v_col = q[2];
    v.ldq = q[2], v.ldk = v.ldv = kv[2];
  } else if (in.size() == 1) {
    if (q[2] % 3) return Status(Code::InvalidArgument, "packed qkv " + shape_str(q) + " is not three equal widths");
    v.HD = v.HDv = q[2] / 3, v.Lk = q[1];
    v.k_in = v.v_in = 0, v.k_col = v.HD, v.v_col = 2 * v.HD;
    v.ldq = v.ldk = v.ldv = q[2];
  } else {
    return Status(Code::InvalidArgument, "attention takes 1 to 3 inputs");
  }
  if (v.HD < 1 || v.HDv < 1 || v.Lk < 1) return Status(Code::InvalidArgument, "empty attention");
  return v;
}

Shape interleaved(const Shape& x) { return Shape{x[0], x[1] / 4, 2 * (x[2] - 1), 2 * (x[3] - 1)}; }

Result<Shape> infer_shape(const Node& n, const std::vector<const Shape*>& in) {
  const OpInfo& info = op_info(n.op);
  if ((int)in.size() < info.min_inputs || (int)in.size() > info.max_inputs)
    return mismatch(n, "takes " + std::to_string(info.min_inputs) + ".." + std::to_string(info.max_inputs) + " inputs, got " +
                           std::to_string(in.size()));
  const auto& a = n.a;
  switch (n.op) {
    case Op::Input:
    case Op::Weight: return n.shape;
    case Op::Conv2d: {
      const Shape &x = *in[0], &w = *in[1];
      if (x.size() != 4 || w.size() != 4) return mismatch(n, "needs x [N,C,H,W] and w [O,C,kh,kw], got " + shape_str(x) + ", " + shape_str(w));
      if (w[1] != x[1]) return mismatch(n, "input has " + std::to_string(x[1]) + " channels, weight expects " + std::to_string(w[1]));
      if (in.size() >= 3 && (in[2]->size() != 1 || (*in[2])[0] != w[0])) return mismatch(n, "bias shape " + shape_str(*in[2]));
      if (a.stride < 1) return mismatch(n, "stride < 1");
      int64_t ho = (x[2] + a.pad[0] + a.pad[2] - w[2]) / a.stride + 1;
      int64_t wo = (x[3] + a.pad[1] + a.pad[3] - w[3]) / a.stride + 1;
      if (ho < 1 || wo < 1) return mismatch(n, "output would be empty");
      const Shape out{x[0], w[0], ho, wo};
      if (in.size() == 4 && *in[3] != out) return mismatch(n, "residual " + shape_str(*in[3]) + " is not the output shape " + shape_str(out));
      return out;
    }
    case Op::Linear: {
      const Shape &x = *in[0], &w = *in[1];
      if (w.size() != 2 || x.empty() || x.back() != w[1])
        return mismatch(n, "x " + shape_str(x) + " does not match weight " + shape_str(w));
      if (in.size() >= 3 && (in[2]->size() != 1 || (*in[2])[0] != w[0])) return mismatch(n, "bias shape " + shape_str(*in[2]));
      Shape out = x;
      out.back() = w[0];
      if (a.geglu) {  // the GEGLU of the projection: its value half times gelu of its gate half
        if (w[0] % 2) return mismatch(n, "a GEGLU projection needs an even width, got " + std::to_string(w[0]));
        if (in.size() == 4) return mismatch(n, "a GEGLU projection takes no residual");
        out.back() = w[0] / 2;
      }
      if (in.size() == 4 && *in[3] != out) return mismatch(n, "residual " + shape_str(*in[3]) + " is not the output shape " + shape_str(out));
      return out;
    }
    case Op::GroupNorm: {
      const Shape& x = *in[0];
      if (x.size() < 2 || a.groups < 1 || x[1] % a.groups) return mismatch(n, "channels of " + shape_str(x) + " not divisible into " + std::to_string(a.groups) + " groups");
      if (*in[1] != Shape{x[1]} || *in[2] != Shape{x[1]}) return mismatch(n, "affine parameters must be [C]");
      if (in.size() == 4 && a.dims.empty() && (x.size() != 4 || *in[3] != Shape{x[0], x[1], 1, 1}))
        return mismatch(n, "the added channel vector " + shape_str(*in[3]) + " must be [N, C, 1, 1] of " + shape_str(x));
      if (in.size() == 4 && !a.dims.empty()) {  // columns [col, col + C) of a packed [N, W]
        const Shape& t = *in[3];
        if (x.size() != 4 || a.dims.size() != 1 || t.size() != 2 || t[0] != x[0] || a.dims[0] < 0 || a.dims[0] + x[1] > t[1])
          return mismatch(n, "the added channel vector must be columns [col, col + C) of a packed [N, W]: " + shape_str(t) + " for " + shape_str(x));
      }
      if (in.size() != 4 && !a.dims.empty()) return mismatch(n, "a column offset without an added channel vector");
      return x;
    }
    case Op::LayerNorm: {
      const Shape& x = *in[0];
      if (x.empty() || *in[1] != Shape{x.back()} || *in[2] != Shape{x.back()}) return mismatch(n, "affine parameters must be [C] for " + shape_str(x));
      return x;
    }
    case Op::SiLU: case Op::GELU: case Op::QuickGELU: case Op::Scale: return *in[0];
    case Op::GEGLU: {
      Shape s = *in[0];
      if (s.empty() || s.back() % 2) return mismatch(n, "last dimension must be even");
      s.back() /= 2;
      return s;
    }
    case Op::Attention: {
      auto v = attention_views(in);
      if (!v.is_ok()) return mismatch(n, v.status().message());
      if (a.heads < 1 || v->HD % a.heads || v->HDv % a.heads) return mismatch(n, "width not divisible by heads");
      if (a.causal && v->Lq != v->Lk) return mismatch(n, "causal attention needs Lq == Lk");
      return Shape{v->B, v->Lq, v->HDv};
    }
    case Op::PhaseInterleave: {
      const Shape& x = *in[0];
      if (!phase_planes(x)) return mismatch(n, "needs [N,4C,H+1,W+1] with H, W >= 1, got " + shape_str(x));
      return interleaved(x);
    }
    case Op::Upsample2x: {
      const Shape& x = *in[0];
      if (x.size() != 4) return mismatch(n, "needs [N,C,H,W]");
      if (a.dims.size() == 2) {
        if (a.dims[0] < 1 || a.dims[1] < 1) return mismatch(n, "bad target size");
        return Shape{x[0], x[1], a.dims[0], a.dims[1]};
      }
      return Shape{x[0], x[1], 2 * x[2], 2 * x[3]};
    }
    case Op::Concat: {
      Shape out = *in[0];
      int64_t ax = a.axis;
      if (a.up2) {  // input 0: phase planes, concatenated as their interleaving
        if (ax != 1 || !phase_planes(out)) return mismatch(n, "an interleaving concat needs axis 1 and phase planes [N,4C,H+1,W+1], got " + shape_str(out));
        out = interleaved(out);
      }
      if (ax < 0 || ax >= (int64_t)out.size()) return mismatch(n, "axis out of range");
      for (size_t i = 1; i < in.size(); ++i) {
        const Shape& s = *in[i];
        if (s.size() != out.size()) return mismatch(n, "ranks differ");
        for (size_t d = 0; d < s.size(); ++d)
          if ((int64_t)d != ax && s[d] != out[d]) return mismatch(n, shape_str(*in[0]) + " and " + shape_str(s) + " differ off the concat axis");
        out[ax] += s[ax];
      }
      return out;
    }
    case Op::Add: case Op::Mul: return broadcast(n, *in[0], *in[1]);
    case Op::Reshape:
      if (numel(a.dims) != numel(*in[0])) return mismatch(n, "cannot reshape " + shape_str(*in[0]) + " to " + shape_str(a.dims));
      return a.dims;
    case Op::ToTokens: {
      const Shape& x = *in[0];
      if (x.size() != 4) return mismatch(n, "needs [N,C,H,W]");
      return Shape{x[0], x[2] * x[3], x[1]};
    }
    case Op::FromTokens: {
      const Shape& x = *in[0];
      if (x.size() != 3 || a.dims.size() != 2 || a.dims[0] * a.dims[1] != x[1]) return mismatch(n, "token count does not match H x W");
      return Shape{x[0], x[2], a.dims[0], a.dims[1]};
    }
    case Op::TimestepEmbedding:
      if (in[0]->size() != 1 || a.dim < 2 || a.dim % 2) return mismatch(n, "needs t [N] and an even dim");
      return Shape{(*in[0])[0], a.dim};
    case Op::Embedding: {
      if (in[1]->size() != 2) return mismatch(n, "table must be [V, C]");
      Shape out = *in[0];
      out.push_back((*in[1])[1]);
      return out;
    }
    case Op::Slice: {
      const Shape& x = *in[0];
      if (x.empty() || a.dims.size() != 2) return mismatch(n, "needs x [N,...] and dims {start, length}");
      if (a.dims[0] < 0 || a.dims[1] < 1 || a.dims[0] + a.dims[1] > x[0])
        return mismatch(n, "rows [" + std::to_string(a.dims[0]) + ", " + std::to_string(a.dims[0] + a.dims[1]) + ") are not within " + shape_str(x));
      Shape out = x;
      out[0] = a.dims[1];
      return out;
    }
    case Op::kCount: break;
  }
  return mismatch(n, "unknown op");
}

Status Graph::verify() const {
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if ((size_t)n.op >= (size_t)Op::kCount) return invalid_argument("node " + std::to_string(i) + ": bad op");
    std::vector<const Shape*> in;
    for (int id : n.inputs) {
      if (id < 0 || (size_t)id >= i) return invalid_argument("node " + std::to_string(i) + " (" + op_info(n.op).name + "): input " + std::to_string(id) + " is not an earlier node");
      in.push_back(&nodes[id].shape);
    }
    if (n.op == Op::Weight) {
      auto it = weights.find(n.name);
      if (it == weights.end()) return invalid_argument("weight node '" + n.name + "' has no tensor");
      if (it->second.shape() != n.shape) return invalid_argument("weight '" + n.name + "' shape mismatch");
    }
    auto s = infer_shape(n, in);
    if (!s) return s.status();
    if (*s != n.shape) return invalid_argument("node " + std::to_string(i) + " (" + op_info(n.op).name + "): recorded shape " + shape_str(n.shape) + " != inferred " + shape_str(*s));
  }
  if (outputs.empty()) return invalid_argument("graph has no outputs");
  for (int o : outputs)
    if (o < 0 || (size_t)o >= nodes.size()) return invalid_argument("graph output is not a node");
  return Status::ok();
}

int64_t Graph::weight_params() const {
  int64_t n = 0;
  for (const auto& [k, t] : weights) n += t.numel();
  return n;
}

std::string Graph::summary() const {
  std::map<std::string, int> counts;
  for (const auto& n : nodes) counts[op_info(n.op).name]++;
  std::string s = std::to_string(nodes.size()) + " nodes:";
  for (const auto& [k, v] : counts) s += " " + k + "=" + std::to_string(v);
  return s;
}

double Graph::flops() const {
  double f = 0;
  for (const auto& n : nodes) {
    if (n.op == Op::Conv2d && n.a.up2) {  // the 3x3 convolution on the 2x-upsampled input it stands for
      const Shape& w = nodes[n.inputs[1]].shape;
      f += 2.0 * (double)n.shape[0] * (double)(w[0] / 4) * (double)(4 * (n.shape[2] - 1) * (n.shape[3] - 1)) * (double)(w[1] * 9);
    } else if (n.op == Op::Conv2d) {
      const Shape& w = nodes[n.inputs[1]].shape;
      f += 2.0 * (double)numel(n.shape) * (double)(w[1] * w[2] * w[3]);
    } else if (n.op == Op::Linear) {  // a fused GEGLU's projection is twice its output's width
      f += 2.0 * (double)numel(n.shape) * (double)nodes[n.inputs[1]].shape[1] * (n.a.geglu ? 2 : 1);
    } else if (n.op == Op::Attention) {
      std::vector<const Shape*> in;
      for (int i : n.inputs) in.push_back(&nodes[i].shape);
      if (auto v = attention_views(in); v.is_ok()) f += 2.0 * (double)v->B * (double)v->Lq * (double)v->Lk * (double)(v->HD + v->HDv);
    }
  }
  return f;
}

int GraphBuilder::input(const std::string& name, Shape shape, DType dt) {
  Node n{Op::Input, {}, std::move(shape), dt, name, {}};
  g_.nodes.push_back(std::move(n));
  return (int)g_.nodes.size() - 1;
}

int GraphBuilder::weight(const std::string& name, const Tensor& t) {
  g_.weights[name] = t;
  Node n{Op::Weight, {}, t.shape(), DType::F32, name, {}};
  g_.nodes.push_back(std::move(n));
  return (int)g_.nodes.size() - 1;
}

int GraphBuilder::add_node(Op op, std::vector<int> inputs, Attrs a, std::string label) {
  if (!st_.is_ok()) return -1;
  std::vector<const Shape*> in;
  for (int id : inputs) {
    if (id < 0) {
      st_ = invalid_argument(std::string(op_info(op).name) + ": missing input");
      return -1;
    }
    in.push_back(&g_.nodes[id].shape);
  }
  Node n{op, std::move(inputs), {}, DType::F32, std::move(label), std::move(a)};
  auto s = infer_shape(n, in);
  if (!s) {
    st_ = s.status();
    return -1;
  }
  n.shape = *s;
  if (op == Op::Slice) n.dtype = g_.nodes[n.inputs[0]].dtype;  // rows of its input, as they are
  g_.nodes.push_back(std::move(n));
  return (int)g_.nodes.size() - 1;
}

void GraphBuilder::output(int id, const std::string& name) {
  g_.outputs.push_back(id);
  g_.output_names.push_back(name);
}

int GraphBuilder::conv2d(int x, int w, int b, int64_t stride, int64_t pad) {
  Attrs a;
  a.stride = stride;
  for (auto& p : a.pad) p = pad;
  return add_node(Op::Conv2d, b >= 0 ? std::vector{x, w, b} : std::vector{x, w}, a);
}

int GraphBuilder::group_norm(int x, int g, int b, int64_t groups, float eps) {
  Attrs a;
  a.groups = groups;
  a.eps = eps;
  return add_node(Op::GroupNorm, {x, g, b}, a);
}

int GraphBuilder::layer_norm(int x, int g, int b, float eps) {
  Attrs a;
  a.eps = eps;
  return add_node(Op::LayerNorm, {x, g, b}, a);
}

int GraphBuilder::reshape(int x, Shape dims) {
  Attrs a;
  a.dims = std::move(dims);
  return add_node(Op::Reshape, {x}, a);
}

int GraphBuilder::attention(int q, int k, int v, int64_t heads, bool causal) {
  Attrs a;
  a.heads = heads;
  a.causal = causal;
  if (q >= 0) a.scale = 1.f / std::sqrt((float)(g_.nodes[q].shape.back() / std::max<int64_t>(heads, 1)));
  return add_node(Op::Attention, {q, k, v}, a);
}

int GraphBuilder::concat(std::vector<int> xs, int64_t axis) {
  Attrs a;
  a.axis = axis;
  return add_node(Op::Concat, std::move(xs), a);
}

}  // namespace sdrt
