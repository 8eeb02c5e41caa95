// Samplers as diffusers implements them (DDIM, PNDM, Euler, Euler a, DPM++ 2M Karras, LMS), configured
// from scheduler_config.json's beta schedule. A scheduler steps a whole latent batch in place; Euler a
// takes its fresh noise from the caller, who owns the per-image generators.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "sdrt/status.h"

namespace sdrt {

struct BetaSchedule {
  int num_train_timesteps = 1000;
  double beta_start = 0.00085, beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // or "linear"
  int steps_offset = 1;
  bool set_alpha_to_one = false;
  std::string prediction_type = "epsilon";
};
// Reads a diffusers scheduler_config.json; SD 1.x defaults where absent.
Result<BetaSchedule> load_beta_schedule(const std::string& path);

enum class SamplerKind { DDIM, PNDM, Euler, EulerA, DPMpp2MKarras, LMS };
// Engine names (ddim, pndm, euler, euler_a, dpmpp_2m_karras, lms) and the WebUI's ("DDIM", "PLMS",
// "Euler", "Euler a", "DPM++ 2M Karras", "DPM++ 2M" with scheduler "Karras", "LMS").
Result<SamplerKind> parse_sampler(const std::string& name, const std::string& schedule_type = "");
const char* sampler_name(SamplerKind k);        // engine name
const char* sampler_webui_name(SamplerKind k);  // as the WebUI writes it in infotexts
std::vector<std::string> sampler_names();

// One step's arithmetic as elementwise linear combinations over whole latent-batch vectors, so that the
// same step runs on the host or on the device (a kernel per op): dst[k] = sum_j coef_j * src_j[k],
// ops in order, dst may be one of the sources. Vectors: kX the latents, kEps the guided prediction,
// kNoise fresh standard normals (ancestral samplers), kSlot0 + s the scheduler's own history slots.
struct LinTerm {
  int src;
  float coef;
};
struct LinOp {
  int dst;
  std::vector<LinTerm> terms;
};
constexpr int kX = 0, kEps = 1, kNoise = 2, kSlot0 = 3, kMaxLinTerms = 6;

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // Model timesteps, one per UNet evaluation (PNDM evaluates steps + 1 times).
  const std::vector<float>& timesteps() const { return timesteps_; }
  virtual float init_noise_sigma() const { return 1.f; }
  // Factor applied to the latents before the UNet at evaluation i.
  virtual float input_scale(size_t i) const { return 1.f; }
  // The ops of evaluation i's step; advances the scheduler's history bookkeeping, so each i is asked
  // for once, in order (or step() is called, which asks for it).
  virtual std::vector<LinOp> program(size_t i) = 0;
  // History vectors program() refers to (kSlot0 .. kSlot0 + slots() - 1).
  virtual int slots() const { return 0; }
  // x <- the next latents given the guided noise prediction eps at evaluation i; n floats, on the host
  // (program() run over host vectors). noise: fresh standard normals for ancestral samplers.
  void step(size_t i, const float* eps, float* x, int64_t n, const float* noise);
  // img2img: noised latents at evaluation i from clean latents x0.
  virtual void add_noise(size_t i, const float* x0, const float* noise, float* out, int64_t n) const = 0;
  virtual bool needs_noise() const { return false; }

 protected:
  std::vector<float> timesteps_;

 private:
  std::vector<std::vector<float>> host_slots_;
};

std::unique_ptr<Scheduler> make_scheduler(SamplerKind kind, const BetaSchedule& s, int steps);

}  // namespace sdrt
