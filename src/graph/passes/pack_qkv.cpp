// Attention's projections packed into one GEMM: q, k and v computed by three Linear layers from the same
// input (self-attention) become one Linear with the three weights stacked, [3*H*D, C], whose output the
// Attention reads as qkv; k and v from the same context (cross-attention) become one [2*H*D, C] Linear
// read as kv. Fewer, wider GEMMs (SD's 320-wide projections become one 960-wide one) and no split: the
// attention kernels read q, k and v in place, rows 3*H*D (or 2*H*D) apart. The stacked weights are new
// constants of the graph; the separate ones are dropped where nothing else reads them.
#include <algorithm>
#include <set>

#include "graph/passes.h"

namespace sdrt {
Graph pack_qkv(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  auto weight_of = [&](int id) { return passes::weight_tensor(g, id); };
  // A projection that can be packed: a Linear with a weight (and maybe a bias) read only here, no residual.
  auto projection = [&](int id) {
    const Node& l = g.nodes[id];
    if (l.op != Op::Linear || l.inputs.size() > 3 || uses[id] != 1) return false;
    for (size_t k = 1; k < l.inputs.size(); ++k)
      if (!weight_of(l.inputs[k]) || uses[l.inputs[k]] != 1) return false;
    return true;
  };
  // Whether Linears a, b (, c) can share one GEMM: the same input, weights of one dtype and width, all with
  // or all without a bias.
  auto compatible = [&](const std::vector<int>& ls) {
    for (int id : ls)
      if (!projection(id)) return false;
    const Node& first = g.nodes[ls[0]];
    const Tensor* w0 = weight_of(first.inputs[1]);
    for (int id : ls) {
      const Node& l = g.nodes[id];
      const Tensor* w = weight_of(l.inputs[1]);
      if (l.inputs[0] != first.inputs[0] || l.inputs.size() != first.inputs.size() || w->dtype() != w0->dtype() ||
          w->shape().size() != 2 || w->shape()[1] != w0->shape()[1])
        return false;
      if (l.inputs.size() == 3 && weight_of(l.inputs[2])->dtype() != weight_of(first.inputs[2])->dtype()) return false;
    }
    return true;
  };

  // Per Attention: the Linears that become one (q, k, v or k, v), in that order.
  std::vector<std::vector<int>> group(g.nodes.size());
  std::vector<int> packed_at(g.nodes.size(), -1);  // Linear -> the Attention whose packing it joins
  int count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != Op::Attention || n.inputs.size() != 3) continue;
    const int q = n.inputs[0], k = n.inputs[1], v = n.inputs[2];
    if (q == k || k == v || q == v) continue;
    std::vector<int> ls;
    if (compatible({q, k, v}))
      ls = {q, k, v};
    else if (compatible({k, v}) && g.nodes[k].shape.back() == g.nodes[v].shape.back())
      ls = {k, v};
    else
      continue;
    const std::string suffix = ls.size() == 3 ? "+k+v" : "+v";  // the stacked constants' names must be new
    if (!passes::stacked_names_free(g, ls[0], suffix)) continue;
    for (int l : ls) packed_at[l] = (int)i;
    group[i] = ls;
    ++count;
  }

  passes::Rewriter rw(g);
  std::vector<bool> dropped(g.nodes.size(), false);  // weights of packed Linears: replaced by the stacked ones
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (packed_at[i] >= 0)
      for (size_t k = 1; k < g.nodes[i].inputs.size(); ++k) dropped[g.nodes[i].inputs[k]] = true;
  const std::set<std::string> kept = passes::kept_weight_names(g, dropped);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (dropped[i]) {
      if (!kept.count(n.name)) rw.drop_weight(n.name);
      continue;
    }
    if (packed_at[i] >= 0) {
      const std::vector<int>& ls = group[packed_at[i]];
      int last = ls[0];  // emitted at the group's last Linear
      for (int l : ls) last = std::max(last, l);
      if ((int)i != last) continue;
      // the stacked weight (and bias) as new constants, then one Linear standing for every member
      passes::emit_stacked_linear(rw, g, ls, ls.size() == 3 ? "+k+v" : "+v", ls[0]);
      for (size_t k = 1; k < ls.size(); ++k) rw.alias(ls[k], ls[0]);
      continue;
    }
    if (n.op == Op::Attention && !group[i].empty()) {
      Node att = n;
      if (group[i].size() == 3) att.inputs = {group[i][0]};                 // qkv
      else att.inputs = {n.inputs[0], group[i][0]};                          // q, kv
      rw.emit(std::move(att), (int)i);
      continue;
    }
    rw.emit(n, (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
