// Kernel launches of the CUDA backend, with programmatic dependent launch (PDL, compute capability 9.0+)
// where SDRT_PDL=1: a kernel launched so may start while the kernel before it in its stream still runs
// (inside a captured graph: a programmatic edge), its blocks resident and waiting at the top, so the launch
// latency between two dependent kernels and the previous kernel's tail overlap. Every kernel of the backend
// therefore begins with dep_entry(): it waits until the kernels it depends on have completed and their
// memory is visible (griddepcontrol.wait, a no-op for a kernel launched without the attribute), then lets its
// own dependents launch (griddepcontrol.launch_dependents: they start once all of this grid's blocks are
// running, i.e. into its last wave and tail). The wait comes before any access to global memory, reads or
// writes, and before any early return: a kernel launched so completes only after its predecessor did, so
// completion stays transitive along a stream, as without the attribute (buffers reused by the memory plan
// rely on that). Library kernels (cuBLASLt, cuDNN) launch as before; a kernel of ours after one of them
// starts as that one's blocks exit.
#pragma once
#include <cuda_runtime.h>

#include <initializer_list>
#include <utility>

namespace sdrt::cuda {

__device__ __forceinline__ void dep_entry() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// SDRT_PDL=1 (read at each launch, as the other kernel switches: launches happen when graphs are captured)
// on a device of compute capability 9.0 or later.
bool dependent_launch();
void count_dependent_launch();

// k<<<grid, block, smem, s>>>(args...) through cudaLaunchKernelEx with launch attributes (cooperative,
// programmatic, ...).
template <class... P, class... A>
cudaError_t launch_with(std::initializer_list<cudaLaunchAttribute> attrs, void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                        A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute at[4];
  unsigned n = 0;
  for (const cudaLaunchAttribute& a : attrs)
    if (n < 4) at[n++] = a;
  cfg.attrs = at;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
}

inline cudaLaunchAttribute cooperative_attr() {  // a grid whose blocks are all resident at once (grid-wide barriers)
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeCooperative;
  a.val.cooperative = 1;
  return a;
}

inline cudaLaunchAttribute cluster_attr(unsigned blocks) {  // thread-block clusters of `blocks` along x (compute capability 9.0+)
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = blocks;
  a.val.clusterDim.y = a.val.clusterDim.z = 1;
  return a;
}

inline cudaLaunchAttribute programmatic_attr() {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
  return a;
}

// k<<<grid, block, smem, s>>>(args...), with the PDL attribute where dependent_launch(); errors are left for
// cudaGetLastError, as with <<<>>>.
template <class... P, class... A>
void launch_kernel(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  if (!dependent_launch()) {
    k<<<grid, block, smem, s>>>(std::forward<A>(args)...);
    return;
  }
  if (launch_with({programmatic_attr()}, k, grid, block, smem, s, std::forward<A>(args)...) == cudaSuccess) count_dependent_launch();
}

}  // namespace sdrt::cuda
