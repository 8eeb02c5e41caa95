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
