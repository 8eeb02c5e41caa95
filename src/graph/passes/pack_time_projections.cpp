// The time-embedding projections packed into one GEMM: every ResNet of SD's UNet projects the same
// embedding (silu(temb), [N, 1280]) to its own channel count and adds it before its second GroupNorm (pass
// fuse_groupnorm_add makes that the GroupNorm's fourth input, through a Reshape to [N, C, 1, 1]). Those
// Linears become one with the weights (and biases) stacked, [sum C, 1280], and each GroupNorm reads its
// columns of the packed output [N, sum C] (Attrs::dims = {column}). In SD 1.5 that is 22 GEMMs of N rows
// and 0.8-3.3 MB of weights each - bound by latency, a few microseconds apiece - against one that streams
// its 52 MB of weights at the memory's rate. The packed Linear takes the place of the group's first one.
// Its weights are named for the group's members ("<first>+packed<count>.<hash of the names>"): which
// projections a group holds depends on the graph (share_batch_halves leaves some at half the batch, by
// size), and the graphs one backend compiles share its weights by name.
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>

#include "graph/passes.h"

namespace sdrt {

Graph pack_time_projections(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  auto weight_of = [&](int id) { return passes::weight_tensor(g, id); };
  // The projection a GroupNorm adds: t = Reshape(Linear(e, w, b)) to [N, C, 1, 1], the Linear (bias, no
  // residual, constant weights read only there) and the Reshape read only on this path; -1 otherwise.
  auto projection_of = [&](const Node& gn) {
    if (gn.op != Op::GroupNorm || gn.inputs.size() != 4 || !gn.a.dims.empty()) return -1;
    const int r = gn.inputs[3];
    const Node& rs = g.nodes[r];
    if (rs.op != Op::Reshape || uses[r] != 1 || rs.inputs.size() != 1) return -1;
    const int l = rs.inputs[0];
    const Node& lin = g.nodes[l];
    if (lin.op != Op::Linear || lin.inputs.size() != 3 || lin.a.geglu || uses[l] != 1 || lin.shape.size() != 2) return -1;
    for (int k : {1, 2})
      if (!weight_of(lin.inputs[k]) || uses[lin.inputs[k]] != 1) return -1;
    return l;
  };

  // Groups: per input e of such Linears, the GroupNorms in order, with their Linears.
  std::map<int, std::vector<std::pair<int, int>>> by_input;  // e -> (GroupNorm, Linear)
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const int l = projection_of(g.nodes[i]);
    if (l >= 0) by_input[g.nodes[l].inputs[0]].push_back({(int)i, l});
  }
  std::vector<int> group_of(g.nodes.size(), -1);  // GroupNorm, Linear, Reshape and weights -> their group's e
  std::vector<int64_t> column(g.nodes.size(), -1);  // member GroupNorm -> its columns' start in the packed output
  std::map<int, int> first_linear;                  // e -> the group's first Linear in the graph's order (the packed one's place)
  std::map<int, std::string> suffix;                // e -> its packed weights' suffix
  int count = 0;
  for (auto it = by_input.begin(); it != by_input.end();) {
    auto& members = it->second;
    const Tensor* w0 = weight_of(g.nodes[members[0].second].inputs[1]);
    const Tensor* b0 = weight_of(g.nodes[members[0].second].inputs[2]);
    bool ok = members.size() >= 2;
    for (const auto& [gn, l] : members) {
      const Tensor* w = weight_of(g.nodes[l].inputs[1]);
      const Tensor* b = weight_of(g.nodes[l].inputs[2]);
      ok = ok && w->dtype() == w0->dtype() && b->dtype() == b0->dtype() && w->shape().size() == 2 && w->shape()[1] == w0->shape()[1];
    }
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the members' weight names
    for (const auto& [gn, l] : members)
      for (const char c : g.nodes[g.nodes[l].inputs[1]].name + ";") h = (h ^ (unsigned char)c) * 1099511628211ull;
    char sfx[48];
    std::snprintf(sfx, sizeof sfx, "+packed%zu.%016llx", members.size(), (unsigned long long)h);
    suffix[it->first] = sfx;
    if (!ok || !passes::stacked_names_free(g, members[0].second, sfx)) {
      it = by_input.erase(it);
      continue;
    }
    int64_t col = 0;
    int first = members[0].second;
    for (const auto& [gn, l] : members) {
      const Node& lin = g.nodes[l];
      for (int id : {gn, l, g.nodes[gn].inputs[3], lin.inputs[1], lin.inputs[2]}) group_of[id] = it->first;
      column[gn] = col;
      col += lin.shape[1];
      first = std::min(first, l);
    }
    first_linear[it->first] = first;
    count += (int)members.size();
    ++it;
  }

  passes::Rewriter rw(g);
  std::vector<bool> dropped(g.nodes.size(), false);
  for (size_t i = 0; i < g.nodes.size(); ++i) dropped[i] = group_of[i] >= 0 && g.nodes[i].op == Op::Weight;
  const std::set<std::string> kept = passes::kept_weight_names(g, dropped);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const int e = group_of[i];
    if (e < 0) {
      rw.emit(n, (int)i);
      continue;
    }
    if (n.op == Op::Weight) {
      if (!kept.count(n.name)) rw.drop_weight(n.name);
      continue;
    }
    if (n.op == Op::Reshape) continue;
    if (n.op == Op::Linear) {
      if ((int)i != first_linear.at(e)) continue;
      // the stacked weight and bias as new constants, then the packed Linear, here in the first one's place
      std::vector<int> ls;
      for (const auto& [gn, l] : by_input.at(e)) ls.push_back(l);
      passes::emit_stacked_linear(rw, g, ls, suffix.at(e), (int)i);
      continue;
    }
    // a member GroupNorm: reads its columns of the packed output (which stands for the group's first Linear)
    Node gn = n;
    gn.inputs[3] = first_linear.at(e);
    gn.a.dims = {column[i]};
    rw.emit(std::move(gn), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
