// Conformance of the three networks with diffusers' float32 outputs (../shared/conformance), from the
// diffusers folder and from the single-file checkpoint; loading errors for broken models.
#include <fstream>

#include "graph/backend.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;
namespace fs = std::filesystem;

namespace {

constexpr double kTol = 1e-4;

// Checks and prints the relative error, so the log shows how close each case is.
void expect_close(const char* what, const Tensor& out, const Tensor& want, double tol) {
  double e = rel_err(out, want);
  std::printf("      %-22s rel err %.2e (tol %.0e)\n", what, e, tol);
  EXPECT_LT(e, tol) << what;
}

struct Ref {
  SafeTensors st;
  Tensor get(const std::string& n) const {
    const TensorInfo* i = st.find(n);
    EXPECT_NE(i, nullptr) << n;
    return i ? st.tensor(*i) : Tensor();
  }
};

const Ref& ref() {
  static Ref r{SafeTensors::open((tiny_dir() / "reference.safetensors").string()).value()};
  return r;
}

std::vector<Tensor> run(std::shared_ptr<Graph> g, const std::map<std::string, Tensor>& in) {
  auto exe = make_cpu_backend()->compile(g);
  EXPECT_TRUE(exe.is_ok()) << exe.status().message();
  if (!exe) return {};
  auto out = (*exe)->run(in);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  return out ? *out : std::vector<Tensor>{};
}

void check_text_encoder(const Model& m) {
  auto g = build_text_encoder(m, 2);
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  auto out = run(*g, {{"input_ids", to_i32(ref().get("text.input_ids"))}});
  ASSERT_EQ(out.size(), 1u);
  expect_close("text_encoder", out[0], ref().get("text.last_hidden_state"), kTol);
}

void check_unet(const Model& m, int t, double tol = kTol) {
  auto g = build_unet(m, 2, 16, 16);
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  auto out = run(*g, {{"sample", ref().get("unet.sample")},
                      {"timestep", Tensor::from_f32({2}, {(float)t, (float)t})},
                      {"encoder_hidden_states", ref().get("text.last_hidden_state")}});
  ASSERT_EQ(out.size(), 1u);
  const std::string name = "unet_t" + std::to_string(t);
  expect_close(name.c_str(), out[0], ref().get("unet.out_t" + std::to_string(t)), tol);
}

void check_vae(const Model& m) {
  auto dec = build_vae_decoder(m, 1, 16, 16);
  ASSERT_TRUE(dec.is_ok()) << dec.status().message();
  auto img = run(*dec, {{"latent", ref().get("vae.latent")}});
  ASSERT_EQ(img.size(), 1u);
  expect_close("vae_decode", img[0], ref().get("vae.decoded"), kTol);

  auto enc = build_vae_encoder(m, 1, 128, 128);
  ASSERT_TRUE(enc.is_ok()) << enc.status().message();
  auto mom = run(*enc, {{"image", ref().get("vae.image")}});
  ASSERT_EQ(mom.size(), 1u);
  // moments [1, 8, 16, 16]: mean = channels 0-3, logvar = 4-7 clamped to [-30, 20] as diffusers does
  const int64_t half = mom[0].numel() / 2;
  Tensor mean = Tensor::from_f32({1, 4, 16, 16}, std::vector<float>(mom[0].f32(), mom[0].f32() + half));
  std::vector<float> lv(mom[0].f32() + half, mom[0].f32() + 2 * half);
  for (float& v : lv) v = std::clamp(v, -30.f, 20.f);
  expect_close("vae_encode mean", mean, ref().get("vae.encoded_mean"), kTol);
  expect_close("vae_encode logvar", Tensor::from_f32({1, 4, 16, 16}, lv), ref().get("vae.encoded_logvar"), kTol);
}

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SDRT_REQUIRE_CONFORMANCE();
    auto m = load_model((tiny_dir() / GetParam()).string());
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    model_ = std::move(m).value();
  }
  Model model_;
};

}  // namespace

TEST_P(Conformance, TextEncoder) { check_text_encoder(model_); }
TEST_P(Conformance, UNetT999) { check_unet(model_, 999); }
TEST_P(Conformance, UNetT500) { check_unet(model_, 500); }
TEST_P(Conformance, UNetT1) { check_unet(model_, 1); }
TEST_P(Conformance, VaeDecodeEncode) { check_vae(model_); }

INSTANTIATE_TEST_SUITE_P(Layouts, Conformance, ::testing::Values("diffusers", "tiny-sd15.safetensors"),
                         [](const auto& info) { return info.param == "diffusers" ? std::string("Diffusers") : std::string("SingleFile"); });

TEST(Models, SingleFileDetectsTheSameConfig) {
  SDRT_REQUIRE_CONFORMANCE();
  auto a = load_model((tiny_dir() / "diffusers").string());
  auto b = load_model((tiny_dir() / "tiny-sd15.safetensors").string());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(describe(a->unet), describe(b->unet));
  EXPECT_EQ(describe(a->vae), describe(b->vae));
  EXPECT_EQ(describe(a->clip), describe(b->clip));
  EXPECT_EQ(a->unet_w->entries().size(), b->unet_w->entries().size());
  EXPECT_EQ(a->vae_w->entries().size(), b->vae_w->entries().size());
  // betas, alphas_cumprod(_prev), model_ema.decay/num_updates, position_ids
  EXPECT_EQ(b->unused.size(), 6u);
}

namespace {

// A scratch copy of the diffusers folder whose component files can be replaced.
fs::path scratch_model(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("sdrt_model_" + name);
  fs::remove_all(d);
  fs::copy(tiny_dir() / "diffusers", d, fs::copy_options::recursive);
  for (auto& e : fs::recursive_directory_iterator(d)) fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add);
  fs::permissions(d, fs::perms::owner_all, fs::perm_options::add);
  return d;
}

// Rewrites a safetensors file through `edit` (which may drop, rename or replace tensors).
void rewrite(const fs::path& src, const fs::path& dst,
             const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  auto st = SafeTensors::open(src.string());
  ASSERT_TRUE(st.is_ok());
  std::vector<std::pair<std::string, Tensor>> ts;
  for (const auto& i : st->tensors()) {
    Tensor t = st->tensor(i);
    Tensor copy = Tensor::empty(t.dtype(), t.shape());
    std::memcpy(copy.mutable_data(), t.data(), t.nbytes());
    ts.emplace_back(i.name, copy);
  }
  edit(ts);
  fs::remove(dst);
  ASSERT_TRUE(write_safetensors(dst.string(), ts).is_ok());
}

}  // namespace

TEST(Models, LegacyVaeAttentionNames) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = scratch_model("legacy");
  fs::path vf = d / "vae" / "diffusion_pytorch_model.safetensors";
  fs::remove(vf);
  fs::copy_file(tiny_dir() / "vae_legacy_attention_names.safetensors", vf);
  auto m = load_model(d.string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  check_vae(*m);
}

TEST(Models, F16AndBF16WeightsLoad) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = scratch_model("f16");
  fs::path uf = d / "unet" / "diffusion_pytorch_model.safetensors";
  rewrite(tiny_dir() / "diffusers/unet/diffusion_pytorch_model.safetensors", uf, [](auto& ts) {
    for (auto& [n, t] : ts) {
      Tensor h = Tensor::empty(DType::F16, t.shape());
      auto* p = static_cast<uint16_t*>(h.mutable_data());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = float_to_half(t.f32()[i]);
      t = h;
    }
  });
  auto m = load_model(d.string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->unet_w->entries()[0].dtype, DType::F16);
  check_unet(*m, 500, 1e-2);  // weights rounded to half precision
}

TEST(Models, MissingTensorIsAClearError) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = scratch_model("missing");
  fs::path vf = d / "vae" / "diffusion_pytorch_model.safetensors";
  rewrite(tiny_dir() / "diffusers/vae/diffusion_pytorch_model.safetensors", vf, [](auto& ts) {
    std::erase_if(ts, [](const auto& p) { return p.first == "decoder.conv_out.weight"; });
  });
  auto m = load_model(d.string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto g = build_vae_decoder(*m, 1, 16, 16);
  ASSERT_FALSE(g.is_ok());
  EXPECT_NE(g.status().message().find("missing tensor 'decoder.conv_out.weight'"), std::string::npos) << g.status().message();
}

TEST(Models, WrongShapeIsAClearError) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = scratch_model("shape");
  fs::path uf = d / "unet" / "diffusion_pytorch_model.safetensors";
  rewrite(tiny_dir() / "diffusers/unet/diffusion_pytorch_model.safetensors", uf, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "mid_block.resnets.0.conv1.weight") t = Tensor::zeros(DType::F32, {64, 64, 1, 3});
  });
  auto m = load_model(d.string());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto g = build_unet(*m, 1, 16, 16);
  ASSERT_FALSE(g.is_ok());
  EXPECT_NE(g.status().message().find("'mid_block.resnets.0.conv1.weight'"), std::string::npos) << g.status().message();
  EXPECT_NE(g.status().message().find("has shape [64, 64, 1, 3], expected [64, 64, 3, 3]"), std::string::npos) << g.status().message();
}

TEST(Models, FolderWithoutModelIndex) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = scratch_model("noindex");
  fs::remove(d / "model_index.json");
  auto m = load_model(d.string());
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("no model_index.json"), std::string::npos) << m.status().message();
}

TEST(Models, MalformedConfigJson) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path d = scratch_model("badjson");
  std::ofstream(d / "unet" / "config.json") << "{\"block_out_channels\": [32, 64,";
  auto m = load_model(d.string());
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("malformed JSON"), std::string::npos) << m.status().message();
}

TEST(Models, RandomSd15HasTheRealParameterCounts) {
  auto m = load_model("random:sd15@shapes");
  ASSERT_TRUE(m.is_ok());
  auto u = build_unet(*m, 1, 8, 8);
  auto t = build_text_encoder(*m, 1);
  auto v = build_vae_decoder(*m, 1, 8, 8);
  auto e = build_vae_encoder(*m, 1, 64, 64);
  ASSERT_TRUE(u.is_ok() && t.is_ok() && v.is_ok() && e.is_ok()) << u.status().message();
  EXPECT_EQ((*u)->weight_params(), 859520964);  // diffusers' SD 1.5 UNet
  EXPECT_EQ((*t)->weight_params(), 123060480);  // CLIP ViT-L/14 text model
  int64_t vae = 0;
  for (const auto& en : m->vae_w->entries()) vae += numel(en.shape);
  EXPECT_EQ(vae, 83653863);
}

TEST(Models, RandomWeightsAreDeterministic) {
  auto a = load_model("random:sd15");
  auto b = load_model("random:sd15");
  auto ta = a->unet_w->get("conv_in.weight", {320, 4, 3, 3});
  auto tb = b->unet_w->get("conv_in.weight", {320, 4, 3, 3});
  ASSERT_TRUE(ta.is_ok() && tb.is_ok());
  EXPECT_EQ(0, std::memcmp(ta->data(), tb->data(), ta->nbytes()));
  EXPECT_GT(std::fabs(ta->f32()[0]) + std::fabs(ta->f32()[1]), 0.f);
}
