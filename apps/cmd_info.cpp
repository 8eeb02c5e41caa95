// `sdrt info MODEL`: what the loader detected, without running anything.
#include <cstdio>
#include <map>

#include "commands.h"
#include "backends/cuda/device_info.h"
#include "models/model.h"
#include "pipeline/resolve.h"

namespace sdrt::app {
namespace {

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

void component(const char* label, const std::string& arch, const WeightSource& w) {
  int64_t params = 0;
  std::map<std::string, int64_t> by_dtype;
  auto entries = w.entries();
  for (const auto& e : entries) {
    params += numel(e.shape);
    by_dtype[dtype_name(e.dtype)] += numel(e.shape);
  }
  std::string dt;
  for (const auto& [k, v] : by_dtype) dt += (dt.empty() ? "" : ", ") + k + " " + with_commas(v);
  std::printf("%-13s %s\n%-13s %s parameters in %zu tensors (%s)\n", label, arch.c_str(), "", with_commas(params).c_str(),
              entries.size(), dt.c_str());
}

}  // namespace

int cmd_info(const std::string& spec) {
  // Synthetic models hand out weights as graphs ask for them: build each graph shape-only to count.
  const bool synthetic = spec.starts_with("random:");
  auto m = load_model(synthetic ? spec + "@shapes" : spec);
  if (!m) {
    std::fprintf(stderr, "sdrt: error: %s\n", m.status().message().c_str());
    return 1;
  }
  if (synthetic) {
    for (auto st : {build_text_encoder(*m, 1).status(), build_unet(*m, 1, 8, 8).status(), build_vae_decoder(*m, 1, 8, 8).status(),
                    build_vae_encoder(*m, 1, 64, 64).status()})
      if (!st) {
        std::fprintf(stderr, "sdrt: error: %s\n", st.message().c_str());
        return 1;
      }
  }
  std::printf("model:        %s\nlayout:       %s\n", spec.c_str(), m->layout.c_str());
  std::printf("architecture: %s\n", m->unet.cross_attention_dim == 768 ? "Stable Diffusion 1.x"
                                    : m->unet.cross_attention_dim == 1024 ? "Stable Diffusion 2.x"
                                                                          : "Stable Diffusion 1.x-shaped (test size)");
  component("text encoder:", describe(m->clip), *m->clip_w);
  component("unet:", describe(m->unet), *m->unet_w);
  component("vae:", describe(m->vae), *m->vae_w);
  if (!m->unused.empty()) {
    std::string names;
    for (size_t i = 0; i < m->unused.size() && i < 6; ++i) names += (i ? ", " : "") + m->unused[i];
    std::printf("unused:       %zu entries no network reads (%s%s)\n", m->unused.size(), names.c_str(), m->unused.size() > 6 ? ", ..." : "");
  }
  std::string why;
  auto gpus = list_gpus(&why);
  if (gpus.empty()) std::printf("gpus:         none (%s)\n", why.c_str());
  for (const auto& g : gpus)
    std::printf("gpu %d:        %s, sm_%d%d, %.1f GiB\n", g.index, g.name.c_str(), g.cc_major, g.cc_minor, g.total_bytes / 1073741824.0);
  return 0;
}

// `sdrt pull MODEL`: resolve (download a hub id once into $SDRT_HOME, with the tokenizer) and load it, so
// that a later `serve`/`generate` of the same spec starts without network access.
int cmd_pull(const std::string& spec, const std::string& tokenizer_dir) {
  ResolveOptions ro;
  ro.tokenizer_dir = tokenizer_dir;
  ro.download.progress = true;
  auto rm = resolve_model(spec, ro);
  if (!rm) {
    std::fprintf(stderr, "sdrt: error: %s\n", rm.status().message().c_str());
    return 1;
  }
  std::printf("%s: ready (%s, %s)\n", spec.c_str(), rm->model.layout.c_str(), rm->options.model_name.c_str());
  return 0;
}

}  // namespace sdrt::app
