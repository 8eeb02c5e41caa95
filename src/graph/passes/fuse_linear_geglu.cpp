// GEGLU feed-forward projections (every transformer block's ff.net.0.proj): the GEGLU applied in the
// projection's epilogue, so the [..., 2F] projection - the largest activation of the transformer block,
// 335 MB per call at SD 1.5's first level and batch 16 - is neither written nor read back.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_linear_geglu(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  std::vector<bool> fused(g.nodes.size(), false);  // Linears that absorb their GEGLU
  int count = 0;
  for (const Node& n : g.nodes) {
    if (n.op != Op::GEGLU) continue;
    const int src = n.inputs[0];
    const Node& l = g.nodes[src];
    if (l.op == Op::Linear && !l.a.geglu && l.inputs.size() <= 3 && uses[src] == 1) fused[src] = true, ++count;
  }
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == Op::GEGLU && fused[n.inputs[0]]) {
      rw.alias((int)i, n.inputs[0]);
      continue;
    }
    Node copy = n;
    if (fused[i]) {
      copy.a.geglu = true;
      copy.shape.back() /= 2;
    }
    rw.emit(std::move(copy), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
