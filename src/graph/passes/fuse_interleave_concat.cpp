// Concat(PhaseInterleave(x), s, ...) along the channels, the interleaving read only there -> one Concat that
// reads x's phase planes and interleaves them as it copies (Attrs::up2). In SD's UNet each upsampler's
// output (a PhaseInterleave after pass subpixel_upsample_conv) is the first input of the next up block's
// skip concatenation: one pass over that activation (and one launch) fewer per upsampler.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_interleave_concat(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  std::vector<char> taken(g.nodes.size(), 0);  // PhaseInterleave nodes a Concat absorbs
  int count = 0;
  for (const Node& n : g.nodes) {
    if (n.op != Op::Concat || n.a.up2 || n.a.axis != 1 || n.shape.size() != 4 || n.inputs.empty()) continue;
    const int p = n.inputs[0];
    if (g.nodes[p].op == Op::PhaseInterleave && uses[p] == 1) taken[p] = 1, ++count;
  }
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (taken[i]) continue;  // read only by the Concat below, which reads its planes instead
    Node copy = n;
    if (n.op == Op::Concat && !n.inputs.empty() && taken[n.inputs[0]]) {
      copy.inputs[0] = g.nodes[n.inputs[0]].inputs[0];
      copy.a.up2 = true;
    }
    rw.emit(std::move(copy), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
