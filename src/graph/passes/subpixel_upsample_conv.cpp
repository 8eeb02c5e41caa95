// A 3x3 convolution (stride 1, padding 1) of a 2x nearest upsampling (the UNet's and the VAE decoder's
// upsamplers) as a 2x2 convolution of the input itself: each output pixel (2i + a, 2j + b) sees, through the
// upsampling, only input rows i - 1 + a, i + a and columns j - 1 + b, j + b, so each of the four phases (a, b)
// is a 2x2 convolution of x whose taps are sums of the 3x3 kernel's (rows 0 | 1 + 2 for a = 0, 0 + 1 | 2 for
// a = 1; columns alike). The four phases are one convolution with 4 O outputs over x padded by 1 ([N, 4 O,
// H + 1, W + 1]), interleaved into [N, O, 2H, 2W] (PhaseInterleave): 16 multiply-adds per output pixel and
// input channel instead of 36, and the upsampled tensor - four times the input - is never written.
#include <set>

#include "graph/passes.h"

namespace sdrt {

Graph subpixel_upsample_conv(const Graph& g, int* rewrites) {
  const std::vector<int> uses = passes::use_counts(g);
  auto weight_of = [&](int id) { return passes::weight_tensor(g, id); };
  std::vector<bool> fused(g.nodes.size(), false), absorbed(g.nodes.size(), false);
  int count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& c = g.nodes[i];
    if (c.op != Op::Conv2d || c.a.up2 || c.inputs.size() > 3 || c.a.stride != 1) continue;
    bool pad1 = true;
    for (int k = 0; k < 4; ++k) pad1 = pad1 && c.a.pad[k] == 1;
    const int u = c.inputs[0];
    const Node& up = g.nodes[u];
    if (!pad1 || up.op != Op::Upsample2x || uses[u] != 1) continue;
    const Shape& xs = g.nodes[up.inputs[0]].shape;
    if (xs.size() != 4 || up.shape != Shape{xs[0], xs[1], 2 * xs[2], 2 * xs[3]}) continue;  // exactly 2x
    const Tensor* w = weight_of(c.inputs[1]);
    if (!w || w->rank() != 4 || w->dim(2) != 3 || w->dim(3) != 3 || uses[c.inputs[1]] != 1) continue;
    if (c.inputs.size() == 3 && (!weight_of(c.inputs[2]) || uses[c.inputs[2]] != 1)) continue;  // replaced: read only here
    const std::string& wn = g.nodes[c.inputs[1]].name;
    if (g.weights.count(wn + "#phases") || (c.inputs.size() == 3 && g.weights.count(g.nodes[c.inputs[2]].name + "#phases"))) continue;
    fused[i] = true;
    absorbed[u] = true;
    ++count;
  }
  // the replaced constants' nodes go, and their tensors unless another Weight node binds the same name
  std::vector<bool> dropped(g.nodes.size(), false);
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (fused[i])
      for (size_t k = 1; k < g.nodes[i].inputs.size(); ++k) dropped[g.nodes[i].inputs[k]] = true;
  const std::set<std::string> kept = passes::kept_weight_names(g, dropped);
  passes::Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& c = g.nodes[i];
    if (absorbed[i]) continue;
    if (dropped[i]) {
      if (!kept.count(c.name)) rw.drop_weight(c.name);
      continue;
    }
    if (!fused[i]) {
      rw.emit(c, (int)i);
      continue;
    }
    const Node& up = g.nodes[c.inputs[0]];
    const Tensor w = weight_of(c.inputs[1])->to_f32();
    const int64_t O = w.dim(0), C = w.dim(1);
    // taps of the 3x3 kernel summed into 2x2 phase kernel (a, b) at (r, s): kernel rows lo[a][r]..hi[a][r]
    const int lo[2][2] = {{0, 1}, {0, 2}}, hi[2][2] = {{0, 2}, {1, 2}};
    Tensor w2 = Tensor::zeros(DType::F32, {4 * O, C, 2, 2});
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        for (int64_t o = 0; o < O; ++o)
          for (int64_t ci = 0; ci < C; ++ci) {
            const float* src = w.f32() + (o * C + ci) * 9;
            float* dst = w2.f32() + (((2 * a + b) * O + o) * C + ci) * 4;
            for (int r = 0; r < 2; ++r)
              for (int s = 0; s < 2; ++s) {
                double acc = 0;
                for (int ky = lo[a][r]; ky <= hi[a][r]; ++ky)
                  for (int kx = lo[b][s]; kx <= hi[b][s]; ++kx) acc += src[ky * 3 + kx];
                dst[r * 2 + s] = (float)acc;
              }
          }
    const std::string wname = g.nodes[c.inputs[1]].name + "#phases";
    rw.add_weight(wname, std::move(w2));
    rw.emit(Node{Op::Weight, {}, {4 * O, C, 2, 2}, DType::F32, wname, {}}, c.inputs[1]);  // stands for the old weight
    Node conv = c;
    conv.inputs = {up.inputs[0], c.inputs[1]};
    conv.a.up2 = true;
    conv.shape = {c.shape[0], 4 * O, c.shape[2] / 2 + 1, c.shape[3] / 2 + 1};
    conv.name = c.name + "#phases";
    if (c.inputs.size() == 3) {  // the bias once per phase
      const Tensor b = weight_of(c.inputs[2])->to_f32();
      Tensor b4 = Tensor::empty(DType::F32, {4 * O});
      for (int p = 0; p < 4; ++p)
        for (int64_t o = 0; o < O; ++o) b4.f32()[p * O + o] = b.f32()[o];
      const std::string bname = g.nodes[c.inputs[2]].name + "#phases";
      rw.add_weight(bname, std::move(b4));
      rw.emit(Node{Op::Weight, {}, {4 * O}, DType::F32, bname, {}}, c.inputs[2]);
      conv.inputs.push_back(c.inputs[2]);
    }
    rw.emit(std::move(conv), c.inputs[0]);  // stands for the upsampling, which nothing else reads
    Node merge{Op::PhaseInterleave, {c.inputs[0]}, c.shape, c.dtype, c.name, {}};
    rw.emit(std::move(merge), (int)i);
  }
  if (rewrites) *rewrites = count;
  return rw.finish();
}

}  // namespace sdrt
