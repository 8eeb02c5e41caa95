// The cuDNN graph (backend) API's plumbing shared by the engine's graph-API convolutions (cudnn_conv.cu) and
// the cuDNN benchmarks: a pool that owns the backend descriptors made for one problem, attribute setting,
// NHWC tensor and convolution descriptors, pointwise operations, and the heuristics' engine configurations.
#pragma once
#include <cudnn.h>

#include <cstdint>
#include <vector>

namespace sdrt::cuda::dnn {

using Desc = cudnnBackendDescriptor_t;

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

// A 2-D cross-correlation with padding pad_h rows and pad_w columns on each side, unit dilation, float
// accumulation.
inline Desc conv2d_desc(Pool& pool, int64_t pad_h, int64_t pad_w, int64_t stride) {
  Desc conv = pool.make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const int64_t dims = 2, pads[2] = {pad_h, pad_w}, strides[2] = {stride, stride}, one2[2] = {1, 1};
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
inline Desc conv2d_desc(Pool& pool, int64_t pad, int64_t stride) { return conv2d_desc(pool, pad, pad, stride); }

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

// y = x (op) b as a pointwise operation (float math): x, b and y tensor descriptors (b may broadcast).
inline Desc pointwise(Pool& pool, cudnnPointwiseMode_t mode, Desc x, Desc b, Desc y) {
  Desc pw = pool.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  Desc op = pool.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  const bool ok = pw && op && set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode) &&
                  set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec) && cudnnBackendFinalize(pw) == CUDNN_STATUS_SUCCESS &&
                  set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw) &&
                  set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x) &&
                  set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b) &&
                  set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y) && cudnnBackendFinalize(op) == CUDNN_STATUS_SUCCESS;
  return ok ? op : nullptr;
}

// y = conv(x, w) with alpha 1, beta 0 as an operation.
inline Desc conv_forward(Pool& pool, Desc x, Desc w, Desc y, Desc conv) {
  Desc op = pool.make(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  const float alpha = 1.f, beta = 0.f;
  const bool ok = op && set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x) &&
                  set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w) &&
                  set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y) &&
                  set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv) &&
                  set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha) &&
                  set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta) && cudnnBackendFinalize(op) == CUDNN_STATUS_SUCCESS;
  return ok ? op : nullptr;
}

// An operation graph of ops on handle h.
inline Desc op_graph(Pool& pool, cudnnHandle_t h, const std::vector<Desc>& ops) {
  Desc g = pool.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  const bool ok = g && set(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, (int64_t)ops.size(), ops.data()) &&
                  set(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) && cudnnBackendFinalize(g) == CUDNN_STATUS_SUCCESS;
  return ok ? g : nullptr;
}

// The execution plan of an engine configuration, and its workspace bytes; null where it does not finalize.
inline Desc exec_plan(Pool& pool, cudnnHandle_t h, Desc cfg, int64_t* workspace) {
  Desc plan = pool.make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  if (!(plan && set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) &&
        set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg) && cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS))
    return nullptr;
  int64_t n = 0;
  *workspace = 0;
  cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, workspace);
  return plan;
}

}  // namespace sdrt::cuda::dnn
