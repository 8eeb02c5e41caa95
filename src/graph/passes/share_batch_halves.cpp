// share_batch_halves: a batch whose second half repeats its first in some inputs - classifier-free
// guidance, where the unconditional and the conditional half see the same latents and timestep and only
// the prompt embeddings differ - computes what depends on those inputs alone once, at half the batch.
// In SD's UNet that is conv_in, the first ResNet, and the first transformer up to its cross-attention
// (the 4096-token self-attention among them), and the time embedding. Where a value of the whole batch
// reads a shared value, a Concat of two copies along the batch axis ("expansion") stands for it.
//
// Which shared values keep their half: a shared node all of whose readers are whole-batch nodes moves to
// the whole batch (reading expansions of its inputs instead) where that adds no expansion, or adds one and
// the node is small (at most 4096 values per batch row: the time embedding's projections and reshapes).
// So the 22 time-embedding projections of SD's ResNets read one expansion of the embedding instead of
// needing one each, while the convolutions and attention of the shared prefix stay at half.
#include <algorithm>
#include <string>

#include "graph/passes.h"

namespace sdrt {
namespace {

// "Conv2d node 14" / "Input node 0 'sample'": node i of a graph, for errors.
std::string node_text(const Node& n, size_t i) {
  return std::string(op_info(n.op).name) + " node " + std::to_string(i) + (n.name.empty() ? "" : " '" + n.name + "'");
}

}  // namespace

Result<Graph> share_batch_halves(const Graph& g, const std::set<std::string>& inputs, int* rewrites) {
  if (rewrites) *rewrites = 0;
  const auto& nodes = g.nodes;
  const size_t n_nodes = nodes.size();
  int64_t N = -1;
  std::set<std::string> found;
  for (const Node& n : nodes) {
    if (n.op != Op::Input) continue;
    if (n.shape.empty() || (N >= 0 && n.shape[0] != N)) return invalid_argument("share_batch_halves: the inputs do not share one batch size");
    N = n.shape[0];
    if (inputs.count(n.name)) found.insert(n.name);
  }
  for (const auto& name : inputs)
    if (!found.count(name)) return invalid_argument("share_batch_halves: the graph has no input '" + name + "'");
  if (N < 2 || N % 2) return invalid_argument("share_batch_halves: the batch (" + std::to_string(N) + ") is not even");

  // batched: computed from an input; shared: from the named inputs and weights alone, and an op that works
  // row by row (a Concat or Slice along the batch does not)
  std::vector<char> batched(n_nodes, 0), shared(n_nodes, 0), named(n_nodes, 0);
  for (size_t i = 0; i < n_nodes; ++i) {
    const Node& n = nodes[i];
    if (n.op == Op::Input) {
      batched[i] = 1;
      named[i] = shared[i] = inputs.count(n.name) > 0;
      continue;
    }
    bool any = false, all = true;
    for (int in : n.inputs) {
      if (!batched[in]) continue;
      any = true;
      all = all && shared[in];
    }
    batched[i] = any;
    if (any && (n.shape.empty() || n.shape[0] != N))
      return invalid_argument("share_batch_halves: " + node_text(n, i) + " does not keep the batch on its first axis");
    const bool rowwise = !(n.op == Op::Concat && n.a.axis == 0) && n.op != Op::Slice;
    shared[i] = any && all && rowwise;
  }
  std::vector<std::vector<int>> readers(n_nodes);
  for (size_t i = 0; i < n_nodes; ++i)
    for (int in : nodes[i].inputs)
      if (std::find(readers[in].begin(), readers[in].end(), (int)i) == readers[in].end()) readers[in].push_back((int)i);
  std::vector<char> is_output(n_nodes, 0);
  for (int o : g.outputs) is_output[o] = 1;

  // whole-batch readers of a shared value (then it needs an expansion)
  auto expanded = [&](int v, int besides) {
    if (is_output[v]) return true;
    for (int r : readers[v])
      if (r != besides && batched[r] && !shared[r]) return true;
    return false;
  };
  for (size_t k = n_nodes; k-- > 0;) {
    if (!shared[k] || named[k] || (readers[k].empty() && !is_output[k])) continue;  // (a value nothing reads stays)
    bool all_whole = !is_output[k];
    for (int r : readers[k]) all_whole = all_whole && !shared[r];
    if (!all_whole) continue;
    int added = 0;
    std::vector<int> seen;
    for (int in : nodes[k].inputs) {
      if (!shared[in] || std::find(seen.begin(), seen.end(), in) != seen.end()) continue;
      seen.push_back(in);
      added += !expanded(in, (int)k);
    }
    const bool small = nodes[k].shape[0] > 0 && numel(nodes[k].shape) / nodes[k].shape[0] <= 4096;
    if (added == 0 || (added == 1 && small)) shared[k] = 0;
  }

  Graph out;
  out.weights = g.weights;
  out.optimized = g.optimized;
  std::vector<int> map(n_nodes, -1), expansion(n_nodes, -1);
  auto emit = [&out](Node n) {
    out.nodes.push_back(std::move(n));
    return (int)out.nodes.size() - 1;
  };
  // the whole-batch value of old node v: its own, or the expansion of its half (made once)
  auto whole = [&](int v) {
    if (!shared[v]) return map[v];
    if (expansion[v] < 0) {
      Node c;
      c.op = Op::Concat;
      c.a.axis = 0;
      c.inputs = {map[v], map[v]};
      c.shape = nodes[v].shape;
      c.dtype = nodes[v].dtype;
      c.name = nodes[v].name.empty() ? "both halves" : nodes[v].name + " (both halves)";
      expansion[v] = emit(std::move(c));
    }
    return expansion[v];
  };
  int halved = 0;
  for (size_t i = 0; i < n_nodes; ++i) {
    Node n = nodes[i];
    if (!shared[i]) {
      for (int& in : n.inputs) in = whole(in);
      map[i] = emit(std::move(n));
      continue;
    }
    std::vector<const Shape*> in;
    for (int& id : n.inputs) {
      id = map[id];
      in.push_back(&out.nodes[id].shape);
    }
    if (n.op == Op::Input) {
      n.shape[0] = N / 2;
    } else {
      SDRT_RETURN_IF_ERROR(passes::rebatch(n, in, N, N / 2).with_context("share_batch_halves (node " + std::to_string(i) + ")"));
      ++halved;
    }
    map[i] = emit(std::move(n));
  }
  for (int o : g.outputs) out.outputs.push_back(whole(o));
  out.output_names = g.output_names;
  SDRT_RETURN_IF_ERROR(out.verify().with_context("share_batch_halves"));
  if (rewrites) *rewrites = halved;
  return out;
}

}  // namespace sdrt
