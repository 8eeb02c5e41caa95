// The AUTOMATIC1111 WebUI API's request and response shapes (/sdapi/v1/txt2img, img2img, png-info,
// samplers, schedulers): parsing with the WebUI's field names and defaults, type checks that name the
// field, and the response's "parameters" and "info".
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"
#include "sdrt/status.h"

namespace sdrt::server {

struct WebuiRequest {
  GenerateRequest req;
  nlohmann::json parameters;  // the request's fields with defaults filled in, echoed back
  bool send_images = true, save_images = false;
  int64_t subseed = -1;
  double subseed_strength = 0;
  std::vector<std::string> styles;
};

// Errors are InvalidArgument with a message naming the field ("steps: expected an integer, got string").
// Unknown fields are ignored, as the WebUI does. clip_skip applies unless override_settings sets
// CLIP_stop_at_last_layers.
Result<WebuiRequest> parse_generation_request(const nlohmann::json& body, bool img2img, const std::string& model_title, int clip_skip = 1);

// The response's "info" (a JSON object the WebUI returns as a string).
nlohmann::json generation_info(const WebuiRequest& w, const GenerateResult& res, const std::string& model_name, const std::string& model_hash,
                               const std::string& job_timestamp);

// /sdapi/v1/samplers and /sdapi/v1/schedulers
nlohmann::json samplers_json();
nlohmann::json schedulers_json();

// base64 (RFC 4648) with the "data:image/png;base64," prefix the WebUI accepts on input.
std::string base64_encode(const std::vector<uint8_t>& data);
Result<std::vector<uint8_t>> base64_decode(const std::string& text);

// "Steps: 20, Sampler: Euler a, ..." infotext -> {"Prompt": ..., "Negative prompt": ..., "Steps": "20", ...}
nlohmann::json parse_infotext(const std::string& text);

}  // namespace sdrt::server
