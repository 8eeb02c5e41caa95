// The softmax's scale folded into the query projection: an Attention whose q is a Linear read only there
// gets that Linear's weight and bias multiplied by c = scale / ln 2 and the scale ln 2, so q k^T comes out
// in the base-2 domain the attention kernels exponentiate in (scale * log2 e = 1): the same softmax, one
// rounding of the scaled weights where they are FP16. The CUDA head-dim-40 kernel's late-maximum form then
// takes the running row maxima off inside its MMAs (flash_attention_sm90.cu) instead of one multiply-add
// per score. Runs before pack_qkv, which stacks the scaled weight with k's and v's.
#include <cmath>
#include <set>

#include "graph/passes.h"

namespace sdrt {
namespace {
constexpr float kLn2 = kBase2AttentionScale;  // times log2 e, in float: exactly 1
}  // namespace

Graph fold_attention_scale(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  auto weight_of = [&](int id) { return passes::weight_tensor(g, id); };
  const std::string suffix = "*qscale";
  // per query Linear folded, and per weight (or bias) of it: c = the Attention's scale / ln 2, else 0
  std::vector<double> fold(g.nodes.size(), 0.0), weight_scale(g.nodes.size(), 0.0);
  std::vector<bool> dropped(g.nodes.size(), false);  // those weights, replaced by scaled ones
  int count = 0;
  for (const Node& n : g.nodes) {
    if (n.op != Op::Attention || n.inputs.size() != 3 || !(n.a.scale > 0.f) || !std::isfinite(n.a.scale) || n.a.scale == kLn2) continue;
    const int q = n.inputs[0];
    if (q == n.inputs[1] || q == n.inputs[2] || uses[q] != 1 || fold[q] != 0.0) continue;
    const Node& l = g.nodes[q];
    if (l.op != Op::Linear || l.inputs.size() < 2 || l.inputs.size() > 3 || l.a.geglu) continue;
    bool ok = true;
    for (size_t k = 1; k < l.inputs.size() && ok; ++k) {
      const Tensor* t = weight_of(l.inputs[k]);
      ok = t && uses[l.inputs[k]] == 1 && (t->dtype() == DType::F32 || t->dtype() == DType::F16) &&
           !g.weights.count(g.nodes[l.inputs[k]].name + suffix);
    }
    if (!ok) continue;
    fold[q] = (double)n.a.scale / (double)kLn2;
    for (size_t k = 1; k < l.inputs.size(); ++k) dropped[l.inputs[k]] = true, weight_scale[l.inputs[k]] = fold[q];
    ++count;
  }

  passes::Rewriter rw(g);
  const std::set<std::string> kept = passes::kept_weight_names(g, dropped);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (dropped[i]) {  // the weight (or bias) times c, in its dtype, under a new name
      const Tensor* t = weight_of((int)i);
      const Tensor f = t->to_f32();  // t itself where it is float32: not written
      Tensor s = Tensor::empty(DType::F32, t->shape());
      const float* src = f.f32();
      float* d = s.f32();
      for (int64_t j = 0; j < s.numel(); ++j) d[j] = (float)((double)src[j] * weight_scale[i]);
      if (t->dtype() == DType::F16) s = s.to_f16();
      Node w = n;
      w.name = n.name + suffix;
      if (!kept.count(n.name)) rw.drop_weight(n.name);
      rw.add_weight(w.name, std::move(s));
      rw.emit(std::move(w), (int)i);
      continue;
    }
    Node e = n;
    if (n.op == Op::Attention && n.inputs.size() == 3 && fold[n.inputs[0]] != 0.0) e.a.scale = kLn2;
    rw.emit(std::move(e), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
