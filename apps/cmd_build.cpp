// `sdrt build`: compiles a model into a plan for this GPU (the TensorRT builder's job): the graphs the
// pipeline runs for the requested batch sizes and image sizes, after the build passes, with every
// convolution's algorithm timed on the GPU, and their weights in the engine's precision. A timing
// cache file (--timing-cache) keeps the timings so that rebuilds skip them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "graph/passes.h"
#include "pipeline/resolve.h"
#include "runtime/engine_cache.h"

namespace sdrt::app {
namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

int fail(const Status& s) {
  std::fprintf(stderr, "sdrt: error: %s\n", s.message().c_str());
  return 1;
}

double since(clk::time_point t) { return std::chrono::duration<double>(clk::now() - t).count(); }

// Timing cache: {"format": 1, "device", "compute_capability", "libraries", "precision", "tactics": {}}.
// One for another GPU or library version is ignored with a note (its timings do not hold here).
std::map<std::string, std::string> read_timing_cache(const std::string& path, const PlanTarget& here, const std::string& precision) {
  std::error_code ec;
  if (path.empty() || !fs::exists(path, ec)) return {};
  try {
    std::ifstream f(path);
    const json j = json::parse(f);
    if (j.at("format").get<int>() != 1) throw std::runtime_error("unknown format");
    if (j.at("device").get<std::string>() != here.device || j.at("libraries").get<std::string>() != here.libraries ||
        j.at("precision").get<std::string>() != precision) {
      std::fprintf(stderr, "sdrt: note: the timing cache %s is for %s (%s, %s); timing afresh\n", path.c_str(), j.at("device").get<std::string>().c_str(),
                   j.at("libraries").get<std::string>().c_str(), j.at("precision").get<std::string>().c_str());
      return {};
    }
    return j.at("tactics").get<std::map<std::string, std::string>>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sdrt: note: ignoring the timing cache %s (%s)\n", path.c_str(), e.what());
    return {};
  }
}

Status write_timing_cache(const std::string& path, const PlanTarget& here, const std::string& precision, const std::map<std::string, std::string>& t) {
  const json j = {{"format", 1}, {"device", here.device}, {"compute_capability", {here.cc_major, here.cc_minor}},
                  {"libraries", here.libraries}, {"precision", precision}, {"tactics", t}};
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << j.dump(1) << "\n";
    if (!f) return io_error("cannot write the timing cache " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return io_error("cannot write the timing cache " + path + ": " + ec.message());
  return Status::ok();
}

const char* cudnn_algo_name(int a) {
  static const char* names[] = {"implicit_gemm", "implicit_precomp_gemm", "gemm", "direct", "fft", "fft_tiling", "winograd", "winograd_nonfused"};
  return a >= 0 && a < 8 ? names[a] : "other";
}

}  // namespace

int cmd_build(const BuildArgs& a) {
  auto t_all = clk::now();
  if (a.batches.empty() || a.heights.empty() || a.widths.empty() || a.clip_skips.empty())
    return fail(invalid_argument("--batch, --height, --width and --clip-skip need at least one value"));
  for (int b : a.batches)
    if (b < 1 || b > kMaxBatch) return fail(invalid_argument("batch sizes must be between 1 and " + std::to_string(kMaxBatch) + ", got " + std::to_string(b)));
  for (const auto* v : {&a.heights, &a.widths})
    for (int s : *v)
      if (s < 64 || s > kMaxSide || s % 8)
        return fail(invalid_argument("image sizes must be multiples of 8 between 64 and " + std::to_string(kMaxSide) + ", got " + std::to_string(s)));
  if (a.precision != "fp16" && a.precision != "fp32") return fail(invalid_argument("--precision takes fp16 or fp32, got '" + a.precision + "'"));
  if (a.guidance.empty()) return fail(invalid_argument("--guidance needs at least one of cfg and none"));
  for (const auto& gm : a.guidance)
    if (gm != "cfg" && gm != "none") return fail(invalid_argument("--guidance takes cfg and/or none, got '" + gm + "'"));
  if (a.out.empty()) return fail(invalid_argument("--out PLAN is required"));

  CudaOptions o;
  o.precision = a.precision;
  std::string why;
  auto be = make_cuda_backend(o, &why);
  if (!be) return fail(unsupported("sdrt build makes plans for the CUDA backend, which is unavailable here: " + why));
  ResolveOptions ro;
  ro.download.progress = true;
  auto rm = resolve_model(a.model, ro);
  if (!rm) return fail(rm.status());
  for (int cs : a.clip_skips)
    if (cs < 1 || cs > rm->model.clip.layers) return fail(invalid_argument("clip skip must be between 1 and " + std::to_string(rm->model.clip.layers)));

  const PlanTarget here = backend_target(*be);
  const auto seeded = read_timing_cache(a.timing_cache, here, a.precision);
  if (Status s = be->add_tactics(seeded); !s) return fail(s.with_context("timing cache " + a.timing_cache));

  Plan plan;
  std::error_code ec0;
  plan.target = here;
  plan.precision = a.precision;
  plan.model_spec = fs::exists(a.model, ec0) ? fs::absolute(a.model, ec0).string() : a.model;
  plan.model_id = rm->options.model_id;
  plan.created = utc_now();
  std::string shapes = "batch";
  for (size_t i = 0; i < a.batches.size(); ++i) shapes += (i ? "," : " ") + std::to_string(a.batches[i]);
  shapes += "; height";
  for (size_t i = 0; i < a.heights.size(); ++i) shapes += (i ? "," : " ") + std::to_string(a.heights[i]);
  shapes += "; width";
  for (size_t i = 0; i < a.widths.size(); ++i) shapes += (i ? "," : " ") + std::to_string(a.widths[i]);
  plan.shapes = shapes;

  std::vector<std::pair<std::string, std::function<Result<std::shared_ptr<Graph>>()>>> todo;
  const Model& m = rm->model;
  for (int cs : a.clip_skips) todo.push_back({text_encoder_key(cs), [&m, cs] { return build_text_encoder(m, 1, cs); }});
  for (int H : a.heights)
    for (int W : a.widths)
      for (int b : a.batches) {
        const int64_t h = H / 8, w = W / 8;
        auto add = [&](const std::string& key, std::function<Result<std::shared_ptr<Graph>>()> fn) {  // each engine once
          if (std::none_of(todo.begin(), todo.end(), [&](const auto& t) { return t.first == key; })) todo.push_back({key, std::move(fn)});
        };
        for (const auto& gm : a.guidance) {
          if (gm == "cfg")  // both CFG halves, sharing what depends only on the latents and timestep
            add(guided_unet_key(b, h, w, 77), [&m, b, h, w] { return build_guided_unet(m, b, h, w, 77); });
          else  // guidance scale <= 1: the conditional pass alone
            add(unet_key(b, h, w, 77), [&m, b, h, w] { return build_unet(m, b, h, w, 77); });
        }
        const int64_t s = vae_slice(b);  // what the pipeline decodes per call
        add(vae_decoder_key(s, h, w), [&m, s, h, w] { return build_vae_decoder(m, s, h, w); });
      }

  std::printf("building a %s plan of %s for %s (sm_%d%d; %s)\n", a.precision.c_str(), a.model.c_str(), here.device.c_str(), here.cc_major,
              here.cc_minor, here.libraries.c_str());
  int gn_silu = 0, gn_add = 0, packed_temb = 0, residual = 0, flash = 0, materialized = 0, convs = 0, linears = 0, geglu = 0, phases = 0;
  int base2 = 0;  // attentions whose softmax scale pass fold_attention_scale moved into the query projection (scale ln 2)
  for (auto& [key, build] : todo) {
    auto t0 = clk::now();
    auto g0 = build();
    if (!g0) return fail(g0.status().with_context(key));
    std::shared_ptr<const Graph> g = be->optimize(*g0);
    auto exe = be->compile(g);  // convolution algorithms are timed here
    if (!exe) return fail(exe.status().with_context(key));
    const int64_t workspace = (*exe)->workspace_bytes();
    exe->reset();
    for (const auto& [k, v] : be->tactics(g.get())) plan.tactics[k] = v;
    for (const Node& n : g->nodes) {
      gn_silu += n.op == Op::GroupNorm && n.a.silu;
      gn_add += n.op == Op::GroupNorm && n.inputs.size() == 4;
      packed_temb += n.op == Op::GroupNorm && n.inputs.size() == 4 && !n.a.dims.empty();
      residual += (n.op == Op::Conv2d || n.op == Op::Linear) && n.inputs.size() == 4;
      convs += n.op == Op::Conv2d;
      linears += n.op == Op::Linear;
      geglu += n.op == Op::Linear && n.a.geglu;
      phases += n.op == Op::Conv2d && n.a.up2;
      if (n.op == Op::Attention) {
        base2 += n.a.scale == kBase2AttentionScale;
        std::vector<const Shape*> shapes;
        for (int i : n.inputs) shapes.push_back(&g->nodes[i].shape);
        const auto av = attention_views(shapes);
        const int64_t D = av.is_ok() ? av->HD / n.a.heads : 0, Dv = av.is_ok() ? av->HDv / n.a.heads : -1;
        (a.precision == "fp16" && D == Dv && D <= 160 ? flash : materialized) += 1;
      }
    }
    int parts = 0;  // batch parts run side by side (SDRT_SPLIT)
    for (int pt : passes::batch_parts(*g)) parts = std::max(parts, pt + 1);
    std::printf("  %-22s %5zu nodes  %6.1f GFLOP  workspace %6.1f MiB  %6.2f s%s\n", key.c_str(), g->nodes.size(), g->flops() / 1e9,
                workspace / 1048576.0, since(t0), parts > 1 ? ("  batch in " + std::to_string(parts) + " parts side by side").c_str() : "");
    std::fflush(stdout);
    plan.entries.push_back({key, std::const_pointer_cast<Graph>(g)});
  }
  auto tw = clk::now();
  if (Status s = write_plan(plan, a.out); !s) return fail(s);
  std::error_code ec;
  const double mib = fs::file_size(a.out, ec) / 1048576.0;
  const double write_s = since(tw);

  int conv_n = 0, conv_cached = 0, gemm_n = 0, gemm_cached = 0, as_gemm = 0, as_fused = 0, as_graph = 0, geglu_n = 0, geglu_fused = 0, split_n = 0,
      split_parts = 0, attn_n = 0, attn_pipe = 0, attn_e16 = 0, attn_s16 = 0, attn_small = 0;
  std::map<std::string, int> gn_forms;  // GroupNorm shapes by the form timed fastest
  std::map<std::string, int> algos;
  for (const auto& [k, v] : plan.tactics) {
    const bool cached = seeded.count(k) > 0;
    if (k.rfind("conv_form/", 0) == 0) {  // cuDNN, im2col + GEMM, cuDNN's fused call or graph, timed per shape
      as_gemm += v == "im2col-gemm";
      as_fused += v == "cudnn-fused";
      as_graph += v == "cudnn-graph";
      continue;
    }
    if (k.rfind("conv_graph/", 0) == 0) continue;  // the graph form's engine configuration
    if (k.rfind("geglu_form/", 0) == 0) {  // the fused GEGLU kernel or GEMM + GEGLU pass, timed per shape
      ++geglu_n;
      geglu_fused += v != "split";
      continue;
    }
    if (k.rfind("attn_form/", 0) == 0) {  // the Hopper attention kernel, kept or pipelined, FP16 exponentials or scores or not
      ++attn_n;
      attn_pipe += v.rfind("pipe", 0) == 0;
      attn_e16 += v.size() > 4 && v.compare(v.size() - 4, 4, "-e16") == 0;
      attn_s16 += v.size() > 4 && v.compare(v.size() - 4, 4, "-s16") == 0;
      attn_small += v == "rows32" || v == "rows16" || v == "ks4" || v == "ks2";
      continue;
    }
    if (k.rfind("gn_form/", 0) == 0) {  // three passes, the one-pass kernel or clusters, timed per shape
      ++gn_forms[v];
      continue;
    }
    if (k.rfind("batch_split/", 0) == 0) {  // SDRT_SPLIT=auto: whether the graph runs its batch in parts
      ++split_n;
      split_parts += v != "1";
      continue;
    }
    if (k.rfind("lt_gemm/", 0) == 0) {
      ++gemm_n;
      gemm_cached += cached;
      continue;
    }
    ++conv_n;
    conv_cached += cached;
    int algo = -1;
    std::sscanf(v.c_str(), "algo=%d", &algo);
    algos[cudnn_algo_name(algo)] += 1;
  }
  std::printf("tactics: %d convolution shapes (%d from the timing cache, %d timed):", conv_n, conv_cached, conv_n - conv_cached);
  for (const auto& [name, n] : algos) std::printf(" %s %d", name.c_str(), n);
  std::printf("; %d of them run as im2col + cuBLASLt GEMM, %d as cuDNN's fused convolution + bias + residual", as_gemm, as_fused);
  if (as_graph) std::printf(", %d as one cuDNN operation graph", as_graph);
  std::printf(" (faster there)");
  std::printf("; %d GEMM shapes (%d from the timing cache, %d timed)", gemm_n, gemm_cached, gemm_n - gemm_cached);
  if (geglu_n) std::printf("; %d GEGLU projection shapes, %d of them as one fused kernel (faster there)", geglu_n, geglu_fused);
  if (attn_n)
    std::printf("; %d attention shapes, %d of them on the pipelined kernel, %d with FP16 scores, %d with FP16 exponentials, %d in blocks of 32 or 16 rows "
                "(faster there)",
                attn_n, attn_pipe, attn_s16, attn_e16, attn_small);
  if (!gn_forms.empty()) {
    std::printf("; GroupNorm shapes by form:");
    for (const auto& [form, n] : gn_forms) std::printf(" %s %d", form.c_str(), n);
  }
  if (split_n) std::printf("; %d graphs timed whole and in batch parts, %d of them split (faster there)", split_n, split_parts);
  std::printf("\nops: %d convolutions, %d linear layers (cuBLASLt), attention %d flash / %d materialized (%d with the scale folded into q); fused: %d GroupNorm+SiLU, %d residual adds, %d time embeddings into GroupNorm (%d of their projections packed), %d GEGLU projections, %d upsamplers as 2x2 phase convolutions\n",
              convs, linears, flash, materialized, base2, gn_silu, residual, gn_add, packed_temb, geglu, phases);
  if (!a.timing_cache.empty()) {
    auto all = seeded;
    for (const auto& [k, v] : be->tactics(nullptr)) all[k] = v;
    if (Status s = write_timing_cache(a.timing_cache, here, a.precision, all); !s) return fail(s);
    std::printf("timing cache: %s (%zu entries)\n", a.timing_cache.c_str(), all.size());
  }
  std::printf("wrote %s (%.0f MiB, %zu engines, written in %.1f s); build took %.1f s\n", a.out.c_str(), mib, plan.entries.size(), write_s, since(t_all));
  return 0;
}

int cmd_info_plan(const std::string& path) {
  auto p = read_plan(path);
  if (!p) return fail(p.status());
  std::printf("plan:         %s\n", path.c_str());
  std::printf("engine:       sdrt %s, plan format %u, built %s\n", p->engine_version.c_str(), kPlanFormat, p->created.c_str());
  std::printf("target:       %s (sm_%d%d; %s)\n", p->target.device.c_str(), p->target.cc_major, p->target.cc_minor, p->target.libraries.c_str());
  std::printf("precision:    %s\n", p->precision.c_str());
  std::printf("model:        %s\n", p->model_spec.c_str());
  std::printf("shapes:       %s\n", p->shapes.c_str());
  std::printf("tactics:      %zu\n", p->tactics.size());
  for (const auto& e : p->entries)
    std::printf("engine:       %-22s %5zu nodes, %zu weights, %.1f GFLOP%s\n", e.key.c_str(), e.graph->nodes.size(), e.graph->weights.size(),
                e.graph->flops() / 1e9, e.key.ends_with("/cfg") ? " (guidance halves sharing their prefix)" : "");
  return 0;
}

}  // namespace sdrt::app
