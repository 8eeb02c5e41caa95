// From what the user names to a loaded model and its pipeline options: a diffusers folder, a single-file
// checkpoint (tokenizer looked for beside it, in the cache, else downloaded), random:sd15, or a hub id
// ("org/name") downloaded once into the cache ($SDRT_HOME, default ~/.cache/sdrt).
#pragma once
#include <string>

#include "io/download.h"
#include "models/model.h"
#include "pipeline/pipeline.h"

namespace sdrt {

constexpr const char* kDefaultModel = "stable-diffusion-v1-5/stable-diffusion-v1-5";  // SD 1.5, fp16 safetensors
constexpr const char* kClipTokenizerRepo = "openai/clip-vit-large-patch14";

struct ResolveOptions {
  std::string tokenizer_dir;  // --tokenizer
  std::string cache_dir;      // default sdrt_home()
  DownloadOptions download;
  bool allow_download = true;
};

struct ResolvedModel {
  Model model;
  PipelineOptions options;
};

std::string sdrt_home();
Result<ResolvedModel> resolve_model(const std::string& spec, const ResolveOptions& opt);
// The WebUI's short model hash: the first 10 hex digits of the file's SHA-256, cached by path/size/mtime.
Result<std::string> model_short_hash(const std::string& file, const std::string& cache_dir);

}  // namespace sdrt
