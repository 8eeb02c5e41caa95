// `sdrt serve` end to end: the real server on loopback with the tiny conformance model (CPU backend), a
// real HTTP client (cpp-httplib) for every endpoint, field defaults, an image identical to `sdrt generate`
// with the same settings, malformed requests, auth, the queue bound, batching and client disconnects.
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "backends/cuda/device_info.h"
#include "io/png.h"
#include "pipeline/resolve.h"
#include "server/server.h"
#include "server/webui.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;
using nlohmann::json;

namespace {

std::string tiny_model() { return (tiny_dir() / "diffusers").string(); }
std::string tiny_tokenizer() { return (tiny_dir() / "diffusers/tokenizer").string(); }

struct Running {
  std::unique_ptr<server::Server> srv;
  int port = 0;
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
};

// engines: how many pipelines behind the queue; backend(k) makes engine k's backend (default: the CPU).
Running start_server(server::ServeOptions so = {}, int engines = 1, std::function<std::unique_ptr<Backend>(int)> backend = nullptr) {
  ResolveOptions ro;
  ro.tokenizer_dir = tiny_tokenizer();
  ro.allow_download = false;
  auto rm = resolve_model(tiny_model(), ro);
  EXPECT_TRUE(rm.is_ok()) << rm.status().message();
  so.port = 0;
  so.model_name = "tiny";
  so.model_hash = rm->options.model_hash;
  so.model_title = "tiny [" + so.model_hash + "]";
  auto shared = std::make_shared<ResolvedModel>(std::move(rm).value());
  Running r;
  std::vector<server::PipelineLoader> loaders;
  for (int k = 0; k < engines; ++k)
    loaders.push_back([shared, backend, k]() -> Result<std::unique_ptr<Pipeline>> {  // a model copy each: weights are shared
      return Pipeline::create(shared->model, shared->options, backend ? backend(k) : make_cpu_backend());
    });
  r.srv = std::make_unique<server::Server>(so, std::move(loaders));
  auto port = r.srv->start();
  EXPECT_TRUE(port.is_ok()) << port.status().message();
  r.port = port.is_ok() ? *port : 0;
  auto c = r.client();
  for (int i = 0; i < 200; ++i) {  // /health turns 200 once the model is loaded
    auto h = c.Get("/health");
    if (h && h->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return r;
}

json post(httplib::Client& c, const std::string& path, const json& body, int* status) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  if (!r) {
    *status = -1;
    return nullptr;
  }
  *status = r->status;
  try {
    return json::parse(r->body);
  } catch (...) {
    return r->body;
  }
}

Image decode_b64_png(const std::string& b64, std::map<std::string, std::string>* text = nullptr) {
  auto bytes = server::base64_decode(b64);
  EXPECT_TRUE(bytes.is_ok());
  auto img = decode_png(bytes->data(), bytes->size(), text);
  EXPECT_TRUE(img.is_ok());
  return img ? *img : Image{};
}

}  // namespace

TEST(Server, EndpointsDefaultsAndImageIdenticalToGenerate) {
  SDRT_REQUIRE_CONFORMANCE();
  Running s = start_server();
  auto c = s.client();
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200) << h->body;

  int st = 0;
  json body = {{"prompt", "a photo of a cat"}, {"steps", 3}, {"width", 64}, {"height", 64}, {"seed", 42}, {"unknown_field", {1, 2}}};
  json res = post(c, "/sdapi/v1/txt2img", body, &st);
  ASSERT_EQ(st, 200) << res.dump();
  ASSERT_EQ(res["images"].size(), 1u);
  const json& p = res["parameters"];  // the WebUI's defaults for what the request left out
  EXPECT_EQ(p["sampler_name"], "Euler a");
  EXPECT_EQ(p["cfg_scale"], 7.0);
  EXPECT_EQ(p["batch_size"], 1);
  EXPECT_EQ(p["n_iter"], 1);
  EXPECT_EQ(p["negative_prompt"], "");
  EXPECT_EQ(p["send_images"], true);
  json info = json::parse(res["info"].get<std::string>());
  EXPECT_EQ(info["seed"], 42);
  EXPECT_EQ(info["all_seeds"], json::array({42}));
  EXPECT_EQ(info["prompt"], "a photo of a cat");
  EXPECT_EQ(info["width"], 64);
  EXPECT_EQ(info["sampler_name"], "Euler a");
  ASSERT_EQ(info["infotexts"].size(), 1u);
  std::map<std::string, std::string> text;
  Image img = decode_b64_png(res["images"][0], &text);
  EXPECT_EQ(text["parameters"], info["infotexts"][0]);

  // the same settings through `sdrt generate`: the same pixels
  auto dir = scratch_file("sdrt_server_test", "gen");
  std::filesystem::remove_all(dir);
  CliRun g = sdrt_cli("generate -m " + tiny_model() + " --tokenizer " + tiny_tokenizer() +
                      " -p \"a photo of a cat\" --steps 3 -W 64 -H 64 --seed 42 --sampler \"Euler a\" --cfg-scale 7 --backend cpu -o " + dir.string());
  ASSERT_EQ(g.code, 0) << g.out;
  std::string pixels;
  for (const auto& e : std::filesystem::directory_iterator(dir)) pixels = png_pixels(e.path());
  EXPECT_EQ(pixels, std::string(img.rgb.begin(), img.rgb.end())) << "server image differs from sdrt generate";

  // png-info of that image
  res = post(c, "/sdapi/v1/png-info", {{"image", "data:image/png;base64," + res["images"][0].get<std::string>()}}, &st);
  ASSERT_EQ(st, 200) << res.dump();
  EXPECT_EQ(res["info"], info["infotexts"][0]);
  EXPECT_EQ(res["parameters"]["Prompt"], "a photo of a cat");
  EXPECT_EQ(res["parameters"]["Seed"], "42");
  EXPECT_EQ(res["parameters"]["Steps"], "3");

  // img2img from it, two images, seeds counting up from the given one
  json i2i = {{"init_images", json::array({server::base64_encode(*encode_png(img))})}, {"prompt", "a dog"}, {"steps", 4}, {"width", 64},
              {"height", 64}, {"seed", 7}, {"batch_size", 2}, {"denoising_strength", 0.5}, {"sampler_name", "DDIM"}};
  res = post(c, "/sdapi/v1/img2img", i2i, &st);
  ASSERT_EQ(st, 200) << res.dump();
  EXPECT_EQ(res["images"].size(), 2u);
  info = json::parse(res["info"].get<std::string>());
  EXPECT_EQ(info["all_seeds"], json::array({7, 8}));
  EXPECT_EQ(info["denoising_strength"], 0.5);

  // send_images false
  res = post(c, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}, {"send_images", false}}, &st);
  ASSERT_EQ(st, 200);
  EXPECT_TRUE(res["images"].empty());
  EXPECT_GE(json::parse(res["info"].get<std::string>())["seed"].get<int64_t>(), 0);  // -1 became a real seed

  // the listing endpoints
  auto get = [&](const char* path) {
    auto r = c.Get(path);
    EXPECT_TRUE(r) << path;
    EXPECT_EQ(r ? r->status : -1, 200) << path;
    return r ? json::parse(r->body) : json();
  };
  json samplers = get("/sdapi/v1/samplers");
  std::vector<std::string> names;
  for (const auto& x : samplers) names.push_back(x["name"]);
  for (const char* n : {"Euler a", "Euler", "DDIM", "PLMS", "LMS", "DPM++ 2M Karras"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  EXPECT_EQ(get("/sdapi/v1/schedulers")[0]["label"], "Automatic");
  json models = get("/sdapi/v1/sd-models");
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["model_name"], "tiny");
  json opts = get("/sdapi/v1/options");
  EXPECT_EQ(opts["sd_model_checkpoint"], models[0]["title"]);
  EXPECT_TRUE(get("/sdapi/v1/memory")["ram"]["total"].get<int64_t>() > 0);
  json prog = get("/sdapi/v1/progress");
  EXPECT_EQ(prog["progress"], 0.0);
  EXPECT_EQ(prog["state"]["job_count"], 0);
  EXPECT_TRUE(prog.contains("current_image"));

  // options: another checkpoint is refused; CLIP skip becomes the default
  post(c, "/sdapi/v1/options", {{"sd_model_checkpoint", "other.safetensors"}}, &st);
  EXPECT_EQ(st, 400);
  post(c, "/sdapi/v1/options", {{"CLIP_stop_at_last_layers", 2}}, &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(get("/sdapi/v1/options")["CLIP_stop_at_last_layers"], 2);
  res = post(c, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}, {"seed", 1}}, &st);
  ASSERT_EQ(st, 200);
  EXPECT_EQ(json::parse(res["info"].get<std::string>())["clip_skip"], 2);

  for (const char* path : {"/sdapi/v1/interrupt", "/sdapi/v1/skip"}) {
    post(c, path, json::object(), &st);
    EXPECT_EQ(st, 200) << path;
  }
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<form"), std::string::npos);
  EXPECT_EQ(page->body.find("http://"), std::string::npos) << "the page must not load external resources";
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("sdrt_images_total 5"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("sdrt_request_duration_seconds_count 4"), std::string::npos) << metrics->body;
  EXPECT_EQ(c.Get("/nope")->status, 404);

  // server-sent events: progress frames
  std::string stream;
  auto ev = c.Get("/sdrt/v1/events", [&](const char* d, size_t n) {
    stream.append(d, n);
    return stream.find("\n\n", stream.find("\n\n") + 2) == std::string::npos;  // two events, then hang up
  });
  EXPECT_NE(stream.find("data: {"), std::string::npos);
  EXPECT_NE(stream.find("\"sampling_steps\""), std::string::npos);
}

// A subscriber that is connected when a job starts sees its steps, however short the job: frames follow
// the steps (not only a fixed 4-a-second tick), and the last frame after the job is idle again.
TEST(Server, EventsShowTheStepsOfAShortJob) {
  SDRT_REQUIRE_CONFORMANCE();
  Running s = start_server();
  std::mutex m;
  std::condition_variable cv;
  std::vector<json> frames;
  std::atomic<bool> hang_up{false};
  std::thread sub([&] {
    auto c = s.client();
    std::string buf;
    c.Get("/sdrt/v1/events", [&](const char* d, size_t n) {
      buf.append(d, n);
      for (size_t e; (e = buf.find("\n\n")) != std::string::npos; buf.erase(0, e + 2)) {
        EXPECT_EQ(buf.rfind("data: ", 0), 0u) << buf;
        std::lock_guard<std::mutex> lk(m);
        frames.push_back(json::parse(buf.substr(6, e - 6)));
        cv.notify_all();
      }
      return !hang_up.load();
    });
  });
  {
    std::unique_lock<std::mutex> lk(m);  // subscribed: the first frame (idle) has come
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(30), [&] { return !frames.empty(); }));
    EXPECT_EQ(frames[0]["state"]["sampling_steps"], 0) << frames[0].dump();
  }
  auto c = s.client();
  int st = 0;
  json res = post(c, "/sdapi/v1/txt2img", {{"prompt", "a cube"}, {"steps", 20}, {"width", 64}, {"height", 64}, {"seed", 1}}, &st);
  ASSERT_EQ(st, 200) << res.dump();
  {
    std::unique_lock<std::mutex> lk(m);  // the job's end is a change too: an idle frame follows it
    EXPECT_TRUE(cv.wait_for(lk, std::chrono::seconds(30), [&] {
      return frames.size() > 1 && frames.back()["state"]["sampling_steps"] == 0 && frames.back()["progress"] == 0.0;
    }));
  }
  hang_up = true;
  sub.join();
  int stepped = 0;
  for (const json& f : frames) {
    const json& stt = f["state"];
    if (stt["sampling_steps"] == 20) {
      EXPECT_GE(stt["sampling_step"].get<int>(), 0);
      EXPECT_LE(stt["sampling_step"].get<int>(), 20);
      EXPECT_EQ(stt["job"], "job(1)");
      ++stepped;
    }
  }
  EXPECT_GE(stepped, 1) << "no frame showed the job's steps; frames: " << frames.size();
}

TEST(Server, MalformedRequestsGet4xxAndTheServerKeepsServing) {
  SDRT_REQUIRE_CONFORMANCE();
  server::ServeOptions so;
  so.max_body_bytes = 1 << 20;
  Running s = start_server(so);
  auto c = s.client();
  struct Case {
    std::string name, body;
    int status;
    std::string needle;
  };
  const std::string big(2 << 20, 'a');
  const std::vector<Case> cases = {
      {"bad JSON", "{\"prompt\": ", 422, "malformed JSON"},
      {"not an object", "[1,2]", 422, "object"},
      {"steps as string", R"({"steps": "20"})", 422, "steps"},
      {"prompt as number", R"({"prompt": 5})", 422, "prompt"},
      {"fractional width", R"({"width": 64.5})", 422, "width"},
      {"cfg as bool", R"({"cfg_scale": true})", 422, "cfg_scale"},
      {"huge steps", R"({"steps": 100000})", 422, "steps"},
      {"absurd size", R"({"width": 100000, "height": 64})", 422, "width"},
      {"huge batch", R"({"batch_size": 100000, "width": 64, "height": 64})", 422, "batch"},
      {"batch x size too large", R"({"batch_size": 64, "width": 4096, "height": 4096})", 422, "too large"},
      {"unknown sampler", R"({"sampler_name": "Nope"})", 422, "sampler"},
      {"schedule type the sampler does not run", R"({"sampler_name": "Euler a", "scheduler": "Karras"})", 422, "schedule type 'Karras'"},
      {"unknown schedule type", R"({"sampler_name": "DPM++ 2M", "scheduler": "Exponential"})", 422, "schedule type 'Exponential'"},
      {"huge integer", R"({"seed": 1e300})", 422, "seed"},
      {"huge prompt", json{{"prompt", std::string(20000, 'x')}}.dump(), 422, "prompt"},
      {"body too large", json{{"prompt", big}}.dump(), 413, ""},
      {"styles not an array", R"({"styles": "a"})", 422, "styles"},
      {"override_settings not an object", R"({"override_settings": 3})", 422, "override_settings"},
      {"other checkpoint", R"({"override_settings": {"sd_model_checkpoint": "x.ckpt"}})", 422, "sd_model_checkpoint"},
  };
  for (const auto& k : cases) {
    auto r = c.Post("/sdapi/v1/txt2img", k.body, "application/json");
    ASSERT_TRUE(r) << k.name;
    EXPECT_EQ(r->status, k.status) << k.name << ": " << r->body;
    if (!k.needle.empty()) EXPECT_NE(r->body.find(k.needle), std::string::npos) << k.name << ": " << r->body;
  }
  const std::vector<Case> i2i = {
      {"no init image", R"({"prompt": "x"})", 422, "init_images"},
      {"bad base64", R"({"init_images": ["@@@@"]})", 422, "base64"},
      {"base64 of not a PNG", json{{"init_images", {server::base64_encode({'G', 'I', 'F', '8', '9', 'a', 0, 0})}}}.dump(), 422, "PNG"},
      {"init_images of numbers", R"({"init_images": [1]})", 422, "init_images"},
      {"strength out of range", json{{"init_images", {server::base64_encode(*encode_png(Image{8, 8, std::vector<uint8_t>(192)}))}}, {"denoising_strength", 3}, {"width", 64}, {"height", 64}}.dump(), 422, "strength"},
  };
  for (const auto& k : i2i) {
    auto r = c.Post("/sdapi/v1/img2img", k.body, "application/json");
    ASSERT_TRUE(r) << k.name;
    EXPECT_EQ(r->status, k.status) << k.name << ": " << r->body;
    EXPECT_NE(r->body.find(k.needle), std::string::npos) << k.name << ": " << r->body;
  }
  for (const char* b : {"{", "{\"image\": 3}", "{\"image\": \"!!\"}"}) {
    auto r = c.Post("/sdapi/v1/png-info", b, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << b;
  }
  auto r = c.Post("/sdapi/v1/options", "{oops", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
  int st = 0;
  post(c, "/sdapi/v1/txt2img", {{"prompt", "still here"}, {"steps", 1}, {"width", 64}, {"height", 64}}, &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST(Server, ApiAuthIsRequiredExceptForHealth) {
  SDRT_REQUIRE_CONFORMANCE();
  server::ServeOptions so;
  so.api_auth = "alice:s3cret";
  Running s = start_server(so);
  auto c = s.client();
  EXPECT_EQ(c.Get("/health")->status, 200);  // probes and Prometheus need no credentials
  EXPECT_EQ(c.Get("/health/live")->status, 200);
  EXPECT_EQ(c.Get("/metrics")->status, 200);
  EXPECT_EQ(c.Get("/sdapi/v1/samplers")->status, 401);
  EXPECT_EQ(c.Get("/")->status, 401);
  c.set_basic_auth("alice", "wrong");
  EXPECT_EQ(c.Get("/sdapi/v1/samplers")->status, 401);
  c.set_basic_auth("alice", "s3cret");
  EXPECT_EQ(c.Get("/sdapi/v1/samplers")->status, 200);
}

// Concurrent compatible requests run as batches, each response carries its own prompt and seed, and
// the images are what each request gives alone.
TEST(Server, CompatibleRequestsAreBatchedAndNotMixedUp) {
  SDRT_REQUIRE_CONFORMANCE();
  server::ServeOptions so;
  so.max_batch_images = 8;
  Running s = start_server(so);
  {  // a slow job first, so that the others queue behind it
    auto c = s.client();
    int st = 0;
    std::thread slow([&] { post(c, "/sdapi/v1/txt2img", {{"prompt", "slow"}, {"steps", 40}, {"width", 128}, {"height", 128}}, &st); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int n = 6;
    std::vector<json> out(n);
    std::vector<int> status(n);
    std::vector<std::thread> th;
    for (int i = 0; i < n; ++i)
      th.emplace_back([&, i] {
        auto ci = s.client();
        out[i] = post(ci, "/sdapi/v1/txt2img",
                      {{"prompt", "prompt number " + std::to_string(i)}, {"steps", 2}, {"width", 64}, {"height", 64}, {"seed", 1000 + i}}, &status[i]);
      });
    for (auto& t : th) t.join();
    slow.join();
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(status[i], 200) << out[i].dump();
      json info = json::parse(out[i]["info"].get<std::string>());
      EXPECT_EQ(info["prompt"], "prompt number " + std::to_string(i));
      EXPECT_EQ(info["all_seeds"], json::array({1000 + i}));
      EXPECT_NE(info["infotexts"][0].get<std::string>().find("prompt number " + std::to_string(i)), std::string::npos);
    }
    auto m = c.Get("/metrics")->body;
    const size_t at = m.find("\nsdrt_batched_jobs_total ");
    ASSERT_NE(at, std::string::npos);
    EXPECT_GE(std::stoi(m.substr(at + 25)), 2) << m;
    // one of them again, alone: the same image
    int st1 = 0;
    json alone = post(c, "/sdapi/v1/txt2img", {{"prompt", "prompt number 3"}, {"steps", 2}, {"width", 64}, {"height", 64}, {"seed", 1003}}, &st1);
    ASSERT_EQ(st1, 200);
    Image a = decode_b64_png(alone["images"][0]), b = decode_b64_png(out[3]["images"][0]);
    int worst = 0;
    for (size_t k = 0; k < a.rgb.size(); ++k) worst = std::max(worst, std::abs((int)a.rgb[k] - (int)b.rgb[k]));
    EXPECT_LE(worst, 1);
  }
}

TEST(Server, QueueBoundGives429WithRetryAfter) {
  SDRT_REQUIRE_CONFORMANCE();
  server::ServeOptions so;
  so.max_queue = 1;
  so.max_batch_images = 1;
  Running s = start_server(so);
  auto c0 = s.client();
  int st0 = 0;
  std::thread first([&] { post(c0, "/sdapi/v1/txt2img", {{"prompt", "first"}, {"steps", 30}, {"width", 128}, {"height", 128}}, &st0); });
  auto c = s.client();
  for (int i = 0; i < 100; ++i) {  // running, the queue empty
    json prog = json::parse(c.Get("/sdapi/v1/progress")->body);
    if (prog["state"]["sampling_step"].get<int>() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int n = 5;
  std::vector<int> status(n);
  std::vector<std::string> retry(n);
  std::vector<std::thread> th;
  for (int i = 0; i < n; ++i)
    th.emplace_back([&, i] {
      auto ci = s.client();
      auto r = ci.Post("/sdapi/v1/txt2img", json{{"prompt", "q"}, {"steps", 2}, {"width", 64}, {"height", 64}}.dump(), "application/json");
      status[i] = r ? r->status : -1;
      if (r) retry[i] = r->get_header_value("Retry-After");
    });
  for (auto& t : th) t.join();
  first.join();
  EXPECT_EQ(st0, 200);
  int ok = 0, busy = 0;
  for (int i = 0; i < n; ++i) {
    if (status[i] == 200) ++ok;
    if (status[i] == 429) {
      ++busy;
      EXPECT_FALSE(retry[i].empty());
    }
  }
  EXPECT_EQ(ok + busy, n);
  EXPECT_EQ(ok, 1);    // the one that found the queue empty
  EXPECT_EQ(busy, 4);  // the rest were past the bound
}

// A client that hangs up cancels its job: the server stops sampling it and goes idle.
TEST(Server, ClientDisconnectCancelsItsJob) {
  SDRT_REQUIRE_CONFORMANCE();
  Running s = start_server();
  {
    httplib::Client c("127.0.0.1", s.port);
    bool got_images = false;
    std::thread t([&] {
      auto r = c.Post("/sdapi/v1/txt2img", json{{"prompt", "long"}, {"steps", 1000}, {"width", 64}, {"height", 64}}.dump(), "application/json");
      got_images = r && r->status == 200 && r->body.find("images") != std::string::npos;
    });
    std::this_thread::sleep_for(std::chrono::seconds(3));  // streaming by now; then the client hangs up
    c.stop();
    t.join();
    EXPECT_FALSE(got_images);
  }
  auto c = s.client();
  json prog;
  for (int i = 0; i < 100; ++i) {  // idle within a few seconds (a heartbeat write fails, the job stops)
    prog = json::parse(c.Get("/sdapi/v1/progress")->body);
    if (prog["state"]["job_count"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(prog["state"]["job_count"], 0) << prog.dump();
  EXPECT_LT(prog["state"]["sampling_step"].get<int>(), 1000);
  auto m = c.Get("/metrics")->body;
  EXPECT_NE(m.find("sdrt_images_total 0"), std::string::npos) << m;
}

// drain() past its deadline hands the running and the queued job back with a 503 (retry elsewhere); while
// draining the server is not ready (/health 503), still live, and refuses new jobs with 503 + Retry-After.
TEST(Server, DrainHandsBackUnfinishedJobsAtTheDeadline) {
  SDRT_REQUIRE_CONFORMANCE();
  server::ServeOptions so;
  so.max_batch_images = 1;
  Running s = start_server(so);
  int st[2] = {0, 0};
  json res[2];
  std::vector<std::thread> th;
  for (int k = 0; k < 2; ++k)
    th.emplace_back([&, k] {
      auto c = s.client();
      res[k] = post(c, "/sdapi/v1/txt2img", {{"prompt", "long " + std::to_string(k)}, {"steps", 1000}, {"width", 64}, {"height", 64}}, &st[k]);
    });
  auto c = s.client();
  json prog;
  for (int i = 0; i < 100; ++i) {  // one running, one queued
    prog = json::parse(c.Get("/sdapi/v1/progress")->body);
    if (prog["state"]["job_count"] == 2 && prog["state"]["sampling_step"].get<int>() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(prog["state"]["job_count"], 2) << prog.dump();
  std::thread probe([&] {  // while drain() waits
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto pc = s.client();
    EXPECT_EQ(pc.Get("/health")->status, 503);
    EXPECT_EQ(pc.Get("/health/live")->status, 200);
    auto late = pc.Post("/sdapi/v1/txt2img", R"({"prompt": "late", "steps": 2, "width": 64, "height": 64})", "application/json");
    ASSERT_TRUE(late);
    EXPECT_EQ(late->status, 503);
    EXPECT_FALSE(late->get_header_value("Retry-After").empty());
  });
  EXPECT_EQ(s.srv->drain(std::chrono::milliseconds(400)), 2);
  probe.join();
  for (auto& t : th) t.join();
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(st[k], 503) << res[k].dump();
    EXPECT_NE(res[k].dump().find("retry on another replica"), std::string::npos) << res[k].dump();
  }
  // Nothing waiting: a second drain returns at once.
  EXPECT_EQ(s.srv->drain(std::chrono::milliseconds(0)), 0);
}

// Two engines behind one queue (as two GPUs): concurrent jobs run on both, each answer is its own request's
// image, the one a single pipeline makes for it.
namespace {

void two_engines_share_one_queue(const std::string& backend_name) {
  server::ServeOptions so;
  so.max_batch_images = 1;  // one job per batch: the queue must feed both engines
  std::function<std::unique_ptr<Backend>(int)> make_be;
  int ngpu = 0;
  if (backend_name == "cuda") {
    std::string why;
    ngpu = (int)list_gpus(&why).size();
    make_be = [ngpu](int k) {  // device k where there are two GPUs, else both on device 0
      CudaOptions o;
      o.precision = "fp16";
      o.device = ngpu > 1 ? k : 0;
      return make_cuda_backend(o);
    };
  }
  Running s = start_server(so, 2, make_be);
  constexpr int kJobs = 6;
  int st[kJobs] = {};
  json res[kJobs];
  std::vector<std::thread> th;
  for (int k = 0; k < kJobs; ++k)
    th.emplace_back([&, k] {
      auto c = s.client();
      res[k] = post(c, "/sdapi/v1/txt2img", {{"prompt", "engine test " + std::to_string(k)}, {"seed", 100 + k}, {"steps", 12}, {"width", 64}, {"height", 64}},
                    &st[k]);
    });
  for (auto& t : th) t.join();
  const std::string m = s.client().Get("/metrics")->body;
  EXPECT_NE(m.find("sdrt_engines 2"), std::string::npos) << m;
  EXPECT_EQ(m.find("sdrt_engine_batches_total{engine=\"0\"} 0"), std::string::npos) << "engine 0 ran nothing\n" << m;
  EXPECT_EQ(m.find("sdrt_engine_batches_total{engine=\"1\"} 0"), std::string::npos) << "engine 1 ran nothing\n" << m;
  EXPECT_NE(m.find("sdrt_images_total 6"), std::string::npos) << m;
  // each answer against one pipeline's image for the same request
  ResolveOptions ro;
  ro.tokenizer_dir = tiny_tokenizer();
  ro.allow_download = false;
  auto rm = resolve_model(tiny_model(), ro);
  ASSERT_TRUE(rm.is_ok());
  std::unique_ptr<Backend> ref_be = make_be ? make_be(0) : make_cpu_backend();
  auto ref = Pipeline::create(rm->model, rm->options, std::move(ref_be));
  ASSERT_TRUE(ref.is_ok());
  for (int k = 0; k < kJobs; ++k) {
    ASSERT_EQ(st[k], 200) << res[k].dump();
    ASSERT_EQ(res[k]["images"].size(), 1u);
    const json info = json::parse(res[k]["info"].get<std::string>());
    EXPECT_EQ(info["prompt"], "engine test " + std::to_string(k));
    auto w = server::parse_generation_request(
        {{"prompt", "engine test " + std::to_string(k)}, {"seed", 100 + k}, {"steps", 12}, {"width", 64}, {"height", 64}}, false, "tiny", 1);
    ASSERT_TRUE(w.is_ok());
    auto want = (*ref)->generate(w->req);
    ASSERT_TRUE(want.is_ok()) << want.status().message();
    const Image got = decode_b64_png(res[k]["images"][0]);
    if (!make_be) {
      EXPECT_EQ(got.rgb, want->images[0].rgb) << "job " << k;
    } else {  // each CUDA engine times its own kernels: fp16 results may differ in the last bits
      ASSERT_EQ(got.rgb.size(), want->images[0].rgb.size());
      double sum = 0;
      int worst = 0;
      for (size_t i = 0; i < got.rgb.size(); ++i) {
        const int d = std::abs((int)got.rgb[i] - (int)want->images[0].rgb[i]);
        sum += d;
        worst = std::max(worst, d);
      }
      EXPECT_LT(sum / got.rgb.size(), 1.0) << "job " << k;
      EXPECT_LE(worst, 32) << "job " << k;
    }
  }
}

}  // namespace

TEST(Server, TwoEnginesShareOneQueue) {
  SDRT_REQUIRE_CONFORMANCE();
  two_engines_share_one_queue("cpu");
}

// Two CUDA engines (on two GPUs where there are two, else both on GPU 0): each worker thread drives its own
// device, streams and handles.
TEST(Server, TwoCudaEnginesShareOneQueue) {
  SDRT_REQUIRE_CONFORMANCE();
  std::string why;
  if (!make_cuda_backend({}, &why)) GTEST_SKIP() << "CUDA backend not usable here: " << why;
  two_engines_share_one_queue("cuda");
}

// interrupt stops the running job; the client gets a 200 without images, as from the WebUI.
TEST(Server, InterruptStopsTheRunningJob) {
  SDRT_REQUIRE_CONFORMANCE();
  Running s = start_server();
  auto c = s.client();
  int st = 0;
  json res;
  std::thread t([&] { res = post(c, "/sdapi/v1/txt2img", {{"prompt", "long"}, {"steps", 1000}, {"width", 128}, {"height", 128}}, &st); });
  auto c2 = s.client();
  json prog;
  for (int i = 0; i < 200; ++i) {  // running, with a live preview (every 5 steps)
    prog = json::parse(c2.Get("/sdapi/v1/progress")->body);
    if (prog["state"]["sampling_step"].get<int>() > 5 && prog["current_image"].is_string()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(prog["current_image"].is_string()) << prog.dump();
  Image preview = decode_b64_png(prog["current_image"]);
  EXPECT_EQ(preview.width, 16);  // the latents' size
  EXPECT_GT(prog["progress"].get<double>(), 0.0);
  EXPECT_TRUE(json::parse(c2.Get("/sdapi/v1/progress?skip_current_image=true")->body)["current_image"].is_null());
  auto r = c2.Post("/sdapi/v1/interrupt", "", "application/json");
  ASSERT_TRUE(r);
  t.join();
  ASSERT_EQ(st, 200) << res.dump();
  EXPECT_TRUE(res["images"].empty());
}

TEST(ServerWebui, Base64AndInfotext) {
  const std::vector<uint8_t> d = {0, 1, 2, 250, 251, 252, 'x'};
  for (size_t n = 1; n <= d.size(); ++n) {
    std::vector<uint8_t> part(d.begin(), d.begin() + n);
    auto back = server::base64_decode(server::base64_encode(part));
    ASSERT_TRUE(back.is_ok());
    EXPECT_EQ(*back, part);
  }
  EXPECT_EQ(server::base64_encode({'M', 'a', 'n'}), "TWFu");
  EXPECT_FALSE(server::base64_decode("TWF").is_ok() && server::base64_decode("T").is_ok());
  EXPECT_FALSE(server::base64_decode("").is_ok());
  EXPECT_FALSE(server::base64_decode("TW=u").is_ok());
  json p = server::parse_infotext("a cat, (fluffy:1.2)\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 5, Lora hashes: \"a: 1, b: 2\", Size: 64x64");
  EXPECT_EQ(p["Prompt"], "a cat, (fluffy:1.2)");
  EXPECT_EQ(p["Negative prompt"], "dog");
  EXPECT_EQ(p["Sampler"], "Euler a");
  EXPECT_EQ(p["Seed"], "5");
  EXPECT_EQ(p["Lora hashes"], "a: 1, b: 2");
  EXPECT_EQ(p["Size"], "64x64");
}
