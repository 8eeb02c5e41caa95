#include "io/download.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "io/sha256.h"

namespace sdrt {
namespace fs = std::filesystem;
namespace {

struct Transfer {
  FILE* out = nullptr;
  std::string sha256;   // from X-Linked-Etag (LFS files)
  int64_t linked_size = -1, content_length = -1, range_total = -1;
  long status = 0;
  bool progress = false;
  std::string label;
  int64_t resumed_from = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last_draw{};
};

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

size_t on_header(char* buf, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(buf, size * n);
  auto colon = line.find(':');
  if (line.starts_with("HTTP/")) {
    t->content_length = -1;  // a new response (after a redirect) starts over
    t->range_total = -1;
  }
  if (colon == std::string::npos) return size * n;
  std::string key = lower(line.substr(0, colon)), val = line.substr(colon + 1);
  auto trim = [&](const char* chars) {
    while (!val.empty() && std::strchr(chars, val.back())) val.pop_back();
    while (!val.empty() && std::strchr(chars, val.front())) val.erase(val.begin());
  };
  trim(" \r\n");
  if (val.starts_with("W/")) val.erase(0, 2);  // weak ETag marker
  trim("\"");
  if (key == "x-linked-etag" && val.size() == 64) t->sha256 = lower(val);
  if (key == "x-linked-size") t->linked_size = std::atoll(val.c_str());
  if (key == "content-length") t->content_length = std::atoll(val.c_str());
  if (key == "content-range") {
    auto slash = val.find('/');
    if (slash != std::string::npos) t->range_total = std::atoll(val.c_str() + slash + 1);
  }
  return size * n;
}

size_t on_body(char* buf, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  return std::fwrite(buf, size, n, t->out) * size;
}

int on_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->progress || total <= 0) return 0;
  auto clock = std::chrono::steady_clock::now();
  if (now < total && clock - t->last_draw < std::chrono::milliseconds(200)) return 0;
  t->last_draw = clock;
  const double secs = std::chrono::duration<double>(clock - t->start).count();
  const double all = (double)(total + t->resumed_from), got = (double)(now + t->resumed_from);
  const int width = 30, fill = (int)(width * got / all);
  std::fprintf(stderr, "\r%-40.40s [%.*s%*s] %5.1f%% %7.1f/%.1f MB %6.1f MB/s", t->label.c_str(), fill, "##############################",
               width - fill, "", 100.0 * got / all, got / 1e6, all / 1e6, secs > 0 ? now / secs / 1e6 : 0.0);
  if (now == total) std::fprintf(stderr, "\n");
  return 0;
}

void curl_init_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

}  // namespace

std::string hub_file_url(const DownloadOptions& opt, const std::string& repo, const std::string& file) {
  std::string base = opt.base_url.empty() ? env_or("SDRT_HUB_URL", "https://huggingface.co") : opt.base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/" + repo + "/resolve/main/" + file;
}

Status download_file(const std::string& url, const std::string& dest, const DownloadOptions& opt) {
  curl_init_once();
  const std::string part = dest + ".part";
  std::error_code ec;
  fs::create_directories(fs::path(dest).parent_path(), ec);
  // Processes sharing a cache (pods mounting one volume) may want the same file at once: one downloads
  // under an exclusive lock, the others wait for it and then find the file in place.
  const std::string lock_path = dest + ".lock";
  const int lock_fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (lock_fd < 0) return io_error(lock_path + ": cannot open: " + std::strerror(errno));
  struct CloseLock {
    int fd;
    ~CloseLock() { ::close(fd); }
  } close_lock{lock_fd};
  while (::flock(lock_fd, LOCK_EX) != 0)
    if (errno != EINTR) return io_error(lock_path + ": cannot lock: " + std::strerror(errno));
  if (fs::exists(dest, ec)) return Status::ok();  // another process fetched it while this one waited
  const std::string token = opt.token.empty() ? env_or("HF_TOKEN", "") : opt.token;
  Status last;
  for (int attempt = 0; attempt < std::max(1, opt.attempts); ++attempt) {
    Transfer t;
    t.progress = opt.progress && isatty(2);
    t.label = fs::path(dest).filename().string();
    t.resumed_from = fs::exists(part, ec) ? (int64_t)fs::file_size(part, ec) : 0;
    t.out = std::fopen(part.c_str(), t.resumed_from ? "ab" : "wb");
    if (!t.out) return io_error(part + ": cannot write");
    CURL* c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, opt.connect_timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);  // give up on a stalled transfer after 60 s
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sdrt/" SDRT_VERSION);
    struct curl_slist* hdrs = nullptr;
    if (!token.empty()) hdrs = curl_slist_append(hdrs, ("Authorization: Bearer " + token).c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (t.resumed_from > 0) curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)t.resumed_from);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &t.status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    std::fclose(t.out);
    if (t.status == 404 || t.status == 401 || t.status == 403) {
      fs::remove(part, ec);
      return not_found(url + ": HTTP " + std::to_string(t.status));
    }
    if (t.status == 416) {  // our .part is larger than the file: start again
      fs::remove(part, ec);
      last = io_error(url + ": HTTP 416 on resume");
      continue;
    }
    if (rc != CURLE_OK) {  // keep the .part and resume on the next attempt
      last = io_error(url + ": " + curl_easy_strerror(rc));
      continue;
    }
    if (t.status != 200 && t.status != 206) {
      fs::remove(part, ec);
      return io_error(url + ": HTTP " + std::to_string(t.status));
    }
    if (t.status == 200 && t.resumed_from > 0) {
      // The server ignored the Range: the body is the whole file, appended after the old bytes. Start over.
      fs::remove(part, ec);
      last = io_error(url + ": server does not resume; restarting");
      continue;
    }
    const int64_t got = (int64_t)fs::file_size(part, ec);
    int64_t want = t.linked_size >= 0 ? t.linked_size : t.range_total >= 0 ? t.range_total : t.content_length >= 0 ? t.content_length + t.resumed_from : -1;
    if (want >= 0 && got != want) {
      fs::remove(part, ec);
      return corrupt(url + ": size mismatch (got " + std::to_string(got) + " bytes, expected " + std::to_string(want) + "); the partial file was deleted");
    }
    if (!t.sha256.empty()) {
      SDRT_ASSIGN_OR_RETURN(std::string sum, sha256_file(part));
      if (sum != t.sha256) {
        fs::remove(part, ec);
        return corrupt(url + ": checksum mismatch (sha256 " + sum + ", expected " + t.sha256 + "); the downloaded file was deleted");
      }
    }
    fs::rename(part, dest, ec);
    if (ec) return io_error(dest + ": cannot rename: " + ec.message());
    return Status::ok();
  }
  return last;
}

namespace {

std::string repo_dir(const std::string& repo, const std::string& cache_dir) {
  std::string name = repo;
  for (size_t p; (p = name.find('/')) != std::string::npos;) name.replace(p, 1, "--");
  return (fs::path(cache_dir) / "hub" / name).string();
}

// Fetches `file` unless present; with alternatives, the first that exists on the hub wins.
Status fetch_one(const std::string& repo, const std::string& dir, const std::vector<std::string>& alternatives, const DownloadOptions& opt,
                 bool required = true) {
  for (const auto& f : alternatives)
    if (fs::exists(fs::path(dir) / f)) return Status::ok();
  Status st;
  for (const auto& f : alternatives) {
    st = download_file(hub_file_url(opt, repo, f), (fs::path(dir) / f).string(), opt);
    if (st.is_ok() || st.code() != Code::NotFound) return st;
  }
  return required ? st : Status::ok();
}

}  // namespace

Result<std::string> fetch_diffusers_model(const std::string& repo, const std::string& cache_dir, const DownloadOptions& opt) {
  const std::string dir = repo_dir(repo, cache_dir);
  SDRT_RETURN_IF_ERROR(fetch_one(repo, dir, {"model_index.json"}, opt).with_context("downloading " + repo));
  for (const char* f : {"scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "unet/config.json", "vae/config.json",
                        "text_encoder/config.json"})
    SDRT_RETURN_IF_ERROR(fetch_one(repo, dir, {f}, opt).with_context("downloading " + repo));
  for (const char* f : {"tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json"})
    SDRT_RETURN_IF_ERROR(fetch_one(repo, dir, {f}, opt, false));
  for (const char* stem : {"unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "text_encoder/model"})
    SDRT_RETURN_IF_ERROR(fetch_one(repo, dir, {std::string(stem) + ".fp16.safetensors", std::string(stem) + ".safetensors"}, opt)
                             .with_context("downloading " + repo));
  return dir;
}

Result<std::string> fetch_tokenizer(const std::string& repo, const std::string& cache_dir, const DownloadOptions& opt) {
  const std::string dir = repo_dir(repo, cache_dir);
  for (const char* f : {"vocab.json", "merges.txt"}) SDRT_RETURN_IF_ERROR(fetch_one(repo, dir, {f}, opt).with_context("downloading the tokenizer of " + repo));
  SDRT_RETURN_IF_ERROR(fetch_one(repo, dir, {"special_tokens_map.json"}, opt, false));
  return dir;
}

}  // namespace sdrt
