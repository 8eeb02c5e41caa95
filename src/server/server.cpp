#include "server/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include <sys/socket.h>

#include "io/png.h"
#include "server/webui.h"

namespace sdrt::server {
namespace {

using nlohmann::json;
using clk = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr double kLatencyBuckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
constexpr int kNumBuckets = sizeof(kLatencyBuckets) / sizeof(double);

// Constant-time string comparison (the API password).
bool same(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) diff |= (unsigned char)((i < a.size() ? a[i] : 0) ^ b[i]);
  return diff == 0;
}

std::string timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

json error_body(int status, const std::string& msg) {
  json d = {{"error", status == 422 ? "RequestValidationError" : status == 429 ? "TooManyRequests" : "HTTPException"}, {"detail", msg}};
  if (status == 422) d["errors"] = msg;
  return d;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// The request body as JSON; false (a 422 sent) when it is not.
bool parse_body(const httplib::Request& req, httplib::Response& res, json* body) {
  try {
    *body = json::parse(req.body);
    return true;
  } catch (const std::exception& e) {
    send_json(res, 422, error_body(422, std::string("body: malformed JSON (") + e.what() + ")"));
    return false;
  }
}

constexpr const char* kHandedBack = "the server shut down before this job finished; retry on another replica";

struct Job {
  WebuiRequest w;
  bool img2img = false;
  int64_t id = 0;
  clk::time_point enqueued = clk::now();
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::atomic<bool> cancelled{false};
  int status = 200;
  json body;
};

// A job can join a batch with others when it is one txt2img batch (n_iter 1) and its sampling settings
// and prompt lengths match.
std::string batch_key(const Job& j, Pipeline& p) {
  const GenerateRequest& r = j.w.req;
  if (j.img2img || r.batch_count != 1) return {};
  std::ostringstream k;
  k << r.width << 'x' << r.height << '/' << r.steps << '/' << r.sampler << '/' << r.schedule_type << '/' << r.cfg_scale << '/' << r.clip_skip
    << '/' << r.rng << '/' << p.prompt_chunks(r.prompt) << '/' << p.prompt_chunks(r.negative_prompt);
  return k.str();
}

}  // namespace

struct Server::Impl {
  // One engine (one GPU) and the batch it runs. Every engine takes work from the one queue.
  struct Slot {
    std::unique_ptr<Pipeline> pipe;
    std::thread worker;
    std::vector<std::shared_ptr<Job>> running;  // under mu
    int step = 0, steps = 0;
    clk::time_point run_start;
    std::atomic<bool> interrupt{false}, skip{false};
    std::string current_image;  // base64 PNG of the running batch's latest preview
    uint64_t batches = 0;       // run so far (metrics)
  };

  ServeOptions o;
  std::vector<PipelineLoader> loaders;
  httplib::Server http;
  std::thread listen_thread, load_thread;
  int port = 0;

  std::vector<std::unique_ptr<Slot>> slots;  // one per loader
  Pipeline& pipe() { return *slots[0]->pipe; }  // the engines are alike: validation, prompt lengths
  std::atomic<bool> is_ready{false}, stopping{false};
  std::atomic<bool> draining{false}, hand_back{false};  // drain(): no new jobs; past its deadline, answer 503
  std::string load_error;

  std::mutex mu;  // queue, progress, options, metrics
  std::condition_variable cv;
  std::condition_variable progress_cv;  // progress_seq changed (a batch stepped or ended) or stopping
  uint64_t progress_seq = 0;
  std::deque<std::shared_ptr<Job>> queue;
  int64_t next_id = 1;
  json options;
  int64_t saved = 0;

  // metrics
  std::map<std::pair<std::string, int>, uint64_t> requests;
  uint64_t latency_counts[kNumBuckets + 1] = {};
  double latency_sum = 0;
  uint64_t latency_n = 0, images_total = 0, batches_total = 0, batched_jobs_total = 0, jobs_total = 0, rejected_total = 0;

  explicit Impl(ServeOptions opts, std::vector<PipelineLoader> l) : o(std::move(opts)), loaders(std::move(l)) {
    for (size_t k = 0; k < loaders.size(); ++k) slots.push_back(std::make_unique<Slot>());
    options = {{"sd_model_checkpoint", o.model_title}, {"sd_checkpoint_hash", o.model_hash.empty() ? json(nullptr) : json(o.model_hash)},
               {"CLIP_stop_at_last_layers", 1},       {"samples_format", "png"},
               {"outdir_txt2img_samples", ""},        {"sd_vae", "Automatic"}};
  }

  int running_jobs() const {  // under mu
    int n = 0;
    for (const auto& sl : slots) n += (int)sl->running.size();
    return n;
  }

  // The WebUI reports one running job: that of the first busy engine; job_count counts every running batch.
  json progress_json(bool with_image) {
    std::lock_guard<std::mutex> lk(mu);
    const Slot* sl = nullptr;
    int busy_batches = 0;
    for (const auto& x : slots)
      if (!x->running.empty()) {
        if (!sl) sl = x.get();
        ++busy_batches;
      }
    const bool busy = sl != nullptr;
    double progress = busy && sl->steps > 0 ? (double)sl->step / sl->steps : 0.0;
    double eta = 0;
    if (busy && sl->step > 0) {
      const double el = std::chrono::duration<double>(clk::now() - sl->run_start).count();
      eta = el / progress - el;
    }
    return {{"progress", progress},
            {"eta_relative", eta},
            {"state",
             {{"skipped", busy && sl->skip.load()},
              {"interrupted", busy && sl->interrupt.load()},
              {"job", busy ? "job(" + std::to_string(sl->running.front()->id) + ")" : ""},
              {"job_count", (int)queue.size() + busy_batches},
              {"job_timestamp", timestamp()},
              {"job_no", 0},
              {"sampling_step", busy ? sl->step : 0},
              {"sampling_steps", busy ? sl->steps : 0},
              {"queue_length", (int)queue.size()}}},
            {"current_image", busy && with_image && !sl->current_image.empty() ? json(sl->current_image) : json(nullptr)},
            {"textinfo", busy ? json("Sampling") : json(nullptr)}};
  }

  // Live preview: the WebUI's "Approx cheap" linear map from SD 1.x/2.x latents to RGB.
  void on_preview(Slot& sl, const float* lat, int64_t C, int64_t h, int64_t w) {
    if (C != 4) return;
    static constexpr float kCoef[4][3] = {{0.298f, 0.207f, 0.208f}, {0.187f, 0.286f, 0.173f}, {-0.158f, 0.189f, 0.264f}, {-0.184f, -0.271f, -0.473f}};
    Image im{(int)w, (int)h, std::vector<uint8_t>((size_t)(w * h * 3))};
    for (int64_t p = 0; p < h * w; ++p)
      for (int c = 0; c < 3; ++c) {
        float v = 0;
        for (int l = 0; l < 4; ++l) v += lat[l * h * w + p] * kCoef[l][c];
        im.rgb[p * 3 + c] = (uint8_t)std::lround(std::clamp((v + 1.f) / 2.f, 0.f, 1.f) * 255.f);
      }
    auto png = encode_png(im);
    if (!png) return;
    std::lock_guard<std::mutex> lk(mu);
    sl.current_image = base64_encode(*png);
  }

  // Loads the engines one after the other (the first builds what the engine cache lacks, the others of
  // the same GPU type load it); the server is ready once all are.
  void load() {
    for (size_t k = 0; k < slots.size() && !stopping; ++k) {
      auto p = loaders[k]();
      if (!p) {
        std::lock_guard<std::mutex> lk(mu);
        load_error = (slots.size() > 1 ? "engine " + std::to_string(k) + ": " : std::string()) + p.status().message();
        std::fprintf(stderr, "sdrt serve: the model failed to load: %s\n", load_error.c_str());
        return;
      }
      Slot& sl = *slots[k];
      sl.pipe = std::move(p).value();
      sl.pipe->set_preview([this, &sl](const float* l, int64_t C, int64_t h, int64_t w) { on_preview(sl, l, C, h, w); }, 5);
    }
    if (stopping) return;
    is_ready = true;
    cv.notify_all();
    if (slots.size() > 1) std::fprintf(stderr, "sdrt serve: ready (%zu engines)\n", slots.size());
    else std::fprintf(stderr, "sdrt serve: ready\n");
  }

  void finish(const std::shared_ptr<Job>& j, int status, json body) {
    std::lock_guard<std::mutex> lk(j->m);
    j->status = status;
    j->body = std::move(body);
    j->done = true;
    j->cv.notify_all();
  }

  // An engine's worker: takes queued jobs, merging compatible ones into one batch.
  void work(Slot& sl) {
    while (true) {
      std::vector<std::shared_ptr<Job>> batch;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stopping || (is_ready && !queue.empty()); });
        if (stopping) break;
        while (!queue.empty() && queue.front()->cancelled) queue.pop_front();
        if (queue.empty()) continue;
        batch.push_back(queue.front());
        queue.pop_front();
        const std::string key = batch_key(*batch[0], pipe());
        int images = batch[0]->w.req.batch_size;
        if (!key.empty())
          for (auto it = queue.begin(); it != queue.end();) {
            const int n = (*it)->w.req.batch_size;
            if (!(*it)->cancelled && images + n <= o.max_batch_images && batch_key(**it, pipe()) == key) {
              batch.push_back(*it);
              images += n;
              it = queue.erase(it);
            } else {
              ++it;
            }
          }
        sl.running = batch;
        sl.step = 0;
        sl.steps = 0;
        sl.run_start = clk::now();
        sl.interrupt = hand_back.load();  // past drain()'s deadline nothing new starts
        sl.skip = false;
        sl.current_image.clear();
        ++batches_total;
        ++sl.batches;
        jobs_total += batch.size();
        if (batch.size() > 1) batched_jobs_total += batch.size();
      }
      run(sl, batch);
      std::lock_guard<std::mutex> lk(mu);
      sl.running.clear();
      ++progress_seq;
      progress_cv.notify_all();
      if (draining) cv.notify_all();  // drain() waits for idle workers
    }
  }

  void run(Slot& sl, const std::vector<std::shared_ptr<Job>>& batch) {
    GenerateRequest r = batch[0]->w.req;
    if (batch.size() > 1) {  // one batch: each image its own prompt, negative prompt and seed
      r.batch_size = 0;
      for (const auto& j : batch) {
        for (int i = 0; i < j->w.req.batch_size; ++i) {
          r.prompts.push_back(j->w.req.prompt);
          r.negative_prompts.push_back(j->w.req.negative_prompt);
          r.seeds.push_back(j->w.req.seed + i);
        }
        r.batch_size += j->w.req.batch_size;
      }
    }
    auto progress = [&](int done, int total) {
      {
        std::lock_guard<std::mutex> lk(mu);
        sl.step = done;
        sl.steps = total;
        ++progress_seq;
      }
      progress_cv.notify_all();
      if (sl.interrupt || sl.skip) return false;
      for (const auto& j : batch)
        if (!j->cancelled) return true;
      return false;  // every client has gone
    };
    const std::string ts = timestamp();
    auto res = sl.pipe->generate(r, progress);
    if (!res) {
      const bool stopped = res.status().code() == Code::OutOfRange;
      for (const auto& j : batch) {
        if (stopped && hand_back) {  // stopped by drain()'s deadline: the client should retry elsewhere
          finish(j, 503, error_body(503, kHandedBack));
        } else if (stopped) {  // interrupted or skipped: as the WebUI, a 200 without images
          GenerateResult empty;
          finish(j, 200, {{"images", json::array()}, {"parameters", j->w.parameters},
                          {"info", generation_info(j->w, empty, o.model_name, o.model_hash, ts).dump()}});
        } else {
          finish(j, 500, error_body(500, res.status().message()));
        }
      }
      return;
    }
    size_t off = 0;
    for (const auto& j : batch) {
      const size_t n = (size_t)j->w.req.batch_size * j->w.req.batch_count;  // merged jobs have batch_count 1
      GenerateResult part;
      part.images.assign(res->images.begin() + off, res->images.begin() + off + n);
      part.seeds.assign(res->seeds.begin() + off, res->seeds.begin() + off + n);
      part.infotexts.assign(res->infotexts.begin() + off, res->infotexts.begin() + off + n);
      off += n;
      json images = json::array();
      auto pngs = encode_pngs(part.images, part.infotexts);
      for (size_t i = 0; i < n; ++i) {
        auto& png = pngs[i];
        if (!png) {
          finish(j, 500, error_body(500, png.status().message()));
          images = nullptr;
          break;
        }
        if (j->w.save_images && !o.output_dir.empty()) save(*png, part.seeds[i]);
        if (j->w.send_images) images.push_back(base64_encode(*png));
      }
      if (images.is_null()) continue;
      {
        std::lock_guard<std::mutex> lk(mu);
        images_total += n;
      }
      finish(j, 200, {{"images", images}, {"parameters", j->w.parameters},
                      {"info", generation_info(j->w, part, o.model_name, o.model_hash, ts).dump()}});
    }
  }

  void save(const std::vector<uint8_t>& png, int64_t seed) {
    int64_t k;
    {
      std::lock_guard<std::mutex> lk(mu);
      k = saved++;
    }
    char name[64];
    std::snprintf(name, sizeof name, "%05lld-%lld.png", (long long)k, (long long)seed);
    std::error_code ec;
    fs::create_directories(o.output_dir, ec);
    if (Status st = write_file((fs::path(o.output_dir) / name).string(), png); !st) std::fprintf(stderr, "sdrt serve: %s\n", st.message().c_str());
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool img2img) {
    if (!is_ready) {
      std::lock_guard<std::mutex> lk(mu);
      return send_json(res, 503, error_body(503, load_error.empty() ? "the model is still loading" : "the model failed to load: " + load_error));
    }
    json body;
    if (!parse_body(req, res, &body)) return;
    int default_clip_skip = 1;  // the options' CLIP_stop_at_last_layers, unless the request overrides it
    {
      std::lock_guard<std::mutex> lk(mu);
      if (options["CLIP_stop_at_last_layers"].is_number_integer()) default_clip_skip = options["CLIP_stop_at_last_layers"].get<int>();
    }
    auto w = parse_generation_request(body, img2img, o.model_title, default_clip_skip);
    if (!w) return send_json(res, 422, error_body(422, w.status().message()));
    if (Status v = pipe().validate(w->req); !v) return send_json(res, 422, error_body(422, v.message()));
    if (w->req.seed == -1) w->req.seed = std::random_device{}() & 0xffffffffu;  // fixed now: batches carry explicit seeds
    w->parameters["seed"] = w->req.seed;
    auto job = std::make_shared<Job>();
    job->w = std::move(w).value();
    job->img2img = img2img;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (draining) {
        res.set_header("Retry-After", "5");
        res.set_header("Connection", "close");
        return send_json(res, 503, error_body(503, "the server is shutting down; retry on another replica"));
      }
      if ((int)queue.size() >= o.max_queue) {
        ++rejected_total;
        res.set_header("Retry-After", "5");
        return send_json(res, 429, error_body(429, "the queue is full (" + std::to_string(o.max_queue) + " jobs waiting); retry later"));
      }
      job->id = next_id++;
      queue.push_back(job);
    }
    cv.notify_all();
    // A short job gets a plain response with its real status. A longer one streams: the status is sent
    // now, a space (JSON allows leading whitespace) every second tells whether the client is still there
    // (a failed write cancels its job), then the body.
    {
      std::unique_lock<std::mutex> lk(job->m);
      if (job->cv.wait_for(lk, std::chrono::seconds(2), [&] { return job->done; })) return send_json(res, job->status, job->body);
    }
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json; charset=utf-8",  // a type cpp-httplib does not compress: each space must reach the socket
        [job](size_t, httplib::DataSink& sink) {
          std::unique_lock<std::mutex> lk(job->m);
          if (!job->cv.wait_for(lk, std::chrono::seconds(1), [&] { return job->done; })) {
            if (!sink.write(" ", 1)) {
              job->cancelled = true;
              return false;
            }
            return true;
          }
          const std::string s = job->status == 200 ? job->body.dump(-1, ' ', false, json::error_handler_t::replace)
                                                   : json{{"error", job->body}, {"status", job->status}}.dump();
          lk.unlock();
          sink.write(s.data(), s.size());
          sink.done();
          return true;
        },
        [job](bool ok) {
          if (!ok) job->cancelled = true;
        });
  }

  json memory_json() {
    std::ifstream mi("/proc/meminfo");
    std::string k;
    int64_t v;
    std::string unit;
    int64_t total = 0, avail = 0;
    while (mi >> k >> v >> unit) {
      if (k == "MemTotal:") total = v * 1024;
      if (k == "MemAvailable:") avail = v * 1024;
    }
    const json ram = {{"free", avail}, {"used", total - avail}, {"total", total}};
    json cuda;
    if (is_ready && pipe().backend().name() == "cuda") {
      DeviceMemory dm = pipe().backend().memory();
      cuda = {{"system", {{"used", dm.used_bytes}}}, {"active", {{"peak", dm.peak_bytes}}}};
    } else {
      cuda = {{"error", "no CUDA device in use"}};
    }
    return {{"ram", ram}, {"cuda", cuda}};
  }

  std::string metrics_text() {
    std::ostringstream m;
    std::lock_guard<std::mutex> lk(mu);
    m << "# HELP sdrt_up Whether the model is loaded and the server takes jobs.\n# TYPE sdrt_up gauge\nsdrt_up " << (is_ready ? 1 : 0) << "\n";
    m << "# HELP sdrt_queue_length Jobs waiting.\n# TYPE sdrt_queue_length gauge\nsdrt_queue_length " << queue.size() << "\n";
    m << "# HELP sdrt_running_jobs Jobs in the running batches.\n# TYPE sdrt_running_jobs gauge\nsdrt_running_jobs " << running_jobs() << "\n";
    m << "# HELP sdrt_engines Engines (one per GPU) taking jobs from the queue.\n# TYPE sdrt_engines gauge\nsdrt_engines " << slots.size() << "\n";
    m << "# HELP sdrt_engine_busy Whether an engine is running a batch.\n# TYPE sdrt_engine_busy gauge\n";
    for (size_t k = 0; k < slots.size(); ++k) m << "sdrt_engine_busy{engine=\"" << k << "\"} " << (slots[k]->running.empty() ? 0 : 1) << "\n";
    m << "# HELP sdrt_engine_batches_total Batches each engine ran.\n# TYPE sdrt_engine_batches_total counter\n";
    for (size_t k = 0; k < slots.size(); ++k) m << "sdrt_engine_batches_total{engine=\"" << k << "\"} " << slots[k]->batches << "\n";
    m << "# HELP sdrt_draining 1 while shutting down (no new jobs taken).\n# TYPE sdrt_draining gauge\nsdrt_draining " << (draining ? 1 : 0) << "\n";
    m << "# HELP sdrt_http_requests_total HTTP requests by path and status.\n# TYPE sdrt_http_requests_total counter\n";
    for (const auto& [k, n] : requests) m << "sdrt_http_requests_total{path=\"" << k.first << "\",code=\"" << k.second << "\"} " << n << "\n";
    m << "# HELP sdrt_request_duration_seconds Generation request latency.\n# TYPE sdrt_request_duration_seconds histogram\n";
    uint64_t cum = 0;
    for (int b = 0; b < kNumBuckets; ++b) {
      cum += latency_counts[b];
      m << "sdrt_request_duration_seconds_bucket{le=\"" << kLatencyBuckets[b] << "\"} " << cum << "\n";
    }
    cum += latency_counts[kNumBuckets];
    m << "sdrt_request_duration_seconds_bucket{le=\"+Inf\"} " << cum << "\nsdrt_request_duration_seconds_sum " << latency_sum
      << "\nsdrt_request_duration_seconds_count " << latency_n << "\n";
    m << "# HELP sdrt_images_total Images generated.\n# TYPE sdrt_images_total counter\nsdrt_images_total " << images_total << "\n";
    m << "# HELP sdrt_jobs_total Jobs run.\n# TYPE sdrt_jobs_total counter\nsdrt_jobs_total " << jobs_total << "\n";
    m << "# HELP sdrt_batches_total Batches run (one or more jobs each).\n# TYPE sdrt_batches_total counter\nsdrt_batches_total " << batches_total
      << "\n";
    m << "# HELP sdrt_batched_jobs_total Jobs that ran in a batch with other jobs.\n# TYPE sdrt_batched_jobs_total counter\n"
         "sdrt_batched_jobs_total "
      << batched_jobs_total << "\n";
    m << "# HELP sdrt_rejected_total Jobs refused with 429 (queue full).\n# TYPE sdrt_rejected_total counter\nsdrt_rejected_total "
      << rejected_total << "\n";
    if (is_ready) {  // per engine (each its GPU)
      std::vector<DeviceMemory> dm;
      for (const auto& sl : slots) dm.push_back(sl->pipe->backend().memory());
      if (dm[0].used_bytes >= 0) {
        m << "# HELP sdrt_device_memory_used_bytes Device memory in use.\n# TYPE sdrt_device_memory_used_bytes gauge\n";
        for (size_t k = 0; k < dm.size(); ++k) m << "sdrt_device_memory_used_bytes{engine=\"" << k << "\"} " << dm[k].used_bytes << "\n";
      }
      if (dm[0].peak_bytes >= 0) {
        m << "# HELP sdrt_device_memory_peak_bytes Allocator high-water mark.\n# TYPE sdrt_device_memory_peak_bytes gauge\n";
        for (size_t k = 0; k < dm.size(); ++k) m << "sdrt_device_memory_peak_bytes{engine=\"" << k << "\"} " << dm[k].peak_bytes << "\n";
      }
    }
    return m.str();
  }

  void routes() {
    static thread_local clk::time_point t_start;
    http.new_task_queue = [this] { return new httplib::ThreadPool((size_t)std::max(4, o.threads)); };
    http.set_payload_max_length(o.max_body_bytes);
    const std::string want = "Basic " + base64_encode(std::vector<uint8_t>(o.api_auth.begin(), o.api_auth.end()));
    http.set_pre_routing_handler([this, want](const httplib::Request& req, httplib::Response& res) {
      t_start = clk::now();
      // Probes (kubelet) and Prometheus scrape without credentials: health and counters only.
      if (o.api_auth.empty() || req.path == "/health" || req.path == "/health/live" || req.path == "/metrics")
        return httplib::Server::HandlerResponse::Unhandled;
      if (!same(req.get_header_value("Authorization"), want)) {
        res.set_header("WWW-Authenticate", "Basic realm=\"sdrt\"");
        send_json(res, 401, error_body(401, "Incorrect or missing credentials"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const bool gen = req.path == "/sdapi/v1/txt2img" || req.path == "/sdapi/v1/img2img";
      const std::string path = req.path.rfind("/sdapi/v1/", 0) == 0 || req.path == "/" || req.path == "/health" || req.path == "/metrics" ||
                                       req.path == "/sdrt/v1/events"
                                   ? req.path
                                   : "other";
      std::lock_guard<std::mutex> lk(mu);
      ++requests[{path, res.status}];
      if (gen && res.status == 200) {
        const double s = std::chrono::duration<double>(clk::now() - t_start).count();
        int b = 0;
        while (b < kNumBuckets && s > kLatencyBuckets[b]) ++b;
        ++latency_counts[b];
        latency_sum += s;
        ++latency_n;
      }
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_json(res, 500, error_body(500, what));
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) send_json(res, 404, error_body(404, "Not Found: " + req.path));
      else if (res.status == 413) send_json(res, 413, error_body(413, "request body too large"));
      else send_json(res, res.status, error_body(res.status, "HTTP " + std::to_string(res.status)));
    });

    http.Post("/sdapi/v1/txt2img", [this](const httplib::Request& q, httplib::Response& r) { generate(q, r, false); });
    http.Post("/sdapi/v1/img2img", [this](const httplib::Request& q, httplib::Response& r) { generate(q, r, true); });
    http.Get("/sdapi/v1/progress", [this](const httplib::Request& q, httplib::Response& r) {
      send_json(r, 200, progress_json(q.get_param_value("skip_current_image") != "true"));
    });
    http.Post("/sdapi/v1/interrupt", [this](const httplib::Request&, httplib::Response& r) {
      for (auto& sl : slots) sl->interrupt = true;
      send_json(r, 200, json::object());
    });
    http.Post("/sdapi/v1/skip", [this](const httplib::Request&, httplib::Response& r) {
      for (auto& sl : slots) sl->skip = true;
      send_json(r, 200, json::object());
    });
    http.Get("/sdapi/v1/options", [this](const httplib::Request&, httplib::Response& r) {
      std::lock_guard<std::mutex> lk(mu);
      send_json(r, 200, options);
    });
    http.Post("/sdapi/v1/options", [this](const httplib::Request& q, httplib::Response& r) {
      json b;
      if (!parse_body(q, r, &b)) return;
      if (!b.is_object()) return send_json(r, 422, error_body(422, "body: expected a JSON object"));
      if (b.contains("sd_model_checkpoint")) {
        if (!b["sd_model_checkpoint"].is_string()) return send_json(r, 422, error_body(422, "sd_model_checkpoint: expected a string"));
        const std::string t = b["sd_model_checkpoint"];
        if (t != o.model_title && t != o.model_name)
          return send_json(r, 400, error_body(400, "model '" + t + "' not found; this server holds '" + o.model_title + "'"));
        b["sd_model_checkpoint"] = o.model_title;
      }
      if (b.contains("CLIP_stop_at_last_layers") && !b["CLIP_stop_at_last_layers"].is_number_integer())
        return send_json(r, 422, error_body(422, "CLIP_stop_at_last_layers: expected an integer"));
      std::lock_guard<std::mutex> lk(mu);
      for (auto& [k, v] : b.items()) options[k] = v;
      send_json(r, 200, nullptr);
    });
    http.Get("/sdapi/v1/sd-models", [this](const httplib::Request&, httplib::Response& r) {
      send_json(r, 200,
                json::array({{{"title", o.model_title},
                              {"model_name", o.model_name},
                              {"hash", o.model_hash.empty() ? json(nullptr) : json(o.model_hash)},
                              {"sha256", nullptr},
                              {"filename", o.model_path},
                              {"config", nullptr}}}));
    });
    http.Get("/sdapi/v1/samplers", [](const httplib::Request&, httplib::Response& r) { send_json(r, 200, samplers_json()); });
    http.Get("/sdapi/v1/schedulers", [](const httplib::Request&, httplib::Response& r) { send_json(r, 200, schedulers_json()); });
    http.Get("/sdapi/v1/memory", [this](const httplib::Request&, httplib::Response& r) { send_json(r, 200, memory_json()); });
    http.Post("/sdapi/v1/png-info", [](const httplib::Request& q, httplib::Response& r) {
      json b;
      if (!parse_body(q, r, &b)) return;
      if (!b.is_object() || !b.contains("image") || !b["image"].is_string()) return send_json(r, 422, error_body(422, "image: expected a base64 string"));
      auto bytes = base64_decode(b["image"].get<std::string>());
      if (!bytes) return send_json(r, 422, error_body(422, "image: " + bytes.status().message()));
      std::map<std::string, std::string> text;
      auto img = decode_png(bytes->data(), bytes->size(), &text);
      if (!img) return send_json(r, 422, error_body(422, "image: not a readable PNG (" + img.status().message() + ")"));
      const std::string info = text.count("parameters") ? text["parameters"] : "";
      json items = json::object();
      for (const auto& [k, v] : text) items[k] = v;
      send_json(r, 200, {{"info", info}, {"items", items}, {"parameters", info.empty() ? json::object() : parse_infotext(info)}});
    });
    // Readiness: 200 only while jobs are taken. Liveness (/health/live): 200 unless the model failed to
    // load - a first engine build may take minutes, a drain up to its grace period.
    http.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
      if (draining) return send_json(r, 503, {{"status", "draining"}});
      if (is_ready) return send_json(r, 200, {{"status", "ready"}});
      std::lock_guard<std::mutex> lk(mu);
      send_json(r, 503, {{"status", load_error.empty() ? "loading" : "failed"}, {"detail", load_error}});
    });
    http.Get("/health/live", [this](const httplib::Request&, httplib::Response& r) {
      std::lock_guard<std::mutex> lk(mu);
      if (!load_error.empty()) return send_json(r, 503, {{"status", "failed"}, {"detail", load_error}});
      send_json(r, 200, {{"status", is_ready ? (draining ? "draining" : "ready") : "loading"}});
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) { r.set_content(metrics_text(), "text/plain; version=0.0.4"); });
    // Progress as server-sent events: one frame as soon as the stream opens, one as soon as a batch takes
    // its first step or ends after a quiet spell, then at most one per 100 ms while it steps, and one every
    // 250 ms while nothing changes (a client that has gone is noticed at the next write).
    http.Get("/sdrt/v1/events", [this](const httplib::Request&, httplib::Response& r) {
      r.set_header("Cache-Control", "no-cache");
      struct Cursor {
        bool first = true;
        uint64_t seen = 0;
        clk::time_point changed{};  // when the last frame for a change was sent
      };
      auto cur = std::make_shared<Cursor>();
      r.set_chunked_content_provider("text/event-stream", [this, cur](size_t, httplib::DataSink& sink) {
        if (!cur->first) {
          std::unique_lock<std::mutex> lk(mu);
          progress_cv.wait_for(lk, std::chrono::milliseconds(250), [&] { return stopping || progress_seq != cur->seen; });
          if (stopping) return false;
          if (progress_seq != cur->seen) {
            const auto next = cur->changed + std::chrono::milliseconds(100);
            if (clk::now() < next) {
              lk.unlock();
              std::this_thread::sleep_until(next);
            }
            cur->changed = clk::now();
          }
        }
        if (stopping) return false;
        {
          std::lock_guard<std::mutex> lk(mu);
          cur->seen = progress_seq;
        }
        cur->first = false;
        const std::string ev = "data: " + progress_json(true).dump() + "\n\n";
        return sink.write(ev.data(), ev.size());
      });
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& r) { r.set_content(web_page(), "text/html; charset=utf-8"); });
  }
};

Server::Server(ServeOptions opts, PipelineLoader loader) : Server(std::move(opts), std::vector<PipelineLoader>{std::move(loader)}) {}

Server::Server(ServeOptions opts, std::vector<PipelineLoader> loaders) : impl_(std::make_unique<Impl>(std::move(opts), std::move(loaders))) {}

Server::~Server() { stop(); }

bool Server::ready() const { return impl_->is_ready; }

Result<int> Server::start() {
  Impl& s = *impl_;
  if (s.slots.empty()) return invalid_argument("no engine to serve with");
  s.routes();
  if (s.o.port < 0 || s.o.port > 65535) return invalid_argument("port must be between 0 and 65535");
  // cpp-httplib listens with a backlog of 5: a burst of clients connecting at once overflows it, the kernel
  // drops their handshakes' last packets, their requests arrive only on TCP retransmission seconds later, and
  // the server closes a connection that stays silent for 5 s - the client sees the connection close without
  // an answer. Keep the listening socket and listen again with the system's maximum backlog once bound.
  int listen_fd = -1;
  s.http.set_socket_options([&listen_fd](socket_t fd) {
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));  // what cpp-httplib's default options set
    listen_fd = fd;
  });
  if (s.o.port == 0) {
    s.port = s.http.bind_to_any_port(s.o.host);
    if (s.port <= 0) return io_error("cannot bind to " + s.o.host);
  } else {
    if (!s.http.bind_to_port(s.o.host, s.o.port)) return io_error("cannot bind to " + s.o.host + ":" + std::to_string(s.o.port) + " (in use?)");
    s.port = s.o.port;
  }
  if (listen_fd >= 0 && ::listen(listen_fd, SOMAXCONN) != 0) std::fprintf(stderr, "sdrt serve: warning: cannot raise the listen backlog\n");
  s.listen_thread = std::thread([&s] { s.http.listen_after_bind(); });
  for (auto& sl : s.slots) sl->worker = std::thread([&s, p = sl.get()] { s.work(*p); });
  s.load_thread = std::thread([&s] { s.load(); });
  return s.port;
}

int Server::drain(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lk(s.mu);
  s.draining = true;
  auto idle = [&] {  // nothing running, nothing queued but jobs whose clients have gone
    return s.running_jobs() == 0 && std::all_of(s.queue.begin(), s.queue.end(), [](const auto& j) { return j->cancelled.load(); });
  };
  // Without a loaded model nothing runs: the queue is empty then (requests get 503 while loading).
  if (s.cv.wait_for(lk, grace, idle)) return 0;
  int handed = 0;
  for (auto& j : s.queue) {
    if (!j->cancelled) ++handed;
    s.finish(j, 503, error_body(503, kHandedBack));
  }
  s.queue.clear();
  handed += s.running_jobs();
  s.hand_back = true;
  for (auto& sl : s.slots) sl->interrupt = true;  // running batches stop at their next step and answer 503
  s.cv.wait(lk, [&] { return s.running_jobs() == 0; });
  return handed;
}

void Server::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;
  for (auto& sl : s.slots) sl->interrupt = true;
  s.cv.notify_all();
  {
    std::lock_guard<std::mutex> lk(s.mu);  // wakes event streams waiting for progress
    s.progress_cv.notify_all();
  }
  s.http.stop();
  if (s.listen_thread.joinable()) s.listen_thread.join();
  if (s.load_thread.joinable()) s.load_thread.join();
  for (auto& sl : s.slots)
    if (sl->worker.joinable()) sl->worker.join();
  std::lock_guard<std::mutex> lk(s.mu);
  for (auto& j : s.queue) s.finish(j, 503, error_body(503, "the server is stopping"));
  s.queue.clear();
}


}  // namespace sdrt::server
