// What the cuDNN convolution benchmarks share (fp8_conv.cu, conv_engines.cu): the UNet's 3x3 shapes, a pool
// that owns the backend descriptors made for one problem, attribute setting, NHWC tensor and convolution
// descriptors, and the heuristics' engine configurations.
#pragma once
#include <cudnn.h>

#include <cstdint>
#include <vector>

using Desc = cudnnBackendDescriptor_t;

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

// Every descriptor made here, destroyed at the end of a problem.
struct Pool {
  std::vector<Desc> all;
  Pool() = default;
  Pool(const Pool&) = delete;
  ~Pool() {
    for (Desc d : all) cudnnBackendDestroyDescriptor(d);
  }
  Desc make(cudnnBackendDescriptorType_t t) {
    Desc d = nullptr;
    if (cudnnBackendCreateDescriptor(t, &d) != CUDNN_STATUS_SUCCESS) return nullptr;
    all.push_back(d);
    return d;
  }
};

inline bool set(Desc d, cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, int64_t n, const void* v) {
  return cudnnBackendSetAttribute(d, a, t, n, v) == CUDNN_STATUS_SUCCESS;
}

// An NHWC tensor of logical dims [N, C, H, W].
inline Desc tensor(Pool& pool, int64_t uid, cudnnDataType_t dt, int64_t N, int64_t C, int64_t H, int64_t W, bool virt) {
  Desc d = pool.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t dims[4] = {N, C, H, W}, strides[4] = {H * W * C, 1, W * C, C}, align = 16;
  const bool ok = d && set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt) && set(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims) &&
                  set(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides) && set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid) &&
                  set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align) &&
                  set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt) && cudnnBackendFinalize(d) == CUDNN_STATUS_SUCCESS;
  return ok ? d : nullptr;
}

// A 2-D cross-correlation with symmetric padding, unit dilation, float accumulation.
inline Desc conv2d_desc(Pool& pool, int64_t pad, int64_t stride) {
  Desc conv = pool.make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const int64_t dims = 2, pads[2] = {pad, pad}, strides[2] = {stride, stride}, one2[2] = {1, 1};
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const bool ok = conv && set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims) &&
                  set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp) &&
                  set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode) &&
                  set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pads) &&
                  set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pads) &&
                  set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, strides) &&
                  set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, one2) && cudnnBackendFinalize(conv) == CUDNN_STATUS_SUCCESS;
  return ok ? conv : nullptr;
}

// The engine configurations cuDNN's heuristics (mode) give for an operation graph, at most `limit`.
inline std::vector<Desc> engine_configs(Pool& pool, Desc graph, cudnnBackendHeurMode_t mode, int64_t limit) {
  std::vector<Desc> cfgs;
  Desc heur = pool.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  if (!(heur && set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph) &&
        set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) && cudnnBackendFinalize(heur) == CUDNN_STATUS_SUCCESS))
    return cfgs;
  int64_t count = 0;
  cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr);
  count = count < limit ? count : limit;
  for (int64_t i = 0; i < count; ++i) cfgs.push_back(pool.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
  int64_t got = 0;
  if (count == 0 || cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs.data()) != CUDNN_STATUS_SUCCESS)
    got = 0;
  cfgs.resize((size_t)got);
  return cfgs;
}
