// GroupNorm -> SiLU becomes one GroupNorm with a SiLU epilogue (ResNet blocks: norm1/norm2 + act; the
// UNet's conv_norm_out): one pass over the activation instead of two.
#include "graph/passes.h"

namespace sdrt {

Graph fuse_groupnorm_silu(const Graph& g, int* rewrites) {
  return passes::absorb_consumers(
      g, Op::SiLU, [](const Node& p) { return p.op == Op::GroupNorm && !p.a.silu; }, [](Node& p, const Node&) { p.a.silu = true; }, rewrites);
}

}  // namespace sdrt
