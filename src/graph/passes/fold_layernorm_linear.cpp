// LayerNorms read only by a Linear (every transformer block's norm1 -> packed q/k/v, norm2 -> q, norm3 ->
// the GEGLU projection; CLIP's layer_norm1/2): the LayerNorm's affine part folded into the Linear's
// constants and the normalisation itself made the Linear's prologue (Attrs::ln),
//   y = ((x - mean) * rstd * gamma + beta) w^T + b = ((x - mean) * rstd) (w diag(gamma))^T + (b + w beta),
// so a backend can compute it from x in one kernel: the row statistics from the tiles of x the GEMM reads
// anyway and, with c = the rows' sums of w' = w diag(gamma),
//   y = rstd * (x w'^T - mean * c) + b'.
// The weights stay perturbed only by their own rounding (c is summed from the rounded w'), so the
// subtraction does not cancel more than the normalised input would. The normalised [rows, C] tensor is
// neither written nor read back, and its kernel launch is gone.
#include <algorithm>
#include <set>

#include "graph/passes.h"

namespace sdrt {

Graph fold_layernorm_linear(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  auto weight_of = [&](int id) -> const Tensor* {
    const Node& w = g.nodes[id];
    if (w.op != Op::Weight) return nullptr;
    auto it = g.weights.find(w.name);
    return it == g.weights.end() ? nullptr : &it->second;
  };
  std::vector<int> folds(g.nodes.size(), -1);  // Linear -> its LayerNorm
  std::vector<bool> absorbed(g.nodes.size(), false);
  int count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& p = g.nodes[i];
    if (p.op != Op::Linear || p.a.ln || p.inputs.size() < 2) continue;
    const int l = p.inputs[0];
    const Node& ln = g.nodes[l];
    if (ln.op != Op::LayerNorm || uses[l] != 1 || ln.inputs.size() != 3) continue;
    const Tensor *gamma = weight_of(ln.inputs[1]), *beta = weight_of(ln.inputs[2]), *w = weight_of(p.inputs[1]);
    const Tensor* b = p.inputs.size() > 2 ? weight_of(p.inputs[2]) : nullptr;
    const int64_t C = ln.shape.back();
    if (!gamma || !beta || !w || (p.inputs.size() > 2 && !b) || w->rank() != 2 || w->dim(1) != C || gamma->numel() != C || beta->numel() != C) continue;
    if (uses[p.inputs[1]] != 1 || (b && uses[p.inputs[2]] != 1)) continue;  // the folded constants replace them
    if (g.weights.count(g.nodes[p.inputs[1]].name + "+ln") || (b && g.weights.count(g.nodes[p.inputs[2]].name + "+ln"))) continue;
    folds[i] = l;
    absorbed[l] = true;
    ++count;
  }
  // The Linears' old constants and the LayerNorms' own (where read only there) are replaced: their nodes go,
  // and their tensors unless another Weight node binds the same name.
  std::vector<bool> dropped(g.nodes.size(), false);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (folds[i] < 0) continue;
    for (size_t k = 1; k < std::min<size_t>(g.nodes[i].inputs.size(), 3); ++k) dropped[g.nodes[i].inputs[k]] = true;
    for (int k = 1; k <= 2; ++k)
      if (uses[g.nodes[folds[i]].inputs[k]] == 1) dropped[g.nodes[folds[i]].inputs[k]] = true;
  }
  std::set<std::string> kept;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].op == Op::Weight && !dropped[i]) kept.insert(g.nodes[i].name);
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (absorbed[i]) continue;
    if (dropped[i]) {
      if (!kept.count(n.name)) rw.drop_weight(n.name);
      continue;
    }
    if (folds[i] < 0) {
      rw.emit(n, (int)i);
      continue;
    }
    const int l = folds[i];
    const Node& ln = g.nodes[l];
    const Tensor gamma = weight_of(ln.inputs[1])->to_f32(), beta = weight_of(ln.inputs[2])->to_f32(), w = weight_of(n.inputs[1])->to_f32();
    const int64_t N = w.dim(0), C = w.dim(1);
    Tensor w2 = Tensor::empty(DType::F32, {N, C}), b2 = Tensor::empty(DType::F32, {N});
    Tensor bias;
    if (n.inputs.size() > 2) bias = weight_of(n.inputs[2])->to_f32();
    for (int64_t r = 0; r < N; ++r) {
      double acc = bias.defined() && bias.numel() == N ? bias.f32()[r] : 0.0;
      for (int64_t k = 0; k < C; ++k) {
        w2.f32()[r * C + k] = w.f32()[r * C + k] * gamma.f32()[k];
        acc += (double)w.f32()[r * C + k] * beta.f32()[k];
      }
      b2.f32()[r] = (float)acc;
    }
    const std::string wname = g.nodes[n.inputs[1]].name + "+ln";
    const std::string bname = (n.inputs.size() > 2 ? g.nodes[n.inputs[2]].name : g.nodes[n.inputs[1]].name + ".bias") + "+ln";
    Node wn{Op::Weight, {}, w2.shape(), DType::F32, wname, {}};
    Node bn{Op::Weight, {}, b2.shape(), DType::F32, bname, {}};
    rw.add_weight(wname, std::move(w2));
    rw.add_weight(bname, std::move(b2));
    // the new constants stand for the old weight and bias nodes (or, without a bias, for the LayerNorm,
    // which nothing else reads)
    const int b_old = n.inputs.size() > 2 ? n.inputs[2] : l;
    rw.emit(std::move(wn), n.inputs[1]);
    rw.emit(std::move(bn), b_old);
    Node lin = n;
    lin.a.ln = true;
    lin.a.eps = ln.a.eps;
    lin.inputs = {ln.inputs[0], n.inputs[1], b_old};
    for (size_t k = 3; k < n.inputs.size(); ++k) lin.inputs.push_back(n.inputs[k]);  // a residual
    rw.emit(std::move(lin), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
