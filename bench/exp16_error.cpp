// The attention output error of FP16 exponentials (SDRT_ATTN_EXP16: the argument rounded to FP16 before
// 2^x) against FP32 exponentials rounded to FP16 afterwards (the kept kernels), both against a double
// reference: head dim 40, 4096 keys (SD 1.5's first level), q and k of a few scales, and the argument offset
// by 0 or by up to 8 (the Hopper kernels move a row's maximum lazily, only once a score exceeds it by 2^8).
// P in FP16 and sums in higher precision, as the MMAs take them; the MUFU's own approximation is left out.
// Last column: the FP16-score form ("wgmma-s16") on base-2 queries (q times scale / ln 2 rounded to FP16, as
// after pass fold_attention_scale): S accumulated in FP16 (rounded after each 16-column K step, as the MMA's
// FP16 accumulator is), the maximum rounded to FP16, s - m rounded to FP16, 2^x rounded to FP16; against a
// double reference on the same rounded queries.
//   bench_exp16_error
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using half = _Float16;

int main() {
  constexpr int L = 4096, D = 40, rows = 256;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::printf("%-8s %-12s %14s %14s %14s\n", "q,k std", "lazy offset", "nmse fp32 exp", "nmse fp16 exp", "nmse s16");
  for (float sigma : {0.5f, 1.f, 1.5f})
    for (float offset : {0.f, 7.9f}) {
      std::vector<float> K(L * D), V(L * D), q(D), s(L);
      for (auto& x : K) x = (float)(half)(nd(rng) * sigma);
      for (auto& x : V) x = (float)(half)nd(rng);
      const float scale_log2 = 1.f / std::sqrt((float)D) * 1.4426950408889634f;
      double err32 = 0, err16 = 0, ref = 0, errs = 0, refs = 0;
      std::vector<float> qb(D), sb(L), ss(L);
      for (int r = 0; r < rows; ++r) {
        for (auto& x : q) x = (float)(half)(nd(rng) * sigma);
        // the FP16-score form: base-2 queries, S in FP16 steps of 16 columns (40 padded to 48)
        float mb = -INFINITY, m16 = -INFINITY;
        for (int d = 0; d < D; ++d) qb[d] = (float)(half)(q[d] * scale_log2);
        for (int j = 0; j < L; ++j) {
          float exact = 0, acc = 0;
          for (int k0 = 0; k0 < D; k0 += 16) {
            float part = 0;
            for (int d = k0; d < std::min(D, k0 + 16); ++d) part += qb[d] * K[j * D + d];
            acc = (float)(half)(acc + part);
            exact += part;
          }
          sb[j] = exact, ss[j] = acc;
          mb = std::max(mb, exact), m16 = std::max(m16, acc);
        }
        const float bs = (float)(half)(m16 - offset);
        for (int d = 0; d < D; ++d) {
          double num = 0, den = 0, n = 0, dn = 0;
          for (int j = 0; j < L; ++j) {
            const double pe = std::exp2((double)sb[j] - (mb - offset));
            const float x = (float)(half)(ss[j] - bs), ph = (float)(half)std::exp2(x);
            num += pe * V[j * D + d], den += pe;
            n += (double)ph * V[j * D + d], dn += ph;
          }
          const double o = num / den, oh = (float)(half)(n / dn);
          errs += (oh - o) * (oh - o), refs += o * o;
        }
        float mx = -INFINITY;
        for (int j = 0; j < L; ++j) {
          float a = 0;
          for (int d = 0; d < D; ++d) a += q[d] * K[j * D + d];
          s[j] = a;
          mx = std::max(mx, a * scale_log2);
        }
        const float base = mx - offset;
        for (int d = 0; d < D; ++d) {
          double num = 0, den = 0, n32 = 0, d32 = 0, n16 = 0, d16 = 0;
          for (int j = 0; j < L; ++j) {
            const float x = std::fma(s[j], scale_log2, -base);
            const double p = std::exp2((double)s[j] * scale_log2 - base);
            const float p32 = (float)(half)std::exp2(x), p16 = (float)(half)std::exp2((float)(half)x);
            num += p * V[j * D + d], den += p;
            n32 += (double)p32 * V[j * D + d], d32 += p32;
            n16 += (double)p16 * V[j * D + d], d16 += p16;
          }
          const double o = num / den, o32 = (float)(half)(n32 / d32), o16 = (float)(half)(n16 / d16);
          err32 += (o32 - o) * (o32 - o), err16 += (o16 - o) * (o16 - o), ref += o * o;
        }
      }
      std::printf("%-8.1f %-12.1f %14.3e %14.3e %14.3e\n", sigma, offset, err32 / ref, err16 / ref, errs / refs);
    }
  return 0;
}
