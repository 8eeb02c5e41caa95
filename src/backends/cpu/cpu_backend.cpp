// CPU backend: interprets the graph node by node in float32, freeing each intermediate after its last use.
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/cpu_ops.h"
#include "graph/backend.h"

namespace sdrt {
namespace {

// PhaseInterleave: x [N, 4C, H+1, W+1] -> y [N, C, 2H, 2W], y[n, c, 2i+a, 2j+b] = x[n, (2a+b) C + c, i+a, j+b]
void phase_interleave(const Tensor& x, Tensor& y) {
  const int64_t N = y.dim(0), C = y.dim(1), H = y.dim(2) / 2, W = y.dim(3) / 2, H1 = H + 1, W1 = W + 1;
  const float* px = x.f32();
  float* py = y.f32();
#pragma omp parallel for collapse(2)
  for (int64_t nn = 0; nn < N; ++nn)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t yy = 0; yy < 2 * H; ++yy)
        for (int64_t xx = 0; xx < 2 * W; ++xx) {
          const int64_t a = yy & 1, b = xx & 1, i = yy >> 1, j = xx >> 1;
          py[((nn * C + c) * 2 * H + yy) * 2 * W + xx] = px[((nn * 4 * C + (2 * a + b) * C + c) * H1 + i + a) * W1 + j + b];
        }
}

// y = x (op) z with numpy broadcasting; the innermost output dimension runs in a tight loop.
template <class F>
void broadcast_binary(const Tensor& x, const Tensor& z, Tensor& y, F f) {
  const Shape& os = y.shape();
  const int r = (int)os.size();
  std::vector<int64_t> sx(r, 0), sz(r, 0);
  auto strides = [&](const Shape& s, std::vector<int64_t>& st) {
    int64_t acc = 1;
    for (int i = (int)s.size() - 1, o = r - 1; i >= 0; --i, --o) {
      st[o] = s[i] == 1 ? 0 : acc;
      acc *= s[i];
    }
  };
  strides(x.shape(), sx);
  strides(z.shape(), sz);
  const float *px = x.f32(), *pz = z.f32();
  float* py = y.f32();
  if (x.shape() == z.shape()) {
    const int64_t n = y.numel();
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) py[i] = f(px[i], pz[i]);
    return;
  }
  const int64_t inner = r ? os[r - 1] : 1, outer = y.numel() / std::max<int64_t>(inner, 1);
#pragma omp parallel for
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, ox = 0, oz = 0;
    for (int d = r - 2; d >= 0; --d) {
      int64_t idx = rem % os[d];
      rem /= os[d];
      ox += idx * sx[d];
      oz += idx * sz[d];
    }
    const int64_t ix = r ? sx[r - 1] : 0, iz = r ? sz[r - 1] : 0;
    for (int64_t i = 0; i < inner; ++i) py[o * inner + i] = f(px[ox + i * ix], pz[oz + i * iz]);
  }
}

class CpuExecutable : public Executable {
 public:
  explicit CpuExecutable(std::shared_ptr<const Graph> g) : g_(std::move(g)) {
    last_use_.assign(g_->nodes.size(), -1);
    for (size_t i = 0; i < g_->nodes.size(); ++i)
      for (int in : g_->nodes[i].inputs) last_use_[in] = (int)i;
    for (int o : g_->outputs) last_use_[o] = (int)g_->nodes.size();
  }

  Result<std::vector<Tensor>> run(const std::map<std::string, Tensor>& inputs) override {
    const auto& nodes = g_->nodes;
    std::vector<Tensor> vals(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node& n = nodes[i];
      if (n.op == Op::Input) {
        auto it = inputs.find(n.name);
        if (it == inputs.end()) return invalid_argument("input '" + n.name + "' is not bound");
        if (it->second.shape() != n.shape)
          return invalid_argument("input '" + n.name + "' has shape " + shape_str(it->second.shape()) + ", expected " + shape_str(n.shape));
        vals[i] = n.dtype == DType::F32 ? it->second.to_f32() : it->second;
      } else if (n.op == Op::Weight) {
        vals[i] = g_->weights.at(n.name);
      } else {
        std::vector<const Tensor*> in;
        for (int id : n.inputs) in.push_back(&vals[id]);
        auto t0 = std::chrono::steady_clock::now();
        auto r = exec(n, in);
        if (!r) return r.status();
        if (profile_) op_seconds_[(size_t)n.op] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        vals[i] = std::move(r).value();
      }
      for (int id : n.inputs)
        if (last_use_[id] == (int)i) vals[id] = Tensor();
    }
    std::vector<Tensor> out;
    for (int o : g_->outputs) out.push_back(vals[o]);
    if (profile_) {
      for (size_t k = 0; k < (size_t)Op::kCount; ++k)
        if (op_seconds_[k] > 0) std::fprintf(stderr, "profile %-18s %8.3f s\n", op_info((Op)k).name, op_seconds_[k]);
      op_seconds_.fill(0);
    }
    return out;
  }

 private:
  // y += r (same shape): the fused residual of Conv2d and Linear
  static void add_residual(Tensor& y, const Tensor& r) {
    float* yp = y.f32();
    const float* rp = r.f32();
    const int64_t n = y.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) yp[i] += rp[i];
  }

  static Result<Tensor> exec(const Node& n, const std::vector<const Tensor*>& in) {
    const Tensor& x = *in[0];
    if (n.op == Op::Slice) {  // rows of the first axis, in the input's dtype (I32 ids too)
      Tensor y = Tensor::empty(x.dtype(), n.shape);
      const size_t row = x.nbytes() / (size_t)x.dim(0);
      std::memcpy(y.mutable_data(), static_cast<const char*>(x.data()) + (size_t)n.a.dims[0] * row, y.nbytes());
      return y;
    }
    Tensor y = Tensor::empty(DType::F32, n.shape);
    const Attrs& a = n.a;
    switch (n.op) {
      case Op::Conv2d: {
        const Tensor& w = *in[1];
        cpu::conv2d(x.f32(), w.f32(), in.size() > 2 ? in[2]->f32() : nullptr, y.f32(), x.dim(0), x.dim(1), x.dim(2),
                    x.dim(3), w.dim(0), w.dim(2), w.dim(3), a.stride, a.pad, y.dim(2), y.dim(3));
        if (in.size() > 3) add_residual(y, *in[3]);
        break;
      }
      case Op::Linear: {
        const Tensor& w = *in[1];
        const int64_t rows = x.numel() / x.dim(-1);
        if (a.geglu) {  // the [rows, 2F] projection, then its GEGLU into y
          std::vector<float> proj((size_t)rows * w.dim(0));
          cpu::linear(x.f32(), w.f32(), in.size() > 2 ? in[2]->f32() : nullptr, proj.data(), rows, x.dim(-1), w.dim(0));
          cpu::geglu(proj.data(), y.f32(), rows, w.dim(0) / 2);
          break;
        }
        cpu::linear(x.f32(), w.f32(), in.size() > 2 ? in[2]->f32() : nullptr, y.f32(), rows, x.dim(-1), w.dim(0));
        if (in.size() > 3) add_residual(y, *in[3]);
        break;
      }
      case Op::GroupNorm:
        if (in.size() > 3) {  // GroupNorm(x + t[n, c]): the sum into y, normalized in place
          const int64_t C = x.dim(1), NC = x.dim(0) * C, S = x.numel() / NC;
          // t [N, C, 1, 1], or columns [col, col + C) of a packed [N, W]
          const int64_t tw = a.dims.empty() ? C : in[3]->dim(1), col = a.dims.empty() ? 0 : a.dims[0];
          const float* t = in[3]->f32() + col;
          for (int64_t r = 0; r < NC; ++r)
            for (int64_t s = 0; s < S; ++s) y.f32()[r * S + s] = x.f32()[r * S + s] + t[r / C * tw + r % C];
          cpu::group_norm(y.f32(), in[1]->f32(), in[2]->f32(), y.f32(), x.dim(0), x.dim(1), S, a.groups, a.eps);
        } else {
          cpu::group_norm(x.f32(), in[1]->f32(), in[2]->f32(), y.f32(), x.dim(0), x.dim(1), x.numel() / (x.dim(0) * x.dim(1)),
                          a.groups, a.eps);
        }
        if (a.silu) cpu::silu(y.f32(), y.f32(), y.numel());
        break;
      case Op::LayerNorm:
        cpu::layer_norm(x.f32(), in[1]->f32(), in[2]->f32(), y.f32(), x.numel() / x.dim(-1), x.dim(-1), a.eps);
        break;
      case Op::SiLU: cpu::silu(x.f32(), y.f32(), x.numel()); break;
      case Op::GELU: cpu::gelu(x.f32(), y.f32(), x.numel()); break;
      case Op::QuickGELU: cpu::quick_gelu(x.f32(), y.f32(), x.numel()); break;
      case Op::GEGLU: cpu::geglu(x.f32(), y.f32(), y.numel() / y.dim(-1), y.dim(-1)); break;
      case Op::Attention: {
        std::vector<const Shape*> shapes;
        for (const Tensor* t : in) shapes.push_back(&t->shape());
        SDRT_ASSIGN_OR_RETURN(const AttentionViews v, attention_views(shapes));
        cpu::attention(in[v.q_in]->f32(), in[v.k_in]->f32() + v.k_col, in[v.v_in]->f32() + v.v_col, y.f32(), v.B, v.Lq, v.Lk, a.heads,
                       v.HD / a.heads, v.HDv / a.heads, v.ldq, v.ldk, v.ldv, a.scale, a.causal);
        break;
      }
      case Op::PhaseInterleave: phase_interleave(x, y); break;
      case Op::Upsample2x:
        cpu::upsample_nearest(x.f32(), y.f32(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3), y.dim(2), y.dim(3));
        break;
      case Op::Concat: {
        int64_t outer = 1, inner = 1;
        for (int64_t d = 0; d < a.axis; ++d) outer *= n.shape[d];
        for (size_t d = a.axis + 1; d < n.shape.size(); ++d) inner *= n.shape[d];
        int64_t off = 0;
        const int64_t out_row = n.shape[a.axis] * inner;
        Tensor planes;  // Attrs::up2: input 0's phase planes interleaved first
        std::vector<const Tensor*> srcs = in;
        if (a.up2) {
          planes = Tensor::empty(DType::F32, interleaved(in[0]->shape()));
          phase_interleave(*in[0], planes);
          srcs[0] = &planes;
        }
        for (const Tensor* t : srcs) {
          const int64_t row = t->dim((int)a.axis) * inner;
          for (int64_t o = 0; o < outer; ++o) std::memcpy(y.f32() + o * out_row + off, t->f32() + o * row, row * 4);
          off += row;
        }
        break;
      }
      case Op::Add: broadcast_binary(x, *in[1], y, [](float p, float q) { return p + q; }); break;
      case Op::Mul: broadcast_binary(x, *in[1], y, [](float p, float q) { return p * q; }); break;
      case Op::Scale: {
        const float* px = x.f32();
        float* py = y.f32();
        for (int64_t i = 0; i < x.numel(); ++i) py[i] = px[i] * a.scale;
        break;
      }
      case Op::Reshape: return x.reshaped(n.shape);
      case Op::ToTokens: cpu::transpose_last2(x.f32(), y.f32(), x.dim(0), x.dim(1), x.dim(2) * x.dim(3)); break;
      case Op::FromTokens: cpu::transpose_last2(x.f32(), y.f32(), x.dim(0), x.dim(1), x.dim(2)); break;
      case Op::TimestepEmbedding: cpu::timestep_embedding(x.f32(), y.f32(), x.dim(0), a.dim, a.flip_sin_to_cos, a.freq_shift); break;
      case Op::Embedding: {
        const Tensor& table = *in[1];
        const int64_t V = table.dim(0), C = table.dim(1);
        if (x.dtype() != DType::I32) return invalid_argument("Embedding ids must be I32");
        const int32_t* ids = static_cast<const int32_t*>(x.data());
        for (int64_t i = 0; i < x.numel(); ++i) {
          if (ids[i] < 0 || ids[i] >= V) return invalid_argument("token id " + std::to_string(ids[i]) + " is outside the vocabulary of " + std::to_string(V));
          std::memcpy(y.f32() + i * C, table.f32() + (int64_t)ids[i] * C, C * 4);
        }
        break;
      }
      default: return unsupported(std::string("CPU backend cannot run ") + op_info(n.op).name);
    }
    return y;
  }

  std::shared_ptr<const Graph> g_;
  std::vector<int> last_use_;
  // SDRT_PROFILE=1 prints the time spent per op kind after each run (stderr).
  bool profile_ = std::getenv("SDRT_PROFILE") != nullptr;
  std::array<double, (size_t)Op::kCount> op_seconds_{};
};

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool supports(Op op) const override { return op != Op::kCount; }
  Result<std::unique_ptr<Executable>> compile(std::shared_ptr<const Graph> graph) override {
    SDRT_RETURN_IF_ERROR(graph->verify());
    for (const auto& [name, t] : graph->weights)
      if (t.dtype() != DType::F32) return invalid_argument("CPU backend needs F32 weights; '" + name + "' is " + dtype_name(t.dtype()));
    return std::unique_ptr<Executable>(new CpuExecutable(std::move(graph)));
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace sdrt
