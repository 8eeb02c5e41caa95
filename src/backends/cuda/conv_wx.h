// Convolution form "wx" (Hopper): a 3x3, stride-1, padding-1 convolution through Winograd F(2, 3) along x,
// fused in one kernel. Each pair of output columns (a tile) takes, for every filter row ky, four transformed
// input columns V = B^T d (d: the tile's four input columns under that row, B^T = [1 0 -1 0; 0 1 1 0;
// 0 -1 1 0; 0 1 0 -1]: additions only) against four transformed filter columns U = G g (g: the filter row's
// three taps, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], done once when the weights are prepared); the
// four products M_p, summed over ky and the input channels in the GEMM's K, give the two outputs
// (M0 + M1 + M2, M1 - M2 - M3). That is 12 multiply-adds for 2 outputs where direct convolution takes 18
// (1.5x fewer), and a warpgroup keeps all four M of its 64 tiles x 64 output channels in its accumulators
// (128 registers a thread), so nothing leaves the chip between the transforms. The input is staged by TMA
// (the halo and the image border's zeros included), each thread builds its A fragments from it (8 loads and
// 16 half2 additions a K step of 16), and the transformed weights come through TMA too. FP16 operands, FP32
// sums: the numerics of direct FP16 convolution (bench/winograd_numerics.py: nmse 2.3e-7 against 1.3e-7).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

struct ConvWxShape {
  int64_t N, H, W, C, O;  // x [N, H, W, C], y [N, H, W, O]; 3x3 filter, stride 1, padding 1
};

// Forms: a block's region of output rows x tiles (pairs of columns), "wx<R>x<TW>s2" (persistent blocks, two K
// steps a wait).
int conv_wx_forms();
const char* conv_wx_form_name(int form);
int conv_wx_form_by_name(const char* name);  // -1 if unknown

// Whether form `form` runs this convolution: a compute capability 9.0 GPU (sm_90a code), C and O multiples of
// 64, sizes below 2^31.
bool conv_wx_applies(int form, const ConvWxShape& s);

// The transformed weights' size in halves: [4 positions][3 filter rows][O][C].
inline int64_t conv_wx_weight_elems(int64_t O, int64_t C) { return 12 * O * C; }

// wt (conv_wx_weight_elems halves) from w [O, 3, 3, C] (halves): U = G g in FP32, rounded to half once, each
// 16 channels in the order the kernel's A fragments load them.
cudaError_t conv_wx_prepare(const __half* w, __half* wt, int64_t O, int64_t C, cudaStream_t stream);

// y = conv(x, w) (+ b[O]) (+ r[N, H, W, O]), NHWC halves, with wt from conv_wx_prepare. x, wt, y, r 16-byte
// aligned, b 4-byte (else cudaErrorNotSupported, as where the form does not apply).
cudaError_t conv_wx(int form, const __half* x, const __half* wt, const __half* b, const __half* r, __half* y, const ConvWxShape& s,
                    cudaStream_t stream);

}  // namespace sdrt::cuda
