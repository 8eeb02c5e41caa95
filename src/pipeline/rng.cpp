#include "pipeline/rng.h"

#include <cmath>

namespace sdrt {

double TorchCpuGenerator::uniform53() {
  uint64_t hi = engine_(), lo = engine_();  // torch's random64(): first draw is the high word
  uint64_t v = (hi << 32) | lo;
  return (double)(v & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

std::vector<float> TorchCpuGenerator::randn(int64_t n) {
  std::vector<float> d((size_t)n);
  if (n < 16) {
    // torch's scalar path: normal_distribution<double>, which caches the second Box-Muller value.
    for (auto& x : d) {
      if (have_cached_) {
        have_cached_ = false;
        x = (float)cached_;
        continue;
      }
      const double u1 = uniform53(), u2 = uniform53();
      const double r = std::sqrt(-2.0 * std::log1p(-u2)), theta = 2.0 * M_PI * u1;
      cached_ = r * std::sin(theta);
      have_cached_ = true;
      x = (float)(r * std::cos(theta));
    }
    return d;
  }
  // torch normal_fill: all uniforms first, then Box-Muller on blocks of 16 (u1 = 1 - first 8, u2 = last 8);
  // a ragged tail redraws 16 fresh uniforms for the last 16 elements.
  auto fill16 = [](float* p) {
    for (int j = 0; j < 8; ++j) {
      const float u1 = 1.f - p[j], u2 = p[j + 8];
      const float radius = std::sqrt(-2.f * std::log(u1)), theta = 2.f * (float)M_PI * u2;
      p[j] = radius * std::cos(theta);
      p[j + 8] = radius * std::sin(theta);
    }
  };
  for (auto& x : d) x = uniform24();
  for (int64_t i = 0; i + 16 <= n; i += 16) fill16(d.data() + i);
  if (n % 16) {
    float* tail = d.data() + n - 16;
    for (int j = 0; j < 16; ++j) tail[j] = uniform24();
    fill16(tail);
  }
  return d;
}

namespace {

struct U4 {
  uint32_t x, y, z, w;
};

U4 philox4x32_10(U4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = (uint64_t)0xD2511F53u * c.x, p1 = (uint64_t)0xCD9E8D57u * c.z;
    c = {(uint32_t)(p1 >> 32) ^ c.y ^ k0, (uint32_t)p1, (uint32_t)(p0 >> 32) ^ c.w ^ k1, (uint32_t)p0};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// curand's Box-Muller on two 32-bit draws (curand_normal.h constants).
void box_muller(uint32_t a, uint32_t b, float* s_out, float* c_out) {
  const float inv = 2.3283064e-10f, inv2pi = 2.3283064e-10f * 6.2831855f;
  const float u = (float)a * inv + inv / 2.f, v = (float)b * inv2pi + inv2pi / 2.f;
  const float s = std::sqrt(-2.f * std::log(u));
  *s_out = std::sin(v) * s;
  *c_out = std::cos(v) * s;
}

}  // namespace

std::vector<float> TorchCudaGenerator::randn(int64_t n) {
  // torch distribution_nullary_kernel: 256-thread blocks, grid = min(SMs * 8, ceil(n / 256)); thread t
  // runs curand_init(seed, t, offset) and writes its float4 to t + S*ii for each grid-stride pass.
  std::vector<float> out((size_t)n);
  const uint64_t block = 256, unroll = 4;
  const uint64_t grid = std::min<uint64_t>((uint64_t)sm_count_ * 8, ((uint64_t)n + block - 1) / block);
  const uint64_t S = block * grid;
  const uint64_t passes = ((uint64_t)n - 1) / (S * unroll) + 1;
  const uint32_t k0 = (uint32_t)seed_, k1 = (uint32_t)(seed_ >> 32);
  for (uint64_t t = 0; t < S; ++t) {
    // Counter after curand_init: low 64 bits = offset / 4, high 64 bits = subsequence t.
    uint64_t lo = offset_ / 4;
    for (uint64_t p = 0; p < passes; ++p, ++lo) {
      U4 r = philox4x32_10({(uint32_t)lo, (uint32_t)(lo >> 32), (uint32_t)t, (uint32_t)(t >> 32)}, k0, k1);
      float v[4];
      box_muller(r.x, r.y, &v[0], &v[1]);
      box_muller(r.z, r.w, &v[2], &v[3]);
      for (uint64_t ii = 0; ii < unroll; ++ii) {
        const uint64_t li = t + p * S * unroll + S * ii;
        if (li < (uint64_t)n) out[li] = v[ii];
      }
    }
  }
  offset_ += passes * unroll;  // torch advances the Philox offset by counter_offset
  return out;
}

std::unique_ptr<Generator> make_generator(const std::string& kind, uint64_t seed) {
  if (kind == "cpu") return std::make_unique<TorchCpuGenerator>(seed);
  if (kind == "cuda" || kind == "gpu") return std::make_unique<TorchCudaGenerator>(seed);
  return nullptr;
}

}  // namespace sdrt
