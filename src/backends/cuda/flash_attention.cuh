// Fused attention for the FP16 path: softmax(q k^T * scale) v computed tile by tile with an online
// softmax (the flash-attention method), so the Lq x Lk score matrix never exists in memory. Tensor-core
// MMAs (m16n8k16, FP16 in, FP32 accumulate); scores, running max and sums stay in FP32.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace sdrt::cuda {

// Head dimensions the kernel handles (D == Dv <= 160: SD 1.x 40/80/160, SD 2.x and CLIP 64).
bool flash_attention_supported(int64_t D, int64_t Dv);

// q[b, i, h*D + d] at q + b*Lq*ldq + i*ldq + h*D + d (ld* in elements; likewise k, v with Lk, and o with
// Lq); causal masks key j > query i. form: which Hopper kernel runs where several apply (below); -1 lets
// SDRT_ATTN_PIPE decide (benchmarks, the op test), as without a timed choice.
cudaError_t flash_attention(const __half* q, const __half* k, const __half* v, __half* o, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                            int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo, float scale, bool causal, cudaStream_t s,
                            int form = -1);

// The Hopper kernel's forms, chosen per shape by timing (the CUDA executable's "attn_form/" tactics): 0 the
// kept kernel ("wgmma"), 1 the intra-warpgroup pipelined one ("pipe", heads of 40 and 80), 2 and 3 those two
// with the exponentials in FP16 ("wgmma-e16", "pipe-e16", heads of 40: flash_common.cuh's exp2_half2), 4 the
// kept kernel making P against the running row maxima and checking it afterwards ("wgmma-lm", heads of 40),
// 5 a cross-attention kernel for at most 80 keys ("cross80", heads of 40; where the kept one holds Q in
// registers). Where no Hopper kernel applies, for heads of 81-160 (SD's d 160) that 64-row blocks would
// leave SMs idle with: 6 and 7, the mma.sync kernel in blocks of 32 or 16 query rows ("rows32", "rows16";
// form 0 there is its 64-row blocks); 8 and 9, its 32-row blocks with 4 or 2 warps per 16 rows splitting the
// key tiles, merged at the end ("ks4" where there are more than 128 keys, "ks2" more than 64). 10 and 11, the
// kept and the pipelined Hopper kernels with S = Q K^T accumulated in FP16 and the softmax's maxima and
// exponentials on FP16 pairs ("wgmma-s16", "pipe-s16": heads of 40 and 80, SD 1.x's, with Q in shared
// memory): half the score registers and a fifth fewer instructions; S is rounded to FP16 as diffusers' classic
// attention processor rounds it (a half-precision baddbmm, then the softmax). Not for heads of 64 (SD 2.x,
// SDXL: SD 2.x's attention is the one known to overflow in PyTorch's half-precision path). 12, "wgmma-s16w":
// the kept kernel with FP16 scores in blocks of 320 query rows, five warpgroups (heads of 40, where 256-row
// blocks would run): a fifth more warps per SM to hide the softmax's dependent chains behind, and each K/V
// tile staged for 320 rows instead of 256.
constexpr int kAttentionForms = 13;
const char* attention_form_name(int form);
int attention_exp16_env();  // SDRT_ATTN_EXP16: 1 forced, 0 off, 2 "auto" (timed with the other forms), -1 unset (off)
int attention_latemax_env();  // SDRT_ATTN_LATEMAX: 1 forced (where no form is given), 0 never timed, -1 unset (timed)
int attention_cross80_env();  // SDRT_ATTN_CROSS80: likewise
int attention_s16_env();  // SDRT_ATTN_S16: likewise
int attention_s16w_env();  // SDRT_ATTN_S16W: 1 with SDRT_ATTN_S16=1 forces form 12 (where it applies), 0 never timed, -1 unset (timed)
int attention_ksplit_env();  // SDRT_ATTN_KSPLIT: 0 never timed (forms 8, 9), else timed
int attention_rows256_env();  // SDRT_ATTN_ROWS256: 0 the Hopper kernels' 256-row blocks only where they reach every SM
bool attention_small_env();  // whether SDRT_ATTN_SMALL is set (16 or 32 forces those rows outside forms 6 and 7, which are then not timed)
int attention_form_by_name(const std::string& name);  // -1 when unknown
// Which forms apply to a shape on this device, bit f for form f (1: only the kept kernel, or no Hopper kernel
// at all); pointers are assumed 16-byte aligned, as the engine's buffers and packed views at multiples of 8
// columns are.
int flash_attention_form_mask(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo,
                          bool causal);

// The same on Hopper's warpgroup MMAs (flash_attention_sm90.cu) where it applies: compute capability 9.0,
// non-causal, head dims 40, 64 or 80 with 16-byte-aligned rows, at least 512 query rows and enough 256-row
// blocks to give every SM one; returns cudaErrorNotSupported otherwise (or with SDRT_ATTN_WGMMA=0) so
// the caller runs flash_attention's kernel.
cudaError_t flash_attention_sm90(const __half* q, const __half* k, const __half* v, __half* o, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                                 int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo, float scale, bool causal, cudaStream_t s,
                                 int form = -1);
int flash_attention_sm90_form_mask(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo,
                               bool causal);  // 0 where the Hopper kernel does not apply

}  // namespace sdrt::cuda
