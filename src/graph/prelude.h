// The work of a graph that depends on one input alone, done for many of that input's values at once. In the
// sampling loop the timestep changes every step, and what the UNet computes from it alone - SD's time
// embedding: the sinusoid, its MLP and the ResNets' packed projections, 52 MB of weights read for one row
// in every step - depends on nothing else, so it can run once for all the steps' timesteps, as one batch
// (DeviceLoop::stage_input). Backend-independent: the CPU backend runs the prelude graph too (tests).
#pragma once
#include <string>
#include <vector>

#include "graph/graph.h"

namespace sdrt {

struct InputPrelude {
  // Input `name` with `count` times its rows (value k in rows [k N, (k + 1) N)), the part's nodes, and as
  // outputs the part's values the rest of the graph reads (the boundary), in the
  // original order; the weights it reads (shared storage). Marked optimized where the original was.
  Graph graph;
  std::vector<int> values;  // per output of `graph`: the original graph's node id
  std::vector<char> part;   // per original node: in the part (the input itself included)
  int computed = 0;         // nodes of the part besides the input: 0 where nothing can be done ahead
};

// The part: the input, and every node whose inputs are weights or in the part (at least one in the part)
// and that keeps the batch on its first axis (passes::rebatch; rows do not mix in this IR then), or that
// concatenates part values along it (share_batch_halves' expansion of the guidance halves' shared values).
// In the prelude a node of R rows has count x R, value k's in rows [k R, (k + 1) R). The boundary: part
// nodes that another node or a graph output reads. An error where the graph has no such
// input, it is not float32 with rows, or count is not positive.
Result<InputPrelude> input_prelude(const Graph& g, const std::string& name, int64_t count);

}  // namespace sdrt
