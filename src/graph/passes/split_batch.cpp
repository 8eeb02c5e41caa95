// split_batch: a graph whose every input carries the batch on its first axis becomes `parts` copies of its
// nodes, each on 1/parts of the batch (the inputs sliced), with the outputs concatenated back. The copies
// share the weights and nothing else, so a backend can run them side by side (the CUDA backend: one stream
// each, branches of one captured graph), filling the SMs that one copy's small kernels leave idle.
#include <string>

#include "graph/passes.h"

namespace sdrt {

Graph split_batch(const Graph& g, int parts, int* rewrites) {
  if (rewrites) *rewrites = 0;
  const auto& nodes = g.nodes;
  int64_t N = -1;
  for (const Node& n : nodes)
    if (n.op == Op::Input) {
      if (n.shape.empty() || (N >= 0 && n.shape[0] != N)) return g;
      N = n.shape[0];
    }
  if (parts < 2 || N < parts || N % parts) return g;
  const int64_t P = N / parts;

  // batched: computed from an input (every such node must carry the batch first)
  std::vector<char> batched(nodes.size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (n.op == Op::Input) batched[i] = 1;
    for (int in : n.inputs) batched[i] = batched[i] || batched[in];
    if (batched[i] && (n.shape.empty() || n.shape[0] != N)) return g;
  }

  Graph out;
  out.weights = g.weights;
  out.optimized = g.optimized;
  std::vector<int> shared(nodes.size(), -1);  // inputs, weights and nodes of weights alone: emitted once
  std::vector<std::vector<int>> copy(parts, std::vector<int>(nodes.size(), -1));
  auto emit = [&out](Node n) {
    out.nodes.push_back(std::move(n));
    return (int)out.nodes.size() - 1;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (batched[i] && nodes[i].op != Op::Input) continue;
    Node n = nodes[i];
    for (int& in : n.inputs) in = shared[in];
    shared[i] = emit(std::move(n));
  }
  for (int p = 0; p < parts; ++p) {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!batched[i]) continue;
      const Node& src = nodes[i];
      if (src.op == Op::Input) {
        Node s;
        s.op = Op::Slice;
        s.inputs = {shared[i]};
        s.shape = src.shape;
        s.shape[0] = P;
        s.dtype = src.dtype;
        s.name = src.name + "#" + std::to_string(p);
        s.a.dims = {p * P, P};
        copy[p][i] = emit(std::move(s));
        continue;
      }
      Node n = src;
      std::vector<const Shape*> in;
      for (int& id : n.inputs) {
        id = batched[id] ? copy[p][id] : shared[id];
        in.push_back(&out.nodes[id].shape);
      }
      if (!passes::rebatch(n, in, N, P)) return g;
      copy[p][i] = emit(std::move(n));
    }
  }
  for (int o : g.outputs) {
    if (!batched[o]) {
      out.outputs.push_back(shared[o]);
      continue;
    }
    Node c;
    c.op = Op::Concat;
    c.a.axis = 0;
    c.shape = nodes[o].shape;
    c.dtype = nodes[o].dtype;
    for (int p = 0; p < parts; ++p) c.inputs.push_back(copy[p][o]);
    out.outputs.push_back(emit(std::move(c)));
  }
  out.output_names = g.output_names;
  if (rewrites) *rewrites = parts;
  return out;
}

namespace passes {

std::vector<int> batch_parts(const Graph& g) {
  std::vector<int> part(g.nodes.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == Op::Slice && n.a.dims.size() == 2 && n.a.dims[1] > 0 && n.a.dims[0] % n.a.dims[1] == 0) {
      part[i] = (int)(n.a.dims[0] / n.a.dims[1]);
      continue;
    }
    int p = -1;
    bool mixed = false;
    for (int in : n.inputs) {
      if (part[in] < 0) continue;
      if (p >= 0 && part[in] != p) mixed = true;
      p = part[in];
    }
    part[i] = mixed ? -1 : p;
  }
  return part;
}

}  // namespace passes
}  // namespace sdrt
