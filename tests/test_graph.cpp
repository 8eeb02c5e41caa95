// The IR: shape inference errors, the verifier, and the CPU backend running a small graph.
#include "graph/backend.h"
#include "test_util.h"

using namespace sdrt;

TEST(Graph, ShapeInferenceRejectsMismatches) {
  Graph g;
  GraphBuilder b(g);
  int x = b.input("x", {1, 3, 8, 8});
  int w = b.weight("w", Tensor::zeros(DType::F32, {4, 5, 3, 3}));
  EXPECT_EQ(b.conv2d(x, w, -1, 1, 1), -1);
  EXPECT_FALSE(b.status().is_ok());
  EXPECT_NE(b.status().message().find("3 channels, weight expects 5"), std::string::npos) << b.status().message();
}

TEST(Graph, VerifierCatchesTamperedShapesAndOrder) {
  Graph g;
  GraphBuilder b(g);
  int x = b.input("x", {2, 3});
  int y = b.unary(Op::SiLU, x);
  b.output(y, "y");
  ASSERT_TRUE(g.verify().is_ok());
  g.nodes[y].shape = {2, 4};
  EXPECT_FALSE(g.verify().is_ok());
  g.nodes[y].shape = {2, 3};
  g.nodes[y].inputs = {5};
  EXPECT_FALSE(g.verify().is_ok());
}

TEST(Graph, CpuRunsBroadcastConcatReshape) {
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  int x = b.input("x", {2, 2, 1, 2});                                       // [N, C, H, W]
  int t = b.input("t", {2, 2});                                             // [N, C]
  int s = b.add(x, b.reshape(t, {2, 2, 1, 1}));                             // per-channel add
  int c = b.concat({s, x}, 1);                                              // [2, 4, 1, 2]
  int tok = b.unary(Op::ToTokens, c);                                       // [2, 2, 4]
  b.output(c, "c");
  b.output(tok, "tok");
  ASSERT_TRUE(b.status().is_ok());
  auto exe = make_cpu_backend()->compile(g);
  ASSERT_TRUE(exe.is_ok()) << exe.status().message();
  auto out = (*exe)->run({{"x", Tensor::from_f32({2, 2, 1, 2}, {1, 2, 3, 4, 5, 6, 7, 8})},
                          {"t", Tensor::from_f32({2, 2}, {10, 20, 30, 40})}});
  ASSERT_TRUE(out.is_ok()) << out.status().message();
  const Tensor& cc = (*out)[0];
  std::vector<float> got(cc.f32(), cc.f32() + cc.numel());
  EXPECT_EQ(got, (std::vector<float>{11, 12, 23, 24, 1, 2, 3, 4, 35, 36, 47, 48, 5, 6, 7, 8}));
  const Tensor& tk = (*out)[1];
  std::vector<float> gt(tk.f32(), tk.f32() + 8);  // batch 0: token (h0,w0) = channels [11, 23, 1, 3]
  EXPECT_EQ(gt, (std::vector<float>{11, 23, 1, 3, 12, 24, 2, 4}));
}

TEST(Graph, RunRejectsWrongInputShapeAndBadTokenIds) {
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  int ids = b.input("ids", {1, 2}, DType::I32);
  int e = b.add_node(Op::Embedding, {ids, b.weight("table", Tensor::from_f32({3, 2}, {0, 1, 2, 3, 4, 5}))});
  b.output(e, "e");
  auto exe = make_cpu_backend()->compile(g);
  ASSERT_TRUE(exe.is_ok());
  Tensor bad = Tensor::empty(DType::I32, {1, 2});
  static_cast<int32_t*>(bad.mutable_data())[0] = 1;
  static_cast<int32_t*>(bad.mutable_data())[1] = 7;
  auto r = (*exe)->run({{"ids", bad}});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("outside the vocabulary"), std::string::npos);
  auto r2 = (*exe)->run({{"ids", Tensor::empty(DType::I32, {1, 3})}});
  ASSERT_FALSE(r2.is_ok());
  EXPECT_NE(r2.status().message().find("expected [1, 2]"), std::string::npos) << r2.status().message();
}

// Slice: rows of the first axis, in the input's dtype; rows outside the input are a shape error.
TEST(Graph, SliceTakesRowsOfTheFirstAxis) {
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  int x = b.input("x", {3, 2});
  int ids = b.input("ids", {3, 1}, DType::I32);
  Attrs a;
  a.dims = {1, 2};
  int s = b.add_node(Op::Slice, {x}, a);
  int e = b.add_node(Op::Embedding, {b.add_node(Op::Slice, {ids}, a), b.weight("table", Tensor::from_f32({4, 1}, {10, 11, 12, 13}))});
  b.output(s, "s");
  b.output(e, "e");
  ASSERT_TRUE(b.status().is_ok()) << b.status().message();
  EXPECT_EQ(g->nodes[s].shape, (Shape{2, 2}));
  auto exe = make_cpu_backend()->compile(g);
  ASSERT_TRUE(exe.is_ok()) << exe.status().message();
  EXPECT_EQ(g->nodes[e - 2].dtype, DType::I32);  // the ids' slice
  Tensor idv = Tensor::empty(DType::I32, {3, 1});
  auto* ip = static_cast<int32_t*>(idv.mutable_data());
  ip[0] = 0, ip[1] = 3, ip[2] = 2;
  auto out = (*exe)->run({{"x", Tensor::from_f32({3, 2}, {1, 2, 3, 4, 5, 6})}, {"ids", idv}});
  ASSERT_TRUE(out.is_ok()) << out.status().message();
  EXPECT_EQ(std::vector<float>((*out)[0].f32(), (*out)[0].f32() + 4), (std::vector<float>{3, 4, 5, 6}));
  EXPECT_EQ(std::vector<float>((*out)[1].f32(), (*out)[1].f32() + 2), (std::vector<float>{13, 12}));

  Graph bad;
  GraphBuilder bb(bad);
  int y = bb.input("y", {2, 2});
  a.dims = {1, 2};  // rows [1, 3) of 2
  EXPECT_EQ(bb.add_node(Op::Slice, {y}, a), -1);
  EXPECT_NE(bb.status().message().find("not within"), std::string::npos) << bb.status().message();
}
