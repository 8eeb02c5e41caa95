// The cuDNN graph (backend) API's plumbing shared by the engine's graph-API convolutions (cudnn_conv.cu) and
// the cuDNN benchmarks: a pool that owns the backend descriptors made for one problem, attribute setting,
// NHWC tensor and convolution descriptors, pointwise operations, and the heuristics' engine configurations.
#pragma once
#include <cudnn.h>

#include <cstdint>
#include <initializer_list>
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

// One attribute of a descriptor: name, type, element count, values.
struct Attr {
  cudnnBackendAttributeName_t name;
  cudnnBackendAttributeType_t type;
  int64_t count;
  const void* value;
};
// A descriptor of kind t with attrs set in order, finalized; null where a step fails.
inline Desc build(Pool& pool, cudnnBackendDescriptorType_t t, std::initializer_list<Attr> attrs) {
  Desc d = pool.make(t);
  if (!d) return nullptr;
  for (const Attr& a : attrs)
    if (!set(d, a.name, a.type, a.count, a.value)) return nullptr;
  return cudnnBackendFinalize(d) == CUDNN_STATUS_SUCCESS ? d : nullptr;
}

// A tensor of logical dims [N, C, H, W] with the given strides.
inline Desc tensor(Pool& pool, int64_t uid, cudnnDataType_t dt, const int64_t (&dims)[4], const int64_t (&strides)[4], bool virt) {
  const int64_t align = 16;
  return build(pool, CUDNN_BACKEND_TENSOR_DESCRIPTOR,
               {{CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt},
                {CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims},
                {CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides},
                {CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid},
                {CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align},
                {CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt}});
}
// An NHWC tensor of logical dims [N, C, H, W].
inline Desc tensor(Pool& pool, int64_t uid, cudnnDataType_t dt, int64_t N, int64_t C, int64_t H, int64_t W, bool virt) {
  return tensor(pool, uid, dt, {N, C, H, W}, {H * W * C, 1, W * C, C}, virt);
}

// A 2-D cross-correlation with padding pad_h rows and pad_w columns on each side, unit dilation, float
// accumulation.
inline Desc conv2d_desc(Pool& pool, int64_t pad_h, int64_t pad_w, int64_t stride) {
  const int64_t dims = 2, pads[2] = {pad_h, pad_w}, strides[2] = {stride, stride}, one2[2] = {1, 1};
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  return build(pool, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR,
               {{CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims},
                {CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp},
                {CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode},
                {CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pads},
                {CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pads},
                {CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, strides},
                {CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, one2}});
}
inline Desc conv2d_desc(Pool& pool, int64_t pad, int64_t stride) { return conv2d_desc(pool, pad, pad, stride); }

// The engine configurations cuDNN's heuristics (mode) give for an operation graph, at most `limit`.
inline std::vector<Desc> engine_configs(Pool& pool, Desc graph, cudnnBackendHeurMode_t mode, int64_t limit) {
  std::vector<Desc> cfgs;
  Desc heur = build(pool, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR,
                    {{CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph},
                     {CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode}});
  if (!heur) return cfgs;
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
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  Desc pw = build(pool, CUDNN_BACKEND_POINTWISE_DESCRIPTOR,
                  {{CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode}, {CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec}});
  if (!pw) return nullptr;
  return build(pool, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR,
               {{CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw},
                {CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x},
                {CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b},
                {CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y}});
}

// y = conv(x, w) with alpha 1, beta 0 as an operation.
inline Desc conv_forward(Pool& pool, Desc x, Desc w, Desc y, Desc conv) {
  const float alpha = 1.f, beta = 0.f;
  return build(pool, CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
               {{CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x},
                {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w},
                {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y},
                {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv},
                {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha},
                {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta}});
}

// An operation graph of ops on handle h.
inline Desc op_graph(Pool& pool, cudnnHandle_t h, const std::vector<Desc>& ops) {
  return build(pool, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR,
               {{CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, (int64_t)ops.size(), ops.data()},
                {CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h}});
}

// The execution plan of an engine configuration, and its workspace bytes; null where it does not finalize.
inline Desc exec_plan(Pool& pool, cudnnHandle_t h, Desc cfg, int64_t* workspace) {
  *workspace = 0;
  Desc plan = build(pool, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
                    {{CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h}, {CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg}});
  if (!plan) return nullptr;
  int64_t n = 0;
  cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, workspace);
  return plan;
}

// The operands of one execution: n tensors by unique id and address, and the workspace.
inline Desc variant_pack(Pool& pool, int64_t n, const int64_t* uids, void* const* ptrs, void* workspace) {
  return build(pool, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR,
               {{CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids},
                {CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs},
                {CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace}});
}

}  // namespace sdrt::cuda::dnn
