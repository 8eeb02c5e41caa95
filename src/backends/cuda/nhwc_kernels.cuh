// Kernels of the FP16 path's NHWC layout: 4-D activations are stored [N, H, W, C] (channels innermost,
// what tensor-core convolutions want) while the graph's shapes stay logical NCHW.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

// float32 NCHW (host layout) <-> half NHWC
void nchw_f32_to_nhwc_f16(const float* x, __half* y, int64_t N, int64_t C, int64_t HW, cudaStream_t s);
void nhwc_f16_to_nchw_f32(const __half* x, float* y, int64_t N, int64_t C, int64_t HW, cudaStream_t s);

// Scratch floats group_norm_nhwc needs for its partial statistics and per-channel scale/shift.
int64_t group_norm_nhwc_scratch(int64_t N, int64_t C, int64_t HW, int64_t G);
// GroupNorm over [N, HW, C] with G groups of consecutive channels, optionally followed by SiLU. Statistics
// in float: per-chunk mean and M2 merged with Chan's formula (deterministic, no atomics). Returns false
// when the shape is outside what the kernel handles (C > 8192); the caller falls back.
// vec (optional): GroupNorm(x + vec[n * vld + c]) without writing the sum (the ResNet time embedding: [N, C],
// vld = C, or C columns of the packed projections of pass pack_time_projections, vld their row width).
// share: streams running side by side on the GPU (batch parts), for the one-pass form below.
// form: -1 the default order (the cluster form under SDRT_GN_CLUSTER=1, else the block form for small tensors
// (group_norm_block's rule 1), else the half2 one-pass form where
// the tensor fits the chip's shared memory, else the block form with wide slabs (rule 2), else the 16-byte
// one-pass form in at most 3 batch slices - unless
// SDRT_GN_ONEPASS or SDRT_GN_ONEPASS8=0 is set - else three passes); a GroupNormForm runs that form alone
// and returns false where it does not apply (the engine times the forms per shape under SDRT_GN_FORM=timed:
// choose_group_norm_form).
enum GroupNormForm { kGnThreePass = 0, kGnOnePass = 1, kGnCluster = 2, kGnOnePass8 = 3, kGnBlock = 4, kGroupNormForms = 5 };
const char* group_norm_form_name(int form);  // "3pass", "onepass", "cluster", "onepass8", "block"; "?" out of range
int group_norm_form_by_name(const char* name);  // -1 for an unknown name
bool group_norm_nhwc(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                     int64_t HW, int64_t G, float eps, bool silu, float* scratch, cudaStream_t s, int share = 1, int form = -1);

// The same GroupNorm as one cooperative kernel (statistics, a grid-wide barrier, the normalisation, the
// pixels kept in shared memory in between): false where it does not apply (a tensor larger than the
// chip's shared memory, odd channels per group, a device without cooperative launch, SDRT_GN_ONEPASS=0),
// and group_norm_nhwc runs its three passes. Its scratch: group_norm_onepass_scratch(G) floats. With
// share > 1 streams side by side (batch parts) it stays off - its grid takes the whole chip's shared memory,
// so it would wait for the other streams' kernels to drain - unless SDRT_GN_ONEPASS=1, which runs it on
// 1/share of the SMs (for measurements).
int64_t group_norm_onepass_scratch(int64_t G);
// Whether the driver takes a cooperative launch that is also a programmatic dependent one (probed once, on
// a stream of its own: call outside any stream capture; the one-pass GroupNorm launches so under SDRT_PDL=1
// only once this said yes).
bool cooperative_dependent_launch();
bool group_norm_onepass(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                        int64_t HW, int64_t G, float eps, bool silu, float* scratch, cudaStream_t s, int share = 1);

// The one-pass kernel in 16-byte vectors (group_norm_onepass.cu: gn_onepass8_k): at least 8 channels per
// group and C a multiple of 8; a tensor larger than the chip's shared memory runs as up to max_launches
// (at most 8) launches over slices of the batch, one read and one write where the three-pass form reads
// twice. Off under SDRT_GN_ONEPASS=0, with share > 1, and where it does not apply (false). On the H100
// (sixteenth session, bench_group_norm) slower than the half2 kernel where that one applies (batch 2: 0.80 ms
// against 0.56 per forward), faster than three passes where the tensor needs 2-3 slices (batch 16:
// [320,64,64] 50 against 60 us) and not at 4 or more.
bool group_norm_onepass8(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                         int64_t HW, int64_t G, float eps, bool silu, float* scratch, cudaStream_t s, int share = 1, int max_launches = 8);

// The same GroupNorm with one block per (image, slab of 1, 2 or 4 whole groups) holding its slab in registers
// (group_norm_onepass.cu: gn_block_k): no grid-wide barrier, no cooperative launch, any GPU. False where it
// does not apply: an odd channel count per group, a group of more than 32 pixels per thread of 1024
// (SD's [N,320,64,64] fits, [N,640,64,64] does not).
// rule: 0 wherever it applies (the form forced or timed); 1 and 2 the default order's "small" and "large"
// rules (group_norm_onepass.cu), before and after the half2 one-pass kernel.
bool group_norm_block(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                      int64_t HW, int64_t G, float eps, bool silu, cudaStream_t s, int rule = 0);
// Whether group_norm_nhwc's default order takes the block form where its rules say: not under
// SDRT_GN_BLOCK=0, nor under SDRT_GN_ONEPASS (either value: those runs compare the other forms).
bool group_norm_block_on();

// The same GroupNorm with one thread-block cluster per image and slab of whole groups (compute capability
// 9.0+; group_norm_cluster.cu): one read, no grid-wide barrier, any size. False where it does not apply
// (channels not a multiple of 8, a slab over 1024 channels, an older GPU, a failed launch). The engine
// times it beside the other forms; group_norm_nhwc takes it first under SDRT_GN_CLUSTER=1
// (group_norm_cluster_env).
int group_norm_cluster_env();
bool group_norm_cluster(const __half* x, const __half* gamma, const __half* beta, const __half* vec, int64_t vld, __half* y, int64_t N, int64_t C,
                        int64_t HW, int64_t G, float eps, bool silu, cudaStream_t s);

// p[i] uniform in [-scale, scale), a deterministic hash of i and seed: inputs for timing tactics whose speed
// may depend on the values (zeros take one branch of every data-dependent path).
void fill_uniform(__half* p, int64_t n, float scale, uint32_t seed, cudaStream_t s);

// nearest upsampling [N, H, W, C] -> [N, Ho, Wo, C] (source index floor(o * in / out), as torch)
// PhaseInterleave on NHWC: x [N, H+1, W+1, 4C] -> y [N, 2H, 2W, C]
void phase_interleave_nhwc(const __half* x, __half* y, int64_t N, int64_t C, int64_t H, int64_t W, cudaStream_t s);
void upsample_nearest_nhwc(const __half* x, __half* y, int64_t N, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, cudaStream_t s);

// zero padding [N, H, W, C] -> [N, H + pt + pb, W + pl + pr, C] (asymmetric convolution padding)
void pad_nhwc(const __half* x, __half* y, int64_t N, int64_t H, int64_t W, int64_t C, int64_t pt, int64_t pl, int64_t Hp, int64_t Wp,
              cudaStream_t s);

// im2col for convolutions as GEMMs: x [N, H, W, C] -> col [N*Ho*Wo, kh*kw*C], each row one output pixel's
// receptive field in (ky, kx, c) order (the OHWI filter's row order), zeros where it reaches the padding.
// C must be a multiple of 8.
void im2col_nhwc(const __half* x, __half* col, int64_t N, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw, int64_t stride,
                 int64_t pad_h, int64_t pad_w, int64_t Ho, int64_t Wo, cudaStream_t s);

}  // namespace sdrt::cuda

namespace sdrt::cuda {

// Fast paths of the FP16 engine's elementwise work (half2 vectors where sizes allow):
// y[r, c] += b[c] (+ res[r, c]): bias and fused residual epilogue of convolutions and GEMMs
void bias_residual_rows(__half* y, const __half* b, const __half* res, int64_t rows, int64_t C, cudaStream_t s);
// y = x + z or x * z, same shapes and layouts
void binary_same(bool mul, const __half* x, const __half* z, __half* y, int64_t n, cudaStream_t s);
// y[n, p, c] = x[n, p, c] + t[n, c] (a per-image channel vector over NHWC pixels: the ResNet time embedding)
void add_pixel_broadcast(const __half* x, const __half* t, __half* y, int64_t N, int64_t HW, int64_t C, cudaStream_t s);

// Concatenation of rows: row r of y is row r of each of the k sources side by side (row_bytes[i] each), for
// `outer` rows, in one kernel (a Concat along any axis is this with the axis' outer extent as rows); in the
// widest unit (16, 4, 2 or 1 bytes) that divides every row and address. False for more than 8 sources
// (the caller copies them one by one).
bool concat_rows(void* y, const void* const* xs, const int64_t* row_bytes, int k, int64_t outer, cudaStream_t s);
// The same for rows of an NHWC [N, 2H, 2W, C] output, source 0 given as phase planes [N, H+1, W+1, 4 C0]
// (row_bytes[0]: C0's bytes) and interleaved as it is copied (a Concat with Attrs::up2).
bool concat_rows_up2(void* y, const void* const* xs, const int64_t* row_bytes, int k, int64_t N, int64_t H, int64_t W, cudaStream_t s);

// LayerNorm over the last dimension, one warp per row held in registers (C % 8 == 0, C <= 2048, 16-byte
// aligned); false when outside that range (the caller falls back).
bool layer_norm_fast(const __half* x, const __half* g, const __half* b, __half* y, int64_t rows, int64_t C, float eps, cudaStream_t s);
// GEGLU y[r, :F] = x[r, :F] * gelu(x[r, F:]) with 16-byte vectors (F % 8 == 0); false otherwise.
bool geglu_fast(const __half* x, __half* y, int64_t rows, int64_t F, cudaStream_t s);

// Convolution form "narrow" (conv_narrow.cu): y[N, Ho, Wo, O] = conv(x[N, H, W, C], w[O, kh, kw, C]) (+ b[O],
// + r[N, Ho, Wo, O]), all NHWC, symmetric padding pad_h / pad_w, for at most 8 output channels and C a
// multiple of 16 (conv_narrow_applies): mma.sync tiles of 8 output channels; for stride 1 a block stages the
// input rows of 32 output pixels in shared memory (where they fit in 110 KB), else takes 16 pixels.
bool conv_narrow_applies(int64_t C, int64_t O);
void conv_narrow_nhwc(const __half* x, const __half* w, const __half* b, const __half* r, __half* y, int64_t N, int64_t H, int64_t W, int64_t C,
                      int64_t O, int64_t kh, int64_t kw, int64_t stride, int64_t pad_h, int64_t pad_w, int64_t Ho, int64_t Wo, cudaStream_t s);

}  // namespace sdrt::cuda
