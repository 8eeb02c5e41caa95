// Constant folding: values computed from weights alone (a reshaped, scaled or summed weight, a bias made of
// two) are computed once when the graph is built, on the CPU backend in float32, and become weights of
// the graph; what they were computed from is dropped where nothing else reads it. A convolution whose
// filter was such a value then has a constant filter (what the CUDA fp16 path requires), and no backend
// spends a kernel on it per run. Graph outputs stay computed values, and a value larger than kMaxElements
// is left to be computed where it is read.
#include <algorithm>
#include <set>

#include "graph/backend.h"
#include "graph/passes.h"

namespace sdrt {
namespace {

constexpr int64_t kMaxElements = int64_t(1) << 26;

}  // namespace

Graph fold_constants(const Graph& g, int* rewrites) {
  if (rewrites) *rewrites = 0;
  const size_t n = g.nodes.size();
  std::vector<char> constant(n, 0), is_output(n, 0), folded(n, 0);
  for (int o : g.outputs) is_output[o] = 1;
  for (size_t i = 0; i < n; ++i) {
    const Node& nd = g.nodes[i];
    if (nd.op == Op::Weight) {
      constant[i] = 1;
    } else if (nd.op != Op::Input && !nd.inputs.empty()) {
      constant[i] = std::all_of(nd.inputs.begin(), nd.inputs.end(), [&](int in) { return constant[in] != 0; });
    }
  }
  // The values to fold: computed constants read by a node that is not constant.
  std::vector<int> fold;
  for (size_t i = 0; i < n; ++i) {
    if (constant[i]) continue;
    for (int in : g.nodes[i].inputs) {
      const Node& c = g.nodes[in];
      if (constant[in] && c.op != Op::Weight && !folded[in] && !is_output[in] && numel(c.shape) <= kMaxElements) folded[in] = 1, fold.push_back(in);
    }
  }
  if (fold.empty()) return g;
  std::sort(fold.begin(), fold.end());

  // The constant nodes they are computed from, as a graph of their own (no inputs), run once.
  std::vector<char> cone(n, 0);
  for (int f : fold) cone[f] = 1;
  for (size_t i = n; i-- > 0;)
    if (cone[i])
      for (int in : g.nodes[i].inputs) cone[in] = 1;
  Graph c;
  std::vector<int> cid(n, -1);
  for (size_t i = 0; i < n; ++i) {
    if (!cone[i]) continue;
    Node nd = g.nodes[i];
    for (int& in : nd.inputs) in = cid[in];
    if (nd.op == Op::Weight) c.weights[nd.name] = g.weights.at(nd.name);
    c.nodes.push_back(std::move(nd));
    cid[i] = (int)c.nodes.size() - 1;
  }
  for (int f : fold) {
    c.outputs.push_back(cid[f]);
    c.output_names.push_back("folded" + std::to_string(f));
  }
  auto exe = make_cpu_backend()->compile(std::make_shared<Graph>(std::move(c)));
  if (!exe) return g;  // an op the CPU backend cannot evaluate alone: left as it is
  auto values = (*exe)->run({});
  if (!values) return g;

  // Rewrite: folded values become weight nodes; constant nodes only they read are dropped.
  std::vector<char> needed(n, 0);
  for (size_t i = 0; i < n; ++i) needed[i] = !constant[i] || is_output[i];
  for (size_t i = n; i-- > 0;)
    if (needed[i] && !folded[i])
      for (int in : g.nodes[i].inputs) needed[in] = 1;
  passes::Rewriter rw(g);
  std::set<std::string> read;  // weights still read
  for (size_t i = 0; i < n; ++i) {
    if (!needed[i]) continue;
    if (!folded[i]) {
      if (g.nodes[i].op == Op::Weight) read.insert(g.nodes[i].name);
      rw.emit(g.nodes[i], (int)i);
      continue;
    }
    std::string name = "folded/" + std::to_string(i) + (g.nodes[i].name.empty() ? "" : ":" + g.nodes[i].name);
    while (g.weights.count(name)) name += "'";
    const Tensor& v = (*values)[std::find(fold.begin(), fold.end(), (int)i) - fold.begin()];
    rw.add_weight(name, v);
    read.insert(name);
    rw.emit(Node{Op::Weight, {}, g.nodes[i].shape, DType::F32, name, {}}, (int)i);
  }
  for (size_t i = 0; i < n; ++i)  // weights of dropped weight nodes that no kept node reads
    if (g.nodes[i].op == Op::Weight && !needed[i] && !read.count(g.nodes[i].name)) rw.drop_weight(g.nodes[i].name);
  if (rewrites) *rewrites = (int)fold.size();
  Graph out = rw.finish();
  out.optimized = g.optimized;
  return out;
}

}  // namespace sdrt
