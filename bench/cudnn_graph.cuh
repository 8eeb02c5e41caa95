// What the cuDNN convolution benchmarks share (fp8_conv.cu, conv_engines.cu, conv_wx.cu): the UNet's 3x3
// shapes, the graph API's plumbing from the engine (backends/cuda/cudnn_graph.h), the engine's way of timing a
// form, and the legacy API's convolution as the engine chooses it.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cudnn_graph.h"

using namespace sdrt::cuda::dnn;

// The stride-1 3x3 convolutions of the SD 1.5 UNet at 512x512 (NHWC): input and output channels, latent
// side, and how many of each a forward has.
struct UnetConv3x3 {
  int64_t C, K, HW;
  int count;
};
inline constexpr UnetConv3x3 kUnetConv3x3[] = {
    {320, 320, 64, 7},   {640, 320, 64, 2},   {960, 320, 64, 1},    {640, 640, 64, 1},   {320, 640, 32, 1},  {640, 640, 32, 6},
    {960, 640, 32, 1},   {1280, 640, 32, 1},  {1920, 640, 32, 1},   {1280, 1280, 32, 1}, {640, 1280, 16, 1}, {1280, 1280, 16, 7},
    {1920, 1280, 16, 1}, {2560, 1280, 16, 2}, {1280, 1280, 8, 11}, {2560, 1280, 8, 3}};

// Median ms of one launch over `repeats` timings of five launches in a CUDA graph (the engine's own
// time_in_graph, which times the way the engine runs); -1 if any failed.
template <class F>
float median_in_graph(cudaStream_t s, int repeats, F&& body) {
  std::vector<float> ms;
  for (int r = 0; r < repeats; ++r) {
    const float v = sdrt::cuda::time_in_graph(s, 5, body);
    if (v < 0.f) return -1.f;
    ms.push_back(v);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// y = conv(x, w) for a 3x3, stride-1, padding-1 NHWC FP16 convolution (float accumulation) the engine's way
// (cudnn_conv.cu): the legacy API's fastest algorithm within 256 MiB of workspace, searched on these operands,
// then timed (median_in_graph); y holds its output. algo and ms are -1 where none ran.
struct LegacyConv {
  int algo = -1;
  float ms = -1.f;
};
inline LegacyConv legacy_conv3x3(cudnnHandle_t h, cudaStream_t s, int64_t N, int64_t C, int64_t K, int64_t HW, const __half* x, const __half* w, __half* y,
                                 int repeats) {
  LegacyConv r;
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnCreateTensorDescriptor(&xd);
  cudnnCreateTensorDescriptor(&yd);
  cudnnCreateFilterDescriptor(&wd);
  cudnnCreateConvolutionDescriptor(&cd);
  cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, (int)N, (int)C, (int)HW, (int)HW);
  cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_HALF, CUDNN_TENSOR_NHWC, (int)K, (int)C, 3, 3);
  cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
  cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH);
  cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, (int)N, (int)K, (int)HW, (int)HW);
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
  int returned = 0;
  size_t need = 0;
  constexpr size_t kMaxWs = size_t(256) << 20;
  void* ws = nullptr;  // the search's workspace, on the shape's own operands (as the engine searches)
  if (cudaMalloc(&ws, kMaxWs) == cudaSuccess &&
      cudnnFindConvolutionForwardAlgorithmEx(h, xd, x, wd, w, cd, yd, y, (int)perf.size(), &returned, perf.data(), ws, kMaxWs) == CUDNN_STATUS_SUCCESS)
    for (int i = 0; i < returned && r.algo < 0; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kMaxWs) r.algo = (int)perf[i].algo, need = perf[i].memory;
  if (ws) cudaFree(ws);
  ws = nullptr;
  if (r.algo >= 0 && (need == 0 || cudaMalloc(&ws, need) == cudaSuccess)) {
    const float one = 1.f, zero = 0.f;
    auto run = [&] {
      return cudnnConvolutionForward(h, &one, xd, x, wd, w, cd, (cudnnConvolutionFwdAlgo_t)r.algo, ws, need, &zero, yd, y) == CUDNN_STATUS_SUCCESS;
    };
    r.ms = median_in_graph(s, repeats, run);
    run();
    cudaStreamSynchronize(s);
  }
  if (ws) cudaFree(ws);
  cudaGetLastError();
  cudnnDestroyTensorDescriptor(xd);
  cudnnDestroyTensorDescriptor(yd);
  cudnnDestroyFilterDescriptor(wd);
  cudnnDestroyConvolutionDescriptor(cd);
  return r;
}
