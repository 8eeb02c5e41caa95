// Downloads from a Hugging Face-style hub over HTTP(S) with libcurl: files land in a cache once, with
// resume of partial transfers (.part + Range), size and SHA-256 verification (the hub's X-Linked-Size
// and X-Linked-Etag headers), and a progress bar on a terminal. A file that fails verification is
// deleted, never used.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sdrt/status.h"

namespace sdrt {

struct DownloadOptions {
  std::string base_url;    // default: $SDRT_HUB_URL or https://huggingface.co
  std::string token;       // default: $HF_TOKEN
  bool progress = false;   // draw a progress bar on stderr
  int attempts = 3;        // transfers that break off are resumed this many times
  long connect_timeout_s = 20;
};

// One file: url -> dest (dest + ".part" while in flight, under an exclusive lock on dest + ".lock" so that
// processes sharing a cache download it once; a file already at dest is kept). Not found is Code::NotFound.
Status download_file(const std::string& url, const std::string& dest, const DownloadOptions& opt);

// The hub url of a file of a repository ("org/name"), revision main.
std::string hub_file_url(const DownloadOptions& opt, const std::string& repo, const std::string& file);

// An SD 1.x diffusers repository into cache_dir/hub/org--name (fp16 weights preferred); returns the folder.
Result<std::string> fetch_diffusers_model(const std::string& repo, const std::string& cache_dir, const DownloadOptions& opt);
// The CLIP tokenizer files of a repository (vocab.json, merges.txt, ...) into cache_dir/hub/org--name.
Result<std::string> fetch_tokenizer(const std::string& repo, const std::string& cache_dir, const DownloadOptions& opt);

}  // namespace sdrt
