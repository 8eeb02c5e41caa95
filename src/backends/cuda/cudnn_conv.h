// Convolutions of the FP16 path through cuDNN: NHWC half activations, OHWI half filters, float
// accumulation on tensor cores. The algorithm of every distinct convolution shape is chosen by timing
// cuDNN's candidates on the GPU (cudnnFind) once per backend and reused.
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sdrt/status.h"

namespace sdrt::cuda {

struct ConvShape {
  int64_t N, C, H, W, O, kh, kw, stride, pad_h, pad_w;
  std::string key() const;
};

struct ConvChoice {
  int algo = -1;
  size_t workspace = 0;
  float ms = 0.f;  // cuDNN's measured time
  bool seeded = false;  // from a plan or timing cache, not timed in this process
  std::string text() const;  // "algo=1 workspace=0 ms=0.0123"
  static Result<ConvChoice> parse(const std::string& s);
};

// The forms a convolution with bias (and residual) can take: cuDNN's convolution then one bias(+residual)
// kernel; im2col + a cuBLASLt GEMM with both in its epilogue; cuDNN's fused convolution + bias + residual
// (cudnnConvolutionBiasActivationForward, identity activation: implicit precomputed GEMM only); or one
// operation graph of cuDNN's graph API, convolution + bias + residual, in the engine configuration timed
// fastest (timed only under SDRT_CONV_GRAPH=1, experimental; a recorded choice is used as it is).
// Narrow: our kernel for at most 8 output channels (conv_narrow_nhwc, nhwc_kernels.cuh; experimental, timed
// only under SDRT_CONV_NARROW=timed). Splitk: our split-K implicit-GEMM kernel (conv_splitk.h, Hopper;
// experimental, timed only under SDRT_CONV_SPLITK=timed) in the form recorded in ConvTuning::splitk_form.
// Wx: our fused Winograd F(2, 3)-along-x kernel (conv_wx.h, Hopper; 3x3, stride 1, padding 1) in the form
// recorded in ConvTuning::wx_form, on weights transformed once when the form is taken.
enum class ConvForm { Cudnn, Gemm, CudnnFused, Graph, Narrow, Splitk, Wx };
const char* conv_form_name(ConvForm f);  // "cudnn", "im2col-gemm", "cudnn-fused", "cudnn-graph", "narrow", "splitk", "winograd-x"
bool parse_conv_form(const std::string& s, ConvForm* f);

// Chosen algorithms by shape key, shared by a backend's executables; seeded from plans and timing
// caches (a seeded choice is checked against cuDNN before use and timed afresh if it does not fit).
struct ConvTuning {
  std::mutex mu;
  std::map<std::string, ConvChoice> choices;
  int timed = 0, reused = 0;  // shapes timed with cudnnFind, seeded choices taken
  // How each convolution shape runs (by shape key), chosen by timing the forms on the GPU.
  std::map<std::string, ConvForm> form;
  // The graph form's engine configuration (an index into heuristics mode A's list) by graph_key.
  std::map<std::string, int> graph_config;
  // The split-K kernel's form ("b128c8", conv_splitk.h) by shape key, where the form is Splitk.
  std::map<std::string, std::string> splitk_form;
  // The Winograd kernel's form ("wx4x32", conv_wx.h) by shape key, where the form is Wx.
  std::map<std::string, std::string> wx_form;
};
// A convolution shape's key with the graph form's epilogue: "<shape key> b1 r0".
std::string graph_key(const ConvShape& s, bool bias, bool residual);

std::string cudnn_version();  // "9.19.0"

class CudnnConv {
 public:
  ~CudnnConv();
  static Result<std::unique_ptr<CudnnConv>> create(cudaStream_t stream);
  // Chooses (or looks up) the algorithm for a shape; returns the plan's id for run().
  Result<int> prepare(const ConvShape& s, ConvTuning& tuning);
  size_t workspace(int plan) const;  // bytes the plan's algorithm needs (and the fused form's, where it has one)
  // y = conv(x, w); x [N,H,W,C], w [O,kh,kw,C], y [N,Ho,Wo,O], all half.
  Status run(int plan, const void* x, const void* w, void* y, void* workspace, size_t workspace_bytes);
  bool fused_available(int plan) const;
  Status set_stream(cudaStream_t stream);  // where run() and run_fused() enqueue from now on
  // y = conv(x, w) + bias[O] (+ res, shaped as y) in one cuDNN call.
  Status run_fused(int plan, const void* x, const void* w, const void* bias, const void* res, void* y, void* workspace, size_t workspace_bytes);

  // The graph form of a prepared convolution: y = conv(x, w) (+ bias[O]) (+ res) as one cuDNN operation graph
  // (float intermediates). graph_configs: how many engine configurations heuristics mode A offers for it (0
  // where the graph does not build); prepare_graph: the execution plan of configuration `index` (an id for
  // run_graph), an error where it does not finalize or needs more than 256 MiB of workspace.
  int graph_configs(int plan, bool bias, bool residual);
  Result<int> prepare_graph(int plan, bool bias, bool residual, int index);
  size_t graph_workspace(int graph) const;
  Status run_graph(int graph, const void* x, const void* w, const void* bias, const void* res, void* y, void* workspace, size_t workspace_bytes);

 private:
  struct Entry;
  struct GraphEntry;
  CudnnConv() = default;
  void* handle_ = nullptr;
  std::vector<std::unique_ptr<Entry>> entries_;
  std::map<std::string, int> by_key_;
  std::vector<std::unique_ptr<GraphEntry>> graphs_;
  std::map<std::string, int> graph_by_key_;  // "<plan> <bias> <residual> <index>"
};

}  // namespace sdrt::cuda
