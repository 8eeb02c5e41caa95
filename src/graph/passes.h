// Build passes: rewrites of a verified graph that keep its outputs (up to rounding) and make it cheaper
// to run. Each pass lives in passes/ and returns a new graph plus how many rewrites it made; backends
// that implement the fused forms run them (the CPU backend implements every form, so each pass is
// tested against the unfused graph on the CPU and on the GPU).
#pragma once
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace sdrt {

struct PassResult {
  std::string name;
  int rewrites = 0;
};

// Values computed from weights alone -> weights: each one a non-constant node reads is computed once (CPU
// backend, float32) and becomes a weight; the constant nodes and weights only it read are dropped. Graph
// outputs and values over 2^26 elements stay computed; *rewrites: the values folded.
Graph fold_constants(const Graph& g, int* rewrites);
// GroupNorm whose only consumer is a SiLU -> one GroupNorm with Attrs::silu.
Graph fuse_groupnorm_silu(const Graph& g, int* rewrites);
// GroupNorm(Add(x, t[N, C, 1, 1])), the sum read only there -> GroupNorm(x, gamma, beta, t).
Graph fuse_groupnorm_add(const Graph& g, int* rewrites);
// Add(conv_or_linear_with_bias(x), r) with r of the output's shape, the conv/linear used only there ->
// the conv/linear with r as its fourth input (added in the epilogue). The fused node takes the Add's
// place in the order.
Graph fuse_residual_add(const Graph& g, int* rewrites);

// GEGLU(Linear(x, w, b)), the projection read only there -> one Linear with Attrs::geglu (the GEGLU
// in the projection's epilogue: its [..., 2F] result is never stored).
Graph fuse_linear_geglu(const Graph& g, int* rewrites);

// Conv2d(Upsample2x(x), w[O, C, 3, 3], b), stride 1, padding 1, the upsampling and w, b read only there ->
// PhaseInterleave(Conv2d(x, w'[4 O, C, 2, 2], b repeated 4 times), padding 1): the four output phases of
// the upsampled convolution as 2x2 convolutions of x (Attrs::up2 on the new Conv2d). SDRT_SUBPIXEL=0 in
// the environment turns it off in optimize_graph (A/B measurements).
Graph subpixel_upsample_conv(const Graph& g, int* rewrites);

// Concat(PhaseInterleave(x), s, ...) along the channels, the PhaseInterleave read only there -> Concat(x, s, ...)
// with Attrs::up2: x's phase planes interleaved as the Concat copies them (SD's upsamplers feed the next up
// block's skip concatenation). SDRT_INTERLEAVE_CONCAT=0 in the environment turns it off in optimize_graph.
Graph fuse_interleave_concat(const Graph& g, int* rewrites);

// Attention(Linear(x, w, b), k, v) with softmax scale s, the Linear and its weights read only there ->
// Attention(Linear(x, c w, c b), k, v) with scale ln 2, c = s / ln 2 (new constants, in the weights' dtype):
// q k^T comes out in the base-2 domain attention kernels exponentiate in (ln 2 * log2 e == 1 in float), the
// same softmax. SDRT_ATTN_SCALE_FOLD=0 in the environment turns it off in optimize_graph (A/B measurements).
Graph fold_attention_scale(const Graph& g, int* rewrites);
constexpr float kBase2AttentionScale = 0.693147180559945309f;  // ln 2: the scale such an Attention gets

// Attention(q, k, v) whose q, k, v (or k, v) are Linears of one input, read only there -> one Linear
// with the weights stacked and the Attention reading its output packed (qkv, or q and kv).
Graph pack_qkv(const Graph& g, int* rewrites);

// GroupNorm(x, gamma, beta, Reshape(Linear(e, w_i, b_i))) - the ResNets' time-embedding projections added
// before their second norm (pass fuse_groupnorm_add) - for two or more such Linears of one input e, each
// read only there -> one Linear(e, [w_1; w_2; ...], [b_1; b_2; ...]) whose output [N, sum C_i] the
// GroupNorms read at their column offsets (Attrs::dims). SD 1.5's 22 projections become one GEMM (small
// GEMMs of a few rows are bound by latency, not by their weights' bytes). SDRT_PACK_TEMB=0 in the
// environment turns it off in optimize_graph (A/B measurements).
Graph pack_time_projections(const Graph& g, int* rewrites);

// Every input [N, ...] sliced into `parts` batch parts, the graph's nodes copied per part (weights shared),
// batched outputs concatenated back: independent parts a backend can run side by side. Returns g as it
// is (*rewrites 0) where the batch does not divide or a node does not keep the batch on its first axis;
// else *rewrites = parts. Not one of optimize_graph's passes: backends that run parts side by side apply
// it (CUDA, SDRT_SPLIT).
Graph split_batch(const Graph& g, int parts, int* rewrites);

// For a batch whose second half repeats its first in the named inputs (classifier-free guidance: the
// latents and timestep of both halves are the same, the prompt embeddings differ): those inputs take half
// the batch, the values computed from them and weights alone are computed once at half the batch, and
// a Concat of two copies along the batch axis gives the whole batch's value where a node of the whole
// batch reads one. The outputs are the graph's. Not one of optimize_graph's passes: it changes what the
// inputs are, so the caller asks for it (build_guided_unet). An error where an input is missing, the
// batch is odd or a node computed from an input does not keep the batch on its first axis; *rewrites:
// the nodes that run at half the batch.
Result<Graph> share_batch_halves(const Graph& g, const std::set<std::string>& inputs, int* rewrites);

// The passes in order; `log` (optional) receives each pass's count.
Graph optimize_graph(const Graph& g, std::vector<PassResult>* log = nullptr);

namespace passes {

// Counts of each node's consumers (inputs of other nodes, plus one per graph output).
std::vector<int> use_counts(const Graph& g);

// The tensor of Weight node `id`, or null (another op, or a name without a tensor).
const Tensor* weight_tensor(const Graph& g, int id);
// Names of the Weight nodes not marked `dropped`: a pass that replaces constants drops the tensor of a dropped
// node only where no kept node binds the same name.
std::set<std::string> kept_weight_names(const Graph& g, const std::vector<bool>& dropped);

// Node n (inputs already bound to values of `rows` batch rows, their shapes in `in`) made to run on those rows
// instead of the N it was built for: attributes naming the batch fixed (Reshape's target), its shape inferred
// and checked to be the old one but the first axis. An error naming the node where it does not keep the
// batch on its first axis (a Concat or Slice along the batch never does). Passes that cut or share the
// batch (split_batch, share_batch_halves) use it.
Status rebatch(Node& n, const std::vector<const Shape*>& in, int64_t N, int64_t rows);

// The fusion where a node absorbs its only consumer, a one-input op (GroupNorm + SiLU, Linear + GEGLU):
// every node of op `consumer` whose input p is read only there and fits(p) is dropped, and p, edited by
// absorb(p, consumer), stands for its value in p's place in the order. *rewrites (optional): how many.
Graph absorb_consumers(const Graph& g, Op consumer, const std::function<bool(const Node&)>& fits,
                       const std::function<void(Node&, const Node&)>& absorb, int* rewrites);

// Per node of a split_batch graph: the batch part it works on (from the Slice its value derives from), or
// -1 for inputs, weights and the outputs' concatenations (every node -1 in a graph not split).
std::vector<int> batch_parts(const Graph& g);

// Builds a rewritten graph in a new order: emit() appends a node whose inputs are old ids (mapped to
// their new ids), alias() makes an old id stand for another's value; finish() maps the outputs.
class Rewriter {
 public:
  explicit Rewriter(const Graph& g) : g_(g), map_(g.nodes.size(), -1) { out_.weights = g.weights; }
  int emit(Node n, int old_id);
  void alias(int old_id, int stands_for_old) { map_[old_id] = map_[stands_for_old]; }
  void add_weight(const std::string& name, Tensor t) { out_.weights[name] = std::move(t); }
  void drop_weight(const std::string& name) { out_.weights.erase(name); }
  Graph finish();

 private:
  const Graph& g_;
  Graph out_;
  std::vector<int> map_;
};

// Linears ls of one input packed into one (pack_qkv, pack_time_projections): whether the stacked constants'
// names - the first Linear's weight and bias names + suffix - are still free in g; and the packed Linear
// emitted through rw (its weights, and biases where the first has one, stacked in ls's order as constants
// standing for the first's weight and bias nodes, which only that Linear may read), standing for old node
// `at`, its width the sum of theirs, named like its weight. Returns the Linear's new id.
bool stacked_names_free(const Graph& g, int first, const std::string& suffix);
int emit_stacked_linear(Rewriter& rw, const Graph& g, const std::vector<int>& ls, const std::string& suffix, int at);

}  // namespace passes
}  // namespace sdrt
