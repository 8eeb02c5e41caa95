// Every op of the CUDA backend against the CPU backend on random inputs (small and SD-sized shapes):
// normalised mean squared error per op, NaN/Inf checks, guard bands around every device output. Then the
// conformance components and pipelines on CUDA in float32. Skipped with a message where no GPU is usable.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "graph/backend.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "pipeline/pipeline.h"
#include "conformance_cases.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;

namespace {

std::unique_ptr<Backend> cuda_or_skip_reason(std::string* why, bool guard = true, const std::string& precision = "fp32") {
  CudaOptions o;
  o.guard_check = guard;
  o.precision = precision;
  return make_cuda_backend(o, why);
}

#define REQUIRE_CUDA_P(var, guard, precision)                   \
  std::string why_;                                             \
  auto var = cuda_or_skip_reason(&why_, guard, precision);      \
  if (!var) GTEST_SKIP() << "CUDA backend not usable here: " << why_
#define REQUIRE_CUDA(var, guard) REQUIRE_CUDA_P(var, guard, "fp32")

struct Case {
  std::string name;
  std::function<void(GraphBuilder&, std::map<std::string, Tensor>&, std::mt19937&)> build;
};

double nmse(const Tensor& a, const Tensor& ref, bool* finite) {
  double num = 0, den = 0;
  *finite = true;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (!std::isfinite(a.f32()[i])) *finite = false;
    const double d = (double)a.f32()[i] - ref.f32()[i];
    num += d * d;
    den += (double)ref.f32()[i] * ref.f32()[i];
  }
  return num / std::max(den, 1e-30);
}

std::vector<Case> cases() {
  std::vector<Case> c;
  auto in = [](GraphBuilder& b, std::map<std::string, Tensor>& ins, std::mt19937& rng, const std::string& name, Shape s) {
    ins[name] = randn(s, rng);
    return b.input(name, s);
  };
  auto w = [](GraphBuilder& b, std::mt19937& rng, const std::string& name, Shape s, float scale) { return b.weight(name, randn(s, rng, scale)); };
  auto conv = [=](std::string name, Shape x, int64_t O, int64_t k, int64_t stride, std::array<int64_t, 4> pad) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  int xi = in(b, ins, rng, "x", x);
                  Attrs a;
                  a.stride = stride;
                  for (int i = 0; i < 4; ++i) a.pad[i] = pad[i];
                  int y = b.add_node(Op::Conv2d, {xi, w(b, rng, "w", {O, x[1], k, k}, 1.f / std::sqrt((float)x[1] * k * k)), w(b, rng, "b", {O}, 1)}, a);
                  b.output(y, "y");
                }};
  };
  c.push_back(conv("conv3x3 small", {1, 4, 16, 16}, 8, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("conv3x3 SD [2,320,64,64]", {2, 320, 64, 64}, 320, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("conv stride2 asym pad", {1, 16, 17, 17}, 16, 3, 2, {0, 0, 1, 1}));
  c.push_back(conv("conv1x1 [2,64,32,32]", {2, 64, 32, 32}, 32, 1, 1, {0, 0, 0, 0}));
  c.push_back(conv("conv1x1 as GEMM SD proj_in [2,640,32,32]->640", {2, 640, 32, 32}, 640, 1, 1, {0, 0, 0, 0}));
  c.push_back(conv("conv1x1 odd channels [1,6,5,5]->3", {1, 6, 5, 5}, 3, 1, 1, {0, 0, 0, 0}));
  c.push_back(conv("conv stride2 pad1 (SD downsample)", {2, 32, 16, 16}, 32, 3, 2, {1, 1, 1, 1}));
  c.push_back(conv("conv_in [2,4,64,64]->320", {2, 4, 64, 64}, 320, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("conv_out [2,320,32,32]->4", {2, 320, 32, 32}, 4, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("conv VAE conv_out [1,128,20,24]->3", {1, 128, 20, 24}, 3, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("conv narrow stride2 asym pad [1,32,17,17]->5", {1, 32, 17, 17}, 5, 3, 2, {0, 0, 1, 1}));
  c.push_back(conv("conv narrow two row tiles [1,48,5,40]->4", {1, 48, 5, 40}, 4, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("few outputs, stride 2, asym pad [1,16,9,9]->3", {1, 16, 9, 9}, 3, 3, 2, {0, 0, 1, 1}));
  c.push_back(conv("few inputs [2,3,10,10]->16 (VAE-like conv_in)", {2, 3, 10, 10}, 16, 3, 1, {1, 1, 1, 1}));
  auto conv_residual = [=](std::string name, Shape x, int64_t O) {  // 3x3, pad 1, + bias + residual
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  a.stride = 1;
                  for (int i = 0; i < 4; ++i) a.pad[i] = 1;
                  b.output(b.add_node(Op::Conv2d, {in(b, ins, rng, "x", x), w(b, rng, "w", {O, x[1], 3, 3}, 1.f / std::sqrt((float)x[1] * 9)),
                                                   w(b, rng, "b", {O}, 1), in(b, ins, rng, "r", {x[0], O, x[2], x[3]})}, a),
                           "y");
                }};
  };
  c.push_back(conv_residual("conv_out + residual [2,64,8,8]->8", {2, 64, 8, 8}, 8));
  c.push_back(conv_residual("conv odd channels + residual [2,5,9,9]->6", {2, 5, 9, 9}, 6));
  // the split-K kernel's shapes (C a multiple of 64): SD's 8x8 level at half width with its residual, rows not
  // a multiple of its 128-row tile, a strided downsample
  c.push_back(conv_residual("conv deep + residual [2,640,8,8]->640", {2, 640, 8, 8}, 640));
  // the Winograd kernel's edges: an odd width (the last tile's second column outside), rows not a multiple of
  // its regions', several images
  c.push_back(conv_residual("conv odd width + residual [2,128,6,21]->64", {2, 128, 6, 21}, 64));
  c.push_back(conv("conv rows not a multiple of 128 [3,192,12,10]->128", {3, 192, 12, 10}, 128, 3, 1, {1, 1, 1, 1}));
  c.push_back(conv("conv stride2 pad1 [2,128,16,16]->256", {2, 128, 16, 16}, 256, 3, 2, {1, 1, 1, 1}));
  auto linear = [=](std::string name, Shape x, int64_t N, bool bias) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  int xi = in(b, ins, rng, "x", x);
                  int wi = w(b, rng, "w", {N, x.back()}, 1.f / std::sqrt((float)x.back()));
                  b.output(b.linear(xi, wi, bias ? w(b, rng, "b", {N}, 1) : -1), "y");
                }};
  };
  c.push_back(linear("linear no bias [2,77,768]->320", {2, 77, 768}, 320, false));
  c.push_back(linear("linear SD FF [2,4096,320]->2560", {2, 4096, 320}, 2560, true));
  c.push_back(Case{"linear + residual [2,64,1280]->1280 (SD's 8x8 level)", [=](GraphBuilder& b, auto& ins, auto& rng) {
                     const Shape x{2, 64, 1280};
                     b.output(b.add_node(Op::Linear, {in(b, ins, rng, "x", x), w(b, rng, "w", {1280, 1280}, 1.f / std::sqrt(1280.f)),
                                                      w(b, rng, "b", {1280}, 1), in(b, ins, rng, "r", x)}),
                              "y");
                   }});
  // a Linear with its GEGLU fused (pass fuse_linear_geglu): y = value * gelu(gate) of the [..., 2F] projection
  auto linear_geglu = [=](std::string name, Shape x, int64_t F, bool bias) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  a.geglu = true;
                  std::vector<int> args{in(b, ins, rng, "x", x), w(b, rng, "w", {2 * F, x.back()}, 1.f / std::sqrt((float)x.back()))};
                  if (bias) args.push_back(w(b, rng, "b", {2 * F}, 1));
                  b.output(b.add_node(Op::Linear, args, a), "y");
                }};
  };
  c.push_back(linear_geglu("linear+geglu SD [2,4096,320]->2x1280", {2, 4096, 320}, 1280, true));
  c.push_back(linear_geglu("linear+geglu SD mid [2,64,1280]->2x5120", {2, 64, 1280}, 5120, true));
  c.push_back(linear_geglu("linear+geglu ragged rows [3,43,128]->2x256", {3, 43, 128}, 256, true));
  // more row blocks than an H100 has SMs: the persistent forms' blocks take several tiles (the staged-epilogue
  // forms' buffer handed over between them)
  c.push_back(linear_geglu("linear+geglu many row blocks [1,36000,64]->2x128", {1, 36000, 64}, 128, true));
  c.push_back(linear_geglu("linear+geglu odd sizes [1,5,24]->2x20", {1, 5, 24}, 20, true));
  c.push_back(linear_geglu("linear+geglu no bias [2,9,64]->2x128", {2, 9, 64}, 128, false));
  auto unary = [=](std::string name, Op op, Shape x) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) { b.output(b.unary(op, in(b, ins, rng, "x", x)), "y"); }};
  };
  c.push_back(unary("silu", Op::SiLU, {3, 1000}));
  c.push_back(unary("gelu", Op::GELU, {3, 1000}));
  c.push_back(unary("quick_gelu", Op::QuickGELU, {3, 1000}));
  c.push_back(unary("geglu", Op::GEGLU, {2, 64, 40}));
  c.push_back(unary("geglu SD [2,256,10240]", Op::GEGLU, {2, 256, 10240}));
  c.push_back(unary("to_tokens", Op::ToTokens, {2, 8, 4, 6}));
  c.push_back(unary("upsample2x", Op::Upsample2x, {1, 8, 5, 7}));
  c.push_back(unary("phase interleave [2,4x16,5,7]", Op::PhaseInterleave, {2, 64, 5, 7}));
  c.push_back(unary("phase interleave odd channels [1,4x3,4,3]", Op::PhaseInterleave, {1, 12, 4, 3}));
  // an upsampler (Upsample2x + 3x3 convolution; the CUDA backend's passes turn it into a 2x2 phase convolution
  // and a PhaseInterleave): SD's 8x8 -> 16x16 level at a reduced width, and an odd size without a bias
  auto upsampler = [=](std::string name, Shape x, int64_t O, bool bias) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  for (int i = 0; i < 4; ++i) a.pad[i] = 1;
                  std::vector<int> args{b.unary(Op::Upsample2x, in(b, ins, rng, "x", x)), w(b, rng, "w", {O, x[1], 3, 3}, 1.f / std::sqrt((float)x[1] * 9))};
                  if (bias) args.push_back(w(b, rng, "b", {O}, 1));
                  b.output(b.add_node(Op::Conv2d, args, a), "y");
                }};
  };
  c.push_back(upsampler("conv upsampler [2,320,8,8]->320", {2, 320, 8, 8}, 320, true));
  c.push_back(upsampler("conv upsampler odd [1,6,5,3]->5 no bias", {1, 6, 5, 3}, 5, false));
  c.push_back({"upsample to 9x13", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 Attrs a;
                 a.dims = {9, 13};
                 b.output(b.add_node(Op::Upsample2x, {in(b, ins, rng, "x", {1, 8, 5, 7})}, a), "y");
               }});
  c.push_back({"from_tokens", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 Attrs a;
                 a.dims = {4, 6};
                 b.output(b.add_node(Op::FromTokens, {in(b, ins, rng, "x", {2, 24, 8})}, a), "y");
               }});
  auto gn = [=](std::string name, Shape x, int64_t G) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  b.output(b.group_norm(in(b, ins, rng, "x", x), w(b, rng, "g", {x[1]}, 1), w(b, rng, "b", {x[1]}, 1), G, 1e-5f), "y");
                }};
  };
  c.push_back(gn("group_norm small", {1, 16, 8, 8}, 8));
  c.push_back(gn("group_norm SD [2,320,64,64]", {2, 320, 64, 64}, 32));
  c.push_back(gn("group_norm SD [2,1280,8,8]", {2, 1280, 8, 8}, 32));
  c.push_back(gn("group_norm odd group width [1,24,5,5]", {1, 24, 5, 5}, 8));
  c.push_back(gn("group_norm VAE [1,512,64,64]", {1, 512, 64, 64}, 32));
  c.push_back(gn("group_norm 30 channels per group [2,960,32,32]", {2, 960, 32, 32}, 32));
  c.push_back(gn("group_norm batch 16 [16,640,16,16]", {16, 640, 16, 16}, 32));
  c.push_back(gn("group_norm 2560 channels [2,2560,8,8]", {2, 2560, 8, 8}, 32));
  // on an H100/H200, 21 MB fits the one-pass kernel's shared memory, 42 MB takes the three-pass form
  c.push_back(gn("group_norm on chip [4,640,64,64]", {4, 640, 64, 64}, 32));
  c.push_back(gn("group_norm three-pass [16,320,64,64]", {16, 320, 64, 64}, 32));
  c.push_back(gn("group_norm 12 channels [2,12,7,7]", {2, 12, 7, 7}, 3));  // channel counts off the 16-byte kernels
  c.push_back(gn("group_norm 15 channels, 3 per group [1,15,6,6]", {1, 15, 6, 6}, 5));
  c.push_back(gn("group_norm 65 channels per group, 2080 channels [1,2080,3,3]", {1, 2080, 3, 3}, 32));
  auto gn_add = [=](std::string name, Shape x, int64_t G) {  // GroupNorm(x + t[N, C, 1, 1]), the fused time embedding
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  a.groups = G;
                  a.eps = 1e-5f;
                  a.silu = true;
                  b.output(b.add_node(Op::GroupNorm, {in(b, ins, rng, "x", x), w(b, rng, "g", {x[1]}, 1), w(b, rng, "b", {x[1]}, 1),
                                                      in(b, ins, rng, "t", {x[0], x[1], 1, 1})}, a), "y");
                }};
  };
  c.push_back(gn_add("group_norm + channel vector + silu [2,320,16,16]", {2, 320, 16, 16}, 32));
  c.push_back(gn_add("group_norm + channel vector, 2560 channels [2,2560,4,4]", {2, 2560, 4, 4}, 32));
  c.push_back(gn_add("group_norm + channel vector + silu SD [2,640,64,64]", {2, 640, 64, 64}, 32));
  // GroupNorm(x + t[n, col + c]): the ResNets' time projections packed into one [N, W] (pass pack_time_projections)
  auto gn_packed = [=](std::string name, Shape x, int64_t G, int64_t W, int64_t col) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  a.groups = G;
                  a.eps = 1e-5f;
                  a.silu = true;
                  a.dims = {col};
                  b.output(b.add_node(Op::GroupNorm, {in(b, ins, rng, "x", x), w(b, rng, "g", {x[1]}, 1), w(b, rng, "b", {x[1]}, 1),
                                                      in(b, ins, rng, "t", {x[0], W})}, a), "y");
                }};
  };
  c.push_back(gn_packed("group_norm + packed channel vector + silu [2,320,16,16] of [2,2000] at 640", {2, 320, 16, 16}, 32, 2000, 640));
  c.push_back(gn_packed("group_norm + packed channel vector, three-pass [16,320,64,64] of [16,1000] at 680", {16, 320, 64, 64}, 32, 1000, 680));
  c.push_back(gn_packed("group_norm + packed channel vector, odd group width [2,24,5,5] of [2,30] at 2", {2, 24, 5, 5}, 8, 30, 2));
  c.push_back({"layer_norm [2,4096,320]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.layer_norm(in(b, ins, rng, "x", {2, 4096, 320}), w(b, rng, "g", {320}, 1), w(b, rng, "b", {320}, 1), 1e-5f), "y");
               }});
  for (int64_t C : {768, 1280, 2048, 36})
    c.push_back({"layer_norm [3,77," + std::to_string(C) + "]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                   b.output(b.layer_norm(in(b, ins, rng, "x", {3, 77, C}), w(b, rng, "g", {C}, 1), w(b, rng, "b", {C}, 1), 1e-5f), "y");
                 }});
  auto attn = [=](std::string name, int64_t B, int64_t Lq, int64_t Lk, int64_t C, int64_t H, bool causal) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  int q = in(b, ins, rng, "q", {B, Lq, C}), k = in(b, ins, rng, "k", {B, Lk, C}), v = in(b, ins, rng, "v", {B, Lk, C});
                  b.output(b.attention(q, k, v, H, causal), "y");
                }};
  };
  c.push_back(attn("attention small", 2, 10, 7, 16, 2, false));
  c.push_back(attn("attention causal CLIP [1,77,768] 12 heads", 1, 77, 77, 768, 12, true));
  c.push_back(attn("attention cross [2,1024]x[77] 8 heads", 2, 1024, 77, 640, 8, false));
  c.push_back(attn("attention SD self [2,4096,320] 8 heads", 2, 4096, 4096, 320, 8, false));
  c.push_back(attn("attention SD self [2,256,1280] 8 heads (d 160)", 2, 256, 256, 1280, 8, false));
  c.push_back(attn("attention tiny d 4 [2,100]x[77]", 2, 100, 77, 32, 8, false));
  c.push_back(attn("attention 32 rows per warp, causal, ragged [1,1100] d 64", 1, 1100, 1100, 128, 2, true));
  c.push_back(attn("attention 32 rows per warp, ragged keys [1,1030]x[300] d 24", 1, 1030, 300, 48, 2, false));
  c.push_back(attn("attention VAE [1,1024,512] 1 head", 1, 1024, 1024, 512, 1, false));
  c.push_back(attn("attention SD cross [2,4096]x[77] d 40", 2, 4096, 77, 320, 8, false));
  // the Hopper kernel's cases (enough 256-row blocks to fill an H100): ragged rows and keys, d 80
  c.push_back(attn("attention ragged [6,1000]x[1000] d 40", 6, 1000, 1000, 320, 8, false));
  c.push_back(attn("attention SD level 2 [8,1024,640] 8 heads (d 80)", 8, 1024, 1024, 640, 8, false));
  c.push_back(attn("attention ragged [6,1000]x[77] d 80", 6, 1000, 77, 640, 8, false));
  c.push_back(attn("attention ragged cross [6,1000]x[77] d 40", 6, 1000, 77, 320, 8, false));
  c.push_back(attn("attention SD 2.x-like [4,2000]x[2000] d 64", 4, 2000, 2000, 512, 8, false));
  // too few 256-row blocks for the SMs of an H100/H200 (132): the Hopper kernel's 128-row blocks
  c.push_back(attn("attention 128-row blocks [1,4096]x[4096] d 40", 1, 4096, 4096, 320, 8, false));
  // SD's d 160 levels at batch 2: a ragged cross-attention and the mid-block's 64 tokens
  c.push_back(attn("attention wide heads, ragged cross [2,300]x[77] d 160", 2, 300, 77, 1280, 8, false));
  c.push_back(attn("attention wide heads, mid-block [2,64]x[64] d 160", 2, 64, 64, 1280, 8, false));
  c.push_back(attn("attention 128-row blocks, ragged [2,1000]x[1000] d 80", 2, 1000, 1000, 640, 8, false));
  // packed projections (pass pack_qkv): q, k, v read in place from one [B, L, 3*H*D] tensor, or q and a
  // [B, Lk, 2*H*D] kv
  auto packed = [=](std::string name, int64_t B, int64_t Lq, int64_t Lk, int64_t C, int64_t H, bool causal, bool qkv) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  a.heads = H;
                  a.causal = causal;
                  a.scale = 1.f / std::sqrt((float)(C / H));
                  if (qkv) b.output(b.add_node(Op::Attention, {in(b, ins, rng, "qkv", {B, Lq, 3 * C})}, a), "y");
                  else b.output(b.add_node(Op::Attention, {in(b, ins, rng, "q", {B, Lq, C}), in(b, ins, rng, "kv", {B, Lk, 2 * C})}, a), "y");
                }};
  };
  c.push_back(packed("attention packed qkv SD [2,4096,3x320] 8 heads", 2, 4096, 4096, 320, 8, false, true));
  c.push_back(packed("attention packed qkv causal CLIP [1,77,3x768] 12 heads", 1, 77, 77, 768, 12, true, true));
  c.push_back(packed("attention packed q + kv [8,1024]x[77] d 80", 8, 1024, 77, 640, 8, false, false));
  c.push_back(packed("attention packed q + kv VAE-like [1,100]x[100] d 20", 1, 100, 100, 20, 1, false, false));
  c.push_back({"concat axis 1", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.concat({in(b, ins, rng, "a", {2, 3, 4, 4}), in(b, ins, rng, "c", {2, 5, 4, 4})}, 1), "y");
               }});
  // channel counts of 8s (SD's skip connections: 16-byte pieces in fp16 NHWC), three sources along the
  // height, and the last axis of tokens
  c.push_back({"concat axis 1 [2,320,8,8]+[2,640,8,8]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.concat({in(b, ins, rng, "a", {2, 320, 8, 8}), in(b, ins, rng, "c", {2, 640, 8, 8})}, 1), "y");
               }});
  // a Concat reading its first input as phase planes (pass fuse_interleave_concat): SD's upsampler into the
  // next up block's skip concatenation at a reduced width, an odd one with a third source
  auto concat_up2 = [=](std::string name, Shape planes, std::vector<int64_t> more) {
    return Case{name, [=](GraphBuilder& b, auto& ins, auto& rng) {
                  Attrs a;
                  a.axis = 1;
                  a.up2 = true;
                  std::vector<int> args{in(b, ins, rng, "p", planes)};
                  for (size_t k = 0; k < more.size(); ++k)
                    args.push_back(in(b, ins, rng, "s" + std::to_string(k), {planes[0], more[k], 2 * (planes[2] - 1), 2 * (planes[3] - 1)}));
                  b.output(b.add_node(Op::Concat, args, a), "y");
                }};
  };
  c.push_back(concat_up2("concat of phase planes [2,4x64,9,9]+[2,32,16,16]", {2, 256, 9, 9}, {32}));
  c.push_back(concat_up2("concat of phase planes odd [1,4x3,4,6]+[1,5,6,10]+[1,2,6,10]", {1, 12, 4, 6}, {5, 2}));
  c.push_back({"concat axis 2, three sources", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.concat({in(b, ins, rng, "a", {2, 3, 4, 5}), in(b, ins, rng, "c", {2, 3, 2, 5}), in(b, ins, rng, "d", {2, 3, 1, 5})}, 2), "y");
               }});
  c.push_back({"concat last axis [2,6,16]+[2,6,8]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.concat({in(b, ins, rng, "a", {2, 6, 16}), in(b, ins, rng, "c", {2, 6, 8})}, 2), "y");
               }});
  c.push_back({"add broadcast [2,8,4,4]+[2,8,1,1]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.add(in(b, ins, rng, "a", {2, 8, 4, 4}), in(b, ins, rng, "c", {2, 8, 1, 1})), "y");
               }});
  c.push_back({"mul broadcast [2,77,32]*[77,32]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.mul(in(b, ins, rng, "a", {2, 77, 32}), in(b, ins, rng, "c", {77, 32})), "y");
               }});
  c.push_back({"scale + reshape", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 Attrs a;
                 a.scale = 0.37f;
                 b.output(b.reshape(b.add_node(Op::Scale, {in(b, ins, rng, "x", {2, 6, 5})}, a), {3, 20}), "y");
               }});
  c.push_back({"reshape 4-D -> 3-D [2,6,4,5]->[2,24,5]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.reshape(in(b, ins, rng, "x", {2, 6, 4, 5}), {2, 24, 5}), "y");
               }});
  c.push_back({"reshape 2-D -> 4-D [2,120]->[2,6,4,5]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.reshape(in(b, ins, rng, "x", {2, 120}), {2, 6, 4, 5}), "y");
               }});
  c.push_back({"linear on a 4-D value [1,3,4,8]->16", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.linear(in(b, ins, rng, "x", {1, 3, 4, 8}), w(b, rng, "w", {16, 8}, 0.3f), -1), "y");
               }});
  c.push_back({"timestep_embedding 320", [=](GraphBuilder& b, auto& ins, auto&) {
                 ins["t"] = Tensor::from_f32({3}, {999.f, 500.5f, 1.f});
                 Attrs a;
                 a.dim = 320;
                 b.output(b.add_node(Op::TimestepEmbedding, {b.input("t", {3})}, a), "y");
               }});
  c.push_back({"embedding [2,77] of 1000", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 Tensor ids = Tensor::empty(DType::I32, {2, 77});
                 for (int i = 0; i < 154; ++i) static_cast<int32_t*>(ids.mutable_data())[i] = (int32_t)(rng() % 1000);
                 ins["ids"] = ids;
                 b.output(b.add_node(Op::Embedding, {b.input("ids", {2, 77}, DType::I32), w(b, rng, "table", {1000, 32}, 1)}), "y");
               }});
  // batch rows (pass split_batch): NHWC and plain values, float32 timesteps and int32 ids through a slice
  auto slice = [](GraphBuilder& b, int x, int64_t start, int64_t len) {
    Attrs a;
    a.dims = {start, len};
    return b.add_node(Op::Slice, {x}, a);
  };
  c.push_back({"slice rows [1,3) of [3,8,5,5]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(b.unary(Op::SiLU, slice(b, in(b, ins, rng, "x", {3, 8, 5, 5}), 1, 2)), "y");
               }});
  c.push_back({"slice rows [2,4) of [4,7,16]", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 b.output(slice(b, in(b, ins, rng, "x", {4, 7, 16}), 2, 2), "y");
               }});
  c.push_back({"slice of timesteps into timestep_embedding", [=](GraphBuilder& b, auto& ins, auto&) {
                 ins["t"] = Tensor::from_f32({3}, {999.f, 500.5f, 1.f});
                 Attrs a;
                 a.dim = 64;
                 b.output(b.add_node(Op::TimestepEmbedding, {slice(b, b.input("t", {3}), 1, 2)}, a), "y");
               }});
  c.push_back({"slice of token ids into embedding", [=](GraphBuilder& b, auto& ins, auto& rng) {
                 Tensor ids = Tensor::empty(DType::I32, {4, 9});
                 for (int i = 0; i < 36; ++i) static_cast<int32_t*>(ids.mutable_data())[i] = (int32_t)(rng() % 500);
                 ins["ids"] = ids;
                 b.output(b.add_node(Op::Embedding, {slice(b, b.input("ids", {4, 9}, DType::I32), 2, 2), w(b, rng, "table", {500, 16}, 1)}), "y");
               }});
  return c;
}

// One case on the CPU and on a CUDA backend of its own: the setup error (the case could not be built or
// compiled: the test stops), else the CUDA run's error (a failure to count), else the error against the CPU.
struct CaseRun {
  std::string setup_error, run_error;
  double nmse = 0;
  bool finite = true;
  std::set<Op> ops;
};
CaseRun run_case(const Case& c, Backend& cpu, const std::string& precision) {
  CaseRun r;
  std::mt19937 rng(1234);
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  std::map<std::string, Tensor> ins;
  c.build(b, ins, rng);
  if (!b.status().is_ok()) return r.setup_error = b.status().message(), r;
  for (const auto& n : g->nodes) r.ops.insert(n.op);
  std::string why;
  auto cuda = cuda_or_skip_reason(&why, true, precision);
  if (!cuda) return r.setup_error = why, r;
  auto ce = cpu.compile(g);
  auto ge = cuda->compile(g);
  if (!ce.is_ok() || !ge.is_ok()) return r.setup_error = (ce.is_ok() ? ge.status() : ce.status()).message(), r;
  auto want = (*ce)->run(ins);
  if (!want.is_ok()) return r.setup_error = want.status().message(), r;
  auto got = (*ge)->run(ins);
  if (!got.is_ok()) return r.run_error = got.status().message(), r;
  r.nmse = nmse((*got)[0], (*want)[0], &r.finite);
  return r;
}

}  // namespace

// Per-precision bound on the normalised MSE against the float32 CPU result: float32 differs only by
// summation order; fp16 storage rounds each value to 11 significant bits (about 3e-4 relative).
class BackendOpsP : public ::testing::TestWithParam<std::string> {};

TEST_P(BackendOpsP, EveryCudaOpMatchesTheCpu) {
  REQUIRE_CUDA_P(first, true, GetParam());  // each case gets its own backend: one model per backend
  const double bound = GetParam() == "fp32" ? 1e-9 : 1e-5;
  auto cpu = make_cpu_backend();
  std::set<Op> covered;
  int failures = 0;
  std::printf("      %-44s %12s  %s (%s)\n", "op case", "nmse", "result", GetParam().c_str());
  for (const auto& c : cases()) {
    const CaseRun r = run_case(c, *cpu, GetParam());
    ASSERT_TRUE(r.setup_error.empty()) << c.name << ": " << r.setup_error;
    covered.insert(r.ops.begin(), r.ops.end());
    if (!r.run_error.empty()) {
      std::printf("      %-44s %12s  FAIL: %s\n", c.name.c_str(), "-", r.run_error.c_str());
      ++failures;
      continue;
    }
    const bool ok = r.finite && r.nmse < bound;
    std::printf("      %-44s %12.3e  %s\n", c.name.c_str(), r.nmse, ok ? "ok" : r.finite ? "FAIL (error)" : "FAIL (NaN/Inf)");
    failures += !ok;
  }
  EXPECT_EQ(failures, 0);
  for (size_t k = 0; k < (size_t)Op::kCount; ++k) EXPECT_TRUE(covered.count((Op)k)) << "no case for " << op_info((Op)k).name;
}

INSTANTIATE_TEST_SUITE_P(Precisions, BackendOpsP, ::testing::Values("fp32", "fp16"), [](const auto& i) { return i.param; });

// Each form a convolution can take in FP16 (cuDNN + bias kernel, im2col + cuBLASLt GEMM with the bias and
// residual in its epilogue, cuDNN's fused convolution + bias + residual, one cuDNN operation graph, our
// kernel for at most 8 output channels, four forms of our split-K kernel; two of them as the GEMM of Linear
// layers and 1x1 convolutions; every form of our Winograd kernel), forced for every convolution (and
// Linear) case in turn, against the CPU.
TEST(BackendOps, EveryConvolutionFormMatchesTheCpu) {
  REQUIRE_CUDA_P(probe, true, "fp16");
  auto cpu = make_cpu_backend();
  std::vector<std::pair<const char*, const char*>> forms = {
      {"SDRT_CONV_GEMM", "0"},       {"SDRT_CONV_GEMM", "1"},       {"SDRT_CONV_FUSED", "1"},      {"SDRT_CONV_GRAPH", "force"},
      {"SDRT_CONV_NARROW", "1"},     {"SDRT_CONV_SPLITK", "b64c1"}, {"SDRT_CONV_SPLITK", "b64c4"}, {"SDRT_CONV_SPLITK", "b128c2"},
      {"SDRT_CONV_SPLITK", "b128c8"}, {"SDRT_GEMM_SPLITK", "b64c2"}, {"SDRT_GEMM_SPLITK", "b128c4"}};
  for (int f = 0; f < cuda_wx_conv_forms(); ++f) forms.push_back({"SDRT_CONV_WX", cuda_wx_conv_form_name(f)});
  int failures = 0, cases_run = 0;
  for (const auto& [var, value] : forms) {
    ::setenv(var, value, 1);
    const int64_t graph_runs = cuda_conv_graph_runs(), narrow_runs = cuda_narrow_conv_runs(), splitk_runs = cuda_splitk_conv_runs(),
                  wx_runs = cuda_wx_conv_runs();
    for (const auto& c : cases()) {
      const bool gemm_form = std::string(var) == "SDRT_GEMM_SPLITK";  // the split-K kernel as a GEMM: Linear cases too
      if (c.name.rfind("conv", 0) != 0 && !(gemm_form && c.name.rfind("linear", 0) == 0)) continue;
      const CaseRun r = run_case(c, *cpu, "fp16");
      ASSERT_TRUE(r.setup_error.empty() && r.run_error.empty()) << c.name << ": " << r.setup_error << r.run_error;
      const bool ok = r.finite && r.nmse < 1e-5;
      std::printf("      %s=%s %-44s %12.3e  %s\n", var, value, c.name.c_str(), r.nmse, ok ? "ok" : "FAIL");
      failures += !ok;
      ++cases_run;
    }
    ::unsetenv(var);
    if (std::string(var) == "SDRT_CONV_GRAPH") {  // the convolutions ran as cuDNN operation graphs (on Hopper at least)
      std::printf("      %lld convolutions ran as one cuDNN operation graph\n", (long long)(cuda_conv_graph_runs() - graph_runs));
      if (probe->compute_capability() == std::make_pair(9, 0)) EXPECT_GT(cuda_conv_graph_runs() - graph_runs, 0);
    }
    // the narrow kernel took the cases of at most 8 output channels and input channels a multiple of 16: SD's
    // conv_out, the residual case, the VAE's conv_out, the strided one and the one of two row tiles
    if (std::string(var) == "SDRT_CONV_NARROW") EXPECT_EQ(cuda_narrow_conv_runs() - narrow_runs, 5);
    else EXPECT_EQ(cuda_narrow_conv_runs() - narrow_runs, 0) << var;
    // the split-K kernel (Hopper) took the cases of C a multiple of 64 and O of its tile: at least the three added for
    // it (as a GEMM: SD's proj_in, FF and the residual case)
    if (std::string(var) == "SDRT_CONV_SPLITK" || std::string(var) == "SDRT_GEMM_SPLITK") {
      std::printf("      %lld convolutions ran as split-K form %s\n", (long long)(cuda_splitk_conv_runs() - splitk_runs), value);
      if (probe->compute_capability() == std::make_pair(9, 0)) EXPECT_GE(cuda_splitk_conv_runs() - splitk_runs, 3) << value;
    }
    // the Winograd kernel (Hopper) took the 3x3, stride-1 cases of C and O multiples of 64: SD's [2,320,64,64], the
    // deep one with its residual, rows not a multiple of 128, the odd width, the upsampler's convolution
    if (std::string(var) == "SDRT_CONV_WX") {
      std::printf("      %lld convolutions ran as Winograd form %s\n", (long long)(cuda_wx_conv_runs() - wx_runs), value);
      if (probe->compute_capability() == std::make_pair(9, 0)) EXPECT_GE(cuda_wx_conv_runs() - wx_runs, 4) << value;
    } else {
      EXPECT_EQ(cuda_wx_conv_runs() - wx_runs, 0) << var;
    }
  }
  EXPECT_GE(cases_run, 40);
  EXPECT_EQ(failures, 0);
}

// A filter whose every convolution in an executable runs on the Winograd kernel keeps only its transformed
// copy there (the [O, 3, 3, C] one is freed); an executable of the same backend that runs cuDNN on it uploads it
// again, and one made while that one lives leaves it alone. Each in turn against the CPU, the kernel's launch
// counter showing which ran (on Hopper; elsewhere the kernel does not apply and cuDNN runs them all).
TEST(BackendOps, WinogradOnlyFiltersLeaveAndComeBack) {
  REQUIRE_CUDA_P(probe, true, "fp16");
  const bool hopper = probe->compute_capability() == std::pair{9, 0};
  auto cpu = make_cpu_backend();
  const auto all = cases();
  auto c = std::find_if(all.begin(), all.end(), [](const Case& k) { return k.name.rfind("conv odd width + residual", 0) == 0; });
  ASSERT_NE(c, all.end());
  std::mt19937 rng(1234);
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  std::map<std::string, Tensor> ins;
  c->build(b, ins, rng);
  ASSERT_TRUE(b.status().is_ok()) << b.status().message();
  std::string why;
  auto cuda = cuda_or_skip_reason(&why, true, "fp16");
  ASSERT_TRUE(cuda) << why;
  auto ce = cpu->compile(g);
  ASSERT_TRUE(ce.is_ok()) << ce.status().message();
  auto want = (*ce)->run(ins);
  ASSERT_TRUE(want.is_ok()) << want.status().message();
  const std::string form = cuda_wx_conv_forms() > 0 ? cuda_wx_conv_form_name(cuda_wx_conv_forms() - 1) : "0";
  auto compile_with = [&](const std::string& wx) {
    ::setenv("SDRT_CONV_WX", wx.c_str(), 1);
    auto e = cuda->compile(g);
    ::unsetenv("SDRT_CONV_WX");
    EXPECT_TRUE(e.is_ok()) << wx << ": " << e.status().message();
    return e.is_ok() ? std::move(*e) : nullptr;
  };
  auto check = [&](Executable* e, const char* what, bool winograd) {
    ASSERT_NE(e, nullptr) << what;
    const int64_t before = cuda_wx_conv_runs();
    auto got = e->run(ins);
    ASSERT_TRUE(got.is_ok()) << what << ": " << got.status().message();
    bool finite = false;
    const double err = nmse((*got)[0], (*want)[0], &finite);
    std::printf("      %-52s nmse %.3e, %lld Winograd launches\n", what, err, (long long)(cuda_wx_conv_runs() - before));
    EXPECT_TRUE(finite && err < 1e-5) << what;
    if (hopper) EXPECT_EQ(cuda_wx_conv_runs() - before, winograd ? 1 : 0) << what;
  };
  auto a = compile_with(form);  // the filter's [O, 3, 3, C] copy freed
  check(a.get(), "A (Winograd)", true);
  auto bx = compile_with("0");  // uploaded again
  check(bx.get(), "B (cuDNN), after A", false);
  check(a.get(), "A again", true);
  auto cx = compile_with(form);  // B reads the copy: kept
  check(cx.get(), "C (Winograd), while B lives", true);
  check(bx.get(), "B again, after C", false);
  bx.reset();
  auto dx = compile_with(form);  // freed again
  check(dx.get(), "D (Winograd), after B went", true);
  check(a.get(), "A, last", true);
}

// Each form of a Linear with a fused GEGLU (the cuBLASLt GEMM then the GEGLU pass, and every form of the
// fused Hopper kernel), forced in turn with SDRT_GEGLU_FORM, against the CPU. Where a form cannot take a
// case (its sizes or its GPU) the split form runs it.
TEST(BackendOps, EveryGegluProjectionFormMatchesTheCpu) {
  REQUIRE_CUDA_P(probe, true, "fp16");
  auto cpu = make_cpu_backend();
  std::vector<std::string> forms{"split"};
  for (int f = 0; f < cuda_geglu_gemm_forms(); ++f) forms.push_back(cuda_geglu_gemm_form_name(f));
  int failures = 0, cases_run = 0;
  const bool hopper = probe->compute_capability() == std::pair{9, 0};
  for (const std::string& form : forms) {
    ::setenv("SDRT_GEGLU_FORM", form.c_str(), 1);
    const int64_t before = cuda_geglu_gemm_launches();
    for (const auto& c : cases()) {
      if (c.name.rfind("linear+geglu", 0) != 0) continue;
      const CaseRun r = run_case(c, *cpu, "fp16");
      ASSERT_TRUE(r.setup_error.empty() && r.run_error.empty()) << form << " " << c.name << ": " << r.setup_error << r.run_error;
      const bool ok = r.finite && r.nmse < 1e-5;
      std::printf("      SDRT_GEGLU_FORM=%-10s %-44s %12.3e  %s\n", form.c_str(), c.name.c_str(), r.nmse, ok ? "ok" : "FAIL");
      failures += !ok;
      ++cases_run;
    }
    // the fused kernel took the cases it can (sizes, bias) as one launch each, on a Hopper GPU
    const int64_t launches = cuda_geglu_gemm_launches() - before;
    // SD's two shapes, the ragged and the many rows; not the odd sizes, not without a bias
    if (form == "split" || !hopper) EXPECT_EQ(launches, 0) << form;
    else EXPECT_EQ(launches, 4) << form;
  }
  ::unsetenv("SDRT_GEGLU_FORM");
  EXPECT_GE(cases_run, 6 * (int)forms.size());
  EXPECT_EQ(failures, 0);
}

// GroupNorm in each form against the CPU, the launch counters showing which ran: nothing set (the default
// order: a block per group for small tensors, else the half2 one-pass kernel where the tensor fits the chip's
// shared memory, else a block per group with wide slabs, else the 16-byte one in up to three batch slices,
// else three passes), the half2
// one-pass kernel (SDRT_GN_ONEPASS=1), three passes (SDRT_GN_ONEPASS=0), a thread-block cluster per image and
// slab of groups (SDRT_GN_CLUSTER=1, compute capability 9.0+), the 16-byte one-pass kernel wherever it
// applies (SDRT_GN_FORM=onepass8) and the block per group wherever it applies (SDRT_GN_FORM=block).
TEST(BackendOps, GroupNormOnePassAndThreePassMatchTheCpu) {
  REQUIRE_CUDA_P(probe, true, "fp16");
  auto cpu = make_cpu_backend();
  const bool hopper = probe->compute_capability().first == 9;
  int failures = 0;
  ::unsetenv("SDRT_GN_BLOCK");
  for (const std::string mode : {"default", "1", "0", "cluster", "onepass8", "block"}) {
    const bool cluster = mode == "cluster", v8 = mode == "onepass8", dflt = mode == "default", blk = mode == "block";
    if (v8 || dflt || blk) ::unsetenv("SDRT_GN_ONEPASS");
    else ::setenv("SDRT_GN_ONEPASS", cluster ? "0" : mode.c_str(), 1);
    if (cluster) ::setenv("SDRT_GN_CLUSTER", "1", 1);
    if (v8 || blk) ::setenv("SDRT_GN_FORM", mode.c_str(), 1);
    const int64_t before = cuda_group_norm_onepass_launches(), cluster_before = cuda_group_norm_cluster_launches();
    const int64_t block_before = cuda_group_norm_block_launches();
    int cases_run = 0, ran8 = 0;
    for (const auto& c : cases()) {
      if (c.name.rfind("group_norm", 0) != 0) continue;
      const int64_t before8 = cuda_group_norm_onepass8_launches();
      const CaseRun r = run_case(c, *cpu, "fp16");
      ASSERT_TRUE(r.setup_error.empty() && r.run_error.empty()) << c.name << ": " << r.setup_error << r.run_error;
      const bool ok = r.finite && r.nmse < 1e-5;
      const int64_t launches8 = cuda_group_norm_onepass8_launches() - before8;
      std::printf("      %-8s %-56s %12.3e  %s%s\n", mode.c_str(), c.name.c_str(), r.nmse, ok ? "ok" : "FAIL",
                  launches8 > 0 ? (" (onepass8: " + std::to_string(launches8) + " launches)").c_str() : "");
      failures += !ok;
      ran8 += launches8 > 0;
      ++cases_run;
    }
    ::unsetenv("SDRT_GN_CLUSTER");
    ::unsetenv("SDRT_GN_FORM");
    const int64_t launches = cuda_group_norm_onepass_launches() - before, clusters = cuda_group_norm_cluster_launches() - cluster_before;
    const int64_t blocks = cuda_group_norm_block_launches() - block_before;
    std::printf("      %s: %d cases, %lld half2 one-pass launches, %d cases on the 16-byte one-pass kernel, %lld cluster launches, %lld block launches\n",
                mode.c_str(), cases_run, (long long)launches, ran8, (long long)clusters, (long long)blocks);
    EXPECT_GE(cases_run, 16);
    // the block per group: every case with an even channel count per group and at most 32 pixels per thread of
    // 1024 (all but the four with an odd count and [4,640,64,64], [2,640,64,64]: 40960 pairs a group); by
    // default (on an H100/H200's 132 SMs) those of at most 3 MB, or of at most 132 blocks with 8 or more channel
    // pairs per slab (the VAE's [1,512,64,64], [2,960,32,32]): not [2,320,64,64] (5 pairs a group),
    // [16,640,16,16] (512 blocks), [16,320,64,64] twice (over 3 MB, 5 pairs); never where SDRT_GN_ONEPASS is set
    if (blk) EXPECT_EQ(blocks, cases_run - 6);
    else if (dflt) EXPECT_EQ(blocks, cases_run - 10);
    else if (!v8) EXPECT_EQ(blocks, 0);
    // the half2 kernel: all but the four cases with an odd channel count per group and the two too large for
    // shared memory on an H100/H200 (a smaller GPU may fit a case or two fewer); the cluster kernel all but the
    // two with channels not a multiple of 8 (compute capability 9.0+); the 16-byte kernel all but the five
    // with fewer than 8 channels per group (SDRT_GN_FORM=onepass8: batch slices where the tensor exceeds the
    // chip's shared memory, [16,320,64,64] in two), by default the two too large for the half2 kernel and the
    // one with an odd channel count per group it takes (65 per group: [1,2080,3,3])
    if (mode == "1") EXPECT_GE(launches, cases_run - 8);
    else if (dflt) EXPECT_EQ(launches, 4);  // [2,320,64,64], [16,640,16,16], [4,640,64,64], [2,640,64,64]
    else if (v8) EXPECT_LE(launches, cases_run - ran8);  // the half2 kernel where the 16-byte one does not apply
    else if (!blk) EXPECT_EQ(launches, 0);
    if (cluster && probe->compute_capability().first >= 9) EXPECT_EQ(clusters, cases_run - 2);
    else EXPECT_EQ(clusters, 0);
    if (v8) EXPECT_GE(ran8, cases_run - 7);
    else if (!dflt && !blk) EXPECT_EQ(ran8, 0);
    if (v8 && hopper) EXPECT_EQ(ran8, cases_run - 5);
    if (dflt && hopper) EXPECT_EQ(ran8, 3);
  }
  ::unsetenv("SDRT_GN_ONEPASS");
  EXPECT_EQ(failures, 0);
}

// Graph g compiled on a fresh fp16 CUDA backend given one recorded tactic (key -> form): the recorded form
// is kept, not timed again (the backend's tactics say so); an unknown form is refused. Null after a failure.
std::unique_ptr<Executable> compile_recorded(const std::shared_ptr<Graph>& g, const std::string& key, const std::string& form) {
  auto c = cuda_or_skip_reason(nullptr, false, "fp16");
  EXPECT_TRUE(c);
  if (!c) return nullptr;
  EXPECT_FALSE(c->add_tactics({{key, "fastest"}}).is_ok());
  const Status added = c->add_tactics({{key, form}});
  EXPECT_TRUE(added.is_ok()) << added.message();
  auto e = c->compile(g);
  EXPECT_TRUE(e.is_ok()) << e.status().message();
  if (!added.is_ok() || !e.is_ok()) return nullptr;
  EXPECT_EQ(c->tactics(g.get())[key], form);
  return std::move(*e);
}

// Under SDRT_GN_FORM=timed the engine times each GroupNorm's forms at build (three passes, the one-pass kernel, clusters), checks
// each against the three-pass form, and records the choice ("gn_form/" tactics, the key naming the shape);
// another backend given a recorded form runs that form (seen by the launch counters) and matches the CPU.
// Two shapes: one that fits the chip (every form applies on a Hopper GPU) and SD's batch-16 level (too large
// for the one-pass kernel's cache).
TEST(BackendOps, GroupNormFormIsChosenByTimingAndRecorded) {
  REQUIRE_CUDA_P(probe, false, "fp16");
  for (const char* v : {"SDRT_GN_ONEPASS", "SDRT_GN_CLUSTER"}) ::unsetenv(v);
  ::setenv("SDRT_GN_FORM", "timed", 1);  // timed only when asked (choose_group_norm_form)
  struct Unset {
    ~Unset() { ::unsetenv("SDRT_GN_FORM"); }
  } unset;
  const bool hopper = probe->compute_capability().first >= 9;
  for (const Shape& xs : {Shape{2, 640, 32, 32}, Shape{16, 320, 64, 64}}) {
    auto a = cuda_or_skip_reason(nullptr, false, "fp16");  // one backend per model (its weights' names)
    ASSERT_TRUE(a);
    std::mt19937 rng(31);
    auto g = std::make_shared<Graph>();
    GraphBuilder b(*g);
    std::map<std::string, Tensor> ins{{"x", randn(xs, rng)}};
    b.output(b.group_norm(b.input("x", xs), b.weight("g", randn({xs[1]}, rng)), b.weight("b", randn({xs[1]}, rng)), 32, 1e-5f), "y");
    ASSERT_TRUE(b.status().is_ok());
    auto want = (*make_cpu_backend()->compile(g))->run(ins);
    ASSERT_TRUE(want.is_ok());
    auto ea = a->compile(g);
    ASSERT_TRUE(ea.is_ok()) << ea.status().message();
    std::map<std::string, std::string> forms;
    for (const auto& [k, v] : a->tactics(g.get()))
      if (k.rfind("gn_form/", 0) == 0) forms[k] = v;
    ASSERT_EQ(forms.size(), 1u);
    const std::string key = forms.begin()->first;
    std::printf("      %s -> %s\n", key.c_str(), forms[key].c_str());
    EXPECT_TRUE(forms[key] == "3pass" || forms[key] == "onepass" || forms[key] == "cluster" || forms[key] == "onepass8" || forms[key] == "block")
        << forms[key];
    bool finite = false;
    auto ra = (*ea)->run(ins);
    ASSERT_TRUE(ra.is_ok());
    EXPECT_LT(nmse((*ra)[0], (*want)[0], &finite), 1e-5);
    EXPECT_TRUE(finite);
    for (const std::string form : {"3pass", "onepass", "cluster", "onepass8", "block"}) {
      auto ec = compile_recorded(g, key, form);
      ASSERT_TRUE(ec);
      const int64_t one = cuda_group_norm_onepass_launches(), clu = cuda_group_norm_cluster_launches(), one8 = cuda_group_norm_onepass8_launches();
      const int64_t blk = cuda_group_norm_block_launches();
      auto rc = ec->run(ins);
      ASSERT_TRUE(rc.is_ok());
      const bool fits = xs[0] == 2;  // the one-pass kernel's cache holds [2,640,32,32], not [16,320,64,64]
      // a recorded form that does not apply runs the untimed order: the block per group for [2,640,32,32]
      // (2.6 MB), the 16-byte one-pass kernel in batch slices for [16,320,64,64] (42 MB, 5 channel pairs a
      // group); the block form applies to both
      const bool fallback = (form == "onepass" && !fits) || (form == "cluster" && !hopper);
      const bool want_one = form == "onepass" && fits, want8 = form == "onepass8" || (fallback && !fits);
      const bool want_block = form == "block" || (fallback && fits);
      EXPECT_EQ(cuda_group_norm_onepass_launches() - one >= 1, want_one) << form;
      EXPECT_EQ(cuda_group_norm_onepass8_launches() - one8 >= 1, want8) << form;
      EXPECT_EQ(cuda_group_norm_block_launches() - blk >= 1, want_block) << form;
      EXPECT_EQ(cuda_group_norm_cluster_launches() - clu >= 1, form == "cluster" && hopper) << form;
      const double e = nmse((*rc)[0], (*want)[0], &finite);
      std::printf("      recorded %-8s nmse %.3e\n", form.c_str(), e);
      EXPECT_LT(e, 1e-5) << form;
      EXPECT_TRUE(finite) << form;
    }
    // by default nothing is timed or recorded
    ::unsetenv("SDRT_GN_FORM");
    auto d = cuda_or_skip_reason(nullptr, false, "fp16");
    ASSERT_TRUE(d && d->compile(g).is_ok());
    EXPECT_EQ(d->tactics(g.get()).count(key), 0u);
    ::setenv("SDRT_GN_FORM", "timed", 1);
  }
}

// The intra-warpgroup pipelined attention (SDRT_ATTN_PIPE=2: heads of 40 and 80 on compute capability
// 9.0, in 256-row blocks or, where those are too few for the SMs, 128-row ones) on every attention case,
// plus key counts of one, two and three 64-key tiles (ragged), against the CPU; the d-40 and d-80
// attentions the Hopper kernel takes must run it. The same with the d-40 exponentials in FP16, and with the
// kept kernel's late-maximum form (SDRT_ATTN_LATEMAX=1), which the cases with keys growing along the
// sequence send down its rare path (a score 2^8 above a row's running maximum after the first tile: about
// one warp-tile in seven there, by a CPU model of the kernel's tiles).
TEST(BackendOps, PipelinedAttentionMatchesTheCpu) {
  REQUIRE_CUDA_P(probe, true, "fp16");
  auto cpu = make_cpu_backend();
  std::vector<Case> cs;
  for (const auto& c : cases())
    if (c.name.rfind("attention", 0) == 0) cs.push_back(c);
  for (int64_t lk : {40, 100, 190})  // 17 x 8 heads x 2 blocks of 256 rows: enough blocks for 132 SMs
    cs.push_back({"attention d 40 [17,512]x[" + std::to_string(lk) + "]", [lk](GraphBuilder& b, auto& ins, auto& rng) {
                    auto in = [&](const std::string& name, Shape sh) {
                      ins[name] = randn(sh, rng);
                      return b.input(name, sh);
                    };
                    b.output(b.attention(in("q", {17, 512, 320}), in("k", {17, lk, 320}), in("v", {17, lk, 320}), 8, false), "y");
                  }});
  // keys scaled by 1 + 2 j / Lk: log2-domain scores up to about 18, rising tile by tile; also with the
  // queries in the base-2 domain (times 1 / (sqrt(40) ln 2), softmax scale ln 2: pass fold_attention_scale)
  for (const bool base2 : {false, true})
    for (int64_t bq : {2, 17})
      cs.push_back({std::string("attention d 40 rising keys") + (base2 ? ", base 2 " : " ") + "[" + std::to_string(bq) + "," +
                        std::to_string(bq == 2 ? 1024 : 512) + "]x[1024]",
                    [bq, base2](GraphBuilder& b, auto& ins, auto& rng) {
                      const int64_t lq = bq == 2 ? 1024 : 512, lk = 1024;
                      const float ln2 = 0.693147180559945309f;
                      Tensor k = randn({bq, lk, 320}, rng);
                      float* kd = static_cast<float*>(k.mutable_data());
                      for (int64_t i = 0; i < bq; ++i)
                        for (int64_t j = 0; j < lk; ++j)
                          for (int64_t c = 0; c < 320; ++c) kd[(i * lk + j) * 320 + c] *= 1.f + 2.f * (float)j / (float)lk;
                      ins["q"] = randn({bq, lq, 320}, rng, base2 ? 1.f / (std::sqrt(40.f) * ln2) : 1.f);
                      ins["k"] = k;
                      ins["v"] = randn({bq, lk, 320}, rng);
                      const int q = b.input("q", {bq, lq, 320}), kk = b.input("k", {bq, lk, 320}), v = b.input("v", {bq, lk, 320});
                      Attrs a;
                      a.heads = 8;
                      a.scale = ln2;
                      b.output(base2 ? b.add_node(Op::Attention, {q, kk, v}, a) : b.attention(q, kk, v, 8, false), "y");
                    }});
  int failures = 0;
  // then the experimental FP16 exponentials (SDRT_ATTN_EXP16=1) in the pipelined kernel and the kept one,
  // then the late-maximum form of the kept one
  struct Mode {
    const char *pipe, *e16, *late, *cross, *s16 = "0", *s16w = "0";
  };
  for (const Mode m : {Mode{"2", "0", "0", "0"}, Mode{"2", "1", "0", "0"}, Mode{"0", "1", "0", "0"}, Mode{"0", "0", "1", "1"},
                       Mode{"0", "0", "0", "0", "1"}, Mode{"2", "0", "0", "0", "1"}, Mode{"0", "0", "0", "0", "1", "1"}}) {
    ::setenv("SDRT_ATTN_S16", m.s16, 1);
    ::setenv("SDRT_ATTN_S16W", m.s16w, 1);
    ::setenv("SDRT_ATTN_PIPE", m.pipe, 1);
    ::setenv("SDRT_ATTN_EXP16", m.e16, 1);
    ::setenv("SDRT_ATTN_LATEMAX", m.late, 1);
    ::setenv("SDRT_ATTN_CROSS80", m.cross, 1);
    const int64_t before = cuda_attention_pipe_launches(), late_before = cuda_attention_late_launches();
    const int64_t shifted_before = cuda_attention_shifted_launches(), cross_before = cuda_attention_cross80_launches();
    const int64_t s16_before = cuda_attention_s16_launches(), s16w_before = cuda_attention_s16w_launches();
    for (const auto& c : cs) {
      const CaseRun r = run_case(c, *cpu, "fp16");
      ASSERT_TRUE(r.setup_error.empty() && r.run_error.empty()) << c.name << ": " << r.setup_error << r.run_error;
      const bool ok = r.finite && r.nmse < 1e-5;
      std::printf("      SDRT_ATTN_PIPE=%s SDRT_ATTN_EXP16=%s SDRT_ATTN_LATEMAX=%s SDRT_ATTN_CROSS80=%s SDRT_ATTN_S16=%s SDRT_ATTN_S16W=%s %-48s %12.3e  %s\n",
                  m.pipe, m.e16, m.late, m.cross, m.s16, m.s16w, c.name.c_str(), r.nmse, ok ? "ok" : "FAIL");
      failures += !ok;
    }
    ::unsetenv("SDRT_ATTN_PIPE");
    ::unsetenv("SDRT_ATTN_EXP16");
    ::unsetenv("SDRT_ATTN_LATEMAX");
    ::unsetenv("SDRT_ATTN_CROSS80");
    ::unsetenv("SDRT_ATTN_S16");
    ::unsetenv("SDRT_ATTN_S16W");
    const int64_t launches = cuda_attention_pipe_launches() - before, late = cuda_attention_late_launches() - late_before;
    const int64_t shifted = cuda_attention_shifted_launches() - shifted_before, cross = cuda_attention_cross80_launches() - cross_before;
    const int64_t s16 = cuda_attention_s16_launches() - s16_before, s16w = cuda_attention_s16w_launches() - s16w_before;
    std::printf("      SDRT_ATTN_PIPE=%s SDRT_ATTN_EXP16=%s SDRT_ATTN_LATEMAX=%s SDRT_ATTN_CROSS80=%s SDRT_ATTN_S16=%s SDRT_ATTN_S16W=%s: %zu cases, %lld "
                "pipelined launches, %lld late-maximum launches (%lld on base-2 scores), %lld cross80 launches, %lld FP16-score launches (%lld in "
                "320-row blocks)\n",
                m.pipe, m.e16, m.late, m.cross, m.s16, m.s16w, cs.size(), (long long)launches, (long long)late, (long long)shifted, (long long)cross,
                (long long)s16, (long long)s16w);
    if (probe->compute_capability() != std::make_pair(9, 0)) continue;  // H100 / H200 (114-132 SMs)
    // d 40: SD self [2,4096] and packed, ragged [6,1000], 128-row blocks [1,4096], the [17,512] case with more
    // than 128 keys, the four rising-keys cases (two on base-2 scores); d 80: cross [2,1024]x[77], level 2
    // [8,1024], ragged [6,1000]x[77], 128-row blocks [2,1000]
    if (m.pipe[0] == '2') EXPECT_GE(launches, 10) << m.pipe;
    if (m.late[0] == '1') {
      EXPECT_GE(late, 9);
      EXPECT_EQ(shifted, 2);
    } else {
      EXPECT_EQ(late, 0);
    }
    // cross80: d-40 cross-attentions of at most 80 keys with Q in registers: SD cross [2,4096]x[77], ragged
    // cross [6,1000]x[77], [17,512]x[40]
    if (m.cross[0] == '1') EXPECT_EQ(cross, 3);
    else EXPECT_EQ(cross, 0);
    // FP16 scores: every d-40 and d-80 attention above with Q in shared memory (all but the three cross80 ones),
    // in the kept kernel or (SDRT_ATTN_PIPE=2) the pipelined one
    if (m.s16[0] == '1') EXPECT_GE(s16, 10);
    else EXPECT_EQ(s16, 0);
    // and with SDRT_ATTN_S16W=1, the d-40 ones in 256-row blocks in 320-row ones instead (SD self [2,4096] and
    // packed, ragged [6,1000], [1,4096], [17,512])
    if (m.s16w[0] == '1') EXPECT_GE(s16w, 4);
    else EXPECT_EQ(s16w, 0);
  }
  EXPECT_EQ(failures, 0);
}

// An attention of q [2, Lq, 320] and k, v [2, Lk, 320] with 8 heads compiled on `a`: its graph, inputs, the
// CPU's output, the Hopper-form tactics `a` recorded, and the nmse of `a`'s output against the CPU's.
struct TimedAttention {
  std::shared_ptr<Graph> g;
  std::map<std::string, Tensor> ins;
  Tensor want;
  std::map<std::string, std::string> forms;
  double nmse = 1.0;
  bool finite = false;
};
TimedAttention timed_attention(Backend& a, int64_t Lq, int64_t Lk, unsigned seed, int64_t C = 320) {
  TimedAttention r;
  std::mt19937 rng(seed);
  r.g = std::make_shared<Graph>();
  GraphBuilder b(*r.g);
  r.ins = {{"q", randn({2, Lq, C}, rng)}, {"k", randn({2, Lk, C}, rng)}, {"v", randn({2, Lk, C}, rng)}};
  b.output(b.attention(b.input("q", {2, Lq, C}), b.input("k", {2, Lk, C}), b.input("v", {2, Lk, C}), 8, false), "y");
  EXPECT_TRUE(b.status().is_ok());
  auto want = (*make_cpu_backend()->compile(r.g))->run(r.ins);
  EXPECT_TRUE(want.is_ok());
  if (!want.is_ok()) return r;
  r.want = (*want)[0];
  auto ea = a.compile(r.g);
  EXPECT_TRUE(ea.is_ok()) << ea.status().message();
  if (!ea.is_ok()) return r;
  for (const auto& [k, v] : a.tactics(r.g.get()))
    if (k.rfind("attn_form/", 0) == 0) r.forms[k] = v;
  auto ra = (*ea)->run(r.ins);
  EXPECT_TRUE(ra.is_ok());
  if (ra.is_ok()) r.nmse = nmse((*ra)[0], r.want, &r.finite);
  return r;
}

// Where several Hopper attention kernels apply (compute capability 9.0: heads of 40 and 80 over long
// sequences), the engine times them per shape at build, checks each against the kept kernel, and records the
// choice ("attn_form/" tactics); another backend given that record runs the recorded form (here forced to the
// pipelined one, seen by its launch counter) and still matches the CPU.
TEST(BackendOps, AttentionFormIsChosenByTimingAndRecorded) {
  REQUIRE_CUDA_P(a, false, "fp16");
  ::unsetenv("SDRT_ATTN_PIPE");
  ::unsetenv("SDRT_ATTN_EXP16");
  ::unsetenv("SDRT_ATTN_LATEMAX");
  ::unsetenv("SDRT_ATTN_CROSS80");
  TimedAttention ta = timed_attention(*a, 4096, 4096, 29);
  auto& [g, ins, want, forms, first_nmse, finite] = ta;
  EXPECT_LT(first_nmse, 1e-5);
  if (a->compute_capability() != std::make_pair(9, 0)) {
    EXPECT_TRUE(forms.empty());  // one kernel applies: nothing to choose
    return;
  }
  ASSERT_EQ(forms.size(), 1u);
  const std::string key = forms.begin()->first;
  std::printf("      %s -> %s\n", key.c_str(), forms.begin()->second.c_str());
  const std::set<std::string> names{"wgmma", "pipe", "wgmma-lm", "wgmma-s16", "pipe-s16", "wgmma-s16w"};  // the FP16-exponential forms only with SDRT_ATTN_EXP16=auto
  EXPECT_TRUE(names.count(forms[key])) << forms[key];

  // each recorded form runs as recorded (not timed again) and matches the CPU; the FP16-exponential ones
  // where they may be chosen (SDRT_ATTN_EXP16=auto)
  for (const std::string form : {"pipe", "wgmma-e16", "pipe-e16", "wgmma-lm", "wgmma-s16", "pipe-s16", "wgmma-s16w"}) {
    if (form.find("e16") != std::string::npos) ::setenv("SDRT_ATTN_EXP16", "auto", 1);
    EXPECT_FALSE(cuda_or_skip_reason(nullptr, false, "fp16")->add_tactics({{key, "pipe-fma"}}).is_ok());  // a form since removed
    auto ec = compile_recorded(g, key, form);
    ASSERT_TRUE(ec);
    const int64_t before = cuda_attention_pipe_launches(), late_before = cuda_attention_late_launches();
    const int64_t s16_before = cuda_attention_s16_launches(), s16w_before = cuda_attention_s16w_launches();
    auto rc = ec->run(ins);
    ASSERT_TRUE(rc.is_ok());
    EXPECT_EQ(cuda_attention_pipe_launches() - before >= 1, form.rfind("pipe", 0) == 0) << form;
    EXPECT_EQ(cuda_attention_late_launches() - late_before >= 1, form == "wgmma-lm") << form;
    EXPECT_EQ(cuda_attention_s16_launches() - s16_before >= 1, form.find("s16") != std::string::npos) << form;
    EXPECT_EQ(cuda_attention_s16w_launches() - s16w_before >= 1, form == "wgmma-s16w") << form;
    const double e = nmse((*rc)[0], want, &finite);
    std::printf("      recorded %-10s nmse %.3e\n", form.c_str(), e);
    EXPECT_LT(e, 1e-5) << form;
    EXPECT_TRUE(finite) << form;
  }
  ::unsetenv("SDRT_ATTN_EXP16");
  // by default a recorded FP16-exponential form is timed again without them
  auto d = cuda_or_skip_reason(nullptr, false, "fp16");
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->add_tactics({{key, "pipe-e16"}}).is_ok());
  auto ed = d->compile(g);
  ASSERT_TRUE(ed.is_ok()) << ed.status().message();
  const std::string retimed = d->tactics(g.get())[key];
  EXPECT_TRUE(names.count(retimed)) << retimed;
  // and with SDRT_ATTN_LATEMAX=0 a recorded late-maximum form is timed again without it
  ::setenv("SDRT_ATTN_LATEMAX", "0", 1);
  auto f = cuda_or_skip_reason(nullptr, false, "fp16");
  ASSERT_TRUE(f);
  ASSERT_TRUE(f->add_tactics({{key, "wgmma-lm"}}).is_ok());
  auto ef = f->compile(g);
  ::unsetenv("SDRT_ATTN_LATEMAX");
  ASSERT_TRUE(ef.is_ok()) << ef.status().message();
  const std::string without = f->tactics(g.get())[key];
  EXPECT_TRUE(names.count(without) && without != "wgmma-lm") << without;
}

// SD's d-160 attentions at batch 2 (eight heads of 160 over 256 queries: 64 blocks of 64 rows on 100+ SMs)
// have the mma.sync kernel's 32- and 16-row blocks and its key-split blocks (4 warps per 16 rows over 256
// keys, 2 over 77) timed beside its 64-row ones; each recorded form runs and matches the CPU, self-attention
// and the prompt's 77 keys alike (ks4 does not apply to 77 keys: the 64-row blocks run).
TEST(BackendOps, AttentionRowBlocksAreChosenByTimingAndRecorded) {
  REQUIRE_CUDA_P(a, false, "fp16");
  ::unsetenv("SDRT_ATTN_SMALL");
  for (const int64_t Lk : {256, 77}) {
    TimedAttention ta = timed_attention(*a, 256, Lk, 41, 1280);
    auto& [g, ins, want, forms, first_nmse, finite] = ta;
    EXPECT_LT(first_nmse, 1e-5);
    EXPECT_TRUE(finite);
    ASSERT_EQ(forms.size(), 1u);  // 64 blocks leave SMs idle on any GPU with more than 64
    const std::string key = forms.begin()->first;
    std::printf("      %s -> %s\n", key.c_str(), forms[key].c_str());
    EXPECT_TRUE(forms[key] == "wgmma" || forms[key] == "rows32" || forms[key] == "rows16" || forms[key] == "ks2" ||
                (forms[key] == "ks4" && Lk > 128))
        << forms[key];
    for (const std::string form : {"wgmma", "rows32", "rows16", "ks4", "ks2"}) {
      auto ec = compile_recorded(g, key, form);
      ASSERT_TRUE(ec);
      auto rc = ec->run(ins);
      ASSERT_TRUE(rc.is_ok());
      const double e = nmse((*rc)[0], want, &finite);
      std::printf("      recorded %-7s nmse %.3e\n", form.c_str(), e);
      EXPECT_LT(e, 1e-5) << form;
      EXPECT_TRUE(finite) << form;
    }
  }
}

// A d-40 cross-attention of 77 keys (SD's prompt at the 4096-token level): on compute capability 9.0 two forms
// apply (the kept kernel with Q in registers, "cross80"), timed at build and recorded; the engine's output
// matches the CPU either way, and "cross80" recorded runs it.
TEST(BackendOps, CrossAttentionFormIsChosenByTiming) {
  REQUIRE_CUDA_P(a, false, "fp16");
  ::unsetenv("SDRT_ATTN_CROSS80");
  TimedAttention ta = timed_attention(*a, 4096, 77, 31);
  auto& [g, ins, want, forms, first_nmse, finite] = ta;
  EXPECT_LT(first_nmse, 1e-5);
  if (a->compute_capability() != std::make_pair(9, 0)) return;
  ASSERT_EQ(forms.size(), 1u);
  const std::string key = forms.begin()->first;
  std::printf("      %s -> %s\n", key.c_str(), forms[key].c_str());
  EXPECT_TRUE(forms[key] == "wgmma" || forms[key] == "cross80") << forms[key];
  auto ec = compile_recorded(g, key, "cross80");
  ASSERT_TRUE(ec);
  const int64_t before = cuda_attention_cross80_launches();
  auto rc = ec->run(ins);
  ASSERT_TRUE(rc.is_ok());
  EXPECT_GE(cuda_attention_cross80_launches() - before, 1);
  EXPECT_LT(nmse((*rc)[0], want, &finite), 1e-5);
  EXPECT_TRUE(finite);
}

TEST(BackendOps, CudaRejectsBadTokenIds) {
  REQUIRE_CUDA(cuda, false);
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  b.output(b.add_node(Op::Embedding, {b.input("ids", {1, 2}, DType::I32), b.weight("t", Tensor::zeros(DType::F32, {3, 2}))}), "y");
  auto e = cuda->compile(g);
  ASSERT_TRUE(e.is_ok());
  Tensor ids = Tensor::empty(DType::I32, {1, 2});
  static_cast<int32_t*>(ids.mutable_data())[0] = 1;
  static_cast<int32_t*>(ids.mutable_data())[1] = 9;
  auto r = (*e)->run({{"ids", ids}});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("outside the vocabulary"), std::string::npos);
}

// The device loop's vectors are freed by release_scratch() (the pipeline frees them after each batch's
// sampling: a server must not keep one set per request), and alloc() works again after it; combine() with
// further scaled outputs.
TEST(BackendOps, CudaDeviceLoopReleasesItsScratch) {
  REQUIRE_CUDA(cuda, false);
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  const int x = b.input("x", {1, 8});
  b.output(b.add_node(Op::Add, {x, x}), "y");
  auto e = cuda->compile(g);
  ASSERT_TRUE(e.is_ok()) << e.status().message();
  DeviceLoop* L = (*e)->device_loop();
  ASSERT_NE(L, nullptr);
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(L->scratch_bytes(), 0);
    auto a = L->alloc(1000), c = L->alloc(24);
    ASSERT_TRUE(a.is_ok() && c.is_ok());
    EXPECT_EQ(L->scratch_bytes(), 4096);
    const std::vector<float> v = {1, 2, 3};
    std::vector<float> back(3);
    ASSERT_TRUE(L->upload(*c, v.data(), 3).is_ok());
    ASSERT_TRUE(L->combine(*a, 3, {{*c, 2.f}}).is_ok());
    ASSERT_TRUE(L->download(back.data(), *a, 3).is_ok());
    EXPECT_EQ(back, (std::vector<float>{2, 4, 6}));
    // the sum also written scaled to further vectors (the latents' update writing the next UNet input)
    ASSERT_TRUE(L->combine(*a, 3, {{*a, 1.f}, {*c, 1.f}}, {{*a + 500, 0.5f}, {*a + 600, -1.f}}).is_ok());
    std::vector<float> half(3), neg(3);
    ASSERT_TRUE(L->download(back.data(), *a, 3).is_ok() && L->download(half.data(), *a + 500, 3).is_ok() && L->download(neg.data(), *a + 600, 3).is_ok());
    EXPECT_EQ(back, (std::vector<float>{3, 6, 9}));
    EXPECT_EQ(half, (std::vector<float>{1.5f, 3, 4.5f}));
    EXPECT_EQ(neg, (std::vector<float>{-3, -6, -9}));
    EXPECT_FALSE(L->combine(*a, 3, {{*c, 1.f}}, {{*c, 2.f}}).is_ok());  // a further output that is a source
    EXPECT_FALSE(L->combine(*a, 3, {{*c, 1.f}}, {{*a + 100, 1.f}, {*a + 200, 1.f}, {*a + 300, 1.f}}).is_ok());  // three
    ASSERT_TRUE(L->release_scratch().is_ok());
  }
  EXPECT_EQ(L->scratch_bytes(), 0);
}

// A held input's work (here the projection of c) runs once per write to c, not per run(): runs that
// change only x reuse it; writes to c by upload, combine or Executable::run make it run again (eagerly the
// first time, then as a captured graph replayed).
class CudaHeldInputP : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaHeldInputP, WorkRunsOncePerWrite) {
  REQUIRE_CUDA_P(cuda, false, GetParam());
  auto g = std::make_shared<Graph>();
  GraphBuilder b(*g);
  std::mt19937 rng(5);
  const Tensor w = randn({8, 4}, rng);
  const int x = b.input("x", {1, 8}), c = b.input("c", {2, 4});
  b.output(b.add(x, b.linear(c, b.weight("w", w), -1)), "y");
  auto e = cuda->compile(g);
  ASSERT_TRUE(e.is_ok()) << e.status().message();
  DeviceLoop* L = (*e)->device_loop();
  ASSERT_NE(L, nullptr);
  EXPECT_FALSE(L->hold_input("nope").is_ok());
  auto xi = L->input("x"), ci = L->input("c"), yo = L->output(0);
  ASSERT_TRUE(xi.is_ok() && ci.is_ok() && yo.is_ok());
  ASSERT_TRUE(L->hold_input("c").is_ok());
  auto want = [&](const std::vector<float>& xv, const std::vector<float>& cv) {
    std::vector<float> y(16);
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < 8; ++j) {
        double acc = xv[j];
        for (int k = 0; k < 4; ++k) acc += (double)cv[r * 4 + k] * w.f32()[j * 4 + k];
        y[r * 8 + j] = (float)acc;
      }
    return y;
  };
  auto got = [&] {
    std::vector<float> y(16);
    EXPECT_TRUE(L->run().is_ok());
    EXPECT_TRUE(L->download(y.data(), *yo, 16).is_ok());
    return y;
  };
  auto near = [](const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (std::fabs(a[i] - b[i]) > 2e-2f * (1.f + std::fabs(b[i]))) return false;
    return true;
  };
  std::vector<float> x1(8), x2(8), c1(8), c2(8);
  for (int i = 0; i < 8; ++i) x1[i] = 0.1f * i, x2[i] = 1.f - 0.2f * i, c1[i] = 0.5f - 0.1f * i, c2[i] = 0.3f * (i % 3);
  ASSERT_TRUE(L->upload(*xi, x1.data(), 8).is_ok() && L->upload(*ci, c1.data(), 8).is_ok());
  EXPECT_TRUE(near(got(), want(x1, c1)));
  ASSERT_TRUE(L->upload(*xi, x2.data(), 8).is_ok());  // only x: the held projection is reused
  EXPECT_TRUE(near(got(), want(x2, c1)));
  ASSERT_TRUE(L->upload(*ci, c2.data(), 8).is_ok());  // c written: projected again
  EXPECT_TRUE(near(got(), want(x2, c2)));
  ASSERT_TRUE(L->combine(*ci, 8, {{*ci, 2.f}}).is_ok());
  std::vector<float> c3(8);
  for (int i = 0; i < 8; ++i) c3[i] = 2.f * c2[i];
  EXPECT_TRUE(near(got(), want(x2, c3)));
  // (from its second run on the held work is a CUDA graph of its own: replayed on new values)
  ASSERT_TRUE(L->upload(*ci, c1.data(), 8).is_ok());
  EXPECT_TRUE(near(got(), want(x2, c1)));
  EXPECT_TRUE(near(got(), want(x2, c1)));
  auto r = (*e)->run({{"x", Tensor::from_f32({1, 8}, x1)}, {"c", Tensor::from_f32({2, 4}, c1)}});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_TRUE(near(std::vector<float>(r->at(0).f32(), r->at(0).f32() + 16), want(x1, c1)));
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaHeldInputP, ::testing::Values("fp32", "fp16"), [](const auto& i) { return i.param; });

// The conformance components on CUDA: float32 within the CPU tolerance (1e-4 relative), fp16 within the
// README's 2e-2.
class CudaConformanceP : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaConformanceP, Components) {
  SDRT_REQUIRE_CONFORMANCE();
  REQUIRE_CUDA_P(cuda, false, GetParam());
  const double tol = GetParam() == "fp32" ? 1e-4 : 2e-2;
  const std::string prec = GetParam();
  auto ref = SafeTensors::open((tiny_dir() / "reference.safetensors").string()).value();
  auto R = [&](const char* n) { return ref.tensor(*ref.find(n)); };
  auto m = load_model((tiny_dir() / "diffusers").string());
  ASSERT_TRUE(m.is_ok());
  auto run = [&](Result<std::shared_ptr<Graph>> g, std::map<std::string, Tensor> in) {
    EXPECT_TRUE(g.is_ok());
    auto e = cuda->compile(*g);
    EXPECT_TRUE(e.is_ok()) << e.status().message();
    auto o = (*e)->run(in);
    EXPECT_TRUE(o.is_ok()) << o.status().message();
    return (*o)[0];
  };
  auto check = [&](const char* what, const Tensor& a, const Tensor& b) {
    const double e = rel_err(a, b);
    std::printf("      cuda %s %-14s rel err %.2e (tol %.0e)\n", prec.c_str(), what, e, tol);
    EXPECT_LT(e, tol) << what;
  };
  check("text_encoder", run(build_text_encoder(*m, 2), {{"input_ids", to_i32(R("text.input_ids"))}}), R("text.last_hidden_state"));
  for (int t : {999, 500, 1}) {
    Tensor out = run(build_unet(*m, 2, 16, 16), {{"sample", R("unet.sample")}, {"timestep", Tensor::from_f32({2}, {(float)t, (float)t})},
                                                 {"encoder_hidden_states", R("text.last_hidden_state")}});
    check(("unet_t" + std::to_string(t)).c_str(), out, R(("unet.out_t" + std::to_string(t)).c_str()));
  }
  check("vae_decode", run(build_vae_decoder(*m, 1, 16, 16), {{"latent", R("vae.latent")}}), R("vae.decoded"));
}

// Every txt2img case on CUDA: float32 latents within the pipeline tolerance (1e-3); fp16 images within a
// mean absolute error of 2/255 in 8 bit (the README's FP16 bound).
TEST_P(CudaConformanceP, Txt2Img) {
  SDRT_REQUIRE_CONFORMANCE();
  REQUIRE_CUDA_P(cuda, false, GetParam());
  const bool fp32 = GetParam() == "fp32";
  auto m = load_model((tiny_dir() / "diffusers").string());
  PipelineOptions o;
  o.tokenizer_dir = (tiny_dir() / "diffusers/tokenizer").string();
  o.scheduler_config = (tiny_dir() / "diffusers/scheduler/scheduler_config.json").string();
  auto pipe = Pipeline::create(std::move(m).value(), o, std::move(cuda));
  ASSERT_TRUE(pipe.is_ok());
  auto ref = SafeTensors::open((tiny_dir() / "reference.safetensors").string()).value();
  int n = 0;
  const nlohmann::json all = reference_cases();  // kept alive: the loop reads into it
  for (const auto& c : all) {
    const std::string name = c["name"];
    if (!name.starts_with("txt2img_")) continue;
    std::string key;
    auto res = (*pipe)->generate(txt2img_request(c, &key));
    ASSERT_TRUE(res.is_ok()) << res.status().message();
    const double e = rel_err(res->latents[0], ref.tensor(*ref.find(key)));
    // the decoded image against diffusers' image, both in 8 bit
    const Tensor img = ref.tensor(*ref.find(key.substr(0, key.size() - 7) + "image"));
    const int64_t HW = img.dim(2) * img.dim(3);
    double mae = 0;
    for (int c = 0; c < 3; ++c)
      for (int64_t q = 0; q < HW; ++q) {
        const float v = std::clamp(img.f32()[c * HW + q] / 2.f + 0.5f, 0.f, 1.f);
        mae += std::fabs((double)std::lround(v * 255.f) - res->images[0].rgb[q * 3 + c]);
      }
    mae /= 3.0 * HW;
    std::printf("      cuda %s %-32s latents rel err %.2e, image MAE %.3f/255\n", GetParam().c_str(), name.c_str(), e, mae);
    if (fp32) EXPECT_LT(e, 1e-3) << name;
    EXPECT_LE(mae, 2.0) << name;
    ++n;
  }
  EXPECT_EQ(n, 12);
}

// The sampling loop kept on the device (scheduler ops and CFG mixing as kernels, no host round trip per
// step) against the host loop, for every sampler, with and without guidance; progress is reported once
// per step and an interruption stops the run.
TEST_P(CudaConformanceP, DeviceLoopMatchesHostLoop) {
  SDRT_REQUIRE_CONFORMANCE();
  REQUIRE_CUDA_P(cuda, false, GetParam());
  std::string why;
  CudaOptions co;
  co.precision = GetParam();
  auto cuda2 = make_cuda_backend(co, &why);
  ASSERT_TRUE(cuda2);
  auto make = [&](std::unique_ptr<Backend> be, bool device) {
    PipelineOptions o;
    o.tokenizer_dir = (tiny_dir() / "diffusers/tokenizer").string();
    o.scheduler_config = (tiny_dir() / "diffusers/scheduler/scheduler_config.json").string();
    o.device_loop = device;
    auto p = Pipeline::create(load_model((tiny_dir() / "diffusers").string()).value(), o, std::move(be));
    EXPECT_TRUE(p.is_ok());
    return std::move(p).value();
  };
  auto dev = make(std::move(cuda), true), host = make(std::move(cuda2), false);
  const double tol = GetParam() == "fp32" ? 1e-4 : 3e-2;
  for (const std::string sampler : {"ddim", "pndm", "euler", "euler_a", "dpmpp_2m_karras", "lms"})
    for (double cfg : {7.5, 1.0}) {
      const GenerateRequest r = loop_request(sampler, cfg, 128, 96, 6, 3);
      std::vector<int> seen;
      auto a = dev->generate(r, [&](int done, int total) {
        EXPECT_EQ(total, sampler == "pndm" ? 7 : 6);
        seen.push_back(done);
        return true;
      });
      ASSERT_TRUE(a.is_ok()) << a.status().message();
      auto b = host->generate(r);
      ASSERT_TRUE(b.is_ok()) << b.status().message();
      for (int i = 0; i < 2; ++i) {
        const double e = rel_err(a->latents[i], b->latents[i]);
        std::printf("      cuda %s %-16s cfg %.1f image %d: device loop vs host loop rel err %.2e (tol %.0e)\n", GetParam().c_str(), sampler.c_str(), cfg, i, e, tol);
        EXPECT_LT(e, tol) << sampler;
      }
      std::vector<int> want(sampler == "pndm" ? 7 : 6);
      std::iota(want.begin(), want.end(), 1);
      EXPECT_EQ(seen, want) << sampler;
    }
  GenerateRequest r;
  r.prompt = "x";
  r.width = r.height = 64;
  r.steps = 10;
  int calls = 0;
  auto stopped = dev->generate(r, [&](int done, int) { return ++calls < 3; });
  ASSERT_FALSE(stopped.is_ok());
  EXPECT_NE(stopped.status().message().find("interrupted"), std::string::npos) << stopped.status().message();
  EXPECT_EQ(calls, 3);
}

// Several batches with each batch's VAE decode on a stream of its own beside the next batch's sampling
// (set_concurrent): each batch's images as a request for that batch alone gives them - decoded in turn on
// the backend's stream before, and on the decoder's own stream after (its graph captured again there).
TEST_P(CudaConformanceP, DecodeBesideTheNextBatchMatchesOneBatchAtATime) {
  SDRT_REQUIRE_CONFORMANCE();
  REQUIRE_CUDA_P(cuda, false, GetParam());
  PipelineOptions o;
  o.tokenizer_dir = (tiny_dir() / "diffusers/tokenizer").string();
  o.scheduler_config = (tiny_dir() / "diffusers/scheduler/scheduler_config.json").string();
  auto pipe = Pipeline::create(load_model((tiny_dir() / "diffusers").string()).value(), o, std::move(cuda));
  ASSERT_TRUE(pipe.is_ok());
  GenerateRequest r;
  r.prompt = "a red cube on a table";
  r.width = r.height = 128;
  r.steps = 4;
  r.seed = 21;
  r.sampler = "euler_a";
  r.batch_size = 2;
  auto one_batch = [&](int bc) {
    GenerateRequest one = r;
    one.seed = r.seed + 2 * bc;
    auto res = (*pipe)->generate(one);
    EXPECT_TRUE(res.is_ok()) << res.status().message();
    return std::move(res).value();
  };
  std::vector<GenerateResult> before;
  for (int bc = 0; bc < 3; ++bc) before.push_back(one_batch(bc));
  r.batch_count = 3;
  auto all = (*pipe)->generate(r);
  ASSERT_TRUE(all.is_ok()) << all.status().message();
  ASSERT_EQ(all->images.size(), 6u);
  auto after = one_batch(2);
  for (int i = 0; i < 6; ++i) {
    const GenerateResult& ref = before[i / 2];
    int worst = 0;
    for (size_t k = 0; k < ref.images[i % 2].rgb.size(); ++k)
      worst = std::max(worst, std::abs((int)all->images[i].rgb[k] - (int)ref.images[i % 2].rgb[k]));
    const double e = rel_err(all->latents[i], ref.latents[i % 2]);
    std::printf("      cuda %s image %d: decoded beside the next batch vs alone: worst pixel difference %d/255, latents rel err %.1e\n",
                GetParam().c_str(), i, worst, e);
    EXPECT_LE(worst, 1) << "image " << i;
    EXPECT_LT(e, 1e-6) << "image " << i;
    EXPECT_EQ(all->seeds[i], ref.seeds[i % 2]);
  }
  for (int i = 0; i < 2; ++i) {
    int worst = 0;
    for (size_t k = 0; k < after.images[i].rgb.size(); ++k) worst = std::max(worst, std::abs((int)after.images[i].rgb[k] - (int)before[2].images[i].rgb[k]));
    EXPECT_LE(worst, 1) << "the decoder on its own stream, image " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaConformanceP, ::testing::Values("fp32", "fp16"), [](const auto& i) { return i.param; });
