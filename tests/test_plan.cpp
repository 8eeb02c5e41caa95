// Plan files and the engine cache: a plan written and read back holds the same graphs and weights and
// runs to the same outputs; truncated, corrupt, foreign and stale plans are refused with a clear error;
// a pipeline running from a plan gives the image it gives without one. On a GPU: tactics recorded in a
// plan are reused, `sdrt build` + `generate --plan` and the engine cache give the uncached image.
#include <cstring>
#include <fstream>

#include "graph/backend.h"
#include "graph/passes.h"
#include "models/model.h"
#include "pipeline/pipeline.h"
#include "runtime/engine_cache.h"
#include "runtime/plan.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return scratch_file("sdrt_plan_tests", name); }

Model tiny_model() {
  auto m = load_model((tiny_dir() / "diffusers").string());
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return std::move(m).value();
}

std::shared_ptr<Graph> optimized(Result<std::shared_ptr<Graph>> g) {
  EXPECT_TRUE(g.is_ok()) << g.status().message();
  return std::make_shared<Graph>(optimize_graph(**g));
}

std::map<std::string, Tensor> unet_inputs(const Model& m, int64_t B, int64_t h) {
  std::mt19937 rng(11);
  return {{"sample", randn({B, 4, h, h}, rng)},
          {"timestep", Tensor::from_f32({B}, std::vector<float>(B, 321.f))},
          {"encoder_hidden_states", randn({B, 77, m.unet.cross_attention_dim}, rng)}};
}

Tensor run_on(Backend& be, std::shared_ptr<const Graph> g, const std::map<std::string, Tensor>& in) {
  auto e = be.compile(g);
  EXPECT_TRUE(e.is_ok()) << e.status().message();
  if (!e) return {};
  auto o = (*e)->run(in);
  EXPECT_TRUE(o.is_ok()) << o.status().message();
  return o ? (*o)[0] : Tensor();
}

Plan tiny_plan(const Model& m, const std::string& precision) {
  Plan p;
  p.precision = precision;
  p.model_spec = "tiny";
  p.model_id = "tiny-id";
  p.created = utc_now();
  p.shapes = "batch 1; 128x128";
  p.entries.push_back({unet_key(2, 16, 16, 77), optimized(build_unet(m, 2, 16, 16))});
  p.entries.push_back({unet_key(1, 16, 16, 77), optimized(build_unet(m, 1, 16, 16))});  // shares every weight
  return p;
}

Status read_status(const fs::path& p) {
  auto r = read_plan(p.string());
  return r ? Status::ok() : r.status();
}

void expect_refused(const fs::path& p, const std::string& needle) {
  Status s = read_status(p);
  EXPECT_FALSE(s.is_ok()) << p;
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

}  // namespace

TEST(Plan, RoundTripKeepsGraphsAndWeightsAndRunsIdentically) {
  SDRT_REQUIRE_CONFORMANCE();
  const Model m = tiny_model();
  Plan p = tiny_plan(m, "fp32");
  p.tactics = {{"cudnn_conv/n2 c4", "algo=1 workspace=0 ms=0.01000"}};
  const fs::path file = scratch("roundtrip.plan");
  ASSERT_TRUE(write_plan(p, file.string()).is_ok());
  auto r = read_plan(file.string());
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->precision, "fp32");
  EXPECT_EQ(r->model_id, "tiny-id");
  EXPECT_EQ(r->tactics, p.tactics);
  ASSERT_EQ(r->keys(), p.keys());
  // the two graphs share their weights: the file holds them once
  int64_t bytes = 0;
  for (const auto& [n, t] : p.entries[0].graph->weights) bytes += (int64_t)t.nbytes();
  EXPECT_LT((int64_t)fs::file_size(file), bytes + bytes / 5);
  for (size_t k = 0; k < p.entries.size(); ++k) {
    const Graph &a = *p.entries[k].graph, &b = *r->entries[k].graph;
    ASSERT_EQ(a.nodes.size(), b.nodes.size());
    EXPECT_TRUE(std::any_of(b.nodes.begin(), b.nodes.end(), [](const Node& n) { return n.op == Op::Linear && n.a.geglu; }));  // fused GEGLU kept
    EXPECT_TRUE(b.optimized);
    for (size_t i = 0; i < a.nodes.size(); ++i) {
      EXPECT_EQ(a.nodes[i].op, b.nodes[i].op);
      EXPECT_EQ(a.nodes[i].inputs, b.nodes[i].inputs);
      EXPECT_EQ(a.nodes[i].name, b.nodes[i].name);
      EXPECT_EQ(a.nodes[i].a.silu, b.nodes[i].a.silu);
      EXPECT_EQ(a.nodes[i].a.geglu, b.nodes[i].a.geglu);
      EXPECT_EQ(a.nodes[i].shape, b.nodes[i].shape);
      EXPECT_EQ(a.nodes[i].a.eps, b.nodes[i].a.eps);
    }
    ASSERT_EQ(a.weights.size(), b.weights.size());
    for (const auto& [n, t] : a.weights) EXPECT_EQ(std::memcmp(t.data(), b.weights.at(n).data(), t.nbytes()), 0) << n;
  }
  auto cpu = make_cpu_backend();
  const auto in = unet_inputs(m, 2, 16);
  const Tensor want = run_on(*cpu, p.entries[0].graph, in), got = run_on(*cpu, r->entries[0].graph, in);
  ASSERT_EQ(want.shape(), got.shape());
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.nbytes()), 0) << "outputs differ after the round trip";
}

// A batch-split graph (what a CUDA fp16 plan built with SDRT_SPLIT=2 stores): its slices keep their rows
// and dtype through the file and the read-back graph runs to the same output.
TEST(Plan, SplitBatchGraphRoundTrips) {
  SDRT_REQUIRE_CONFORMANCE();
  const Model m = tiny_model();
  Plan p = tiny_plan(m, "fp32");
  int parts = 0;
  p.entries[0].graph = std::make_shared<Graph>(split_batch(*p.entries[0].graph, 2, &parts));
  ASSERT_EQ(parts, 2);
  const fs::path file = scratch("split.plan");
  ASSERT_TRUE(write_plan(p, file.string()).is_ok());
  auto r = read_plan(file.string());
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Graph &a = *p.entries[0].graph, &b = *r->entries[0].graph;
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  int slices = 0;
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    if (a.nodes[i].op != Op::Slice) continue;
    ++slices;
    EXPECT_EQ(b.nodes[i].op, Op::Slice);
    EXPECT_EQ(a.nodes[i].a.dims, b.nodes[i].a.dims);
    EXPECT_EQ(a.nodes[i].dtype, b.nodes[i].dtype);
  }
  EXPECT_EQ(slices, 6);
  EXPECT_EQ(passes::batch_parts(b), passes::batch_parts(a));
  auto cpu = make_cpu_backend();
  const auto in = unet_inputs(m, 2, 16);
  const Tensor want = run_on(*cpu, p.entries[0].graph, in), got = run_on(*cpu, r->entries[0].graph, in);
  ASSERT_EQ(want.shape(), got.shape());
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.nbytes()), 0);
}

TEST(Plan, Fp16PlansHoldHalfWeightsRoundedToNearestEven) {
  SDRT_REQUIRE_CONFORMANCE();
  const Model m = tiny_model();
  Plan p = tiny_plan(m, "fp16");
  const fs::path file = scratch("half.plan");
  ASSERT_TRUE(write_plan(p, file.string()).is_ok());
  auto r = read_plan(file.string());
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  int checked = 0;
  for (const auto& [n, t] : p.entries[0].graph->weights) {
    const Tensor& h = r->entries[0].graph->weights.at(n);
    ASSERT_EQ(h.dtype(), DType::F16) << n;
    const auto* hp = static_cast<const uint16_t*>(h.data());
    for (int64_t i = 0; i < t.numel(); i += 7, ++checked) ASSERT_EQ(hp[i], float_to_half(t.f32()[i])) << n << " [" << i << "]";
  }
  EXPECT_GT(checked, 1000);
}

TEST(Plan, DamagedForeignAndStalePlansAreRefused) {
  SDRT_REQUIRE_CONFORMANCE();
  const Model m = tiny_model();
  Plan p = tiny_plan(m, "fp32");
  p.entries.resize(1);
  const fs::path good = scratch("good.plan"), bad = scratch("bad.plan");
  ASSERT_TRUE(write_plan(p, good.string()).is_ok());
  const std::string bytes = slurp(good);

  spit(bad, bytes.substr(0, bytes.size() / 2));
  expect_refused(bad, "truncated");
  spit(bad, bytes.substr(0, 20));
  expect_refused(bad, "not an sdrt plan");
  spit(bad, "");
  expect_refused(bad, "not an sdrt plan");
  std::string flipped = bytes;
  flipped[bytes.size() * 3 / 4] ^= 0x10;  // one bit in the weights
  spit(bad, flipped);
  expect_refused(bad, "checksum");
  flipped = bytes;
  flipped[40] ^= 0x01;  // one bit in the header JSON
  spit(bad, flipped);
  expect_refused(bad, "checksum");
  std::string magic = bytes;
  magic[0] = 'X';
  spit(bad, magic);
  expect_refused(bad, "not an sdrt plan");
  std::string format = bytes;
  format[8] = 9;  // format 9
  spit(bad, format);
  expect_refused(bad, "plan format 9");
  expect_refused(scratch("missing.plan"), "No such file");

  // a well-formed file whose header is not a plan's
  const std::string header = R"({"engine_version": ")" SDRT_VERSION R"(", "graphs": 7})";
  std::string crafted("SDRTPLAN", 8);
  const uint32_t fmt = kPlanFormat, zero = 0;
  const uint64_t hb = header.size(), db = 0;
  crafted.append((const char*)&fmt, 4).append((const char*)&zero, 4).append((const char*)&hb, 8).append((const char*)&db, 8).append(header);
  crafted.resize((crafted.size() + 63) / 64 * 64, '\0');
  const uint64_t sum = plan_checksum(nullptr, 0, plan_checksum(crafted.data(), crafted.size()));
  crafted.append((const char*)&sum, 8);
  spit(bad, crafted);
  expect_refused(bad, "bad plan header");

  // another engine version
  Plan old = p;
  old.engine_version = "0.0.1-old";
  ASSERT_TRUE(write_plan(old, bad.string()).is_ok());
  expect_refused(bad, "built by sdrt 0.0.1-old");

  // another GPU
  Plan a10 = p;
  a10.target = {"NVIDIA A10", 8, 6, "cuDNN 9.1.0"};
  Status s = check_plan_target(a10, {"NVIDIA H100 80GB HBM3", 9, 0, "cuDNN 9.19.0"});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("built for NVIDIA A10 (sm_86), this GPU is NVIDIA H100 80GB HBM3 (sm_90)"), std::string::npos) << s.message();
  EXPECT_TRUE(check_plan_target(a10, {"NVIDIA A10", 8, 6, "cuDNN 9.2.0"}).is_ok());
}

TEST(Plan, EngineCacheNamesDependOnEverythingCompiledCodeDependsOn) {
  auto cpu = make_cpu_backend();
  const std::string a = engine_cache_path("/c", *cpu, "model-a", unet_key(2, 64, 64, 77));
  EXPECT_EQ(a, engine_cache_path("/c", *cpu, "model-a", unet_key(2, 64, 64, 77)));
  EXPECT_NE(a, engine_cache_path("/c", *cpu, "model-b", unet_key(2, 64, 64, 77)));
  EXPECT_NE(a, engine_cache_path("/c", *cpu, "model-a", unet_key(4, 64, 64, 77)));
  EXPECT_EQ(fs::path(a).parent_path(), fs::path("/c"));
  EXPECT_TRUE(fs::path(a).filename().string().starts_with("unet_2x64x64_77-fp32-")) << a;
  // a model file's identity changes when the file does
  const fs::path f = scratch("model.safetensors");
  spit(f, "one");
  const std::string id1 = model_identity(f.string());
  spit(f, "three");
  EXPECT_NE(id1, model_identity(f.string()));
  EXPECT_EQ(model_identity("random:sd15"), "random:sd15");
}

TEST(Plan, PipelineFromAPlanGivesTheSameImage) {
  SDRT_REQUIRE_CONFORMANCE();
  auto make = [](std::shared_ptr<const Plan> plan) {
    PipelineOptions o;
    o.tokenizer_dir = (tiny_dir() / "diffusers/tokenizer").string();
    o.scheduler_config = (tiny_dir() / "diffusers/scheduler/scheduler_config.json").string();
    o.plan = std::move(plan);
    auto p = Pipeline::create(tiny_model(), o, make_cpu_backend());
    EXPECT_TRUE(p.is_ok()) << p.status().message();
    return std::move(p).value();
  };
  GenerateRequest r;
  r.prompt = "a red cube";
  r.width = r.height = 128;
  r.steps = 3;
  r.seed = 5;
  auto plain = make(nullptr)->generate(r);
  ASSERT_TRUE(plain.is_ok()) << plain.status().message();

  const Model m = tiny_model();
  Plan p;
  p.precision = "fp32";  // the CPU backend's; its target is empty
  p.entries.push_back({text_encoder_key(1), optimized(build_text_encoder(m, 1, 1))});
  p.entries.push_back({unet_key(2, 16, 16, 77), optimized(build_unet(m, 2, 16, 16))});
  p.entries.push_back({vae_decoder_key(1, 16, 16), optimized(build_vae_decoder(m, 1, 16, 16))});
  const fs::path file = scratch("pipeline.plan");
  ASSERT_TRUE(write_plan(p, file.string()).is_ok());
  auto loaded = read_plan(file.string());
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
  auto pipe = make(std::make_shared<const Plan>(std::move(loaded).value()));
  auto fromplan = pipe->generate(r);
  ASSERT_TRUE(fromplan.is_ok()) << fromplan.status().message();
  ASSERT_EQ(fromplan->images.size(), 1u);
  const Tensor &x = plain->latents[0], &y = fromplan->latents[0];
  EXPECT_LT(rel_err(y, x), 1e-5);  // fused graphs on both sides differ only in summation order
  // that plan holds the whole-batch UNet (as plans written before the guided form did), which runs; a
  // plan with the guided UNet (what `sdrt build` writes) gives the same image
  p.entries[1] = {guided_unet_key(1, 16, 16, 77), optimized(build_guided_unet(m, 1, 16, 16))};
  const fs::path file2 = scratch("pipeline-guided.plan");
  ASSERT_TRUE(write_plan(p, file2.string()).is_ok());
  auto loaded2 = read_plan(file2.string());
  ASSERT_TRUE(loaded2.is_ok()) << loaded2.status().message();
  auto guided = make(std::make_shared<const Plan>(std::move(loaded2).value()))->generate(r);
  ASSERT_TRUE(guided.is_ok()) << guided.status().message();
  EXPECT_LT(rel_err(guided->latents[0], x), 1e-5);
  // a size the plan does not hold is an error naming what it holds
  r.width = 192;
  auto missing = pipe->generate(r);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("has no engine for unet/2x16x24/77"), std::string::npos) << missing.status().message();
  EXPECT_NE(missing.status().message().find("sdrt build"), std::string::npos);
  // without guidance the one-pass UNet is asked for, which `sdrt build --guidance none` makes
  r.width = 128;
  r.cfg_scale = 1.0;
  missing = pipe->generate(r);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("has no engine for unet/1x16x16/77"), std::string::npos) << missing.status().message();
  EXPECT_NE(missing.status().message().find("--guidance none"), std::string::npos) << missing.status().message();
}

TEST(Plan, CudaPlanReusesTacticsAndGivesTheSameOutput) {
  SDRT_REQUIRE_CONFORMANCE();
  CudaOptions o;
  o.precision = "fp16";
  std::string why;
  auto first = make_cuda_backend(o, &why);
  if (!first) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  const Model m = tiny_model();
  auto g = first->optimize(*build_unet(m, 2, 16, 16));
  const auto in = unet_inputs(m, 2, 16);
  const Tensor want = run_on(*first, g, in);
  Plan p;
  p.target = backend_target(*first);
  p.precision = "fp16";
  p.tactics = first->tactics(g.get());
  EXPECT_GT(p.tactics.size(), 5u);
  p.entries.push_back({unet_key(2, 16, 16, 77), std::const_pointer_cast<Graph>(g)});
  const fs::path file = scratch("cuda.plan");
  ASSERT_TRUE(write_plan(p, file.string()).is_ok());
  auto r = read_plan(file.string());
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_TRUE(check_plan_target(*r, backend_target(*first)).is_ok());
  first.reset();
  auto second = make_cuda_backend(o, &why);
  ASSERT_TRUE(second);
  ASSERT_TRUE(second->add_tactics(r->tactics).is_ok());
  EXPECT_FALSE(second->add_tactics({{"cudnn_conv/x", "algo=99 workspace=0 ms=1"}}).is_ok());
  EXPECT_FALSE(second->add_tactics({{"conv_form/x", "winograd"}}).is_ok());  // cudnn, im2col-gemm or cudnn-fused only
  EXPECT_FALSE(second->add_tactics({{"geglu_form/x", "fastest"}}).is_ok());  // split or a fused kernel's exact form only
  if (cuda_geglu_gemm_forms() > 0) EXPECT_TRUE(second->add_tactics({{"geglu_form/x", cuda_geglu_gemm_form_name(0)}}).is_ok());
  const Tensor got = run_on(*second, r->entries[0].graph, in);
  // taken, not timed afresh: the same algorithm for every shape (the workspace may be re-sized)
  auto algos = [](const std::map<std::string, std::string>& t) {
    std::map<std::string, std::string> a;
    for (const auto& [k, v] : t) a[k] = v.substr(0, v.find(' '));
    return a;
  };
  EXPECT_EQ(algos(second->tactics(r->entries[0].graph.get())), algos(r->tactics));
  const double e = rel_err(got, want);
  std::printf("      cuda fp16 from plan vs direct rel err %.2e\n", e);
  EXPECT_LT(e, 1e-6);
}

TEST(Plan, CudaBuildGenerateAndEngineCacheGiveTheUncachedImage) {
  SDRT_REQUIRE_CONFORMANCE();
  std::string why;
  if (!make_cuda_backend({}, &why)) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  const fs::path d = scratch("cli");
  fs::remove_all(d);
  fs::create_directories(d);
  setenv("SDRT_HOME", (d / "home").c_str(), 1);
  const std::string model = (tiny_dir() / "diffusers").string();
  const std::string gen = "generate --backend cuda --model " + model + " --prompt 'a red cube' --seed 7 --steps 5 -W 128 -H 128 ";
  CliRun plain = sdrt_cli(gen + "--no-engine-cache -o " + (d / "plain").string());
  ASSERT_EQ(plain.code, 0) << plain.out;
  CliRun build = sdrt_cli("build --model " + model + " -o " + (d / "tiny.plan").string() + " -H 128 -W 128 --timing-cache " + (d / "timing.json").string());
  ASSERT_EQ(build.code, 0) << build.out;
  std::printf("%s", build.out.c_str());
  EXPECT_NE(build.out.find("timed"), std::string::npos);
  CliRun rebuild = sdrt_cli("build --model " + model + " -o " + (d / "tiny2.plan").string() + " -H 128 -W 128 --timing-cache " + (d / "timing.json").string());
  ASSERT_EQ(rebuild.code, 0) << rebuild.out;
  EXPECT_NE(rebuild.out.find(" 0 timed"), std::string::npos) << rebuild.out;  // all from the timing cache
  CliRun info = sdrt_cli("info " + (d / "tiny.plan").string());
  EXPECT_EQ(info.code, 0) << info.out;
  EXPECT_NE(info.out.find("unet/2x16x16/77"), std::string::npos) << info.out;
  CliRun withplan = sdrt_cli("generate --plan " + (d / "tiny.plan").string() + " --prompt 'a red cube' --seed 7 --steps 5 -W 128 -H 128 -o " + (d / "plan").string());
  ASSERT_EQ(withplan.code, 0) << withplan.out;
  // --guidance none adds the one-pass UNet (a guidance scale of 1 or less), which the plan then serves
  CliRun both = sdrt_cli("build --model " + model + " -o " + (d / "both.plan").string() + " -H 128 -W 128 --guidance cfg,none --timing-cache " +
                         (d / "timing.json").string());
  ASSERT_EQ(both.code, 0) << both.out;
  EXPECT_NE(both.out.find("unet/1x16x16/77 "), std::string::npos) << both.out;
  CliRun nocfg = sdrt_cli("generate --plan " + (d / "both.plan").string() + " --prompt 'a red cube' --seed 7 --steps 5 -W 128 -H 128 --cfg-scale 1 -o " +
                          (d / "nocfg").string());
  ASSERT_EQ(nocfg.code, 0) << nocfg.out;
  CliRun cold = sdrt_cli(gen + "-o " + (d / "cold").string());
  ASSERT_EQ(cold.code, 0) << cold.out;
  EXPECT_NE(cold.out.find("built the unet/2x16x16/77/cfg engine"), std::string::npos) << cold.out;
  CliRun warm = sdrt_cli(gen + "-o " + (d / "warm").string());
  ASSERT_EQ(warm.code, 0) << warm.out;
  EXPECT_EQ(warm.out.find("built the"), std::string::npos) << warm.out;  // every engine from the cache
  // Each process times the convolution algorithms afresh unless it reads them from a plan, and another
  // algorithm rounds differently in fp16: runs with their own timings agree within 1/255; a run on the
  // cache's engines is the run that built them, bit for bit.
  const std::string want = png_pixels(d / "plain" / "00000-7.png");
  ASSERT_EQ(want.size(), 128u * 128 * 3);
  auto mae = [&](const char* run) {
    const std::string got = png_pixels(d / run / "00000-7.png");
    if (got.size() != want.size()) return 255.0;
    double s = 0;
    for (size_t i = 0; i < got.size(); ++i) s += std::abs((int)(uint8_t)got[i] - (int)(uint8_t)want[i]);
    std::printf("      %-6s vs uncached: MAE %.4f/255\n", run, s / got.size());
    return s / got.size();
  };
  for (const char* run : {"plan", "cold", "warm"}) EXPECT_LE(mae(run), 1.0) << run;
  EXPECT_TRUE(png_pixels(d / "warm" / "00000-7.png") == png_pixels(d / "cold" / "00000-7.png")) << "the cached engines differ from the ones built";
  // a damaged cache entry is rebuilt, not run
  for (const auto& e : fs::directory_iterator(d / "home" / "engines"))
    if (e.path().filename().string().starts_with("unet")) fs::resize_file(e.path(), fs::file_size(e.path()) / 2);
  CliRun healed = sdrt_cli(gen + "-o " + (d / "healed").string());
  ASSERT_EQ(healed.code, 0) << healed.out;
  EXPECT_NE(healed.out.find("truncated"), std::string::npos) << healed.out;
  EXPECT_LE(mae("healed"), 1.0);
  unsetenv("SDRT_HOME");
}
