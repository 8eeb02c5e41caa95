#include "server/webui.h"

#include <cmath>

#include "pipeline/scheduler.h"

namespace sdrt::server {
namespace {

using nlohmann::json;

const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string type_name(const json& v) {
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_number()) return "number";
  if (v.is_array()) return "array";
  if (v.is_object()) return "object";
  return "null";
}

Status type_error(const char* key, const char* want, const json& got) {
  return invalid_argument(std::string(key) + ": expected " + want + ", got " + type_name(got));
}

Status get(const json& body, const char* key, std::string* out) {
  if (const json* v = field(body, key)) {
    if (!v->is_string()) return type_error(key, "a string", *v);
    *out = v->get<std::string>();
  }
  return Status::ok();
}

Status get(const json& body, const char* key, int64_t* out) {
  if (const json* v = field(body, key)) {
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > (uint64_t)INT64_MAX) return invalid_argument(std::string(key) + ": out of range");
      *out = v->get<int64_t>();
    } else if (v->is_number_float()) {
      const double d = v->get<double>();
      if (d != std::floor(d) || std::fabs(d) > 9.0e15) return invalid_argument(std::string(key) + ": expected an integer");
      *out = (int64_t)d;
    } else {
      return type_error(key, "an integer", *v);
    }
  }
  return Status::ok();
}

Status get(const json& body, const char* key, int* out) {
  int64_t v = *out;
  SDRT_RETURN_IF_ERROR(get(body, key, &v));
  if (v < INT32_MIN || v > INT32_MAX) return invalid_argument(std::string(key) + ": out of range");
  *out = (int)v;
  return Status::ok();
}

Status get(const json& body, const char* key, double* out) {
  if (const json* v = field(body, key)) {
    if (!v->is_number()) return type_error(key, "a number", *v);
    *out = v->get<double>();
  }
  return Status::ok();
}

Status get(const json& body, const char* key, bool* out) {
  if (const json* v = field(body, key)) {
    if (!v->is_boolean()) return type_error(key, "a boolean", *v);
    *out = v->get<bool>();
  }
  return Status::ok();
}

Status get(const json& body, const char* key, std::vector<std::string>* out) {
  if (const json* v = field(body, key)) {
    if (!v->is_array()) return type_error(key, "an array of strings", *v);
    out->clear();
    for (const auto& e : *v) {
      if (!e.is_string()) return type_error(key, "an array of strings", e);
      out->push_back(e.get<std::string>());
    }
  }
  return Status::ok();
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

Result<WebuiRequest> parse_generation_request(const json& body, bool img2img, const std::string& model_title, int clip_skip) {
  if (!body.is_object()) return invalid_argument("body: expected a JSON object, got " + type_name(body));
  WebuiRequest w;
  GenerateRequest& r = w.req;
  r.clip_skip = clip_skip;
  r.steps = 50;  // the WebUI API's defaults
  r.width = r.height = 512;
  r.sampler = "Euler a";
  r.seed = -1;
  std::string sampler_index, scheduler;
  SDRT_RETURN_IF_ERROR(get(body, "prompt", &r.prompt));
  SDRT_RETURN_IF_ERROR(get(body, "negative_prompt", &r.negative_prompt));
  SDRT_RETURN_IF_ERROR(get(body, "seed", &r.seed));
  SDRT_RETURN_IF_ERROR(get(body, "subseed", &w.subseed));
  SDRT_RETURN_IF_ERROR(get(body, "subseed_strength", &w.subseed_strength));
  SDRT_RETURN_IF_ERROR(get(body, "batch_size", &r.batch_size));
  SDRT_RETURN_IF_ERROR(get(body, "n_iter", &r.batch_count));
  SDRT_RETURN_IF_ERROR(get(body, "steps", &r.steps));
  SDRT_RETURN_IF_ERROR(get(body, "cfg_scale", &r.cfg_scale));
  SDRT_RETURN_IF_ERROR(get(body, "width", &r.width));
  SDRT_RETURN_IF_ERROR(get(body, "height", &r.height));
  SDRT_RETURN_IF_ERROR(get(body, "sampler_index", &sampler_index));
  if (!sampler_index.empty()) r.sampler = sampler_index;
  SDRT_RETURN_IF_ERROR(get(body, "sampler_name", &r.sampler));
  SDRT_RETURN_IF_ERROR(get(body, "scheduler", &scheduler));
  SDRT_RETURN_IF_ERROR(get(body, "send_images", &w.send_images));
  SDRT_RETURN_IF_ERROR(get(body, "save_images", &w.save_images));
  SDRT_RETURN_IF_ERROR(get(body, "styles", &w.styles));
  for (const char* b : {"restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid"}) {
    bool ignored = false;
    SDRT_RETURN_IF_ERROR(get(body, b, &ignored));
  }
  if (scheduler == "Automatic" || scheduler == "automatic") scheduler.clear();
  r.schedule_type = scheduler;
  if (const json* o = field(body, "override_settings")) {
    if (!o->is_object()) return type_error("override_settings", "an object", *o);
    std::string ckpt;
    SDRT_RETURN_IF_ERROR(get(*o, "sd_model_checkpoint", &ckpt));
    if (!ckpt.empty() && ckpt != model_title) return invalid_argument("override_settings.sd_model_checkpoint: only '" + model_title + "' is loaded");
    SDRT_RETURN_IF_ERROR(get(*o, "CLIP_stop_at_last_layers", &r.clip_skip));
  }
  if (r.seed < -1) r.seed = -1;  // the WebUI treats any negative seed as random
  if (img2img) {
    r.strength = 0.75;
    SDRT_RETURN_IF_ERROR(get(body, "denoising_strength", &r.strength));
    std::vector<std::string> init;
    SDRT_RETURN_IF_ERROR(get(body, "init_images", &init));
    if (init.empty()) return invalid_argument("init_images: img2img needs one base64 PNG image");
    auto bytes = base64_decode(init[0]);
    if (!bytes) return invalid_argument("init_images[0]: " + bytes.status().message());
    auto img = decode_png(bytes->data(), bytes->size());
    if (!img) return invalid_argument("init_images[0]: not a readable PNG image (" + img.status().message() + ")");
    r.init_image = std::move(img).value();
  }
  json p = {{"prompt", r.prompt},
            {"negative_prompt", r.negative_prompt},
            {"seed", r.seed},
            {"subseed", w.subseed},
            {"subseed_strength", w.subseed_strength},
            {"batch_size", r.batch_size},
            {"n_iter", r.batch_count},
            {"steps", r.steps},
            {"cfg_scale", r.cfg_scale},
            {"width", r.width},
            {"height", r.height},
            {"sampler_name", r.sampler},
            {"scheduler", scheduler.empty() ? "Automatic" : scheduler},
            {"styles", w.styles},
            {"send_images", w.send_images},
            {"save_images", w.save_images},
            {"override_settings", body.contains("override_settings") && body["override_settings"].is_object() ? body["override_settings"] : json::object()}};
  if (img2img) p["denoising_strength"] = r.strength, p["init_images"] = json::array({"<" + std::to_string(body["init_images"].size()) + " image(s)>"});
  w.parameters = std::move(p);
  return w;
}

json generation_info(const WebuiRequest& w, const GenerateResult& res, const std::string& model_name, const std::string& model_hash,
                     const std::string& job_timestamp) {
  const GenerateRequest& r = w.req;
  const size_t n = res.seeds.size();
  json all_prompts = json::array(), all_neg = json::array(), all_subseeds = json::array();
  for (size_t i = 0; i < n; ++i) {
    all_prompts.push_back(r.prompts.empty() ? r.prompt : r.prompts[i]);
    all_neg.push_back(r.negative_prompts.empty() ? r.negative_prompt : r.negative_prompts[i]);
    all_subseeds.push_back(w.subseed < 0 ? res.seeds[i] + 1 : w.subseed + (int64_t)i);
  }
  auto kind = parse_sampler(r.sampler, r.schedule_type);
  return {{"prompt", r.prompt},
          {"all_prompts", all_prompts},
          {"negative_prompt", r.negative_prompt},
          {"all_negative_prompts", all_neg},
          {"seed", n ? res.seeds[0] : r.seed},
          {"all_seeds", res.seeds},
          {"subseed", all_subseeds.empty() ? json(w.subseed) : all_subseeds[0]},
          {"all_subseeds", all_subseeds},
          {"subseed_strength", w.subseed_strength},
          {"width", r.width},
          {"height", r.height},
          {"sampler_name", kind ? sampler_webui_name(*kind) : r.sampler},
          {"cfg_scale", r.cfg_scale},
          {"steps", r.steps},
          {"batch_size", r.batch_size},
          {"restore_faces", false},
          {"face_restoration_model", nullptr},
          {"sd_model_name", model_name},
          {"sd_model_hash", model_hash.empty() ? json(nullptr) : json(model_hash)},
          {"sd_vae_name", nullptr},
          {"sd_vae_hash", nullptr},
          {"seed_resize_from_w", -1},
          {"seed_resize_from_h", -1},
          {"denoising_strength", (r.init_image || r.init_tensor) ? json(r.strength) : json(nullptr)},
          {"extra_generation_params", json::object()},
          {"index_of_first_image", 0},
          {"infotexts", res.infotexts},
          {"styles", w.styles},
          {"job_timestamp", job_timestamp},
          {"clip_skip", r.clip_skip},
          {"is_using_inpainting_conditioning", false},
          {"version", "sdrt " SDRT_VERSION}};
}

json samplers_json() {
  json out = json::array();
  for (const std::string& n : sampler_names()) {
    auto k = parse_sampler(n, "");
    if (!k) continue;
    out.push_back({{"name", sampler_webui_name(*k)}, {"aliases", json::array({n})}, {"options", json::object()}});
  }
  return out;
}

json schedulers_json() {
  return json::array({{{"name", "automatic"}, {"label", "Automatic"}, {"aliases", nullptr}, {"default_rho", -1}, {"need_inner_model", false}},
                      {{"name", "karras"}, {"label", "Karras"}, {"aliases", nullptr}, {"default_rho", 7.0}, {"need_inner_model", false}}});
}

std::string base64_encode(const std::vector<uint8_t>& d) {
  std::string out;
  out.reserve((d.size() + 2) / 3 * 4);
  for (size_t i = 0; i < d.size(); i += 3) {
    const uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < d.size() ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < d.size() ? d[i + 2] : 0);
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += i + 1 < d.size() ? kB64[v >> 6 & 63] : '=';
    out += i + 2 < d.size() ? kB64[v & 63] : '=';
  }
  return out;
}

Result<std::vector<uint8_t>> base64_decode(const std::string& text) {
  size_t start = 0;
  if (text.rfind("data:", 0) == 0) {  // data:image/png;base64,....
    const size_t comma = text.find(',');
    if (comma == std::string::npos) return invalid_argument("malformed data URL");
    start = comma + 1;
  }
  std::vector<uint8_t> out;
  out.reserve((text.size() - start) / 4 * 3);
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (size_t i = start; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n' || c == '\r' || c == ' ') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return invalid_argument("invalid base64 (data after padding)");
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else return invalid_argument("invalid base64 character");
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back((uint8_t)(acc >> bits & 0xff));
    }
  }
  if (pad > 2 || bits >= 6) return invalid_argument("invalid base64 length");
  if (out.empty()) return invalid_argument("empty base64 data");
  return out;
}

json parse_infotext(const std::string& text) {
  json items = json::object();
  std::string body = text;
  const size_t last_nl = body.rfind('\n');
  std::string params = last_nl == std::string::npos ? body : body.substr(last_nl + 1);
  std::string head = last_nl == std::string::npos ? "" : body.substr(0, last_nl);
  if (params.find("Steps: ") == std::string::npos) head = body, params.clear();
  const size_t neg = head.find("\nNegative prompt: ");
  if (head.rfind("Negative prompt: ", 0) == 0) {
    items["Prompt"] = "";
    items["Negative prompt"] = head.substr(17);
  } else if (neg != std::string::npos) {
    items["Prompt"] = head.substr(0, neg);
    items["Negative prompt"] = head.substr(neg + 18);
  } else {
    items["Prompt"] = head;
  }
  // key: value, key: "quoted, value", ...
  size_t i = 0;
  while (i < params.size()) {
    const size_t colon = params.find(": ", i);
    if (colon == std::string::npos) break;
    std::string key = params.substr(i, colon - i);
    size_t v = colon + 2, end;
    std::string value;
    if (v < params.size() && params[v] == '"') {
      end = params.find('"', v + 1);
      if (end == std::string::npos) end = params.size();
      value = params.substr(v + 1, end - v - 1);
      end = params.find(", ", end);
    } else {
      end = params.find(", ", v);
      value = params.substr(v, end == std::string::npos ? std::string::npos : end - v);
    }
    items[key] = value;
    if (end == std::string::npos) break;
    i = end + 2;
  }
  return items;
}

}  // namespace sdrt::server
