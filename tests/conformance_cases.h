// The pipeline cases of ../shared/conformance/tiny-sd15/reference.json as engine requests.
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>

#include "pipeline/pipeline.h"
#include "test_util.h"

namespace sdrt::test {

// reference.json was written by Python, which spells -inf as -Infinity (not JSON).
inline nlohmann::json reference_cases() {
  std::ifstream f(tiny_dir() / "reference.json");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (size_t p; (p = text.find("-Infinity")) != std::string::npos;) text.replace(p, 9, "-1e308");
  return nlohmann::json::parse(text)["cases"];
}

// A txt2img case as a request (CPU generator, as diffusers seeds); its reference latents' name in *key.
inline GenerateRequest txt2img_request(const nlohmann::json& c, std::string* key) {
  GenerateRequest r;
  r.prompt = c["prompt"];
  r.negative_prompt = c["negative_prompt"].is_null() ? "" : c["negative_prompt"].get<std::string>();
  r.steps = c["steps"];
  r.cfg_scale = c["guidance_scale"];
  r.width = c["width"];
  r.height = c["height"];
  r.seed = c["seed"];
  r.sampler = c["scheduler"];
  r.rng = "cpu";
  *key = "pipe." + c["scheduler"].get<std::string>() + ".seed" + std::to_string(r.seed) + ".latents";
  return r;
}

}  // namespace sdrt::test
