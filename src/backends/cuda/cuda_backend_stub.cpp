// Builds without CUDA: the CUDA backend is absent.
#include "graph/backend.h"

namespace sdrt {

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions&, std::string* why) {
  if (why) *why = "sdrt was built without CUDA";
  return nullptr;
}

int64_t cuda_group_norm_onepass_launches() { return 0; }
int64_t cuda_group_norm_onepass8_launches() { return 0; }
int cuda_geglu_gemm_forms() { return 0; }
const char* cuda_geglu_gemm_form_name(int) { return "?"; }
int64_t cuda_geglu_gemm_launches() { return 0; }
int64_t cuda_attention_pipe_launches() { return 0; }
int64_t cuda_attention_late_launches() { return 0; }
int64_t cuda_attention_cross80_launches() { return 0; }
int64_t cuda_attention_s16_launches() { return 0; }
int64_t cuda_attention_s16w_launches() { return 0; }
int64_t cuda_group_norm_cluster_launches() { return 0; }
int64_t cuda_group_norm_block_launches() { return 0; }
int64_t cuda_attention_shifted_launches() { return 0; }
int64_t cuda_dependent_launches() { return 0; }
int64_t cuda_conv_graph_runs() { return 0; }
int64_t cuda_narrow_conv_runs() { return 0; }
int64_t cuda_wx_conv_runs() { return 0; }
int cuda_wx_conv_forms() { return 0; }
const char* cuda_wx_conv_form_name(int) { return "?"; }
int64_t cuda_splitk_conv_runs() { return 0; }
int64_t cuda_staged_preludes() { return 0; }
int64_t cuda_staged_nodes() { return 0; }

}  // namespace sdrt
