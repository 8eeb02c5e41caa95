// GEGLU feed-forward projections (every transformer block's ff.net.0.proj): the GEGLU applied in the
// projection's epilogue, so the [..., 2F] projection - the largest activation of the transformer block,
// 335 MB per call at SD 1.5's first level and batch 16 - is neither written nor read back.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_linear_geglu(const Graph& g, int* rewrites) {
  return passes::absorb_consumers(
      g, Op::GEGLU, [](const Node& p) { return p.op == Op::Linear && !p.a.geglu && p.inputs.size() <= 3; },  // no residual in its epilogue
      [](Node& p, const Node& geglu) {
        p.a.geglu = true;
        p.shape = geglu.shape;
      },
      rewrites);
}

}  // namespace sdrt
