#include <cstdlib>
#include <cstring>

#include "graph/passes.h"

namespace sdrt {
namespace passes {

std::vector<int> use_counts(const Graph& g) {
  std::vector<int> uses(g.nodes.size(), 0);
  for (const Node& n : g.nodes)
    for (int in : n.inputs) ++uses[in];
  for (int o : g.outputs) ++uses[o];
  return uses;
}

Graph absorb_consumers(const Graph& g, Op consumer, const std::function<bool(const Node&)>& fits,
                       const std::function<void(Node&, const Node&)>& absorb, int* rewrites) {
  const std::vector<int> uses = use_counts(g);
  std::vector<int> taker(g.nodes.size(), -1);  // per producer: the consumer it absorbs
  int count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != consumer || n.inputs.size() != 1) continue;
    const int src = n.inputs[0];
    if (uses[src] == 1 && fits(g.nodes[src])) taker[src] = (int)i, ++count;
  }
  Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == consumer && n.inputs.size() == 1 && taker[n.inputs[0]] == (int)i) {
      rw.alias((int)i, n.inputs[0]);
      continue;
    }
    Node copy = n;
    if (taker[i] >= 0) absorb(copy, g.nodes[taker[i]]);
    rw.emit(std::move(copy), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

const Tensor* weight_tensor(const Graph& g, int id) {
  const Node& w = g.nodes[id];
  if (w.op != Op::Weight) return nullptr;
  auto it = g.weights.find(w.name);
  return it == g.weights.end() ? nullptr : &it->second;
}

std::set<std::string> kept_weight_names(const Graph& g, const std::vector<bool>& dropped) {
  std::set<std::string> kept;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].op == Op::Weight && !dropped[i]) kept.insert(g.nodes[i].name);
  return kept;
}

Status rebatch(Node& n, const std::vector<const Shape*>& in, int64_t N, int64_t rows) {
  auto refuse = [&] {
    return invalid_argument(std::string(op_info(n.op).name) + " node" + (n.name.empty() ? "" : " '" + n.name + "'") +
                            " does not keep the batch on its first axis");
  };
  if ((n.op == Op::Concat && n.a.axis == 0) || n.op == Op::Slice || n.shape.empty() || n.shape[0] != N) return refuse();
  if (n.op == Op::Reshape) {
    if (n.a.dims.empty() || n.a.dims[0] != N) return refuse();
    n.a.dims[0] = rows;
  }
  auto s = infer_shape(n, in);
  if (!s.is_ok()) return s.status();
  Shape want = n.shape;
  want[0] = rows;
  if (*s != want) return refuse();
  n.shape = *s;
  return Status::ok();
}

namespace {
// Weights (2-D) or biases (1-D) of one dtype stacked along their first dimension.
Tensor stack_rows(const std::vector<const Tensor*>& parts) {
  Shape s = parts[0]->shape();
  for (size_t i = 1; i < parts.size(); ++i) s[0] += parts[i]->shape()[0];
  Tensor out = Tensor::empty(parts[0]->dtype(), s);
  unsigned char* dst = static_cast<unsigned char*>(out.mutable_data());
  for (const Tensor* t : parts) {
    std::memcpy(dst, t->data(), t->nbytes());
    dst += t->nbytes();
  }
  return out;
}
}  // namespace

bool stacked_names_free(const Graph& g, int first, const std::string& suffix) {
  const Node& l = g.nodes[first];
  for (size_t k = 1; k < l.inputs.size() && k < 3; ++k)
    if (g.weights.count(g.nodes[l.inputs[k]].name + suffix)) return false;
  return true;
}

int emit_stacked_linear(Rewriter& rw, const Graph& g, const std::vector<int>& ls, const std::string& suffix, int at) {
  const Node& first = g.nodes[ls[0]];
  Node lin = first;
  lin.inputs.resize(std::min<size_t>(first.inputs.size(), 3));
  lin.shape.back() = 0;
  for (size_t k = 1; k < lin.inputs.size(); ++k) {  // the weight, then the bias
    std::vector<const Tensor*> parts;
    for (int l : ls) parts.push_back(weight_tensor(g, g.nodes[l].inputs[k]));
    Tensor t = stack_rows(parts);
    if (k == 1) lin.shape.back() = t.dim(0);
    const std::string name = g.nodes[first.inputs[k]].name + suffix;
    Node w{Op::Weight, {}, t.shape(), t.dtype(), name, {}};
    rw.add_weight(name, std::move(t));
    rw.emit(std::move(w), first.inputs[k]);
  }
  lin.name = g.nodes[first.inputs[1]].name + suffix;
  return rw.emit(std::move(lin), at);
}

int Rewriter::emit(Node n, int old_id) {
  for (int& in : n.inputs) in = map_[in];
  out_.nodes.push_back(std::move(n));
  map_[old_id] = (int)out_.nodes.size() - 1;
  return map_[old_id];
}

Graph Rewriter::finish() {
  for (int o : g_.outputs) out_.outputs.push_back(map_[o]);
  out_.output_names = g_.output_names;
  return std::move(out_);
}

}  // namespace passes

Graph optimize_graph(const Graph& g, std::vector<PassResult>* log) {
  // The passes in order, each logged with its count; those with a switch (`off_env`=0 in the environment,
  // for A/B measurements) log 0 when off.
  using Pass = Graph (*)(const Graph&, int*);
  struct Step {
    const char* name;
    Pass pass;
    const char* off_env;
  };
  static const Step steps[] = {
      {"fold_constants", fold_constants, nullptr},
      {"fuse_groupnorm_silu", fuse_groupnorm_silu, nullptr},
      {"fuse_residual_add", fuse_residual_add, nullptr},
      {"fuse_groupnorm_add", fuse_groupnorm_add, nullptr},
      {"fold_attention_scale", fold_attention_scale, "SDRT_ATTN_SCALE_FOLD"},
      {"pack_qkv", pack_qkv, nullptr},
      {"fuse_linear_geglu", fuse_linear_geglu, nullptr},
      {"subpixel_upsample_conv", subpixel_upsample_conv, "SDRT_SUBPIXEL"},
      {"fuse_interleave_concat", fuse_interleave_concat, "SDRT_INTERLEAVE_CONCAT"},
      {"pack_time_projections", pack_time_projections, "SDRT_PACK_TEMB"},
  };
  Graph h = g;
  for (const Step& st : steps) {
    int n = 0;
    const char* e = st.off_env ? std::getenv(st.off_env) : nullptr;
    if (!(e && std::strcmp(e, "0") == 0)) h = st.pass(h, &n);
    if (log) log->push_back({st.name, n});
  }
  h.optimized = true;
  return h;
}

}  // namespace sdrt
