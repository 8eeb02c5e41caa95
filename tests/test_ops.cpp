// Each CPU kernel against values computed by hand.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cuda/gelu_poly.h"
#include "test_util.h"

using namespace sdrt;

TEST(CpuOps, Conv2dValidNoPad) {
  std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9}, w(4, 1.f), y(4);
  const int64_t pad[4] = {0, 0, 0, 0};
  cpu::conv2d(x.data(), w.data(), nullptr, y.data(), 1, 1, 3, 3, 1, 2, 2, 1, pad, 2, 2);
  EXPECT_EQ(y, (std::vector<float>{12, 16, 24, 28}));
}

TEST(CpuOps, Conv2dPaddedBiasTwoChannels) {
  // 2 input channels, 3x3 kernel that picks the centre of channel 0 and twice the top-left of channel 1.
  std::vector<float> x{1, 2, 3, 4, 10, 20, 30, 40}, w(18, 0.f), b{0.5f}, y(4);
  w[4] = 1.f;      // channel 0, centre
  w[9 + 0] = 2.f;  // channel 1, top-left
  const int64_t pad[4] = {1, 1, 1, 1};
  cpu::conv2d(x.data(), w.data(), b.data(), y.data(), 1, 2, 2, 2, 1, 3, 3, 1, pad, 2, 2);
  // out(i,j) = x0(i,j) + 2*x1(i-1,j-1) + 0.5
  EXPECT_EQ(y, (std::vector<float>{1.5f, 2.5f, 3.5f, 4.5f + 20.f}));
}

TEST(CpuOps, Conv2dStride2AsymmetricPad) {
  // 4x4 ramp, 3x3 ones, stride 2, pad right/bottom only (the VAE encoder's downsampler).
  std::vector<float> x(16), w(9, 1.f), y(4);
  for (int i = 0; i < 16; ++i) x[i] = (float)i;
  const int64_t pad[4] = {0, 0, 1, 1};
  cpu::conv2d(x.data(), w.data(), nullptr, y.data(), 1, 1, 4, 4, 1, 3, 3, 2, pad, 2, 2);
  // windows: rows 0-2 x cols 0-2 = 45; rows 0-2 x cols 2-3 = (2+3+6+7+10+11)=39; rows 2-3 x cols 0-2 = (8+9+10+12+13+14)=66;
  // rows 2-3 x cols 2-3 = 10+11+14+15 = 50
  EXPECT_EQ(y, (std::vector<float>{45, 39, 66, 50}));
}

TEST(CpuOps, LinearWithBias) {
  std::vector<float> x{1, 2, 3, 4, 5, 6}, w{1, 0, -1, 2, 1, 0}, b{10, 20}, y(4);
  cpu::linear(x.data(), w.data(), b.data(), y.data(), 2, 3, 2);
  EXPECT_EQ(y, (std::vector<float>{1 - 3 + 10, 2 + 2 + 20, 4 - 6 + 10, 8 + 5 + 20}));
}

TEST(CpuOps, GroupNorm) {
  // N=1, C=2, S=2, 1 group: mean 2.5, var 1.25
  std::vector<float> x{1, 2, 3, 4}, g{1, 2}, b{0, 1}, y(4);
  cpu::group_norm(x.data(), g.data(), b.data(), y.data(), 1, 2, 2, 1, 0.f);
  const float s = 1.f / std::sqrt(1.25f);
  EXPECT_NEAR(y[0], -1.5f * s, 1e-6);
  EXPECT_NEAR(y[1], -0.5f * s, 1e-6);
  EXPECT_NEAR(y[2], 2 * 0.5f * s + 1, 1e-6);
  EXPECT_NEAR(y[3], 2 * 1.5f * s + 1, 1e-6);
  // two groups: each channel normalised on its own: [-1, 1] per channel
  cpu::group_norm(x.data(), g.data(), b.data(), y.data(), 1, 2, 2, 2, 0.f);
  EXPECT_NEAR(y[0], -1.f, 1e-6);
  EXPECT_NEAR(y[1], 1.f, 1e-6);
  EXPECT_NEAR(y[2], -1.f, 1e-6);
  EXPECT_NEAR(y[3], 3.f, 1e-6);
}

TEST(CpuOps, LayerNormWithEps) {
  std::vector<float> x{0, 2, 10, 14}, g{1, 1}, b{0, 0}, y(4);
  cpu::layer_norm(x.data(), g.data(), b.data(), y.data(), 2, 2, 1.f);  // var 1 and 4, eps 1
  EXPECT_NEAR(y[0], -1.f / std::sqrt(2.f), 1e-6);
  EXPECT_NEAR(y[1], 1.f / std::sqrt(2.f), 1e-6);
  EXPECT_NEAR(y[2], -2.f / std::sqrt(5.f), 1e-6);
  EXPECT_NEAR(y[3], 2.f / std::sqrt(5.f), 1e-6);
}

TEST(CpuOps, Activations) {
  std::vector<float> x{-1, 0, 1, 2}, y(4);
  cpu::silu(x.data(), y.data(), 4);
  EXPECT_NEAR(y[0], -0.26894142f, 1e-6);
  EXPECT_NEAR(y[1], 0.f, 1e-7);
  EXPECT_NEAR(y[2], 0.73105858f, 1e-6);
  EXPECT_NEAR(y[3], 1.76159416f, 1e-6);
  cpu::gelu(x.data(), y.data(), 4);
  EXPECT_NEAR(y[0], -0.15865525f, 1e-6);
  EXPECT_NEAR(y[2], 0.84134475f, 1e-6);
  EXPECT_NEAR(y[3], 1.95449974f, 1e-6);
  cpu::quick_gelu(x.data(), y.data(), 4);
  EXPECT_NEAR(y[2], 1.f / (1.f + std::exp(-1.702f)), 1e-6);
  EXPECT_NEAR(y[0], -1.f / (1.f + std::exp(1.702f)), 1e-6);
}

TEST(CpuOps, Geglu) {
  // rows of [h0, h1, g0, g1] -> h * gelu(g)
  std::vector<float> x{2, 3, 1, -1, 1, 1, 0, 2}, y(4);
  cpu::geglu(x.data(), y.data(), 2, 2);
  EXPECT_NEAR(y[0], 2 * 0.84134475f, 1e-6);
  EXPECT_NEAR(y[1], 3 * -0.15865525f, 1e-6);
  EXPECT_NEAR(y[2], 0.f, 1e-7);
  EXPECT_NEAR(y[3], 1.95449974f, 1e-6);
}

TEST(CpuOps, AttentionSoftmaxWeights) {
  // one head, D=1: scores [0, ln 3] -> weights [1/4, 3/4]; values [2, 6] -> 5
  std::vector<float> q{1}, k{0, std::log(3.f)}, v{2, 6}, o(1);
  cpu::attention(q.data(), k.data(), v.data(), o.data(), 1, 1, 2, 1, 1, 1, 1, 1, 1, 1.f, false);
  EXPECT_NEAR(o[0], 5.f, 1e-5);
}

TEST(CpuOps, AttentionCausalAndHeads) {
  // two heads of width 1, two tokens, causal: token 0 sees only itself.
  std::vector<float> q{1, 1, 1, 1}, k{0, 0, std::log(3.f), 0}, v{2, 7, 6, 9}, o(4);
  cpu::attention(q.data(), k.data(), v.data(), o.data(), 1, 2, 2, 2, 1, 1, 2, 2, 2, 1.f, true);
  EXPECT_NEAR(o[0], 2.f, 1e-6);   // head 0, token 0
  EXPECT_NEAR(o[1], 7.f, 1e-6);   // head 1, token 0
  EXPECT_NEAR(o[2], 5.f, 1e-5);   // head 0, token 1: weights 1/4, 3/4
  EXPECT_NEAR(o[3], 8.f, 1e-5);   // head 1, token 1: equal scores, mean of 7 and 9
}

TEST(CpuOps, AttentionScale) {
  std::vector<float> q{2}, k{0, std::log(3.f)}, v{2, 6}, o(1);
  cpu::attention(q.data(), k.data(), v.data(), o.data(), 1, 1, 2, 1, 1, 1, 1, 1, 1, 0.5f, false);  // q*scale = 1
  EXPECT_NEAR(o[0], 5.f, 1e-5);
}

TEST(CpuOps, UpsampleAndTranspose) {
  std::vector<float> x{1, 2, 3, 4}, y(16);
  cpu::upsample_nearest(x.data(), y.data(), 1, 2, 2, 4, 4);
  EXPECT_EQ(y, (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
  std::vector<float> z(6);  // 2x2 -> 3x2: rows 0,0,1 (floor(i * 2/3))
  cpu::upsample_nearest(x.data(), z.data(), 1, 2, 2, 3, 2);
  EXPECT_EQ(z, (std::vector<float>{1, 2, 1, 2, 3, 4}));
  std::vector<float> a{1, 2, 3, 4, 5, 6}, t(6);  // [1, 2, 3] -> [1, 3, 2]
  cpu::transpose_last2(a.data(), t.data(), 1, 2, 3);
  EXPECT_EQ(t, (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(CpuOps, TimestepEmbedding) {
  std::vector<float> t{1.f, 0.f}, y(8);
  cpu::timestep_embedding(t.data(), y.data(), 2, 4, true, 0.f);
  // half = 2: frequencies 1 and 10000^(-1/2) = 0.01; flip puts cos first
  EXPECT_NEAR(y[0], std::cos(1.f), 1e-6);
  EXPECT_NEAR(y[1], std::cos(0.01f), 1e-6);
  EXPECT_NEAR(y[2], std::sin(1.f), 1e-6);
  EXPECT_NEAR(y[3], std::sin(0.01f), 1e-6);
  EXPECT_EQ(std::vector<float>(y.begin() + 4, y.end()), (std::vector<float>{1, 1, 0, 0}));
  cpu::timestep_embedding(t.data(), y.data(), 1, 4, false, 1.f);  // shift 1: frequencies 1 and 1e-4
  EXPECT_NEAR(y[0], std::sin(1.f), 1e-6);
  EXPECT_NEAR(y[1], std::sin(1e-4f), 1e-9);
  EXPECT_NEAR(y[2], std::cos(1.f), 1e-6);
}

TEST(CpuOps, Conv2dBatchedPathMatchesPerImage) {
  // Two images through the batched small-image path vs each alone (the per-image path).
  const int64_t C = 3, H = 5, W = 4, O = 2;
  std::vector<float> x(2 * C * H * W), w(O * C * 9), b{0.5f, -1.f};
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.11f * i);
  const int64_t pad[4] = {1, 1, 1, 1};
  std::vector<float> both(2 * O * H * W), one(O * H * W);
  cpu::conv2d(x.data(), w.data(), b.data(), both.data(), 2, C, H, W, O, 3, 3, 1, pad, H, W);
  for (int n = 0; n < 2; ++n) {
    cpu::conv2d(x.data() + n * C * H * W, w.data(), b.data(), one.data(), 1, C, H, W, O, 3, 3, 1, pad, H, W);
    for (int64_t i = 0; i < O * H * W; ++i) EXPECT_NEAR(both[n * O * H * W + i], one[i], 1e-5) << n << " " << i;
  }
}

// The fused GEGLU kernel's polynomial GELU (gelu_poly.h, forms wse128x3p / wse64x5p) against erf-GELU in double: its
// stated accuracy (relative error 2.8e-6 for |x| <= 5.5, absolute 4.4e-7 everywhere) with a margin, here with the exact
// 2^x where the GPU uses ex2.approx (relative error about 2^-22 more); odd inputs give what x Phi(x) gives.
TEST(CpuOps, PolynomialGeluMatchesErfGelu) {
  double worst_rel = 0, worst_abs = 0;
  for (int i = -240000; i <= 240000; ++i) {
    const float v = (float)i / 20000.f;
    const double ref = (double)v * 0.5 * std::erfc(-(double)v / std::sqrt(2.0));
    const double got = sdrt::cuda::gelu_poly(v), err = std::fabs(got - ref);
    worst_abs = std::max(worst_abs, err);
    if (std::fabs(v) <= 5.5f && ref != 0) worst_rel = std::max(worst_rel, err / std::fabs(ref));
  }
  EXPECT_LT(worst_rel, 4e-6);
  EXPECT_LT(worst_abs, 7e-7);
  EXPECT_EQ(sdrt::cuda::gelu_poly(0.f), 0.f);
  EXPECT_EQ(sdrt::cuda::gelu_poly(100.f), 100.f);
  EXPECT_EQ(sdrt::cuda::gelu_poly(-100.f), 0.f);
  EXPECT_TRUE(std::isinf(sdrt::cuda::gelu_poly(INFINITY)));
  EXPECT_TRUE(std::isnan(sdrt::cuda::gelu_poly(NAN)));
  std::printf("      polynomial GELU: max relative error %.3e (|x| <= 5.5), max absolute %.3e\n", worst_rel, worst_abs);
}
