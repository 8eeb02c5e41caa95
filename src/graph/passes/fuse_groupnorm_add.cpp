// GroupNorm(x + t) with t a per-image channel vector [N, C, 1, 1] (the ResNet block's time embedding) and
// the sum read only by the GroupNorm -> one GroupNorm with t as its fourth input, added as the statistics
// are taken: the sum is never written out.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_groupnorm_add(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  std::vector<int> vec(g.nodes.size(), -1), full(g.nodes.size(), -1);  // per fused GroupNorm: t and x
  std::vector<bool> absorbed(g.nodes.size(), false);
  int count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != Op::GroupNorm || n.inputs.size() != 3) continue;
    const int src = n.inputs[0];
    const Node& add = g.nodes[src];
    if (add.op != Op::Add || uses[src] != 1 || add.shape.size() != 4) continue;
    for (int k = 0; k < 2; ++k) {
      const Shape& ts = g.nodes[add.inputs[1 - k]].shape;
      if (g.nodes[add.inputs[k]].shape == add.shape && ts == Shape{add.shape[0], add.shape[1], 1, 1}) {
        full[i] = add.inputs[k], vec[i] = add.inputs[1 - k], absorbed[src] = true, ++count;
        break;
      }
    }
  }
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (absorbed[i]) continue;  // its GroupNorm reads the operands instead
    Node copy = g.nodes[i];
    if (vec[i] >= 0) copy.inputs = {full[i], copy.inputs[1], copy.inputs[2], vec[i]};
    rw.emit(std::move(copy), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
