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

// The device-loop tests' request: two images of "a red cube on a table" (negative prompt "blurry") with
// this sampler, guidance scale, size, step count and seed.
inline GenerateRequest loop_request(const std::string& sampler, double cfg, int width, int height, int steps, int64_t seed) {
  GenerateRequest r;
  r.prompt = "a red cube on a table";
  r.negative_prompt = "blurry";
  r.width = width;
  r.height = height;
  r.steps = steps;
  r.seed = seed;
  r.batch_size = 2;
  r.cfg_scale = cfg;
  r.sampler = sampler;
  return r;
}

}  // namespace sdrt::test
