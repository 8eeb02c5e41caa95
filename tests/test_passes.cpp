// Build passes: each rewrite counted on small graphs (including cases it must leave alone), and each
// pass's graph against the unfused one on the CPU; on the tiny conformance UNet and VAE, all passes on
// the CPU and (where a GPU is usable) fused against unfused on CUDA in fp16.
#include <cstring>
#include <map>
#include <random>

#include "graph/backend.h"
#include "graph/passes.h"
#include "graph/prelude.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;

namespace {

int count_ops(const Graph& g, Op op) {
  int c = 0;
  for (const auto& n : g.nodes) c += n.op == op;
  return c;
}

Tensor run_cpu(const Graph& g, const std::map<std::string, Tensor>& in) {
  auto e = make_cpu_backend()->compile(std::make_shared<Graph>(g));
  EXPECT_TRUE(e.is_ok()) << e.status().message();
  auto o = (*e)->run(in);
  EXPECT_TRUE(o.is_ok()) << o.status().message();
  return (*o)[0];
}

// Every output of graphs a and b (a pass's input and output) on the CPU, for the same inputs (empty on a failure).
std::pair<std::vector<Tensor>, std::vector<Tensor>> run_all_cpu(const Graph& a, const Graph& b, const std::map<std::string, Tensor>& in) {
  std::pair<std::vector<Tensor>, std::vector<Tensor>> out;
  for (auto [g, dst] : {std::make_pair(&a, &out.first), std::make_pair(&b, &out.second)}) {
    auto e = make_cpu_backend()->compile(std::make_shared<Graph>(*g));
    EXPECT_TRUE(e.is_ok()) << e.status().message();
    if (!e.is_ok()) continue;
    auto o = (*e)->run(in);
    EXPECT_TRUE(o.is_ok()) << o.status().message();
    if (o.is_ok()) *dst = std::move(*o);
  }
  return out;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, (double)std::fabs(a.f32()[i] - b.f32()[i]));
  return m;
}

// A ResNet-like block: GN -> SiLU -> conv (+ x), GN -> SiLU also read elsewhere, a linear + residual,
// a broadcast add that must stay.
// A graph being built with seeded random weights (weights of standard deviation `scale`), the set-up of
// the pass tests that build their own graph.
struct SeededGraph {
  SeededGraph(unsigned seed, float scale) : rng(seed), scale(scale) {}
  SeededGraph(const SeededGraph&) = delete;
  int W(const std::string& name, Shape s) { return gb.weight(name, randn(s, rng, scale)); }
  std::mt19937 rng;
  float scale;
  Graph g;
  GraphBuilder gb{g};
};

struct Block {
  Graph g;
  std::map<std::string, Tensor> in;
};
Block resnet_like() {
  Block b;
  std::mt19937 rng(7);
  GraphBuilder gb(b.g);
  const int64_t C = 8;
  int x = gb.input("x", {2, C, 6, 6});
  b.in["x"] = randn({2, C, 6, 6}, rng);
  auto W = [&](const std::string& n, Shape s) { return gb.weight(n, randn(s, rng, 0.3f)); };
  int h = gb.unary(Op::SiLU, gb.group_norm(x, W("g1", {C}), W("b1", {C}), 4, 1e-5f));           // fused
  h = gb.add(gb.conv2d(h, W("w1", {C, C, 3, 3}), W("c1", {C}), 1, 1), x);                        // fused
  int n2 = gb.group_norm(h, W("g2", {C}), W("b2", {C}), 4, 1e-5f);
  int s2 = gb.unary(Op::SiLU, n2);
  int both = gb.add(s2, n2);                                                                      // n2 has 2 users: kept
  int c2 = gb.conv2d(both, W("w2", {C, C, 1, 1}), W("c2", {C}), 1, 0);
  int twice = gb.add(c2, c2);                                                                     // same value twice: kept
  int bc = gb.add(twice, gb.reshape(W("t", {1, C}), {1, C, 1, 1}));                               // broadcast: kept
  int tok = gb.unary(Op::ToTokens, bc);                                                           // [2, 36, C]
  int lin = gb.add(gb.linear(tok, W("lw", {C, C}), W("lb", {C})), tok);                          // fused
  int nobias = gb.add(gb.linear(lin, W("nw", {C, C}), -1), lin);                                  // no bias: kept
  gb.output(nobias, "y");
  EXPECT_TRUE(gb.status().is_ok()) << gb.status().message();
  return b;
}

}  // namespace

namespace {

// Inputs of the tiny UNet at batch 2 and 16x16 latents: random latents and prompt embeddings (width ctx),
// timesteps t0 and t1 for the two images.
std::map<std::string, Tensor> tiny_unet_inputs(std::mt19937& rng, int64_t ctx, float t0, float t1) {
  std::map<std::string, Tensor> in;
  in["sample"] = randn({2, 4, 16, 16}, rng);
  in["timestep"] = Tensor::from_f32({2}, {t0, t1});
  in["encoder_hidden_states"] = randn({2, 77, ctx}, rng);
  return in;
}

// Inputs of the tiny UNet's guided form at two images (16x16 latents; each image its timestep, t0 and t1;
// prompt embeddings of width ctx for four rows) and the same for the whole-batch form: latents and
// timesteps repeated for the second half.
std::pair<std::map<std::string, Tensor>, std::map<std::string, Tensor>> guided_inputs(std::mt19937& rng, int64_t ctx, float t0, float t1) {
  std::map<std::string, Tensor> half;
  half["sample"] = randn({2, 4, 16, 16}, rng);
  half["timestep"] = Tensor::from_f32({2}, {t0, t1});
  half["encoder_hidden_states"] = randn({4, 77, ctx}, rng);
  std::map<std::string, Tensor> full = half;
  full["sample"] = Tensor::empty(DType::F32, {4, 4, 16, 16});
  const int64_t per = half["sample"].numel();
  for (int r = 0; r < 2; ++r) std::memcpy(full["sample"].f32() + r * per, half["sample"].f32(), per * 4);
  full["timestep"] = Tensor::from_f32({4}, {t0, t1, t0, t1});
  return {half, full};
}

// The CUDA backend in fp16, or null with the reason in *why (the test then skips).
std::unique_ptr<Backend> fp16_cuda(std::string* why) {
  CudaOptions o;
  o.precision = "fp16";
  return make_cuda_backend(o, why);
}

// In a test body: skips without the conformance data or a usable fp16 CUDA backend; else `cuda` (that
// backend) and `m` (the tiny conformance model, loaded) are in scope.
#define TINY_MODEL_ON_FP16_CUDA(cuda, m)                                                \
  SDRT_REQUIRE_CONFORMANCE();                                                           \
  std::string cuda##_why;                                                               \
  auto cuda = fp16_cuda(&cuda##_why);                                                   \
  if (!cuda) GTEST_SKIP() << "CUDA backend not usable here: " << cuda##_why;           \
  auto m = load_model((tiny_dir() / "diffusers").string());                             \
  ASSERT_TRUE(m.is_ok()) << m.status().message()

// Values computed from weights alone: a convolution's filter reshaped from a flat weight, its bias the sum
// of two, a scale computed from two weights; a weight also read directly (kept); a constant graph output
// (stays computed).
Block constants_block() {
  Block b;
  std::mt19937 rng(17);
  GraphBuilder gb(b.g);
  auto W = [&](const std::string& n, Shape s) { return gb.weight(n, randn(s, rng, 0.3f)); };
  int x = gb.input("x", {2, 6, 5, 5});
  b.in["x"] = randn({2, 6, 5, 5}, rng);
  int filter = gb.reshape(W("w_flat", {8 * 6 * 9}), {8, 6, 3, 3});
  int b1 = W("b1", {8});
  int h = gb.conv2d(x, filter, gb.add(b1, W("b2", {8})), 1, 1);
  Attrs half;
  half.scale = 0.5f;
  int t = gb.add_node(Op::Scale, {gb.add(W("t1", {1, 8, 1, 1}), W("t2", {1, 8, 1, 1}))}, half);
  int tok = gb.unary(Op::ToTokens, gb.mul(h, t));
  gb.output(gb.linear(tok, W("lw", {8, 8}), b1), "y");
  gb.output(gb.reshape(W("o", {8}), {2, 4}), "constant");
  EXPECT_TRUE(gb.status().is_ok()) << gb.status().message();
  return b;
}

}  // namespace

TEST(Passes, FoldConstantsCountsAndMatches) {
  Block b = constants_block();
  int n = -1;
  Graph f = fold_constants(b.g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 3);  // the filter, the bias, the scale
  EXPECT_EQ(count_ops(f, Op::Scale), 0);
  EXPECT_EQ(count_ops(f, Op::Add), 0);
  EXPECT_EQ(count_ops(f, Op::Reshape), 1);  // the constant output
  for (const Node& node : f.nodes) {
    if (node.op == Op::Conv2d) EXPECT_EQ(f.nodes[node.inputs[1]].op, Op::Weight);
    bool all = !node.inputs.empty();
    for (int in : node.inputs) all = all && f.nodes[in].op == Op::Weight;
    if (all) EXPECT_EQ(node.op, Op::Reshape) << "only the output is left computed from weights";
  }
  for (const char* gone : {"w_flat", "b2", "t1", "t2"}) EXPECT_EQ(f.weights.count(gone), 0u) << gone;
  for (const char* kept : {"b1", "lw", "o"}) EXPECT_EQ(f.weights.count(kept), 1u) << kept;
  EXPECT_EQ(f.weights.size(), 6u);
  auto ef = make_cpu_backend()->compile(std::make_shared<Graph>(f)), eg = make_cpu_backend()->compile(std::make_shared<Graph>(b.g));
  ASSERT_TRUE(ef.is_ok() && eg.is_ok());
  auto of = (*ef)->run(b.in), og = (*eg)->run(b.in);
  ASSERT_TRUE(of.is_ok() && og.is_ok());
  EXPECT_LT(max_abs_diff((*of)[0], (*og)[0]), 1e-6);
  EXPECT_EQ(max_abs_diff((*of)[1], (*og)[1]), 0.0);
  int again = -1;
  fold_constants(f, &again);
  EXPECT_EQ(again, 0);
  std::vector<PassResult> log;
  optimize_graph(b.g, &log);
  EXPECT_EQ(log[0].name, "fold_constants");
  EXPECT_EQ(log[0].rewrites, 3);
}

// On CUDA in fp16 the convolution needs a constant filter: the build passes fold it, and the graph as written
// runs and matches the CPU.
TEST(Passes, FoldedConstantsRunOnCuda) {
  std::string why;
  auto cuda = fp16_cuda(&why);
  if (!cuda) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  Block b = constants_block();
  auto e = cuda->compile(std::make_shared<Graph>(b.g));
  ASSERT_TRUE(e.is_ok()) << e.status().message();
  auto got = (*e)->run(b.in);
  ASSERT_TRUE(got.is_ok()) << got.status().message();
  const Tensor want = run_cpu(b.g, b.in);
  const double err = max_abs_diff((*got)[0], want) / std::max(1e-6, max_abs_diff(want, Tensor::zeros(DType::F32, want.shape())));
  std::printf("      cuda fp16 folded constants vs CPU: max error %.2e of the largest value\n", err);
  EXPECT_LT(err, 5e-3);
}

TEST(Passes, FuseGroupNormSiluCountsAndMatches) {
  Block b = resnet_like();
  int n = -1;
  Graph f = fuse_groupnorm_silu(b.g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 1);
  EXPECT_EQ(count_ops(f, Op::SiLU), count_ops(b.g, Op::SiLU) - 1);
  EXPECT_EQ(count_ops(f, Op::GroupNorm), 2);
  EXPECT_LT(max_abs_diff(run_cpu(f, b.in), run_cpu(b.g, b.in)), 1e-5);
}

TEST(Passes, FuseResidualAddCountsAndMatches) {
  Block b = resnet_like();
  int n = -1;
  Graph f = fuse_residual_add(b.g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 2);  // conv + x and linear + tok
  EXPECT_EQ(count_ops(f, Op::Add), count_ops(b.g, Op::Add) - 2);
  int four = 0;
  for (const auto& node : f.nodes) four += (node.op == Op::Conv2d || node.op == Op::Linear) && node.inputs.size() == 4;
  EXPECT_EQ(four, 2);
  EXPECT_LT(max_abs_diff(run_cpu(f, b.in), run_cpu(b.g, b.in)), 1e-5);
}

TEST(Passes, FuseGroupNormAddCountsAndMatches) {
  SeededGraph sg(11, 0.5f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  const int64_t C = 8;
  std::map<std::string, Tensor> in{{"x", randn({2, C, 5, 5}, rng)}, {"e", randn({2, 6}, rng)}};
  int x = gb.input("x", {2, C, 5, 5});
  int t = gb.reshape(gb.linear(gb.input("e", {2, 6}), sg.W("tw", {C, 6}), sg.W("tb", {C})), {2, C, 1, 1});  // the time embedding
  int h = gb.group_norm(gb.add(x, t), sg.W("g1", {C}), sg.W("b1", {C}), 4, 1e-5f);                             // fused
  int s = gb.add(t, h);                                                                                    // t first: fused too
  int h2 = gb.group_norm(s, sg.W("g2", {C}), sg.W("b2", {C}), 2, 1e-5f);
  int kept = gb.add(h2, t);                                                                                // read twice: kept
  int h3 = gb.group_norm(kept, sg.W("g3", {C}), sg.W("b3", {C}), 2, 1e-5f);
  gb.output(gb.add(h3, kept), "y");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  int n = -1;
  Graph f = fuse_groupnorm_add(g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 2);
  EXPECT_EQ(count_ops(f, Op::Add), count_ops(g, Op::Add) - 2);
  EXPECT_LT(max_abs_diff(run_cpu(f, in), run_cpu(g, in)), 1e-5);
}

// ResNet-like blocks reading projections of one time embedding e before their norms: three of them (widths
// 8, 16, 8) packed into one [32, 6] Linear whose columns the GroupNorms read; kept: a projection also read
// elsewhere, one of another input, and one alone of its input.
TEST(Passes, PackTimeProjectionsCountsAndMatches) {
  SeededGraph sg(29, 0.5f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  std::map<std::string, Tensor> in{{"x", randn({2, 8, 5, 5}, rng)}, {"e", randn({2, 6}, rng)}, {"f", randn({2, 6}, rng)}};
  int x = gb.input("x", {2, 8, 5, 5}), e = gb.input("e", {2, 6}), f = gb.input("f", {2, 6});
  int k = 0;
  // GroupNorm(h + Reshape(Linear(src)))[C channels] of h [2, C, 5, 5], through a 1x1 convolution from C0 channels
  auto block = [&](int h, int64_t C0, int64_t C, int src, int* proj = nullptr) {
    const std::string p = "r" + std::to_string(k++);
    const int hc = C0 == C ? h : gb.conv2d(h, sg.W(p + "cw", {C, C0, 1, 1}), sg.W(p + "cb", {C}), 1, 0);
    const int t = gb.linear(src, sg.W(p + "tw", {C, 6}), sg.W(p + "tb", {C}));
    if (proj) *proj = t;
    return gb.unary(Op::SiLU, gb.group_norm(gb.add(hc, gb.reshape(t, {2, C, 1, 1})), sg.W(p + "g", {C}), sg.W(p + "b", {C}), 4, 1e-5f));
  };
  int h = block(x, 8, 8, e);
  h = block(h, 8, 16, e);
  h = block(h, 16, 8, e);
  int read_twice = -1;
  h = block(h, 8, 8, e, &read_twice);  // its projection also read below: kept
  h = block(h, 8, 8, f);               // the only projection of f: kept
  gb.output(gb.add(h, gb.reshape(gb.unary(Op::SiLU, read_twice), {2, 8, 1, 1})), "y");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  int n = -1;
  const Graph fused = fuse_groupnorm_add(g, &n);
  ASSERT_EQ(n, 5);
  Graph p = pack_time_projections(fused, &n);
  ASSERT_TRUE(p.verify().is_ok()) << p.verify().message();
  EXPECT_EQ(n, 3);
  EXPECT_EQ(count_ops(p, Op::Linear), count_ops(fused, Op::Linear) - 2);
  int packed = 0;
  std::vector<int64_t> cols;
  for (const Node& nd : p.nodes) {
    if (nd.op == Op::Linear && nd.shape == Shape{2, 32}) ++packed;
    if (nd.op == Op::GroupNorm && !nd.a.dims.empty()) cols.push_back(nd.a.dims[0]);
  }
  EXPECT_EQ(packed, 1);
  EXPECT_EQ(cols, (std::vector<int64_t>{0, 8, 24}));
  EXPECT_EQ(p.weights.size(), fused.weights.size() - 4);  // six projection constants became two
  EXPECT_NEAR(p.flops(), fused.flops(), 1e-9 * fused.flops());
  EXPECT_LT(max_abs_diff(run_cpu(p, in), run_cpu(g, in)), 1e-5);
}

TEST(Passes, PackQkvCountsAndMatches) {
  SeededGraph sg(13, 0.4f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  const int64_t C = 8;
  std::map<std::string, Tensor> in{{"x", randn({2, 6, C}, rng)}, {"ctx", randn({2, 5, 12}, rng)}};
  int x = gb.input("x", {2, 6, C}), ctx = gb.input("ctx", {2, 5, 12});
  Attrs a;
  a.heads = 2;
  a.scale = 0.5f;
  // self-attention, no biases: one [3C, C] projection
  int self = gb.add_node(Op::Attention, {gb.linear(x, sg.W("q", {C, C}), -1), gb.linear(x, sg.W("k", {C, C}), -1), gb.linear(x, sg.W("v", {C, C}), -1)}, a);
  // cross-attention with biases: k and v from the context packed into one [2C, 12] projection, q alone
  int cross = gb.add_node(Op::Attention, {gb.linear(self, sg.W("q2", {C, C}), sg.W("q2b", {C})), gb.linear(ctx, sg.W("k2", {C, 12}), sg.W("k2b", {C})),
                                          gb.linear(ctx, sg.W("v2", {C, 12}), sg.W("v2b", {C}))}, a);
  // kept: k and v of different inputs; a projection read twice; causal self-attention packs too
  int shared = gb.linear(cross, sg.W("s", {C, C}), -1);
  int kept = gb.add_node(Op::Attention, {shared, gb.linear(x, sg.W("k3", {C, C}), -1), gb.linear(cross, sg.W("v3", {C, C}), -1)}, a);
  int kept2 = gb.add_node(Op::Attention, {shared, shared, gb.linear(x, sg.W("v4", {C, C}), -1)}, a);
  Attrs c = a;
  c.causal = true;
  int causal = gb.add_node(Op::Attention, {gb.linear(kept, sg.W("q5", {C, C}), sg.W("q5b", {C})), gb.linear(kept, sg.W("k5", {C, C}), sg.W("k5b", {C})),
                                           gb.linear(kept, sg.W("v5", {C, C}), sg.W("v5b", {C}))}, c);
  int raw = gb.add_node(Op::Attention, {gb.unary(Op::SiLU, x), gb.unary(Op::GELU, x), x}, a);  // no projections: kept
  // a constant bound by two Weight nodes: packed where one is read, still there for the other
  const Tensor shared_w = randn({C, C}, rng, 0.4f);
  int twice = gb.add_node(Op::Attention, {gb.linear(x, gb.weight("tw", shared_w), -1), gb.linear(x, sg.W("tk", {C, C}), -1),
                                          gb.linear(x, sg.W("tv", {C, C}), -1)}, a);
  int other = gb.linear(x, gb.weight("tw", shared_w), -1);
  raw = gb.add(gb.add(raw, twice), other);
  gb.output(gb.add(gb.add(gb.add(causal, kept2), self), raw), "y");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  int n = -1;
  Graph f = pack_qkv(g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 4);
  EXPECT_EQ(count_ops(f, Op::Linear), count_ops(g, Op::Linear) - 2 - 1 - 2 - 2);
  EXPECT_EQ(f.weights.count("tw"), 1u);
  EXPECT_EQ(f.weights.count("tk"), 0u);
  EXPECT_EQ(f.weights.count("q"), 0u);  // the separate weights are gone, the stacked ones there
  ASSERT_EQ(f.weights.count("q+k+v"), 1u);
  EXPECT_EQ(f.weights.at("q+k+v").shape(), (Shape{3 * C, C}));
  EXPECT_EQ(f.weights.at("k2b+v").shape(), (Shape{2 * C}));
  EXPECT_EQ(f.weights.count("k3"), 1u);
  EXPECT_NEAR(f.flops(), g.flops(), 1e-6 * g.flops());
  EXPECT_LT(max_abs_diff(run_cpu(f, in), run_cpu(g, in)), 1e-5);
}

// The softmax scale folded into the query projection: counted where q is a Linear with its own weights
// (self- and cross-attention, with and without a bias, FP32 and FP16 weights), left alone where q is read
// elsewhere, has no projection or a shared weight; the same output on the CPU, the source graph's weights
// untouched, and the result packed by pack_qkv as before.
TEST(Passes, FoldAttentionScaleCountsAndMatches) {
  SeededGraph sg(19, 0.4f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  const int64_t C = 8;
  std::map<std::string, Tensor> in{{"x", randn({2, 6, C}, rng)}, {"ctx", randn({2, 5, 12}, rng)}};
  int x = gb.input("x", {2, 6, C}), ctx = gb.input("ctx", {2, 5, 12});
  auto att = [&](int q, int k, int v, float s, bool causal = false) {
    Attrs a;
    a.heads = 2;
    a.scale = s;
    a.causal = causal;
    return gb.add_node(Op::Attention, {q, k, v}, a);
  };
  int self = att(gb.linear(x, sg.W("q", {C, C}), -1), gb.linear(x, sg.W("k", {C, C}), -1), gb.linear(x, sg.W("v", {C, C}), -1), 0.5f);
  const Tensor w16 = randn({C, C}, rng, 0.4f).to_f16(), b16 = randn({C}, rng, 0.4f).to_f16();
  int cross = att(gb.linear(self, gb.weight("q2", w16), gb.weight("q2b", b16)), gb.linear(ctx, gb.weight("k2", randn({C, 12}, rng, 0.4f).to_f16()), -1),
                  gb.linear(ctx, gb.weight("v2", randn({C, 12}, rng, 0.4f).to_f16()), -1), 0.35f);
  int shared = gb.linear(cross, sg.W("s", {C, C}), -1);  // q read twice: kept
  int kept = att(shared, gb.linear(x, sg.W("k3", {C, C}), -1), gb.linear(x, sg.W("v3", {C, C}), -1), 0.5f);
  int raw = att(gb.unary(Op::SiLU, x), x, x, 0.5f);  // no projection: kept
  int tied = gb.weight("t", randn({C, C}, rng, 0.4f));  // one Weight node read by two Linears: kept
  int two = att(gb.linear(x, tied, -1), gb.linear(x, sg.W("tk", {C, C}), -1), gb.linear(x, sg.W("tv", {C, C}), -1), 0.5f);
  // a constant bound by two Weight nodes: folded where the attention reads it, the other node still reads it
  const Tensor bound = randn({C, C}, rng, 0.4f);
  int causal = att(gb.linear(x, gb.weight("bw", bound), -1), gb.linear(x, sg.W("bk", {C, C}), -1), gb.linear(x, sg.W("bv", {C, C}), -1), 0.5f, true);
  int other = gb.add(gb.linear(x, gb.weight("bw", bound), -1), gb.add(causal, gb.linear(x, tied, -1)));
  gb.output(gb.add(gb.add(gb.add(kept, shared), gb.add(raw, two)), other), "y");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  const Tensor q_before = g.weights.at("q");
  int n = -1;
  Graph f = fold_attention_scale(g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 3);
  EXPECT_EQ(f.weights.count("q"), 0u);
  ASSERT_EQ(f.weights.count("q*qscale"), 1u);
  EXPECT_EQ(f.weights.count("t*qscale"), 0u);
  EXPECT_EQ(f.weights.count("bw"), 1u);
  EXPECT_EQ(f.weights.count("bw*qscale"), 1u);
  EXPECT_EQ(f.weights.at("q2*qscale").dtype(), DType::F16);
  EXPECT_EQ(f.weights.at("q2b*qscale").dtype(), DType::F16);
  EXPECT_FLOAT_EQ(f.weights.at("q*qscale").f32()[3], (float)((double)q_before.f32()[3] * 0.5 / 0.693147180559945309));
  EXPECT_EQ(g.weights.at("q").f32(), q_before.f32());  // the source graph's tensor, not written
  std::vector<float> scales;
  for (const Node& nd : f.nodes)
    if (nd.op == Op::Attention) scales.push_back(nd.a.scale);
  EXPECT_EQ(scales, (std::vector<float>{0.693147180559945309f, 0.693147180559945309f, 0.5f, 0.5f, 0.5f, 0.693147180559945309f}));
  EXPECT_EQ(0.693147180559945309f * 1.4426950408889634f, 1.f);  // the kernels' base-2 scale, exactly 1
  // on the CPU (float32 weights only: the FP16 ones widened), the scaled FP16 weights rounded once more
  auto widened = [](Graph x) {
    for (auto& [name, t] : x.weights) t = t.to_f32();
    for (Node& nd : x.nodes)
      if (nd.op == Op::Weight) nd.dtype = DType::F32;
    return x;
  };
  const Tensor want = run_cpu(widened(g), in);
  EXPECT_LT(max_abs_diff(run_cpu(widened(f), in), want), 2e-3);
  int m = -1;
  Graph p = pack_qkv(f, &m);
  EXPECT_EQ(m, 5);  // self (qkv), cross (kv), the kept ones' k and v, the causal one (qkv)
  EXPECT_LT(max_abs_diff(run_cpu(widened(p), in), want), 2e-3);
  int again = -1;
  fold_attention_scale(f, &again);
  EXPECT_EQ(again, 0);  // folded scales are ln 2: nothing left
}

TEST(Passes, FuseLinearGegluCountsAndMatches) {
  SeededGraph sg(17, 0.4f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  const int64_t C = 8, F = 12;
  std::map<std::string, Tensor> in{{"x", randn({2, 5, C}, rng)}, {"r", randn({2, 5, 2 * F}, rng)}};
  int x = gb.input("x", {2, 5, C});
  int ff = gb.unary(Op::GEGLU, gb.linear(x, sg.W("w1", {2 * F, C}), sg.W("b1", {2 * F})));  // fused
  int nob = gb.unary(Op::GEGLU, gb.linear(x, sg.W("w2", {2 * F, C}), -1));                  // no bias: fused too
  int shared = gb.linear(x, sg.W("w3", {2 * F, C}), sg.W("b3", {2 * F}));
  int kept = gb.add(gb.unary(Op::GEGLU, shared), gb.reshape(gb.unary(Op::GEGLU, gb.add(shared, shared)), {2, 5, F}));  // read twice: kept
  Attrs none;
  int res = gb.add_node(Op::Linear, {x, sg.W("w4", {2 * F, C}), sg.W("b4", {2 * F}), gb.input("r", {2, 5, 2 * F})}, none);
  int with_res = gb.unary(Op::GEGLU, res);  // a residual in the epilogue already: kept
  gb.output(gb.add(gb.add(gb.add(ff, nob), kept), with_res), "y");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  int n = -1;
  Graph f = fuse_linear_geglu(g, &n);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  EXPECT_EQ(n, 2);
  EXPECT_EQ(count_ops(f, Op::GEGLU), count_ops(g, Op::GEGLU) - 2);
  int fused = 0;
  for (const auto& node : f.nodes)
    if (node.op == Op::Linear && node.a.geglu) {
      ++fused;
      EXPECT_EQ(node.shape, (Shape{2, 5, F}));
    }
  EXPECT_EQ(fused, 2);
  EXPECT_NEAR(f.flops(), g.flops(), 1e-9 * g.flops());
  EXPECT_LT(max_abs_diff(run_cpu(f, in), run_cpu(g, in)), 1e-5);
  // and after fuse_residual_add, which must leave a GEGLU projection's epilogue alone
  int r = -1;
  Graph again = fuse_residual_add(f, &r);
  ASSERT_TRUE(again.verify().is_ok()) << again.verify().message();
  for (const auto& node : again.nodes) EXPECT_FALSE(node.a.geglu && node.inputs.size() == 4);
}

// subpixel_upsample_conv: Upsample2x + 3x3 convolution (stride 1, padding 1) -> a 2x2 convolution of 4 O
// phases + PhaseInterleave, with a bias and without; an upsampling read twice, one to odd dims, a strided or
// a 1x1 convolution after it, a weight shared: left alone. Values and FLOP count as the unfused graph's.
TEST(Passes, UpsampledConvolutionBecomesPhaseConvolution) {
  SeededGraph sg(31, 0.3f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  const int64_t C = 6, O = 5;
  std::map<std::string, Tensor> in{{"x", randn({2, C, 5, 4}, rng)}};
  int x = gb.input("x", {2, C, 5, 4});
  Attrs p1;
  for (int i = 0; i < 4; ++i) p1.pad[i] = 1;
  auto up = [&] { return gb.unary(Op::Upsample2x, x); };
  int a = gb.add_node(Op::Conv2d, {up(), sg.W("w1", {O, C, 3, 3}), sg.W("b1", {O})}, p1);  // fused
  int b = gb.add_node(Op::Conv2d, {up(), sg.W("w2", {O, C, 3, 3})}, p1);                   // no bias: fused
  int twice = up();
  int c = gb.add(gb.add_node(Op::Conv2d, {twice, sg.W("w3", {O, C, 3, 3})}, p1), gb.add_node(Op::Conv2d, {twice, sg.W("w4", {O, C, 3, 3})}, p1));
  Attrs s2 = p1;
  s2.stride = 2;
  int d = gb.add_node(Op::Conv2d, {up(), sg.W("w5", {O, C, 3, 3})}, s2);  // strided: kept
  int e = gb.add_node(Op::Conv2d, {up(), sg.W("w6", {O, C, 1, 1})});      // 1x1: kept
  int w7 = sg.W("w7", {O, C, 3, 3});                                      // shared weight: kept
  int f = gb.add(gb.add_node(Op::Conv2d, {up(), w7}, p1), gb.add_node(Op::Conv2d, {up(), w7}, p1));
  Attrs odd;
  odd.dims = {11, 9};
  int h = gb.add_node(Op::Conv2d, {gb.add_node(Op::Upsample2x, {x}, odd), sg.W("w8", {O, C, 3, 3})}, p1);  // not 2x: kept
  gb.output(gb.add(gb.add(a, b), gb.add(c, f)), "y");
  gb.output(d, "d");
  gb.output(e, "e");
  gb.output(h, "h");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  int n = -1;
  Graph fg = subpixel_upsample_conv(g, &n);
  ASSERT_TRUE(fg.verify().is_ok()) << fg.verify().message();
  EXPECT_EQ(n, 2);
  EXPECT_EQ(count_ops(fg, Op::PhaseInterleave), 2);
  EXPECT_EQ(count_ops(fg, Op::Upsample2x), count_ops(g, Op::Upsample2x) - 2);
  EXPECT_FALSE(fg.weights.count("w1") || fg.weights.count("b1") || fg.weights.count("w2"));
  EXPECT_TRUE(fg.weights.count("w1#phases") && fg.weights.count("b1#phases") && fg.weights.count("w7"));
  for (const auto& node : fg.nodes)
    if (node.op == Op::Weight) EXPECT_TRUE(fg.weights.count(node.name)) << node.name;
  EXPECT_NEAR(fg.flops(), g.flops(), 1e-9 * g.flops());
  const auto [rw, rg] = run_all_cpu(g, fg, in);
  ASSERT_EQ(rw.size(), rg.size());
  for (size_t k = 0; k < rw.size(); ++k) EXPECT_LT(rel_err(rg[k], rw[k]), 1e-6) << "output " << k;
}

// fuse_interleave_concat: Concat(PhaseInterleave(x), s) along the channels -> one Concat reading x's phase
// planes (Attrs::up2), with one source and with two more; an interleaving read twice, one that is not the
// Concat's first input, a Concat along another axis: left alone. Values as the unfused graph's.
TEST(Passes, InterleavingBeforeAConcatIsFusedIntoIt) {
  SeededGraph sg(37, 0.5f);
  [[maybe_unused]] auto& [rng, scale, g, gb] = sg;
  std::map<std::string, Tensor> in{{"p", randn({2, 12, 4, 6}, rng)}, {"s", randn({2, 5, 6, 10}, rng)}, {"t", randn({2, 2, 6, 10}, rng)}};
  int p = gb.input("p", {2, 12, 4, 6}), sk = gb.input("s", {2, 5, 6, 10}), t = gb.input("t", {2, 2, 6, 10});
  auto pi = [&] { return gb.unary(Op::PhaseInterleave, p); };  // [2, 3, 6, 10]
  int a = gb.concat({pi(), sk}, 1);                             // fused
  int b = gb.concat({pi(), sk, t}, 1);                          // fused, three sources
  int twice = pi();
  int c = gb.concat({twice, sk}, 1);                            // read twice: kept
  int d = gb.concat({sk, pi()}, 1);                             // not the first input: kept
  int e = gb.concat({pi(), pi()}, 2);                           // along H: kept
  gb.output(a, "a");
  gb.output(b, "b");
  gb.output(gb.add(c, gb.concat({twice, sk}, 1)), "c");
  gb.output(d, "d");
  gb.output(e, "e");
  ASSERT_TRUE(gb.status().is_ok()) << gb.status().message();
  int n = -1;
  Graph fg = fuse_interleave_concat(g, &n);
  ASSERT_TRUE(fg.verify().is_ok()) << fg.verify().message();
  EXPECT_EQ(n, 2);
  EXPECT_EQ(count_ops(fg, Op::PhaseInterleave), count_ops(g, Op::PhaseInterleave) - 2);
  int up2 = 0;
  for (const auto& node : fg.nodes) up2 += node.op == Op::Concat && node.a.up2;
  EXPECT_EQ(up2, 2);
  int again = -1;
  fuse_interleave_concat(fg, &again);
  EXPECT_EQ(again, 0);
  const auto [rw, rg] = run_all_cpu(g, fg, in);
  ASSERT_EQ(rw.size(), rg.size());
  for (size_t k = 0; k < rw.size(); ++k) EXPECT_EQ(max_abs_diff(rg[k], rw[k]), 0.0) << "output " << k;
  // an interleaving concat along another axis, or of a first input that is not phase planes, fails to verify
  Graph bad;
  GraphBuilder bb(bad);
  Attrs ax2;
  ax2.axis = 2;
  ax2.up2 = true;
  bb.add_node(Op::Concat, {bb.input("p", {2, 12, 4, 6}), bb.input("q", {2, 3, 6, 10})}, ax2);
  EXPECT_FALSE(bb.status().is_ok());
  Graph bad2;
  GraphBuilder bb2(bad2);
  Attrs ax1;
  ax1.axis = 1;
  ax1.up2 = true;
  bb2.add_node(Op::Concat, {bb2.input("p", {2, 10, 4, 6}), bb2.input("q", {2, 3, 6, 10})}, ax1);
  EXPECT_FALSE(bb2.status().is_ok());
}

TEST(Passes, GegluProjectionOfOddWidthOrWithResidualIsRejected) {
  Graph g;
  GraphBuilder gb(g);
  int x = gb.input("x", {2, 4});
  Attrs a;
  a.geglu = true;
  gb.add_node(Op::Linear, {x, gb.weight("w", Tensor::zeros(DType::F32, {5, 4}))}, a);
  ASSERT_FALSE(gb.status().is_ok());
  EXPECT_NE(gb.status().message().find("even width"), std::string::npos) << gb.status().message();
  Graph g2;
  GraphBuilder gb2(g2);
  int x2 = gb2.input("x", {2, 4}), r2 = gb2.input("r", {2, 3});
  gb2.add_node(Op::Linear, {x2, gb2.weight("w", Tensor::zeros(DType::F32, {6, 4})), gb2.weight("b", Tensor::zeros(DType::F32, {6})), r2}, a);
  ASSERT_FALSE(gb2.status().is_ok());
  EXPECT_NE(gb2.status().message().find("no residual"), std::string::npos) << gb2.status().message();
}

TEST(Passes, ResidualOfWrongShapeIsRejectedByTheVerifier) {
  Graph g;
  GraphBuilder gb(g);
  int x = gb.input("x", {1, 4, 3, 3});
  int r = gb.input("r", {1, 4, 3, 2});
  int w = gb.weight("w", Tensor::zeros(DType::F32, {4, 4, 1, 1})), b = gb.weight("b", Tensor::zeros(DType::F32, {4}));
  gb.add_node(Op::Conv2d, {x, w, b, r});
  ASSERT_FALSE(gb.status().is_ok());
  EXPECT_NE(gb.status().message().find("residual"), std::string::npos);
}

TEST(Passes, TinyUnetAndVaeUnchangedOnCpu) {
  SDRT_REQUIRE_CONFORMANCE();
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  std::mt19937 rng(3);
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  std::vector<PassResult> log;
  Graph f = optimize_graph(**g, &log);
  ASSERT_TRUE(f.verify().is_ok()) << f.verify().message();
  ASSERT_EQ(log.size(), 10u);
  EXPECT_EQ(log[0].rewrites, 0);   // the model builders leave nothing to fold
  EXPECT_GT(log[1].rewrites, 10);  // every ResNet norm + act, and conv_norm_out
  EXPECT_GT(log[2].rewrites, 10);  // ResNet shortcuts, attention/FF outputs, proj_out
  EXPECT_GT(log[3].rewrites, 5);   // every UNet ResNet's time embedding into its norm2
  EXPECT_EQ(log[4].name, "fold_attention_scale");
  EXPECT_EQ(log[4].rewrites, count_ops(**g, Op::Attention));  // every attention's query projection
  for (const Node& n : f.nodes)
    if (n.op == Op::Attention) EXPECT_EQ(n.a.scale, 0.693147180559945309f);
  EXPECT_EQ(log[5].rewrites, count_ops(**g, Op::Attention));  // each transformer's self (qkv) and cross (kv) attention
  // q/k/v packing takes 3 Linears of every 2 attentions, the time projections' packing all but one of log[8]
  EXPECT_EQ(count_ops(f, Op::Linear), count_ops(**g, Op::Linear) - 3 * count_ops(**g, Op::Attention) / 2 - (log[9].rewrites - 1));
  EXPECT_GT(count_ops(**g, Op::GEGLU), 0);
  EXPECT_EQ(log[6].rewrites, count_ops(**g, Op::GEGLU));  // every transformer's feed-forward projection
  EXPECT_EQ(count_ops(f, Op::GEGLU), 0);
  EXPECT_GT(count_ops(**g, Op::Upsample2x), 0);
  EXPECT_EQ(log[7].rewrites, count_ops(**g, Op::Upsample2x));  // every upsampler
  EXPECT_EQ(count_ops(f, Op::Upsample2x), 0);
  EXPECT_EQ(log[8].name, "fuse_interleave_concat");
  EXPECT_EQ(log[8].rewrites, count_ops(**g, Op::Upsample2x));  // every upsampler feeds the next up block's skip concatenation
  EXPECT_EQ(count_ops(f, Op::PhaseInterleave), 0);
  EXPECT_EQ(log[9].rewrites, log[3].rewrites);  // every ResNet's time projection, packed into one GEMM
  EXPECT_NEAR(f.flops(), (*g)->flops(), 1e-9 * (*g)->flops());
  std::map<std::string, Tensor> in = tiny_unet_inputs(rng, m->unet.cross_attention_dim, 500.f, 500.f);
  const Tensor want = run_cpu(**g, in), got = run_cpu(f, in);
  EXPECT_LT(rel_err(got, want), 1e-5);

  auto vae = build_vae_decoder(*m, 1, 16, 16);
  ASSERT_TRUE(vae.is_ok());
  Graph fv = optimize_graph(**vae);
  EXPECT_EQ(count_ops(fv, Op::PhaseInterleave), count_ops(**vae, Op::Upsample2x));  // (no concatenation follows a VAE upsampler)
  std::map<std::string, Tensor> vin{{"latent", randn({1, 4, 16, 16}, rng)}};
  EXPECT_LT(rel_err(run_cpu(fv, vin), run_cpu(**vae, vin)), 1e-5);
}

TEST(Passes, TinyUnetFusedMatchesUnfusedOnCuda) {
  SDRT_REQUIRE_CONFORMANCE();
  std::string why;
  CudaOptions plain, fused;
  plain.precision = fused.precision = "fp16";
  plain.fuse = false;
  auto a = make_cuda_backend(plain, &why);
  if (!a) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  auto b = make_cuda_backend(fused, &why);
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok());
  std::mt19937 rng(5);
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  std::map<std::string, Tensor> in = tiny_unet_inputs(rng, m->unet.cross_attention_dim, 500.f, 500.f);
  auto ea = a->compile(*g);
  auto eb = b->compile(*g);
  ASSERT_TRUE(ea.is_ok() && eb.is_ok());
  auto ra = (*ea)->run(in), rb = (*eb)->run(in);
  ASSERT_TRUE(ra.is_ok() && rb.is_ok());
  const double e = rel_err((*rb)[0], (*ra)[0]);
  std::printf("      cuda fp16 fused vs unfused UNet rel err %.2e\n", e);
  EXPECT_LT(e, 5e-3);  // fp16 rounding at different points only
}

// The side lane (a second stream for work off the critical path: timestep projections, cross-attention
// keys/values, shortcut convolutions) runs the same kernels on the same values: the UNet's output is
// the one-stream output bit for bit, on the first (captured) run and on replays. One backend compiles
// both (SDRT_LANES=2 for the second), so both take the same tactics.
TEST(Passes, TinyUnetSideLaneMatchesOneStreamOnCuda) {
  TINY_MODEL_ON_FP16_CUDA(cuda, m);
  std::mt19937 rng(7);
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  auto one = cuda->compile(*g);
  ASSERT_TRUE(one.is_ok());
  EXPECT_EQ((*one)->streams(), 1);
  for (const char* mode : {"2", "branches"}) {  // everything off the critical path; only the input branches (the time embedding)
    ::setenv("SDRT_LANES", mode, 1);
    auto two = cuda->compile(*g);
    ::unsetenv("SDRT_LANES");
    ASSERT_TRUE(two.is_ok());
    EXPECT_EQ((*two)->streams(), 2) << mode;
    for (int run = 0; run < 3; ++run) {
      std::map<std::string, Tensor> in = tiny_unet_inputs(rng, m->unet.cross_attention_dim, 999.f - 400.f * run, 500.f);
      auto ra = (*one)->run(in), rb = (*two)->run(in);
      ASSERT_TRUE(ra.is_ok() && rb.is_ok());
      const Tensor &x = (*ra)[0], &y = (*rb)[0];
      ASSERT_EQ(x.shape(), y.shape());
      int64_t differ = 0;
      for (int64_t k = 0; k < x.numel(); ++k) differ += x.f32()[k] != y.f32()[k];
      std::printf("      SDRT_LANES=%s run %d: %lld of %lld values differ\n", mode, run, (long long)differ, (long long)x.numel());
      EXPECT_EQ(differ, 0);
    }
  }
}

// split_batch: the tiny UNet (fused or not) and text encoder in two batch parts compute what the whole
// batch does on the CPU, each part's nodes depending on its own slices only; graphs whose batch does not
// divide, or with a node that does not keep the batch first, are left alone.
TEST(Passes, SplitBatchMatchesTheWholeBatchOnCpu) {
  SDRT_REQUIRE_CONFORMANCE();
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  std::mt19937 rng(11);
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  const Graph fused = optimize_graph(**g);
  std::map<std::string, Tensor> in = tiny_unet_inputs(rng, m->unet.cross_attention_dim, 999.f, 20.f);  // each part its own timestep
  for (const Graph* src : std::vector<const Graph*>{g->get(), &fused}) {
    int parts = 0;
    const Graph s = split_batch(*src, 2, &parts);
    ASSERT_EQ(parts, 2);
    ASSERT_TRUE(s.verify().is_ok()) << s.verify().message();
    EXPECT_EQ(count_ops(s, Op::Slice), 6);  // three inputs, two parts
    EXPECT_EQ(count_ops(s, Op::Conv2d), 2 * count_ops(*src, Op::Conv2d));
    EXPECT_EQ(s.weights.size(), src->weights.size());
    EXPECT_EQ(s.optimized, src->optimized);
    const std::vector<int> part = passes::batch_parts(s);
    int per[2] = {0, 0};
    for (size_t i = 0; i < s.nodes.size(); ++i) {
      const Op op = s.nodes[i].op;
      if (op == Op::Input || op == Op::Weight) EXPECT_EQ(part[i], -1);
      else if (part[i] >= 0) ++per[part[i]];
    }
    EXPECT_EQ(per[0], per[1]);
    EXPECT_EQ(part[s.outputs[0]], -1);  // the parts' outputs concatenated
    EXPECT_EQ(s.nodes[s.outputs[0]].shape, (Shape{2, 4, 16, 16}));
    EXPECT_LT(rel_err(run_cpu(s, in), run_cpu(*src, in)), 1e-5);
  }

  auto te = build_text_encoder(*m, 2);
  ASSERT_TRUE(te.is_ok());
  int parts = 0;
  const Graph ts = split_batch(**te, 2, &parts);
  ASSERT_EQ(parts, 2);
  Tensor ids = Tensor::empty(DType::I32, {2, 77});
  for (int64_t i = 0; i < 154; ++i) static_cast<int32_t*>(ids.mutable_data())[i] = (int32_t)((i * 37 + 5) % m->clip.vocab);
  EXPECT_LT(rel_err(run_cpu(ts, {{"input_ids", ids}}), run_cpu(**te, {{"input_ids", ids}})), 1e-5);

  auto vae = build_vae_decoder(*m, 1, 16, 16);  // batch 1: nothing to split
  ASSERT_TRUE(vae.is_ok());
  EXPECT_EQ(split_batch(**vae, 2, &parts).nodes.size(), (*vae)->nodes.size());
  EXPECT_EQ(parts, 0);
  auto g3 = build_unet(*m, 3, 16, 16);  // 3 rows into 2 parts
  ASSERT_TRUE(g3.is_ok());
  split_batch(**g3, 2, &parts);
  EXPECT_EQ(parts, 0);

  Graph cat;  // a concatenation along the batch cannot be cut per part
  GraphBuilder b(cat);
  const int x = b.input("x", {2, 3});
  b.output(b.concat({x, x}, 0), "y");
  ASSERT_TRUE(b.status().is_ok());
  split_batch(cat, 2, &parts);
  EXPECT_EQ(parts, 0);
  Graph bc;  // a weight broadcast along the batch rows
  GraphBuilder b2(bc);
  const int y = b2.input("y", {2, 3});
  b2.output(b2.add(y, b2.weight("w", Tensor::from_f32({2, 1}, {1, 2}))), "z");
  ASSERT_TRUE(b2.status().is_ok());
  split_batch(bc, 2, &parts);
  EXPECT_EQ(parts, 0);
}

// The UNet of a guidance batch with its shared prefix (build_guided_unet): sample and timestep at half the
// batch give the whole batch's output on the repeated inputs, with fewer FLOPs; the prefix's convolutions
// and the first self-attention run at half the batch, the expansions are few (the skip of conv_in, the
// time embedding, the residuals and the cross-attention query of the first transformer), and the build
// passes apply to it as to the whole graph; graphs it cannot halve are refused with the reason.
TEST(Passes, GuidanceHalvesShareTheirPrefixOnCpu) {
  SDRT_REQUIRE_CONFORMANCE();
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  std::mt19937 rng(13);
  auto whole = build_unet(*m, 4, 16, 16);
  auto guided = build_guided_unet(*m, 2, 16, 16);
  ASSERT_TRUE(whole.is_ok() && guided.is_ok()) << guided.status().message();
  const Graph& g = **guided;
  ASSERT_TRUE(g.verify().is_ok()) << g.verify().message();
  for (const Node& n : g.nodes)
    if (n.op == Op::Input) EXPECT_EQ(n.shape[0], n.name == "encoder_hidden_states" ? 4 : 2) << n.name;
  EXPECT_EQ(g.nodes[g.outputs[0]].shape, (Shape{4, 4, 16, 16}));
  int half_convs = 0, half_attn = 0, expansions = 0;
  for (const Node& n : g.nodes) {
    if (n.op == Op::Conv2d && n.shape[0] == 2) ++half_convs;
    if (n.op == Op::Attention && n.shape[0] == 2) ++half_attn;
    if (n.op == Op::Concat && n.a.axis == 0) ++expansions;
  }
  EXPECT_EQ(half_convs, 4);  // conv_in, the first ResNet's two, the first transformer's proj_in
  EXPECT_EQ(half_attn, 1);   // the first transformer's self-attention
  // conv_in's output (a skip), the time embedding, the first ResNet's output (the transformer's residual),
  // the first transformer's residual after its self-attention and its cross-attention query
  EXPECT_EQ(expansions, 5);
  EXPECT_EQ(count_ops(g, Op::Conv2d), count_ops(**whole, Op::Conv2d));
  EXPECT_LT(g.flops(), (*whole)->flops());
  EXPECT_EQ(g.weights.size(), (*whole)->weights.size());

  const auto [half, full] = guided_inputs(rng, m->unet.cross_attention_dim, 999.f, 20.f);
  const Tensor want = run_cpu(**whole, full);
  EXPECT_LT(rel_err(run_cpu(g, half), want), 1e-6);
  const Graph fused = optimize_graph(g);
  ASSERT_TRUE(fused.verify().is_ok()) << fused.verify().message();
  EXPECT_LT(rel_err(run_cpu(fused, half), want), 1e-5);

  int n = 0;
  auto odd = build_unet(*m, 3, 16, 16);
  ASSERT_TRUE(odd.is_ok());
  auto bad = share_batch_halves(**odd, {"sample", "timestep"}, &n);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("not even"), std::string::npos) << bad.status().message();
  bad = share_batch_halves(**whole, {"latents"}, &n);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("no input 'latents'"), std::string::npos) << bad.status().message();
  auto ok = share_batch_halves(**whole, {"sample", "timestep"}, &n);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_GT(n, 10);

  Graph cat;  // a node that changes the batch: refused, naming it
  GraphBuilder b(cat);
  const int x = b.input("x", {2, 3});
  b.output(b.unary(Op::SiLU, b.concat({x, x}, 0)), "y");
  ASSERT_TRUE(b.status().is_ok());
  bad = share_batch_halves(cat, {"x"}, &n);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("Concat node"), std::string::npos) << bad.status().message();
  Graph bc;  // a weight with a row per batch row: the halves differ, so it cannot run at half
  GraphBuilder b2(bc);
  const int y = b2.input("y", {2, 3});
  b2.output(b2.add(y, b2.weight("w", Tensor::from_f32({2, 1}, {1, 2}))), "z");
  ASSERT_TRUE(b2.status().is_ok());
  bad = share_batch_halves(bc, {"y"}, &n);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("Add node"), std::string::npos) << bad.status().message();
}

// The graphs one backend compiles share its weights by name (the CUDA backend refuses a name it holds with
// another shape: "one model per backend"), so every weight a pass makes must be named for its contents.
// The pipeline's UNets of the tiny model - guided at several sizes, where share_batch_halves leaves
// different time projections at half the batch (an 8x8 latent keeps the first ResNet's at half; the
// H100 found its packed projections named like another size's), and the whole batch - optimized as the
// backends do: one name, one tensor.
TEST(Passes, OptimizedUnetsOfOneModelAgreeOnWeightNames) {
  SDRT_REQUIRE_CONFORMANCE();
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  struct Size {
    int64_t images, h, w;
    bool guided;
  };
  std::map<std::string, const Tensor*> seen;
  std::vector<Graph> keep;  // the tensors seen point into these
  keep.reserve(5);
  int packed = 0;
  for (const Size& z : {Size{2, 12, 16, true}, Size{1, 16, 16, true}, Size{1, 8, 8, true}, Size{2, 8, 8, false}, Size{1, 8, 8, false}}) {
    auto g = z.guided ? build_guided_unet(*m, z.images, z.h, z.w) : build_unet(*m, 2 * z.images, z.h, z.w);
    ASSERT_TRUE(g.is_ok()) << g.status().message();
    keep.push_back(optimize_graph(**g));
    const Graph& o = keep.back();
    for (size_t i = 0; i < o.nodes.size(); ++i) {
      const Node& n = o.nodes[i];
      const Tensor* t = n.op == Op::Weight ? passes::weight_tensor(o, (int)i) : nullptr;
      if (!t) continue;
      packed += n.name.find("+packed") != std::string::npos;
      auto [it, fresh] = seen.emplace(n.name, t);
      if (fresh) continue;
      ASSERT_EQ(it->second->shape(), t->shape()) << n.name << " at " << z.images << " images " << z.h << "x" << z.w;
      EXPECT_EQ(std::memcmp(it->second->data(), t->data(), t->nbytes()), 0) << n.name;
    }
  }
  EXPECT_GT(packed, 0);  // the packed projections are among them
}

// The same on CUDA in fp16 with the build passes: the guided UNet (prefix at half the batch, expansions
// along the batch in NHWC) against the whole batch's, within fp16 rounding (the half-batch layers take
// the tactics of their own shapes), on the first (captured) run and a replay.
TEST(Passes, GuidanceHalvesShareTheirPrefixOnCuda) {
  TINY_MODEL_ON_FP16_CUDA(cuda, m);
  std::mt19937 rng(17);
  auto whole = build_unet(*m, 4, 16, 16);
  auto guided = build_guided_unet(*m, 2, 16, 16);
  ASSERT_TRUE(whole.is_ok() && guided.is_ok());
  auto ew = cuda->compile(*whole);
  auto eg = cuda->compile(*guided);
  ASSERT_TRUE(ew.is_ok() && eg.is_ok()) << eg.status().message();
  for (int run = 0; run < 2; ++run) {
    const auto [half, full] = guided_inputs(rng, m->unet.cross_attention_dim, 999.f - 300.f * run, 20.f);
    auto rw = (*ew)->run(full);
    auto rg = (*eg)->run(half);
    ASSERT_TRUE(rw.is_ok() && rg.is_ok()) << rg.status().message();
    const double e = rel_err((*rg)[0], (*rw)[0]);
    std::printf("      cuda fp16 guided (shared prefix) vs whole-batch UNet, run %d: rel err %.2e\n", run, e);
    EXPECT_LT(e, 5e-3);
  }
}

// The tiny UNet's batch-2 executable run through its device loop with the prompt held (its key/value
// projections then run before the graph), for the input sets of `order` in turn: the outputs in that order,
// none where a step failed (reported).
namespace {
std::vector<Tensor> on_device_loop(Executable& e, const std::vector<std::map<std::string, Tensor>>& ins, const std::vector<int>& order) {
  DeviceLoop* L = e.device_loop();
  if (!L) return ADD_FAILURE() << "no device loop", std::vector<Tensor>{};
  auto xs = L->input("sample"), ts = L->input("timestep"), cs = L->input("encoder_hidden_states"), ys = L->output(0);
  if (!xs.is_ok() || !ts.is_ok() || !cs.is_ok() || !ys.is_ok() || !L->hold_input("encoder_hidden_states").is_ok())
    return ADD_FAILURE() << "device loop buffers", std::vector<Tensor>{};
  std::vector<Tensor> out;
  for (int i : order) {
    const auto& in = ins[i];
    Tensor y = Tensor::empty(DType::F32, {2, 4, 16, 16});
    const bool ok = L->upload(*xs, in.at("sample").f32(), in.at("sample").numel()).is_ok() && L->upload(*ts, in.at("timestep").f32(), 2).is_ok() &&
                    L->upload(*cs, in.at("encoder_hidden_states").f32(), in.at("encoder_hidden_states").numel()).is_ok() && L->run().is_ok() &&
                    L->download(y.f32(), *ys, y.numel()).is_ok();
    if (!ok) return ADD_FAILURE() << "device loop run, input " << i, std::vector<Tensor>{};
    out.push_back(y);
  }
  return out;
}
}  // namespace

// The UNet's batch in two parts on two streams (CudaOptions::split_batch): within fp16 rounding of the
// whole batch on one stream (each part takes the tactics of its own shapes), the same on the first
// (captured) run and on replays, and through the device loop with the prompt held.
TEST(Passes, TinyUnetSplitBatchOnTwoStreamsMatchesOnCuda) {
  SDRT_REQUIRE_CONFORMANCE();
  std::string why;
  CudaOptions whole, split;
  whole.precision = split.precision = "fp16";
  whole.split_batch = 1;
  split.split_batch = 2;
  auto a = make_cuda_backend(whole, &why);
  if (!a) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  auto b = make_cuda_backend(split, &why);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->variant(), "");
  EXPECT_EQ(b->variant(), "split2");
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok());
  std::mt19937 rng(13);
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  auto ea = a->compile(*g);
  auto eb = b->compile(*g);
  ASSERT_TRUE(ea.is_ok() && eb.is_ok()) << (ea.is_ok() ? eb.status().message() : ea.status().message());
  EXPECT_EQ((*ea)->streams(), 1);
  EXPECT_EQ((*eb)->streams(), 2);
  const int64_t ctx = m->unet.cross_attention_dim;
  std::vector<std::map<std::string, Tensor>> ins;
  for (int run = 0; run < 3; ++run)
    ins.push_back(tiny_unet_inputs(rng, ctx, 999.f - 400.f * run, 30.f));
  Tensor first;
  for (int run = 0; run < 3; ++run) {
    auto ra = (*ea)->run(ins[run]), rb = (*eb)->run(ins[run]);
    ASSERT_TRUE(ra.is_ok() && rb.is_ok());
    const double e = rel_err((*rb)[0], (*ra)[0]);
    std::printf("      run %d: split vs whole batch rel err %.2e\n", run, e);
    EXPECT_LT(e, 5e-3);
    if (run == 0) first = (*rb)[0];
  }
  auto again = (*eb)->run(ins[0]);  // a replay of the captured graph, the first inputs again
  ASSERT_TRUE(again.is_ok());
  EXPECT_LT(rel_err((*again)[0], first), 1e-6);  // a race between the parts' streams would be far larger

  // the device loop with the prompt held: its key/value projections run before the graph, per part
  const std::vector<int> order = {1, 2, 2};
  const std::vector<Tensor> ys = on_device_loop(**eb, ins, order);
  ASSERT_EQ(ys.size(), order.size());
  for (size_t k = 0; k < order.size(); ++k) {
    auto want = (*eb)->run(ins[order[k]]);
    ASSERT_TRUE(want.is_ok());
    EXPECT_LT(rel_err(ys[k], (*want)[0]), 1e-6) << "run " << order[k];
  }
}

// SDRT_SPLIT=auto (CudaOptions::split_batch -1): building the UNet times it whole and in two batch parts
// and keeps the faster; the choice is a tactic (plans, timing caches) that another backend takes as it is.
TEST(Passes, TinyUnetSplitAutoChoiceIsRecordedOnCuda) {
  SDRT_REQUIRE_CONFORMANCE();
  std::string why;
  CudaOptions o;
  o.precision = "fp16";
  o.split_batch = -1;
  auto a = make_cuda_backend(o, &why);
  if (!a) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  EXPECT_EQ(a->variant(), "split-auto");
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok());
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  auto opt = a->optimize(*g);
  std::string choice;
  for (const auto& [k, v] : a->tactics(opt.get()))
    if (k.rfind("batch_split/", 0) == 0) choice = v;
  std::printf("      the tiny UNet at batch 2: %s\n", choice == "2" ? "split" : "whole");
  ASSERT_TRUE(choice == "1" || choice == "2") << choice;
  EXPECT_EQ(opt->nodes.size() > (*g)->nodes.size(), choice == "2");  // the split graph copies the nodes
  auto ea = a->compile(opt);
  ASSERT_TRUE(ea.is_ok()) << ea.status().message();
  EXPECT_EQ((*ea)->streams(), choice == "2" ? 2 : 1);

  auto b = make_cuda_backend(o, &why);
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->add_tactics(a->tactics(nullptr)).is_ok());
  auto eb = b->compile(*g);  // the recorded choice, not timed again
  ASSERT_TRUE(eb.is_ok()) << eb.status().message();
  EXPECT_EQ((*eb)->streams(), (*ea)->streams());
  std::mt19937 rng(17);
  std::map<std::string, Tensor> in = tiny_unet_inputs(rng, m->unet.cross_attention_dim, 700.f, 300.f);
  auto ra = (*ea)->run(in), rb = (*eb)->run(in);
  ASSERT_TRUE(ra.is_ok() && rb.is_ok());
  EXPECT_LT(rel_err((*rb)[0], (*ra)[0]), 1e-6);
  EXPECT_FALSE(b->add_tactics({{"batch_split/x", "0"}}).is_ok());
}

// Programmatic dependent launch (SDRT_PDL=1): the engine's kernels launched so may start before the kernel
// they follow has finished, waiting at their top. The tiny UNet's outputs stay those of plain launches (the
// same kernels and tactics: the same backend), captured and on replays, on one stream and with the batch in
// two parts on two (a kernel node then depends on the other lane too), and through the device loop with the
// prompt held; a race would show far above 1e-6.
TEST(Passes, TinyUnetWithDependentLaunchesMatchesOnCuda) {
  SDRT_REQUIRE_CONFORMANCE();
  std::string why;
  CudaOptions o;
  o.precision = "fp16";
  o.split_batch = 1;
  auto a = make_cuda_backend(o, &why);
  if (!a) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  o.split_batch = 2;
  auto s = make_cuda_backend(o, &why);
  ASSERT_TRUE(s);
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok());
  auto g = build_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok());
  std::mt19937 rng(19);
  std::vector<std::map<std::string, Tensor>> ins;
  for (int run = 0; run < 2; ++run)
    ins.push_back(tiny_unet_inputs(rng, m->unet.cross_attention_dim, 900.f - 500.f * run, 40.f));
  ::unsetenv("SDRT_PDL");
  auto plain = a->compile(*g), plain_split = s->compile(*g);
  ASSERT_TRUE(plain.is_ok() && plain_split.is_ok());
  std::vector<Tensor> want, want_split;
  for (const auto& in : ins) {
    auto r = (*plain)->run(in), rs = (*plain_split)->run(in);
    ASSERT_TRUE(r.is_ok() && rs.is_ok());
    want.push_back((*r)[0]);
    want_split.push_back((*rs)[0]);
  }
  ::setenv("SDRT_PDL", "1", 1);
  struct Unset {
    ~Unset() { ::unsetenv("SDRT_PDL"); }
  } unset;
  const int64_t before = cuda_dependent_launches();
  auto dep = a->compile(*g), dep_split = s->compile(*g);
  ASSERT_TRUE(dep.is_ok() && dep_split.is_ok());
  ASSERT_EQ((*dep_split)->streams(), 2);
  for (int pass = 0; pass < 2; ++pass)  // the first run captures the graphs, the second replays them
    for (size_t i = 0; i < ins.size(); ++i) {
      auto r = (*dep)->run(ins[i]), rs = (*dep_split)->run(ins[i]);
      ASSERT_TRUE(r.is_ok() && rs.is_ok()) << (r.is_ok() ? rs.status().message() : r.status().message());
      const double e = rel_err((*r)[0], want[i]), es = rel_err((*rs)[0], want_split[i]);
      std::printf("      pass %d input %zu: dependent launches vs plain rel err %.2e, in two parts %.2e\n", pass, i, e, es);
      EXPECT_LT(e, 1e-6);
      EXPECT_LT(es, 1e-6);
    }
  const int64_t launches = cuda_dependent_launches() - before;
  std::printf("      %lld kernels launched as dependents\n", (long long)launches);
  if (a->compute_capability().first >= 9) EXPECT_GT(launches, 0);
  else EXPECT_EQ(launches, 0);  // before Hopper the attribute is not set

  const std::vector<int> order = {1, 0, 0};
  const std::vector<Tensor> ys = on_device_loop(**dep_split, ins, order);
  ASSERT_EQ(ys.size(), order.size());
  for (size_t k = 0; k < order.size(); ++k) EXPECT_LT(rel_err(ys[k], want_split[order[k]]), 1e-6) << "device loop, input " << order[k];
}

// input_prelude: the guided tiny UNet's time embedding (the sinusoid, its MLP and the ResNets' projections -
// packed into one Linear in the optimized graph, 22 Linears and their Reshapes to [N, C, 1, 1] in the
// unfused one) as one graph over three timestep pairs at once; its outputs, row block k, are what the
// whole graph computes at pair k (the boundary values made outputs), on the CPU.
TEST(Passes, InputPreludeComputesTheTimeEmbeddingForManyStepsOnCpu) {
  SDRT_REQUIRE_CONFORMANCE();
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto guided = build_guided_unet(*m, 2, 16, 16);
  ASSERT_TRUE(guided.is_ok()) << guided.status().message();
  std::mt19937 rng(29);
  const auto [in, unused] = guided_inputs(rng, m->unet.cross_attention_dim, 0.f, 0.f);
  const std::vector<std::pair<float, float>> ts{{999.f, 20.f}, {500.f, 500.f}, {1.f, 261.f}};
  for (const bool fused : {true, false}) {
    const Graph g = fused ? optimize_graph(**guided) : **guided;
    auto p = input_prelude(g, "timestep", (int64_t)ts.size());
    ASSERT_TRUE(p.is_ok()) << p.status().message();
    int projections = 0;  // the ResNets' time-embedding projections in the graph
    for (const Node& n : g.nodes)
      if (n.op == Op::Linear && (n.name.find("time_emb_proj") != std::string::npos || g.nodes[n.inputs[1]].name.find("time_emb_proj") != std::string::npos))
        ++projections;
    EXPECT_GE(projections, fused ? 1 : 4);
    int others = 0, linears = 0, expansions = 0;
    for (const Node& n : p->graph.nodes) {
      others += n.op == Op::Conv2d || n.op == Op::GroupNorm || n.op == Op::Attention || n.op == Op::LayerNorm;
      linears += n.op == Op::Linear;
      expansions += n.op == Op::Concat;
    }
    EXPECT_EQ(others, 0);                  // nothing that reads the latents or the prompt
    EXPECT_EQ(linears, 2 + projections);   // the MLP's two and every projection: none left to the steps
    EXPECT_EQ(expansions, 1);              // the halves' shared embedding, expanded once
    EXPECT_GE(p->computed, 5 + projections);
    std::printf("      %s: %d nodes ahead, %zu values (%d projections)\n", fused ? "optimized" : "unfused", p->computed, p->values.size(), projections);
    for (int v : p->values) EXPECT_TRUE(g.nodes[v].op == Op::Linear || g.nodes[v].op == Op::Reshape) << op_info(g.nodes[v].op).name;
    const Node& in0 = p->graph.nodes[0];
    EXPECT_EQ(in0.shape, (Shape{6}));
    for (int v : p->values) EXPECT_TRUE(p->part[v]);

    Graph whole = g;  // the boundary values as the outputs
    whole.outputs = p->values;
    whole.output_names.assign(p->values.size(), "v");
    auto ew = make_cpu_backend()->compile(std::make_shared<Graph>(whole));
    auto ep = make_cpu_backend()->compile(std::make_shared<Graph>(p->graph));
    ASSERT_TRUE(ew.is_ok() && ep.is_ok()) << ep.status().message();
    std::vector<float> all;
    for (auto [a, b] : ts) all.push_back(a), all.push_back(b);
    auto staged = (*ep)->run({{"timestep", Tensor::from_f32({6}, all)}});
    ASSERT_TRUE(staged.is_ok()) << staged.status().message();
    ASSERT_EQ(staged->size(), p->values.size());
    for (size_t k = 0; k < ts.size(); ++k) {
      auto step = in;
      step["timestep"] = Tensor::from_f32({2}, {ts[k].first, ts[k].second});
      auto want = (*ew)->run(step);
      ASSERT_TRUE(want.is_ok()) << want.status().message();
      for (size_t o = 0; o < p->values.size(); ++o) {
        const Tensor& w = (*want)[o];
        const Tensor& s = (*staged)[o];
        ASSERT_EQ(s.dim(0), 3 * w.dim(0));
        const int64_t n = w.numel();
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < n; ++i) {
          worst = std::max(worst, (double)std::fabs(s.f32()[k * n + i] - w.f32()[i]));
          scale = std::max(scale, (double)std::fabs(w.f32()[i]));
        }
        EXPECT_LE(worst, 1e-5 * std::max(1.0, scale)) << "fused " << fused << " step " << k << " value " << o;
      }
    }
  }

  // Refused: a missing input, a count below one; a node that changes the batch stays out of the part.
  ASSERT_FALSE(input_prelude(**guided, "latents", 2).is_ok());
  ASSERT_FALSE(input_prelude(**guided, "timestep", 0).is_ok());
  Graph cut;  // rows taken out of the batch (Slice): not row by row, so the rest's
  GraphBuilder b(cut);
  const int x = b.input("x", {2, 3});
  const int s = b.unary(Op::SiLU, x);
  Attrs first;
  first.dims = {0, 1};
  const int cat = b.concat({s, s}, 0);  // expanded: in the part, [x_k; x_k] per value
  b.output(b.unary(Op::SiLU, b.add_node(Op::Slice, {cat}, first)), "y");
  b.output(b.unary(Op::GELU, cat), "z");
  ASSERT_TRUE(b.status().is_ok());
  auto pc = input_prelude(cut, "x", 4);
  ASSERT_TRUE(pc.is_ok()) << pc.status().message();
  EXPECT_EQ(pc->computed, 3);  // the SiLU, the expansion and the GELU
  ASSERT_EQ(pc->values, (std::vector<int>{cat, cat + 3}));
  EXPECT_EQ(pc->graph.nodes[pc->graph.outputs[0]].shape, (Shape{16, 3}));
  auto ec = make_cpu_backend()->compile(std::make_shared<Graph>(pc->graph));
  ASSERT_TRUE(ec.is_ok()) << ec.status().message();
  std::vector<float> xs(24);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = 0.25f * (float)i - 3.f;
  auto ys = (*ec)->run({{"x", Tensor::from_f32({8, 3}, xs)}});
  ASSERT_TRUE(ys.is_ok()) << ys.status().message();
  for (int k = 0; k < 4; ++k)  // value k: rows 2k, 2k + 1 of x, twice
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 3; ++c) {
        const float v = xs[(2 * k + r % 2) * 3 + c];
        EXPECT_FLOAT_EQ((*ys)[0].f32()[(4 * k + r) * 3 + c], v / (1.f + std::exp(-v))) << k << " " << r << " " << c;
      }
}

// DeviceLoop::stage_input on CUDA (fp16): the guided tiny UNet with four timestep pairs staged. With the
// work ahead (the default: the time embedding and projections of all four in one prelude) each selected
// pair's output is within fp16 rounding of the output with that pair copied into the input (the prelude's
// GEMMs have 8 rows, not 2, and may take other tactics), in any order, on the captured graph's replays; a
// write into the timestep input ends the staging (the graph computes the embedding again: the reference's
// output exactly). With SDRT_STAGE=0 select_staged copies the pair: bit for bit the reference.
TEST(Passes, TinyUnetStagedTimestepMatchesOnCuda) {
  TINY_MODEL_ON_FP16_CUDA(cuda, m);
  std::mt19937 rng(31);
  auto g = build_guided_unet(*m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  auto e = cuda->compile(*g);
  ASSERT_TRUE(e.is_ok()) << e.status().message();
  DeviceLoop* L = (*e)->device_loop();
  ASSERT_NE(L, nullptr);
  auto in = guided_inputs(rng, m->unet.cross_attention_dim, 0.f, 0.f).first;
  auto xs = L->input("sample"), ts = L->input("timestep"), cs = L->input("encoder_hidden_states"), ys = L->output(0);
  ASSERT_TRUE(xs.is_ok() && ts.is_ok() && cs.is_ok() && ys.is_ok());
  ASSERT_TRUE(L->upload(*xs, in.at("sample").f32(), in.at("sample").numel()).is_ok());
  ASSERT_TRUE(L->upload(*cs, in.at("encoder_hidden_states").f32(), in.at("encoder_hidden_states").numel()).is_ok());
  ASSERT_TRUE(L->hold_input("encoder_hidden_states").is_ok());
  const std::vector<float> pairs{999.f, 20.f, 700.f, 700.f, 301.f, 5.f, 1.f, 999.f};
  auto out = [&]() {
    Tensor y = Tensor::empty(DType::F32, {4, 4, 16, 16});
    EXPECT_TRUE(L->run().is_ok() && L->download(y.f32(), *ys, y.numel()).is_ok());
    return y;
  };
  std::vector<Tensor> want;
  for (int k = 0; k < 4; ++k) {
    ASSERT_TRUE(L->upload(*ts, pairs.data() + 2 * k, 2).is_ok());
    want.push_back(out());
  }
  auto T = L->alloc((int64_t)pairs.size());
  ASSERT_TRUE(T.is_ok());
  ASSERT_TRUE(L->upload(*T, pairs.data(), (int64_t)pairs.size()).is_ok());
  ASSERT_FALSE(L->stage_input("latents", *T, 4).is_ok());
  ASSERT_FALSE(L->select_staged(0).is_ok());  // nothing staged yet

  ::setenv("SDRT_STAGE", "0", 1);
  ASSERT_TRUE(L->stage_input("timestep", *T, 4).is_ok());
  ::unsetenv("SDRT_STAGE");
  ASSERT_FALSE(L->select_staged(4).is_ok());
  for (int k : {2, 0, 3}) {
    ASSERT_TRUE(L->select_staged(k).is_ok());
    const Tensor y = out();
    EXPECT_EQ(std::memcmp(y.data(), want[k].data(), y.nbytes()), 0) << "copied pair " << k;
  }

  const int64_t preludes = cuda_staged_preludes(), nodes = cuda_staged_nodes();
  const Status st = L->stage_input("timestep", *T, 4);  // (the default)
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_EQ(cuda_staged_preludes(), preludes + 1);
  EXPECT_GE(cuda_staged_nodes() - nodes, 6);  // the sinusoid, the MLP, the expansion and the projections
  for (int k : {1, 3, 0, 2, 1}) {
    ASSERT_TRUE(L->select_staged(k).is_ok());
    const double err = rel_err(out(), want[k]);
    std::printf("      staged pair %d (work ahead): rel err %.2e\n", k, err);
    EXPECT_LT(err, 2e-3);
  }
  ASSERT_TRUE(L->upload(*ts, pairs.data() + 4, 2).is_ok());  // ends the staging
  const Tensor y = out();
  EXPECT_EQ(std::memcmp(y.data(), want[2].data(), y.nbytes()), 0) << "after a write into the input";
  EXPECT_TRUE(L->release_scratch().is_ok());
}
