// Random numbers that match PyTorch bit for bit (up to float rounding of log/sin/cos):
//  - torch.randn from a CPU generator (MT19937): what diffusers users seed;
//  - torch.randn from a CUDA generator (Philox4x32-10, curand_normal4 in torch's grid-stride layout):
//    what the AUTOMATIC1111 WebUI's default "GPU" seed gives. Computed on the host, so any backend and
//    any machine reproduces it.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace sdrt {

class Generator {
 public:
  virtual ~Generator() = default;
  // n standard normals, advancing the generator as torch.randn(n) would.
  virtual std::vector<float> randn(int64_t n) = 0;
};

class TorchCpuGenerator : public Generator {
 public:
  explicit TorchCpuGenerator(uint64_t seed) : engine_((uint32_t)seed) {}
  std::vector<float> randn(int64_t n) override;

 private:
  float uniform24() { return (float)(engine_() & 0xFFFFFFu) * (1.f / 16777216.f); }
  double uniform53();
  std::mt19937 engine_;
  bool have_cached_ = false;
  double cached_ = 0;
};

class TorchCudaGenerator : public Generator {
 public:
  // sm_count: the device's multiprocessor count, which sets torch's grid for tensors above
  // 256 * 8 * sm_count elements (never for SD latents); 132 is the H100 SXM.
  explicit TorchCudaGenerator(uint64_t seed, int sm_count = 132) : seed_(seed), sm_count_(sm_count) {}
  std::vector<float> randn(int64_t n) override;

 private:
  uint64_t seed_, offset_ = 0;
  int sm_count_;
};

// "cpu" or "cuda"; nullptr for anything else.
std::unique_ptr<Generator> make_generator(const std::string& kind, uint64_t seed);

}  // namespace sdrt
