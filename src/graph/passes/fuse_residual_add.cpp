// Residual adds folded into the producing convolution or linear layer's epilogue (ResNet shortcuts,
// attention and feed-forward outputs, the transformer's proj_out): y = conv(x) + b + r written once,
// instead of writing conv(x) + b and reading it back for the Add.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_residual_add(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  // For each Add that absorbs its producer: the producer id and the residual id
  std::vector<std::pair<int, int>> plan(g.nodes.size(), {-1, -1});
  std::vector<bool> moved(g.nodes.size(), false);
  int count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != Op::Add) continue;
    for (int k = 0; k < 2; ++k) {
      const int p = n.inputs[k], r = n.inputs[1 - k];
      const Node& prod = g.nodes[p];
      if ((prod.op != Op::Conv2d && prod.op != Op::Linear) || prod.a.geglu || prod.inputs.size() != 3 || uses[p] != 1 || moved[p] || p == r) continue;
      if (prod.shape != n.shape || g.nodes[r].shape != n.shape) continue;
      plan[i] = {p, r};
      moved[p] = true;
      ++count;
      break;
    }
  }
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (moved[i]) continue;  // emitted at its Add's place
    if (plan[i].first >= 0) {
      Node fused = g.nodes[plan[i].first];
      fused.inputs.push_back(plan[i].second);
      rw.emit(std::move(fused), (int)i);
      rw.alias(plan[i].first, (int)i);
      continue;
    }
    rw.emit(n, (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
