// GroupNorm -> SiLU becomes one GroupNorm with a SiLU epilogue (ResNet blocks: norm1/norm2 + act; the
// UNet's conv_norm_out): one pass over the activation instead of two.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_groupnorm_silu(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  std::vector<bool> fused(g.nodes.size(), false);  // GroupNorms that absorb their SiLU
  int count = 0;
  for (const Node& n : g.nodes) {
    if (n.op != Op::SiLU) continue;
    const int src = n.inputs[0];
    const Node& gn = g.nodes[src];
    if (gn.op == Op::GroupNorm && !gn.a.silu && uses[src] == 1) fused[src] = true, ++count;
  }
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == Op::SiLU && fused[n.inputs[0]]) {
      rw.alias((int)i, n.inputs[0]);
      continue;
    }
    Node copy = n;
    if (fused[i]) copy.a.silu = true;
    rw.emit(std::move(copy), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
