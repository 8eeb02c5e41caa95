#include "pipeline/scheduler.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace sdrt {

Result<BetaSchedule> load_beta_schedule(const std::string& path) {
  BetaSchedule s;
  std::ifstream f(path);
  if (!f) return s;  // no file: SD 1.x defaults
  auto j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return corrupt(path + ": malformed JSON");
  try {
    s.num_train_timesteps = j.value("num_train_timesteps", 1000);
    s.beta_start = j.value("beta_start", 0.00085);
    s.beta_end = j.value("beta_end", 0.012);
    s.beta_schedule = j.value("beta_schedule", std::string("scaled_linear"));
    s.steps_offset = j.value("steps_offset", 1);
    s.set_alpha_to_one = j.value("set_alpha_to_one", false);
    s.prediction_type = j.value("prediction_type", std::string("epsilon"));
  } catch (const nlohmann::json::exception& e) {
    return corrupt(path + ": " + e.what());
  }
  if (s.beta_schedule != "scaled_linear" && s.beta_schedule != "linear") return unsupported(path + ": beta_schedule '" + s.beta_schedule + "'");
  if (s.prediction_type != "epsilon") return unsupported(path + ": prediction_type '" + s.prediction_type + "' (v-prediction models come later)");
  if (s.num_train_timesteps < 2 || s.num_train_timesteps > 100000) return invalid_argument(path + ": num_train_timesteps out of range");
  return s;
}

void Scheduler::step(size_t i, const float* eps, float* x, int64_t n, const float* noise) {
  const auto ops = program(i);
  if ((int)host_slots_.size() != slots() || (slots() && (int64_t)host_slots_[0].size() != n)) host_slots_.assign(slots(), std::vector<float>(n));
  auto vec = [&](int id) -> float* {
    if (id == kX) return x;
    if (id == kEps) return const_cast<float*>(eps);
    if (id == kNoise) return const_cast<float*>(noise);
    return host_slots_[id - kSlot0].data();
  };
  for (const LinOp& op : ops) {
    float* dst = vec(op.dst);
    std::vector<const float*> src;
    for (const auto& t : op.terms) src.push_back(vec(t.src));
    for (int64_t k = 0; k < n; ++k) {
      float acc = 0.f;
      for (size_t j = 0; j < src.size(); ++j) acc += op.terms[j].coef * src[j][k];
      dst[k] = acc;
    }
  }
}

namespace {

struct Names {
  SamplerKind kind;
  const char* engine;
  const char* webui;
};
const Names kNames[] = {{SamplerKind::DDIM, "ddim", "DDIM"},         {SamplerKind::PNDM, "pndm", "PLMS"},
                        {SamplerKind::Euler, "euler", "Euler"},      {SamplerKind::EulerA, "euler_a", "Euler a"},
                        {SamplerKind::DPMpp2MKarras, "dpmpp_2m_karras", "DPM++ 2M Karras"}, {SamplerKind::LMS, "lms", "LMS"}};

// alphas_cumprod in float32 as torch computes it (linspace of sqrt betas, squared; cumulative product).
std::vector<float> alphas_cumprod(const BetaSchedule& s) {
  const int N = s.num_train_timesteps;
  std::vector<float> ac(N);
  const bool scaled = s.beta_schedule == "scaled_linear";
  const float a = scaled ? (float)std::sqrt(s.beta_start) : (float)s.beta_start, b = scaled ? (float)std::sqrt(s.beta_end) : (float)s.beta_end;
  const float step = (b - a) / (float)(N - 1);
  float prod = 1.f;
  for (int i = 0; i < N; ++i) {
    // torch.linspace fills the first half from the start and the second half from the end
    float v = i < N / 2 ? a + step * (float)i : b - step * (float)(N - 1 - i);
    float beta = scaled ? v * v : v;
    prod *= 1.f - beta;
    ac[i] = prod;
  }
  return ac;
}

// sigmas of every training timestep: sqrt((1 - ac) / ac)
std::vector<float> train_sigmas(const std::vector<float>& ac) {
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) s[i] = std::sqrt((1.f - ac[i]) / ac[i]);
  return s;
}

// np.interp over integer positions
double interp(double t, const std::vector<float>& ys) {
  if (t <= 0) return ys.front();
  if (t >= ys.size() - 1) return ys.back();
  size_t lo = (size_t)std::floor(t);
  double w = t - lo;
  return ys[lo] * (1 - w) + ys[lo + 1] * w;
}

// ---- DDIM (eta 0) and PNDM (PLMS, skip_prk_steps): "leading" spacing, alphas_cumprod space ----
class DdimScheduler : public Scheduler {
 public:
  DdimScheduler(const BetaSchedule& s, int steps) : ac_(alphas_cumprod(s)), ratio_(s.num_train_timesteps / steps) {
    final_ = s.set_alpha_to_one ? 1.f : ac_[0];
    for (int i = steps - 1; i >= 0; --i) timesteps_.push_back((float)(i * ratio_ + s.steps_offset));
  }
  // x0 = (x - sqrt(1-a) eps) / sqrt(a); x = sqrt(ap) x0 + sqrt(1-ap) eps, folded into one combination
  std::vector<LinOp> program(size_t i) override {
    const int t = (int)timesteps_[i], prev = t - ratio_;
    const double a = ac_[t], ap = prev >= 0 ? ac_[prev] : final_;
    const double r = std::sqrt(ap / a);
    return {{kX, {{kX, (float)r}, {kEps, (float)(std::sqrt(1 - ap) - r * std::sqrt(1 - a))}}}};
  }
  void add_noise(size_t i, const float* x0, const float* noise, float* out, int64_t n) const override {
    const double a = ac_[(int)timesteps_[i]];
    const float sa = (float)std::sqrt(a), sb = (float)std::sqrt(1 - a);
    for (int64_t k = 0; k < n; ++k) out[k] = sa * x0[k] + sb * noise[k];
  }

 protected:
  std::vector<float> ac_;
  int ratio_;
  float final_;
};

class PndmScheduler : public DdimScheduler {
 public:
  PndmScheduler(const BetaSchedule& s, int steps) : DdimScheduler(s, steps) {
    // plms timesteps: [t_0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed (the second-to-last repeats)
    std::vector<float> asc(timesteps_.rbegin(), timesteps_.rend());
    std::vector<float> p(asc.begin(), asc.end() - 1);
    if (asc.size() >= 2) p.push_back(asc[asc.size() - 2]);
    p.push_back(asc.back());
    timesteps_.assign(p.rbegin(), p.rend());
  }
  // PLMS: eps history in 4 slots (ring), the sample of the first step kept in slot 4 for the second.
  int slots() const override { return 5; }
  std::vector<LinOp> program(size_t i) override {
    int t = (int)timesteps_[i], prev = t - ratio_;
    std::vector<LinOp> ops;
    if (counter_ != 1) {
      int slot = (int)ets_.size();
      if (ets_.size() > 3) {
        slot = ets_.front();
        ets_.erase(ets_.begin());
      } else {
        for (int s = 0; s < 4; ++s)  // the lowest slot not in use
          if (std::find(ets_.begin(), ets_.end(), s) == ets_.end()) {
            slot = s;
            break;
          }
      }
      ets_.push_back(slot);
      ops.push_back({kSlot0 + slot, {{kEps, 1.f}}});
    } else {
      prev = t;
      t = t + ratio_;
    }
    auto e = [&](size_t k) { return kSlot0 + ets_[k]; };
    std::vector<LinTerm> m;  // the multistep eps combination
    int sample = kX;
    const size_t L = ets_.size();
    if (L == 1 && counter_ == 0) {
      m = {{kEps, 1.f}};
      ops.push_back({kSlot0 + 4, {{kX, 1.f}}});
    } else if (L == 1 && counter_ == 1) {
      m = {{kEps, 0.5f}, {e(0), 0.5f}};
      sample = kSlot0 + 4;
    } else if (L == 2) {
      m = {{e(1), 1.5f}, {e(0), -0.5f}};
    } else if (L == 3) {
      m = {{e(2), 23.f / 12}, {e(1), -16.f / 12}, {e(0), 5.f / 12}};
    } else {
      m = {{e(3), 55.f / 24}, {e(2), -59.f / 24}, {e(1), 37.f / 24}, {e(0), -9.f / 24}};
    }
    const double a = ac_[t], ap = prev >= 0 ? ac_[prev] : final_;
    const double bt = 1 - a, bp = 1 - ap;
    const double sc = std::sqrt(ap / a), den = a * std::sqrt(bp) + std::sqrt(a * bt * ap), diff = ap - a;
    LinOp x{kX, {{sample, (float)sc}}};
    for (const auto& term : m) x.terms.push_back({term.src, (float)(-diff / den * term.coef)});
    ops.push_back(x);
    ++counter_;
    return ops;
  }

 private:
  std::vector<int> ets_;  // slots of the eps history, oldest first
  int counter_ = 0;
};

// ---- sigma-space samplers: "linspace" spacing, x / sqrt(sigma^2 + 1) into the UNet ----
class SigmaScheduler : public Scheduler {
 public:
  float init_noise_sigma() const override { return sigmas_.front(); }  // linspace spacing: sigma_max
  float input_scale(size_t i) const override { return 1.f / std::sqrt(sigmas_[i] * sigmas_[i] + 1.f); }
  void add_noise(size_t i, const float* x0, const float* noise, float* out, int64_t n) const override {
    for (int64_t k = 0; k < n; ++k) out[k] = x0[k] + noise[k] * sigmas_[i];
  }

 protected:
  // timesteps = linspace(0, N-1, steps) reversed (float32), sigmas interpolated, then a final 0.
  void linspace_sigmas(const BetaSchedule& s, int steps) {
    auto all = train_sigmas(alphas_cumprod(s));
    const int N = s.num_train_timesteps;
    for (int i = steps - 1; i >= 0; --i) {
      const float t = steps == 1 ? 0.f : (float)((double)(N - 1) * i / (steps - 1));
      timesteps_.push_back(t);
      sigmas_.push_back((float)interp(t, all));
    }
    sigmas_.push_back(0.f);
  }
  std::vector<float> sigmas_;
};

class EulerScheduler : public SigmaScheduler {
 public:
  EulerScheduler(const BetaSchedule& s, int steps, bool ancestral) : ancestral_(ancestral) { linspace_sigmas(s, steps); }
  bool needs_noise() const override { return ancestral_; }
  // x0 = x - sigma eps, d = (x - x0) / sigma = eps: x += d dt (+ noise up for Euler a)
  std::vector<LinOp> program(size_t i) override {
    const float sigma = sigmas_[i], next = sigmas_[i + 1];
    if (!ancestral_) return {{kX, {{kX, 1.f}, {kEps, next - sigma}}}};
    const float up = std::sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma));
    const float down = std::sqrt(next * next - up * up);
    return {{kX, {{kX, 1.f}, {kEps, down - sigma}, {kNoise, up}}}};
  }

 private:
  bool ancestral_;
};

class LmsScheduler : public SigmaScheduler {
 public:
  LmsScheduler(const BetaSchedule& s, int steps) { linspace_sigmas(s, steps); }
  // The derivative (x - x0) / sigma is eps; the last 4 are kept in a ring of slots.
  int slots() const override { return 4; }
  std::vector<LinOp> program(size_t i) override {
    int slot = (int)derivs_.size();
    if (derivs_.size() == 4) {
      slot = derivs_.front();
      derivs_.erase(derivs_.begin());
    }
    derivs_.push_back(slot);
    LinOp x{kX, {{kX, 1.f}}};
    const int order = std::min<int>((int)i + 1, 4);
    for (int c = 0; c < order; ++c) x.terms.push_back({kSlot0 + derivs_[derivs_.size() - 1 - c], (float)coefficient(order, (int)i, c)});
    return {{kSlot0 + slot, {{kEps, 1.f}}}, x};
  }

 private:
  // Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial of order `order` (degree <= 3),
  // exact with 4-point Gauss-Legendre.
  double coefficient(int order, int t, int cur) const {
    auto basis = [&](double tau) {
      double p = 1;
      for (int k = 0; k < order; ++k)
        if (k != cur) p *= (tau - sigmas_[t - k]) / ((double)sigmas_[t - cur] - sigmas_[t - k]);
      return p;
    };
    static const double xs[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
    static const double ws[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
    const double a = sigmas_[t], b = sigmas_[t + 1], h = (b - a) / 2, m = (a + b) / 2;
    double sum = 0;
    for (int q = 0; q < 4; ++q) sum += ws[q] * basis(m + h * xs[q]);
    return sum * h;
  }
  std::vector<int> derivs_;  // slots, oldest first
};

// DPM-Solver++(2M) with Karras sigmas, midpoint, lower order at the final step; works on the VP sample
// (init sigma 1, no input scaling), as diffusers' DPMSolverMultistepScheduler does.
class DpmppScheduler : public Scheduler {
 public:
  DpmppScheduler(const BetaSchedule& s, int steps) {
    auto all = train_sigmas(alphas_cumprod(s));
    std::vector<double> logs(all.size());
    for (size_t i = 0; i < all.size(); ++i) logs[i] = std::log((double)all[i]);
    const double smin = all.front(), smax = all.back(), rho = 7;
    const double lo = std::pow(smin, 1 / rho), hi = std::pow(smax, 1 / rho);
    for (int i = 0; i < steps; ++i) {
      const double ramp = steps == 1 ? 0 : (double)i / (steps - 1);
      const double sg = std::pow(hi + ramp * (lo - hi), rho);
      sigmas_.push_back((float)sg);
      // _sigma_to_t: interpolate the timestep in log-sigma between its two neighbours
      const double ls = std::log(std::max(sg, 1e-10));
      int low = 0;
      for (size_t k = 0; k < logs.size(); ++k)
        if (ls - logs[k] >= 0) low = (int)k;
      low = std::min<int>(low, (int)logs.size() - 2);
      double w = (logs[low] - ls) / (logs[low] - logs[low + 1]);
      w = std::clamp(w, 0.0, 1.0);
      timesteps_.push_back((float)std::round((1 - w) * low + w * (low + 1)));
    }
    sigmas_.push_back(0.f);
  }
  // m0 = (x - s eps) / a (the x0 prediction) into a slot; x = ratio x - c m0 (- c/2 (m0 - prev) / r0);
  // the slot of m0 becomes prev.
  int slots() const override { return 2; }
  std::vector<LinOp> program(size_t i) override {
    auto alpha_sigma = [](double sg, double* a, double* s) {
      *a = 1 / std::sqrt(sg * sg + 1);
      *s = sg * *a;
    };
    double a_t, s_t, a_s0, s_s0;
    alpha_sigma(sigmas_[i + 1], &a_t, &s_t);
    alpha_sigma(sigmas_[i], &a_s0, &s_s0);
    const int m0 = kSlot0 + (have_prev_ ? 1 - prev_ : 0), prev = kSlot0 + prev_;
    std::vector<LinOp> ops{{m0, {{kX, (float)(1 / a_s0)}, {kEps, (float)(-s_s0 / a_s0)}}}};
    const double lam_t = std::log(a_t) - std::log(s_t), lam_s0 = std::log(a_s0) - std::log(s_s0);
    const double h = lam_t - lam_s0;
    const bool final_step = i + 1 == timesteps_.size();
    const double ratio = s_t / s_s0, c = a_t * (std::exp(-h) - 1.0);
    if (!have_prev_ || final_step) {
      ops.push_back({kX, {{kX, (float)ratio}, {m0, (float)-c}}});
    } else {
      double a_s1, s_s1;
      alpha_sigma(sigmas_[i - 1], &a_s1, &s_s1);
      const double lam_s1 = std::log(a_s1) - std::log(s_s1);
      const double r0 = (lam_s0 - lam_s1) / h;
      ops.push_back({kX, {{kX, (float)ratio}, {m0, (float)(-c - 0.5 * c / r0)}, {prev, (float)(0.5 * c / r0)}}});
    }
    prev_ = m0 - kSlot0;
    have_prev_ = true;
    return ops;
  }
  void add_noise(size_t i, const float* x0, const float* noise, float* out, int64_t n) const override {
    double a, s;
    const double sg = sigmas_[i];
    a = 1 / std::sqrt(sg * sg + 1);
    s = sg * a;
    for (int64_t k = 0; k < n; ++k) out[k] = (float)(a * x0[k] + s * noise[k]);
  }

 private:
  std::vector<float> sigmas_;
  int prev_ = 0;  // slot of the previous x0 prediction
  bool have_prev_ = false;
};

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

}  // namespace

Result<SamplerKind> parse_sampler(const std::string& name, const std::string& schedule_type) {
  std::string n = lower(name), st = lower(schedule_type);
  // Each sampler runs on its own noise schedule (the WebUI's "Automatic"; Karras sigmas for DPM++ 2M): another
  // schedule type would give another image than asked for, so it is refused rather than ignored.
  auto on_schedule = [&](SamplerKind k) -> Result<SamplerKind> {
    if (st.empty() || st == "automatic" || (st == "karras" && k == SamplerKind::DPMpp2MKarras)) return k;
    return invalid_argument("schedule type '" + schedule_type + "' is not available with sampler '" + name +
                            "' (each sampler runs on its own schedule: Automatic; Karras is DPM++ 2M's)");
  };
  for (const auto& e : kNames)
    if (n == e.engine || n == lower(e.webui)) return on_schedule(e.kind);
  if (n == "dpm++ 2m") return on_schedule(SamplerKind::DPMpp2MKarras);
  if (n == "k_euler_a" || n == "euler_ancestral") return on_schedule(SamplerKind::EulerA);
  if (n == "k_lms") return on_schedule(SamplerKind::LMS);
  std::string known;
  for (const auto& e : kNames) known += std::string(known.empty() ? "" : ", ") + e.engine + " (" + e.webui + ")";
  return invalid_argument("unknown sampler '" + name + "'; known: " + known);
}

const char* sampler_name(SamplerKind k) {
  for (const auto& e : kNames)
    if (e.kind == k) return e.engine;
  return "?";
}
const char* sampler_webui_name(SamplerKind k) {
  for (const auto& e : kNames)
    if (e.kind == k) return e.webui;
  return "?";
}
std::vector<std::string> sampler_names() {
  std::vector<std::string> v;
  for (const auto& e : kNames) v.push_back(e.engine);
  return v;
}

std::unique_ptr<Scheduler> make_scheduler(SamplerKind kind, const BetaSchedule& s, int steps) {
  switch (kind) {
    case SamplerKind::DDIM: return std::make_unique<DdimScheduler>(s, steps);
    case SamplerKind::PNDM: return std::make_unique<PndmScheduler>(s, steps);
    case SamplerKind::Euler: return std::make_unique<EulerScheduler>(s, steps, false);
    case SamplerKind::EulerA: return std::make_unique<EulerScheduler>(s, steps, true);
    case SamplerKind::DPMpp2MKarras: return std::make_unique<DpmppScheduler>(s, steps);
    case SamplerKind::LMS: return std::make_unique<LmsScheduler>(s, steps);
  }
  return nullptr;
}

}  // namespace sdrt
