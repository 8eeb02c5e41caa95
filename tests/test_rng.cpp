// torch.randn reproduced for CPU (MT19937) and CUDA (Philox) generators against ../shared/conformance/randn.
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "pipeline/rng.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;

namespace {
double max_abs_diff(const std::vector<float>& a, const Tensor& ref, double* max_ref) {
  double md = 0, mr = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    md = std::max(md, (double)std::fabs(a[i] - ref.f32()[i]));
    mr = std::max(mr, (double)std::fabs(ref.f32()[i]));
  }
  *max_ref = mr;
  return md;
}
}  // namespace

TEST(Rng, MatchesTorchRandnForEveryReferenceCase) {
  const auto dir = conformance_dir();
  if (!std::filesystem::exists(dir / "randn.safetensors")) GTEST_SKIP() << "no " << dir / "randn.safetensors";
  auto st = SafeTensors::open((dir / "randn.safetensors").string());
  ASSERT_TRUE(st.is_ok());
  auto cases = nlohmann::json::parse(std::ifstream(dir / "randn.json"));
  int checked = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"];
    const std::string device = c["device"];
    const uint64_t seed = c["seed"];
    int64_t n = 1;
    for (int64_t d : c["shape"]) n *= d;
    if (name.find(" then ") != std::string::npos) {
      // two consecutive draws from one generator
      auto g = make_generator(device, seed);
      for (const char* part : {"cpu_seed7_seq0_1x4x16x16", "cpu_seed7_seq1_1x4x16x16"}) {
        const TensorInfo* info = st->find(part);
        ASSERT_NE(info, nullptr) << part;
        double mr, md = max_abs_diff(g->randn(n), st->tensor(*info), &mr);
        EXPECT_LT(md / mr, 1e-6) << part;
        ++checked;
      }
      continue;
    }
    const TensorInfo* info = st->find(name);
    ASSERT_NE(info, nullptr) << name;
    auto g = make_generator(device, seed);
    double mr, md = max_abs_diff(g->randn(n), st->tensor(*info), &mr);
    EXPECT_LT(md / mr, 1e-6) << name << " max abs diff " << md;
    ++checked;
  }
  std::printf("      %d randn cases checked\n", checked);
  EXPECT_GE(checked, 40);
}

TEST(Rng, CudaGeneratorAdvancesItsOffset) {
  TorchCudaGenerator g(3);
  auto a = g.randn(1024), b = g.randn(1024);
  EXPECT_NE(a, b);
  TorchCudaGenerator h(3);
  EXPECT_EQ(h.randn(1024), a);
}
