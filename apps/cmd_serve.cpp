// sdrt serve: the WebUI-compatible HTTP server over one model (src/server).
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "commands.h"
#include "run_setup.h"
#include "server/server.h"

namespace sdrt::app {

namespace {
volatile std::sig_atomic_t g_stop = 0;
void on_stop(int sig) {
  g_stop = sig;
  std::signal(SIGINT, SIG_DFL);  // a second ^C ends at once
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
  if (!(a.drain_timeout >= 0 && a.drain_timeout <= 3600)) return fail(invalid_argument("--drain-timeout must be between 0 and 3600 seconds"));
  if (!a.api_auth.empty() && a.api_auth.find(':') == std::string::npos) return fail(invalid_argument("--api-auth takes user:password"));

  auto run = choose_run(a.model, a.backend, a.precision, a.plan);
  if (!run) return fail(run.status());
  // Resolved now (a missing model is an error before binding); the weights load behind /health.
  auto rm = resolve_for_run(*run, a.tokenizer_dir, a.engine_cache);
  if (!rm) return fail(rm.status());
  rm->options.overlap_decode = a.decode_overlap;

  server::ServeOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_auth = a.api_auth;
  so.max_queue = a.max_queue;
  so.max_batch_images = a.max_batch;
  so.output_dir = a.output_dir;
  so.model_name = rm->options.model_name.empty() ? run->model : rm->options.model_name;
  so.model_hash = rm->options.model_hash;
  so.model_title = so.model_name + (so.model_hash.empty() ? "" : " [" + so.model_hash + "]");
  so.model_path = run->model;
  auto devices = parse_devices(a.devices, run->backend);
  if (!devices) return fail(devices.status());
  auto shared = std::make_shared<ResolvedModel>(std::move(rm).value());
  std::vector<server::PipelineLoader> loaders;  // one engine per device; the weights' sources are shared
  for (int dev : *devices)
    loaders.push_back([shared, dev, backend = run->backend, precision = run->precision]() -> Result<std::unique_ptr<Pipeline>> {
      SDRT_ASSIGN_OR_RETURN(auto be, make_backend(backend, precision, dev));
      return Pipeline::create(shared->model, shared->options, std::move(be));
    });
  server::Server srv(so, std::move(loaders));
  auto port = srv.start();
  if (!port) return fail(port.status());
  std::string devs;
  for (int d : *devices) devs += (devs.empty() ? "" : ",") + std::to_string(d);
  std::fprintf(stderr, "sdrt serve: http://%s:%d/ (model %s; loading%s)\n", a.host.c_str(), *port, so.model_title.c_str(),
               a.devices.empty() ? "" : ("; devices " + devs).c_str());
  if (a.host != "127.0.0.1" && a.host != "localhost" && a.host != "::1" && a.api_auth.empty())
    std::fprintf(stderr, "sdrt serve: warning: listening on %s without --api-auth\n", a.host.c_str());
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);
  std::signal(SIGPIPE, SIG_IGN);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // Graceful: no new jobs, accepted ones finish (or are handed back with a 503 at the deadline), then exit 0.
  std::fprintf(stderr, "\nsdrt serve: %s: draining (up to %g s for accepted jobs)\n", g_stop == SIGTERM ? "SIGTERM" : "SIGINT",
               a.drain_timeout);
  const int handed = srv.drain(std::chrono::milliseconds((int64_t)(a.drain_timeout * 1000)));
  srv.stop();
  if (handed) std::fprintf(stderr, "sdrt serve: stopped; %d accepted jobs handed back (503) at the deadline\n", handed);
  else std::fprintf(stderr, "sdrt serve: stopped; every accepted job was answered\n");
  return 0;
}

}  // namespace sdrt::app
