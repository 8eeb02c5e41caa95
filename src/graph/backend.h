// The backend interface: a backend compiles a verified Graph into an Executable that runs it on bound
// named inputs. The CPU backend interprets the graph in float32 (the reference); the CUDA backend builds
// a plan from the same graph.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace sdrt {

// Work kept on the device between runs of one executable (the sampling loop on CUDA): its persistent
// float32 input and output buffers (host layouts), scratch vectors and elementwise linear combinations,
// all in order on the executable's stream. Only download() and wait() make the host wait.
class DeviceLoop {
 public:
  virtual ~DeviceLoop() = default;
  virtual Result<float*> input(const std::string& name) = 0;  // an F32 graph input's buffer
  virtual Result<float*> output(int i) = 0;
  virtual Result<float*> alloc(int64_t n) = 0;                // freed by release_scratch() or with the executable
  virtual Status release_scratch() = 0;                       // frees every alloc() buffer (waits for the device)
  virtual int64_t scratch_bytes() const = 0;                  // bytes alloc() holds now
  virtual Status upload(float* dst, const float* src, int64_t n) = 0;
  virtual Status download(float* dst, const float* src, int64_t n) = 0;
  virtual Status copy(float* dst, const float* src, int64_t n) = 0;
  // dst[k] = sum_j coef_j * src_j[k] for k < n (dst may be a source); at most 8 terms. The sum is also
  // written scaled to each of `also` (at most 2 vectors, none of them a source): the latents' update and
  // the next step's scaled UNet input in one kernel.
  virtual Status combine(float* dst, int64_t n, const std::vector<std::pair<const float*, float>>& terms,
                         const std::vector<std::pair<float*, float>>& also) = 0;
  Status combine(float* dst, int64_t n, const std::vector<std::pair<const float*, float>>& terms) { return combine(dst, n, terms, {}); }
  // The named input keeps its value between run()s until written again (upload, copy, combine into its
  // buffer, or Executable::run): work that depends only on held inputs and weights runs once after each
  // write instead of in every run() (the sampling loop's prompt embeddings: their key/value projections).
  virtual Status hold_input(const std::string& name) = 0;
  // The named float32 input takes `count` values in turn (values: count x the input's size, device memory,
  // copied here): the work computed from it alone (input_prelude, graph/prelude.h: in the UNet the time
  // embedding and the ResNets' projections of it) runs now for all of them as one batch - the projections'
  // 52 MB of weights read once instead of in every step - and select_staged(k) gives the following run()s
  // value k: one copy of the values the rest of the graph reads. Where it cannot (nothing computed from the
  // input alone; guard checks or per-node profiling; an engine without the build passes; SDRT_STAGE=0)
  // select_staged copies value k into the input. Writing the input's buffer by other means (or
  // Executable::run) ends the staging.
  virtual Status stage_input(const std::string& name, const float* values, int64_t count) = 0;
  virtual Status select_staged(int64_t k) = 0;
  virtual Status run() = 0;              // the graph on the buffers
  virtual Status mark(int64_t step) = 0;  // a point in the stream, waited for by wait(step)
  virtual Status wait(int64_t step) = 0;  // steps marked at most 3 marks ago
};

class Executable {
 public:
  virtual ~Executable() = default;
  // Inputs by name (host tensors); returns the graph outputs in order.
  virtual Result<std::vector<Tensor>> run(const std::map<std::string, Tensor>& inputs) = 0;
  // The device-resident interface, where the backend has one (CUDA); owned by the executable.
  virtual DeviceLoop* device_loop() { return nullptr; }
  // Scratch the executable holds besides its values (convolution and GEMM workspaces), in bytes.
  virtual int64_t workspace_bytes() const { return 0; }
  virtual int streams() const { return 1; }  // streams its work is spread over (CUDA: 2 with the side lane)
  // From now on this executable may run() on another host thread while the backend's other executables run
  // (the VAE decode of one batch during the next batch's sampling): on CUDA it takes a stream and library
  // workspaces of its own, so its work overlaps theirs on the GPU. False where the backend cannot (the CPU
  // backend, whose executables share the cores anyway): then callers run it in turn.
  virtual bool set_concurrent() { return false; }
};

struct DeviceMemory {
  int64_t peak_bytes = -1;  // allocator high-water mark since the last reset (weights included); -1: n/a
  int64_t used_bytes = -1;  // the device's used memory now (cudaMemGetInfo); -1: n/a
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual std::string precision() const { return "fp32"; }  // the arithmetic it stores values in
  virtual DeviceMemory memory() const { return {}; }
  virtual void reset_peak_memory() {}
  virtual bool supports(Op op) const = 0;
  // Runs the backend's build passes on a graph (as configured); graphs already optimized pass through.
  // compile() does this itself; plans store the result.
  virtual std::shared_ptr<const Graph> optimize(std::shared_ptr<const Graph> graph) const { return graph; }
  virtual Result<std::unique_ptr<Executable>> compile(std::shared_ptr<const Graph> graph) = 0;

  // What compiled code is specific to: the device and its compute capability (empty on the CPU).
  virtual std::string device_name() const { return {}; }
  virtual std::pair<int, int> compute_capability() const { return {0, 0}; }
  virtual std::string libraries() const { return {}; }  // library versions tactics depend on
  // What else the built graph depends on besides the precision (CUDA: the batch split), for cache keys.
  virtual std::string variant() const { return {}; }
  // Autotuning results by op-instance key (text), for plans and timing caches: those the graph's ops
  // use, or all chosen so far when graph is null. add_tactics() seeds choices so that they are not
  // timed again (a value this backend cannot read is an error naming the key).
  virtual std::map<std::string, std::string> tactics(const Graph* graph) const { return {}; }
  virtual Status add_tactics(const std::map<std::string, std::string>& tactics) { return Status::ok(); }
};

std::unique_ptr<Backend> make_cpu_backend();

struct CudaOptions {
  int device = 0;
  bool guard_check = false;  // guard bands around every output, checked after each op (tests)
  std::string precision = "fp32";  // "fp32" (true float32) or "fp16" (half storage, float accumulation)
  bool fuse = true;                // run the build passes (graph/passes.h) before compiling
  bool cuda_graphs = true;         // capture each executable's work into a CUDA graph after its first run
  // Batch parts run side by side (fp16 with the build passes): pass split_batch makes each part's nodes
  // independent of the others', and each part runs on a stream of its own (branches of one captured
  // graph). 0 takes SDRT_SPLIT (1 - off - when unset; "auto" times both forms of each graph at its build
  // and keeps the faster, recorded in plans and timing caches); -1 is auto.
  int split_batch = 0;
};
// The CUDA backend (float32 stage), or nullptr with the reason in *why: not built with CUDA, no driver,
// no device.
// One backend instance serves one model: the CUDA backend shares uploaded weights between its
// executables by weight name.
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt = {}, std::string* why = nullptr);

// GroupNorms this process ran as one cooperative kernel (the CUDA FP16 path's one-pass form): tests use
// it to know which form they checked. 0 without CUDA.
int64_t cuda_group_norm_onepass_launches();
int64_t cuda_group_norm_onepass8_launches();  // the one-pass kernel in 16-byte vectors (form onepass8), likewise
int64_t cuda_group_norm_cluster_launches();  // the cluster GroupNorm (SDRT_GN_CLUSTER=1), likewise
int64_t cuda_group_norm_block_launches();    // the block-per-group GroupNorm (form block), likewise
// The fused GEGLU projection kernel's forms (CUDA FP16 on compute capability 9.0; the tactic names of
// "geglu_form/..." besides "split") and its launches in this process, for tests. 0 forms without CUDA.
int cuda_geglu_gemm_forms();
const char* cuda_geglu_gemm_form_name(int form);
int64_t cuda_geglu_gemm_launches();
// Launches of the intra-warpgroup pipelined attention kernel (SDRT_ATTN_PIPE=1, compute capability 9.0,
// heads of 40) in this process, for tests. 0 without CUDA.
int64_t cuda_attention_pipe_launches();
int64_t cuda_attention_late_launches();     // the d-40 kept kernel's late-maximum form ("wgmma-lm")
int64_t cuda_attention_shifted_launches();  // of those, on base-2 scores (scale ln 2): the maxima taken off in the MMAs
int64_t cuda_attention_cross80_launches();  // the d-40 cross-attention kernel for at most 80 keys ("cross80")
int64_t cuda_attention_s16_launches();      // the kept kernel with FP16 scores ("wgmma-s16", "wgmma-s16w")
int64_t cuda_attention_s16w_launches();     // of those, in 320-row blocks ("wgmma-s16w")
// Kernels launched with programmatic dependent launch (SDRT_PDL=1, compute capability 9.0+) in this
// process, for tests. 0 without CUDA.
int64_t cuda_dependent_launches();
// Preludes run by DeviceLoop::stage_input (the staged input's work for many values at once) in this process,
// and the nodes they computed ahead, for tests. 0 without CUDA.
int64_t cuda_staged_preludes();
int64_t cuda_staged_nodes();
// Convolutions run as one cuDNN operation graph (the graph form, SDRT_CONV_GRAPH) in this process, for tests.
int64_t cuda_conv_graph_runs();
// Convolutions run by the narrow kernel (form "narrow": at most 8 output channels) in this process, for tests.
int64_t cuda_narrow_conv_runs();
int64_t cuda_wx_conv_runs();  // convolutions run by the Winograd F(2,3)-along-x kernel (conv_wx.h)
// That kernel's forms (0 without CUDA), for tests: how many, and each one's name (SDRT_CONV_WX=<name> forces it).
int cuda_wx_conv_forms();
const char* cuda_wx_conv_form_name(int form);
// Convolutions run by the split-K kernel (form "splitk", conv_splitk.h) in this process, for tests.
int64_t cuda_splitk_conv_runs();

// A backend's tactics (Backend::tactics) in a line: how many of each kind were timed, and for the kinds that
// pick among forms, how many shapes took each ("attn_form 2 (pipe 1, wgmma 1); ..."); "none" when empty.
std::string tactics_summary(const std::map<std::string, std::string>& tactics);

// "auto" (cuda where usable, else cpu), "cpu" or "cuda"; precision "auto" (fp16 on cuda, fp32 on cpu),
// "fp32" or "fp16" (cuda only); device: the CUDA device index. An error names why a backend is unavailable.
Result<std::unique_ptr<Backend>> make_backend(std::string name, std::string precision = "auto", int device = 0);

}  // namespace sdrt
