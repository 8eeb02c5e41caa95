// Load test client for `sdrt serve` (run from a second process by server_load_test.sh): N txt2img
// requests from C concurrent clients, each with its own prompt and seed; every answer must carry its own
// request's prompt and seed (nothing lost, nothing mixed up). Malformed requests are interleaved and must
// get 4xx answers while the server keeps serving. Prints a summary and the server's batching metrics;
// exits non-zero on any failure.
//
// With --sigterm PID (graceful shutdown): once all requests are accepted (queued or running), the server
// gets SIGTERM; every accepted request must still be answered with its image, while /health answers 503
// and a new request 503 - nothing accepted is lost.
#include <httplib.h>

#include <signal.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

using nlohmann::json;

namespace {

int64_t metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + name.size() + 2));
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, requests = 200, clients = 20, max_429 = 0, steps = 2, sigterm_pid = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--port") port = v;
    else if (a == "--requests") requests = v;
    else if (a == "--clients") clients = v;
    else if (a == "--max-429") max_429 = v;
    else if (a == "--steps") steps = v;
    else if (a == "--sigterm") sigterm_pid = v;
  }
  if (port <= 0) return std::fprintf(stderr, "usage: sdrt_loadtest --port P [--requests N] [--clients C] [--max-429 K]\n"), 2;

  {  // wait for the model to load
    httplib::Client cli("127.0.0.1", port);
    bool up = false;
    for (int i = 0; i < 600 && !up; ++i) {
      auto h = cli.Get("/health");
      up = h && h->status == 200;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!up) return std::fprintf(stderr, "loadtest: the server never became ready\n"), 1;
  }
  auto metrics = [&] {  // the server's counters now; this run's figures are differences
    httplib::Client cli("127.0.0.1", port);
    auto m = cli.Get("/metrics");
    const std::string text = m ? m->body : "";
    return std::array<int64_t, 4>{metric(text, "sdrt_jobs_total"), metric(text, "sdrt_batches_total"),
                                  metric(text, "sdrt_batched_jobs_total"), metric(text, "sdrt_images_total")};
  };
  const auto before = metrics();
  const std::vector<std::pair<std::string, std::string>> malformed = {
      {"bad JSON", "{\"prompt\": \"x\""},
      {"wrong type", R"({"steps": "many"})"},
      {"huge field", json{{"prompt", std::string(40000, 'z')}}.dump()},
      {"bad base64", R"({"init_images": ["%%%"]})"},
      {"absurd size", R"({"width": 99999, "height": 99999})"},
  };
  std::atomic<int> next{0}, ok{0}, too_many{0}, failed{0}, malformed_ok{0};
  std::mutex out_mu;
  auto report = [&](const std::string& s) {
    std::lock_guard<std::mutex> lk(out_mu);
    std::fprintf(stderr, "loadtest: %s\n", s.c_str());
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> th;
  for (int c = 0; c < clients; ++c)
    th.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_read_timeout(600, 0);
      int own = 0;
      for (int i; (i = next++) < requests;) {
        if (++own % 4 == 0 && !sigterm_pid) {  // a malformed request now and then
          const auto& [what, body] = malformed[(size_t)(i + c) % malformed.size()];
          const char* path = what == "bad base64" ? "/sdapi/v1/img2img" : "/sdapi/v1/txt2img";
          auto r = cli.Post(path, body, "application/json");
          if (r && r->status >= 400 && r->status < 500) ++malformed_ok;
          else report(std::string("malformed request '") + what + "' got " + (r ? std::to_string(r->status) : "no answer")), ++failed;
        }
        const std::string prompt = "load test request " + std::to_string(i);
        const int64_t seed = 10000 + i;
        const json body = {{"prompt", prompt}, {"seed", seed}, {"steps", steps}, {"width", 64}, {"height", 64}};
        for (int attempt = 0;; ++attempt) {
          auto r = cli.Post("/sdapi/v1/txt2img", body.dump(), "application/json");
          if (!r) {
            report("request " + std::to_string(i) + ": no answer (" + httplib::to_string(r.error()) + ")");
            ++failed;
            break;
          }
          if (r->status == 429) {
            ++too_many;
            if (r->get_header_value("Retry-After").empty()) report("429 without Retry-After"), ++failed;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            continue;
          }
          if (r->status != 200) {
            report("request " + std::to_string(i) + ": HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 200));
            ++failed;
            break;
          }
          try {
            const json j = json::parse(r->body);
            const json info = json::parse(j.at("info").get<std::string>());
            const bool match = j.at("images").size() == 1 && info.at("prompt") == prompt && info.at("all_seeds") == json::array({seed}) &&
                               info.at("all_prompts") == json::array({prompt}) &&
                               info.at("infotexts").at(0).get<std::string>().find(prompt + "\n") == 0;
            if (match) ++ok;
            else report("request " + std::to_string(i) + ": answer for another request: prompt " + info.value("prompt", "?")), ++failed;
          } catch (const std::exception& e) {
            report("request " + std::to_string(i) + ": unparsable answer: " + e.what());
            ++failed;
          }
          break;
        }
      }
    });
  bool drain_ok = true;
  if (sigterm_pid) {  // all accepted -> SIGTERM -> not ready, new work refused, accepted work still answered
    std::string text;
    for (int i = 0; i < 3000; ++i) {
      httplib::Client cli("127.0.0.1", port);
      auto m = cli.Get("/metrics");
      text = m ? m->body : "";
      if (metric(text, "sdrt_queue_length") + metric(text, "sdrt_jobs_total") - before[0] >= requests) break;  // accepted
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const int64_t queued = metric(text, "sdrt_queue_length"), running = metric(text, "sdrt_running_jobs");
    ::kill(sigterm_pid, SIGTERM);
    std::printf("loadtest: SIGTERM sent with %lld jobs queued and %lld running\n", (long long)queued, (long long)running);
    if (queued < 1) report("SIGTERM came with no job queued; the test shows nothing (jobs too short?)"), drain_ok = false;
    httplib::Client cli("127.0.0.1", port);
    int health = 0;
    for (int i = 0; i < 500 && health != 503; ++i) {
      auto h = cli.Get("/health");
      health = h ? h->status : -1;
      if (health != 503) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    auto late = cli.Post("/sdapi/v1/txt2img", json{{"prompt", "late"}, {"steps", steps}, {"width", 64}, {"height", 64}}.dump(), "application/json");
    std::printf("loadtest: while draining: /health %d, a new request %s\n", health,
                late ? std::to_string(late->status).c_str() : ("no answer: " + httplib::to_string(late.error())).c_str());
    if (health != 503 || !late || late->status != 503 || late->get_header_value("Retry-After").empty())
      report("while draining /health must be 503 and a new request 503 with Retry-After"), drain_ok = false;
  }
  for (auto& t : th) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (sigterm_pid) {  // the server is gone or going: no metrics to read
    std::printf("loadtest: %d requests accepted before SIGTERM: %d answered with their image, %d failed\n", requests, ok.load(), failed.load());
    const bool pass = drain_ok && failed == 0 && ok == requests;
    std::printf("loadtest: %s\n", pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
  }
  const auto after = metrics();
  const int64_t jobs = after[0] - before[0], batches = after[1] - before[1], batched = after[2] - before[2],
                images = after[3] - before[3];
  httplib::Client cli("127.0.0.1", port);
  auto h = cli.Get("/health");
  std::printf("loadtest: %d requests from %d clients in %.1f s: %d ok, %d answered 429 (retried), %d failed; %d malformed requests got 4xx\n",
              requests, clients, secs, ok.load(), too_many.load(), failed.load(), malformed_ok.load());
  std::printf("loadtest: server metrics: %lld jobs in %lld batches, %lld jobs ran batched with others, %lld images; health %d\n",
              (long long)jobs, (long long)batches, (long long)batched, (long long)images, h ? h->status : -1);
  bool pass = failed == 0 && ok == requests && too_many <= max_429 && (batched > 0 || clients == 1) && images == requests && h && h->status == 200;
  std::printf("loadtest: %s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
