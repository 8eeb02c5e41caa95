#include "pipeline/resolve.h"

#include "runtime/engine_cache.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "io/sha256.h"

namespace sdrt {
namespace fs = std::filesystem;

std::string sdrt_home() {
  if (const char* h = std::getenv("SDRT_HOME"); h && *h) return h;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "sdrt").string();
  if (const char* home = std::getenv("HOME"); home && *home) return (fs::path(home) / ".cache" / "sdrt").string();
  return ".sdrt-cache";
}

Result<std::string> model_short_hash(const std::string& file, const std::string& cache_dir) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec) return io_error(file + ": " + ec.message());
  const auto mtime = (int64_t)fs::last_write_time(file, ec).time_since_epoch().count();
  const std::string key = fs::absolute(file, ec).string();
  const fs::path db = fs::path(cache_dir) / "hashes.json";
  nlohmann::json j = nlohmann::json::object();
  if (std::ifstream f(db); f) {
    j = nlohmann::json::parse(f, nullptr, false);
    if (!j.is_object()) j = nlohmann::json::object();
  }
  if (j.contains(key) && j[key].is_object() && j[key].value("size", (uint64_t)0) == size && j[key].value("mtime", (int64_t)0) == mtime &&
      j[key].contains("sha256") && j[key]["sha256"].is_string())
    return j[key]["sha256"].get<std::string>().substr(0, 10);
  SDRT_ASSIGN_OR_RETURN(std::string sum, sha256_file(file));
  j[key] = {{"size", size}, {"mtime", mtime}, {"sha256", sum}};
  fs::create_directories(cache_dir, ec);
  std::ofstream(db) << j.dump(1);  // a cache: failing to write it is harmless
  return sum.substr(0, 10);
}

namespace {

bool has_tokenizer(const fs::path& d) { return fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"); }

Result<std::string> find_tokenizer(const fs::path& near, const ResolveOptions& opt) {
  if (!opt.tokenizer_dir.empty()) {
    if (!has_tokenizer(opt.tokenizer_dir)) return not_found(opt.tokenizer_dir + ": no vocab.json and merges.txt there");
    return opt.tokenizer_dir;
  }
  std::error_code ec;
  if (!near.empty()) {
    if (has_tokenizer(near / "tokenizer")) return (near / "tokenizer").string();
    for (const auto& e : fs::directory_iterator(near, ec))
      if (e.is_directory(ec) && has_tokenizer(e.path() / "tokenizer")) return (e.path() / "tokenizer").string();
  }
  const std::string cache = opt.cache_dir.empty() ? sdrt_home() : opt.cache_dir;
  const fs::path cached = fs::path(cache) / "hub" / "openai--clip-vit-large-patch14";
  if (has_tokenizer(cached)) return cached.string();
  if (!opt.allow_download)
    return not_found("no CLIP tokenizer found (pass --tokenizer DIR with vocab.json and merges.txt, or allow the download of " +
                     std::string(kClipTokenizerRepo) + ")");
  return fetch_tokenizer(kClipTokenizerRepo, cache, opt.download);
}

}  // namespace

Result<ResolvedModel> resolve_model(const std::string& spec, const ResolveOptions& opt) {
  const std::string cache = opt.cache_dir.empty() ? sdrt_home() : opt.cache_dir;
  ResolvedModel r;
  std::error_code ec;
  std::string path = spec;
  static const std::regex hub_id(R"(^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$)");
  if (!spec.starts_with("random:") && !fs::exists(spec, ec) && std::regex_match(spec, hub_id)) {
    const fs::path local = fs::path(cache) / "hub" / std::regex_replace(spec, std::regex("/"), "--");
    if (!fs::exists(local / "model_index.json") || !fs::exists(local / "unet")) {
      if (!opt.allow_download) return not_found(spec + ": not in the cache and downloads are off");
      SDRT_ASSIGN_OR_RETURN(path, fetch_diffusers_model(spec, cache, opt.download));
    } else {
      path = local.string();
    }
  }
  SDRT_ASSIGN_OR_RETURN(r.model, load_model(path));
  r.options.model_id = model_identity(path);
  if (r.model.layout == "random") {
    // Random weights give token ids no meaning: without a vocabulary at hand, the byte-level one serves.
    auto tok = find_tokenizer({}, opt);
    if (tok) r.options.tokenizer_dir = *tok;
    else std::fprintf(stderr, "sdrt: note: no CLIP vocabulary found (%s); %s uses byte-level tokens\n", tok.status().message().c_str(), spec.c_str());
    r.options.model_name = spec;
  } else if (r.model.layout == "diffusers") {
    const fs::path dir(path);
    if (!opt.tokenizer_dir.empty()) {
      SDRT_ASSIGN_OR_RETURN(r.options.tokenizer_dir, find_tokenizer({}, opt));
    } else {
      if (!has_tokenizer(dir / "tokenizer")) return not_found(path + ": no tokenizer/vocab.json and merges.txt");
      r.options.tokenizer_dir = (dir / "tokenizer").string();
    }
    r.options.scheduler_config = (dir / "scheduler" / "scheduler_config.json").string();
    r.options.model_name = fs::absolute(dir, ec).lexically_normal().filename().string();
    if (r.options.model_name.empty()) r.options.model_name = fs::absolute(dir, ec).parent_path().filename().string();
    for (const char* f : {"unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors"})
      if (fs::exists(dir / f)) {
        SDRT_ASSIGN_OR_RETURN(r.options.model_hash, model_short_hash((dir / f).string(), cache));
        break;
      }
  } else {
    const fs::path file(path);
    SDRT_ASSIGN_OR_RETURN(r.options.tokenizer_dir, find_tokenizer(file.parent_path().empty() ? fs::path(".") : file.parent_path(), opt));
    r.options.model_name = file.stem().string();
    SDRT_ASSIGN_OR_RETURN(r.options.model_hash, model_short_hash(path, cache));
  }
  return r;
}

}  // namespace sdrt
