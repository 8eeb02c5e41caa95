#include "graph/prelude.h"

#include "graph/passes.h"

namespace sdrt {

Result<InputPrelude> input_prelude(const Graph& g, const std::string& name, int64_t count) {
  if (count < 1) return invalid_argument("input_prelude: count must be positive, got " + std::to_string(count));
  int in = -1;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].op == Op::Input && g.nodes[i].name == name) in = (int)i;
  if (in < 0) return not_found("the graph has no input '" + name + "'");
  const Node& input = g.nodes[in];
  if (input.dtype != DType::F32 || input.shape.empty() || input.shape[0] < 1)
    return invalid_argument("input '" + name + "' is not a float32 value with rows");
  const int64_t N = input.shape[0];
  if (count > (int64_t(1) << 40) / std::max<int64_t>(1, numel(input.shape))) return invalid_argument("input_prelude: count too large");

  InputPrelude p;
  p.part.assign(g.nodes.size(), 0);
  std::vector<int> map(g.nodes.size(), -1);  // original id -> the prelude graph's
  Graph& out = p.graph;
  out.optimized = g.optimized;
  Node first = input;
  first.shape[0] = N * count;
  out.nodes.push_back(first);
  map[in] = 0;
  p.part[in] = 1;
  for (size_t i = (size_t)in + 1; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == Op::Input || n.op == Op::Weight) continue;
    bool any = false, all = true;
    for (int x : n.inputs) {
      if (g.nodes[x].op == Op::Weight) continue;
      any = any || p.part[x];
      all = all && p.part[x];
    }
    if (!any || !all) continue;
    bool reads_weight = false;
    for (int x : n.inputs) reads_weight = reads_weight || g.nodes[x].op == Op::Weight;
    const bool expand = n.op == Op::Concat && n.a.axis == 0 && !reads_weight;  // a guidance batch's two halves
    const int64_t R = n.shape.empty() ? 0 : n.shape[0];                        // the node's rows per value
    if (expand && R > 0) {
      // Value k's rows are each input's rows for value k in turn: the inputs as [count, rows x rest]
      // side by side, back to [count x R, rest].
      GraphBuilder gb(out);
      const int64_t rest = numel(n.shape) / R;
      std::vector<int> flat;
      for (int x : n.inputs) flat.push_back(gb.reshape(map[x], {count, out.nodes[map[x]].shape[0] / count * rest}));
      Shape dims = n.shape;
      dims[0] = R * count;
      const int y = gb.reshape(gb.concat(flat, 1), dims);
      if (!gb.status().is_ok()) return gb.status().with_context("input prelude: " + n.name);
      map[i] = y;
    } else {
      Node copy = n;
      std::vector<const Shape*> shapes;  // part values at count x their rows, weights as they are
      for (int x : n.inputs) shapes.push_back(map[x] >= 0 ? &out.nodes[map[x]].shape : &g.nodes[x].shape);
      if (!passes::rebatch(copy, shapes, R, R * count).is_ok()) continue;  // mixes rows or changes the batch: the rest's
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const int x = n.inputs[k];
        if (map[x] < 0) {  // a weight, first read here
          out.nodes.push_back(g.nodes[x]);
          map[x] = (int)out.nodes.size() - 1;
          if (auto w = g.weights.find(g.nodes[x].name); w != g.weights.end()) out.weights[w->first] = w->second;
        }
        copy.inputs[k] = map[x];
      }
      out.nodes.push_back(std::move(copy));
      map[i] = (int)out.nodes.size() - 1;
    }
    p.part[i] = 1;
    ++p.computed;
  }
  // The boundary, in the original order: read by a node outside the part or by a graph output.
  std::vector<char> boundary(g.nodes.size(), 0);
  for (const Node& n : g.nodes)
    if (n.op != Op::Weight && !p.part[&n - g.nodes.data()])
      for (int x : n.inputs) boundary[x] = p.part[x];
  for (int o : g.outputs) boundary[o] = p.part[o];
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (boundary[i]) {
      out.outputs.push_back(map[i]);
      out.output_names.push_back(g.nodes[i].name.empty() ? "value" + std::to_string(i) : g.nodes[i].name);
      p.values.push_back((int)i);
    }
  SDRT_RETURN_IF_ERROR(p.graph.verify().with_context("input prelude"));
  return p;
}

}  // namespace sdrt
