// sdrt serve: the WebUI-compatible HTTP server over one model (src/server).
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "pipeline/resolve.h"
#include "runtime/plan.h"
#include "server/server.h"

namespace sdrt::app {
namespace fs = std::filesystem;

namespace {
server::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) std::fprintf(stderr, "\nsdrt serve: stopping\n");
  std::signal(SIGINT, SIG_DFL);  // a second ^C ends at once
}
volatile std::sig_atomic_t g_stop = 0;
void on_stop(int s) {
  g_stop = 1;
  on_signal(s);
}
}  // namespace

int cmd_serve(const ServeArgs& a) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "sdrt: error: %s\n", s.message().c_str());
    return 1;
  };
  if (a.port < 0 || a.port > 65535) return fail(invalid_argument("--port must be between 0 and 65535"));
  if (a.max_queue < 1 || a.max_queue > 100000) return fail(invalid_argument("--max-queue must be between 1 and 100000"));
  if (a.max_batch < 1 || a.max_batch > kMaxBatch) return fail(invalid_argument("--max-batch must be between 1 and " + std::to_string(kMaxBatch)));
  if (!a.api_auth.empty() && a.api_auth.find(':') == std::string::npos) return fail(invalid_argument("--api-auth takes user:password"));

  std::shared_ptr<const Plan> plan;
  std::string backend_name = a.backend, precision = a.precision, model = a.model;
  if (!a.plan.empty()) {
    auto p = read_plan(a.plan);
    if (!p) return fail(p.status());
    plan = std::make_shared<const Plan>(std::move(p).value());
    if (backend_name == "cpu") return fail(invalid_argument("--plan runs on the cuda backend, not cpu"));
    backend_name = "cuda";
    precision = plan->precision;
    if (model.empty()) model = plan->model_spec;
  }
  if (model.empty()) model = kDefaultModel;
  // Resolve now (a missing model is an error before binding); the weights load behind /health.
  ResolveOptions ro;
  ro.tokenizer_dir = a.tokenizer_dir;
  ro.download.progress = true;
  auto rm = resolve_model(model, ro);
  if (!rm) return fail(rm.status());
  rm->options.plan = plan;
  if (a.engine_cache) rm->options.engine_cache_dir = (fs::path(sdrt_home()) / "engines").string();

  server::ServeOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_auth = a.api_auth;
  so.max_queue = a.max_queue;
  so.max_batch_images = a.max_batch;
  so.output_dir = a.output_dir;
  so.model_name = rm->options.model_name.empty() ? model : rm->options.model_name;
  so.model_hash = rm->options.model_hash;
  so.model_title = so.model_name + (so.model_hash.empty() ? "" : " [" + so.model_hash + "]");
  so.model_path = model;
  auto shared = std::make_shared<ResolvedModel>(std::move(rm).value());
  server::Server srv(so, [shared, backend_name, precision]() -> Result<std::unique_ptr<Pipeline>> {
    auto backend = make_backend(backend_name, precision);
    if (!backend) return backend.status();
    return Pipeline::create(std::move(shared->model), shared->options, std::move(backend).value());
  });
  auto port = srv.start();
  if (!port) return fail(port.status());
  std::fprintf(stderr, "sdrt serve: http://%s:%d/ (model %s; loading)\n", a.host.c_str(), *port, so.model_title.c_str());
  if (a.host != "127.0.0.1" && a.host != "localhost" && a.host != "::1" && a.api_auth.empty())
    std::fprintf(stderr, "sdrt serve: warning: listening on %s without --api-auth\n", a.host.c_str());
  g_server = &srv;
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);
  std::signal(SIGPIPE, SIG_IGN);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  srv.stop();
  g_server = nullptr;
  return 0;
}

}  // namespace sdrt::app
