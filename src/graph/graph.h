// The graph IR that models are built into and backends compile: a topologically ordered list of nodes,
// each one op with its attributes and inferred output shape; weights are named constants held by the
// graph. One op = one entry in the op table (graph.cpp), which gives its arity and shape inference.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "sdrt/status.h"

namespace sdrt {

enum class Op : uint8_t {
  Input,              // external input bound by name
  Weight,             // named constant from Graph::weights
  Conv2d,             // x[N,C,H,W], w[O,C,kh,kw], b[O]?, r[N,O,Ho,Wo]? (NCHW; pads top,left,bottom,right);
                      // r (fused residual, only with a bias) is added to the output
  Linear,             // x[...,K], w[N,K], b[N]?, r[...,N]? -> [...,N]; r as for Conv2d; with Attrs::geglu
                      // (fused GEGLU, no r) -> [...,N/2], the GEGLU of the [...,N] projection
  GroupNorm,          // x[N,C,...], gamma[C], beta[C], t?; followed by SiLU when Attrs::silu (fused). t (pass
                      // fuse_groupnorm_add, x 4-D) is added to x first: [N,C,1,1], or with dims = {col} columns
                      // [col, col + C) of a packed [N,W] (pass pack_time_projections)
  LayerNorm,          // x[...,C], gamma[C], beta[C]
  SiLU,
  GELU,               // exact (erf) GELU
  QuickGELU,          // x * sigmoid(1.702 x), OpenAI CLIP
  GEGLU,              // x[...,2F] -> h * gelu(g), h = x[..., :F], g = x[..., F:]
  Attention,          // q[B,Lq,H*D], k[B,Lk,H*D], v[B,Lk,H*Dv] -> [B,Lq,H*Dv]; softmax(q k^T * scale) v;
                      // packed (pass pack_qkv): qkv[B,L,3*H*D] alone, or q and kv[B,Lk,2*H*D] (Dv = D)
  Upsample2x,         // nearest, [N,C,H,W] -> [N,C,2H,2W], or to dims {Ho, Wo} when given (odd skip sizes)
  Concat,             // along `axis`; with Attrs::up2 (pass fuse_interleave_concat; axis 1, 4-D) input 0 is phase
                      // planes [N,4C,H+1,W+1] that enter as their PhaseInterleave [N,C,2H,2W]
  Add,                // numpy broadcasting
  Mul,                // numpy broadcasting
  Scale,              // x * scale
  Reshape,            // to `dims`
  ToTokens,           // [N,C,H,W] -> [N,H*W,C]
  FromTokens,         // [N,H*W,C] -> [N,C,H,W] with H = dims[0], W = dims[1]
  TimestepEmbedding,  // t[N] -> [N,dim] sinusoidal (diffusers get_timestep_embedding)
  Embedding,          // ids[...] (I32) , table[V,C] -> [...,C]
  Slice,              // x[N,...] -> x[start : start + length, ...] (rows of the first axis), dims = {start, length};
                      // the batch parts of pass split_batch (any dtype: its input's)
  PhaseInterleave,    // x[N,4C,H+1,W+1] (four phase planes, from pass subpixel_upsample_conv) -> [N,C,2H,2W],
                      // y[n, c, 2i+a, 2j+b] = x[n, (2a+b) C + c, i+a, j+b]
  kCount
};

struct Attrs {
  int64_t stride = 1;
  int64_t pad[4] = {0, 0, 0, 0};  // top, left, bottom, right
  int64_t groups = 1;             // GroupNorm groups
  float eps = 1e-5f;
  int64_t heads = 1;
  bool causal = false;
  float scale = 1.f;              // Attention and Scale
  int64_t axis = 0;               // Concat
  int64_t dim = 0;                // TimestepEmbedding width
  bool flip_sin_to_cos = true;
  bool silu = false;              // GroupNorm: SiLU fused after the normalisation
  bool geglu = false;             // Linear: GEGLU fused after the projection (pass fuse_linear_geglu)
  bool up2 = false;               // Conv2d: the 2x2 phase convolution standing for a 3x3 one on the 2x-upsampled input
                                  // (pass subpixel_upsample_conv; only FLOP counts read it: the replaced convolution's);
                                  // Concat: input 0 interleaved from phase planes (pass fuse_interleave_concat)
  float freq_shift = 0.f;
  Shape dims;                     // Reshape target / FromTokens [H, W] / Slice {start, length} / GroupNorm {t's column}
};

struct Node {
  Op op;
  std::vector<int> inputs;
  Shape shape;
  DType dtype = DType::F32;
  std::string name;  // weight or input name, or a debug label
  Attrs a;
};

// Where an Attention node's q, k and v are: the input each is read from, its column offset and row width
// (elements) there; with the sizes. Three inputs: one each; two (q, kv): k and v side by side in input 1;
// one (qkv): all three side by side in input 0.
struct AttentionViews {
  int q_in = 0, k_in = 1, v_in = 2;
  int64_t k_col = 0, v_col = 0;
  int64_t ldq = 0, ldk = 0, ldv = 0;
  int64_t B = 0, Lq = 0, Lk = 0, HD = 0, HDv = 0;  // HD: q's width (heads x head dim), HDv: v's
};
// Fails (with the reason) where the shapes do not fit the form the input count gives.
Result<AttentionViews> attention_views(const std::vector<const Shape*>& in);

struct OpInfo {
  const char* name;
  int min_inputs, max_inputs;
};
const OpInfo& op_info(Op op);

class Graph {
 public:
  std::vector<Node> nodes;
  std::vector<int> outputs;
  std::vector<std::string> output_names;
  std::map<std::string, Tensor> weights;  // F32 from the model builders; F16 in plans of fp16 engines
  bool optimized = false;                  // the build passes (graph/passes.h) have run on it

  // Runs shape inference on every node and checks arity, topological order, input/weight bindings.
  Status verify() const;
  int64_t weight_params() const;
  std::string summary() const;  // op counts, one line
  // Multiply-adds x 2 of the matrix work (conv, linear, attention): what TFLOP/s figures divide.
  double flops() const;
};

// PhaseInterleave's output [N,C,2H,2W] for phase planes [N,4C,H+1,W+1] (also a Concat's first input with Attrs::up2).
Shape interleaved(const Shape& planes);

// Infers a node's output shape from its inputs' shapes; errors name the node and the mismatch.
Result<Shape> infer_shape(const Node& n, const std::vector<const Shape*>& in);

// Helper that appends nodes with shape inference; a failed inference records the first error and
// later calls return -1 until the caller checks status().
class GraphBuilder {
 public:
  explicit GraphBuilder(Graph& g) : g_(g) {}
  int input(const std::string& name, Shape shape, DType dt = DType::F32);
  int weight(const std::string& name, const Tensor& t);
  int add_node(Op op, std::vector<int> inputs, Attrs a = {}, std::string label = {});
  // A failed node (-1) reads as an empty 4-D shape so that builders can carry on to the error check.
  const Shape& shape(int id) const {
    static const Shape bad{0, 0, 0, 0};
    return id < 0 ? bad : g_.nodes[id].shape;
  }
  void output(int id, const std::string& name);
  Status status() const { return st_; }

  int conv2d(int x, int w, int b, int64_t stride, int64_t pad);
  int linear(int x, int w, int b) { return add_node(Op::Linear, b >= 0 ? std::vector{x, w, b} : std::vector{x, w}); }
  int group_norm(int x, int g, int b, int64_t groups, float eps);
  int layer_norm(int x, int g, int b, float eps);
  int unary(Op op, int x) { return add_node(op, {x}); }
  int add(int x, int y) { return add_node(Op::Add, {x, y}); }
  int mul(int x, int y) { return add_node(Op::Mul, {x, y}); }
  int reshape(int x, Shape dims);
  int attention(int q, int k, int v, int64_t heads, bool causal);
  int concat(std::vector<int> xs, int64_t axis);

 private:
  Graph& g_;
  Status st_;
};

}  // namespace sdrt
