// `sdrt serve`: the AUTOMATIC1111 WebUI HTTP API (/sdapi/v1/...) over one loaded pipeline, a bounded job
// queue whose compatible requests run as one batch, progress (polling and server-sent events), /health,
// /metrics (Prometheus text) and a web page at /.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"
#include "sdrt/status.h"

namespace sdrt::server {

struct ServeOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 7860;                 // 0: any free port (tests)
  std::string api_auth;            // "user:pass": HTTP basic auth on everything but /health, /health/live, /metrics
  int max_queue = 32;              // waiting jobs; more get 429
  int max_batch_images = 8;        // images of compatible requests run together
  size_t max_body_bytes = 32u << 20;
  std::string output_dir;          // where save_images writes (server-chosen names); empty: not saved
  std::string model_title, model_name, model_hash, model_path;  // /sdapi/v1/sd-models, options, infotexts
  int threads = 64;                // HTTP worker threads (each waiting client holds one)
};

using PipelineLoader = std::function<Result<std::unique_ptr<Pipeline>>()>;

class Server {
 public:
  Server(ServeOptions opts, PipelineLoader loader);
  // Several engines (one per GPU): each loader makes one; every engine takes batches from the one queue.
  Server(ServeOptions opts, std::vector<PipelineLoader> loaders);
  ~Server();
  // Binds and serves on background threads; the pipeline loads on another (/health answers 503 until
  // it is ready). Returns the bound port.
  Result<int> start();
  // Graceful shutdown (SIGTERM): from now on /health answers 503 "draining" and new generation requests
  // 503 with Retry-After (a load balancer sends them to another replica); queued and running jobs go on.
  // Returns once every accepted job is answered, or at the deadline: then the jobs still queued or running
  // are handed back with a 503 telling the client to retry. Returns how many were handed back.
  int drain(std::chrono::milliseconds grace);
  void stop();
  bool ready() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The page served at "/" (HTML, CSS and script in one document; no external resources).
const char* web_page();

}  // namespace sdrt::server
