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
  void step(size_t i, const float* eps, float* x, int64_t n, const float*) override {
    const int t = (int)timesteps_[i], prev = t - ratio_;
    const double a = ac_[t], ap = prev >= 0 ? ac_[prev] : final_;
    const float c0 = (float)std::sqrt(1 - a), c1 = (float)std::sqrt(a), c2 = (float)std::sqrt(ap), c3 = (float)std::sqrt(1 - ap);
    for (int64_t k = 0; k < n; ++k) {
      const float x0 = (x[k] - c0 * eps[k]) / c1;
      x[k] = c2 * x0 + c3 * eps[k];
    }
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
  void step(size_t i, const float* eps, float* x, int64_t n, const float*) override {
    int t = (int)timesteps_[i], prev = t - ratio_;
    std::vector<float> e(eps, eps + n);
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin());
      ets_.push_back(e);
    } else {
      prev = t;
      t = t + ratio_;
    }
    std::vector<float> m(n);
    const float* sample = x;
    const size_t L = ets_.size();
    if (L == 1 && counter_ == 0) {
      m = e;
      cur_.assign(x, x + n);
    } else if (L == 1 && counter_ == 1) {
      for (int64_t k = 0; k < n; ++k) m[k] = (e[k] + ets_[0][k]) / 2;
      sample = cur_.data();
    } else if (L == 2) {
      for (int64_t k = 0; k < n; ++k) m[k] = (3 * ets_[1][k] - ets_[0][k]) / 2;
    } else if (L == 3) {
      for (int64_t k = 0; k < n; ++k) m[k] = (23 * ets_[2][k] - 16 * ets_[1][k] + 5 * ets_[0][k]) / 12;
    } else {
      for (int64_t k = 0; k < n; ++k) m[k] = (55 * ets_[3][k] - 59 * ets_[2][k] + 37 * ets_[1][k] - 9 * ets_[0][k]) / 24;
    }
    const double a = ac_[t], ap = prev >= 0 ? ac_[prev] : final_;
    const double bt = 1 - a, bp = 1 - ap;
    const float sc = (float)std::sqrt(ap / a), den = (float)(a * std::sqrt(bp) + std::sqrt(a * bt * ap)), diff = (float)(ap - a);
    std::vector<float> out(n);
    for (int64_t k = 0; k < n; ++k) out[k] = sc * sample[k] - diff * m[k] / den;
    std::copy(out.begin(), out.end(), x);
    ++counter_;
  }

 private:
  std::vector<std::vector<float>> ets_;
  std::vector<float> cur_;
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
  void step(size_t i, const float* eps, float* x, int64_t n, const float* noise) override {
    const float sigma = sigmas_[i], next = sigmas_[i + 1];
    if (!ancestral_) {
      const float dt = next - sigma;
      for (int64_t k = 0; k < n; ++k) {
        const float x0 = x[k] - sigma * eps[k];
        x[k] = x[k] + (x[k] - x0) / sigma * dt;
      }
      return;
    }
    const float up = std::sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma));
    const float down = std::sqrt(next * next - up * up), dt = down - sigma;
    for (int64_t k = 0; k < n; ++k) {
      const float x0 = x[k] - sigma * eps[k];
      x[k] = x[k] + (x[k] - x0) / sigma * dt + noise[k] * up;
    }
  }

 private:
  bool ancestral_;
};

class LmsScheduler : public SigmaScheduler {
 public:
  LmsScheduler(const BetaSchedule& s, int steps) { linspace_sigmas(s, steps); }
  void step(size_t i, const float* eps, float* x, int64_t n, const float*) override {
    const float sigma = sigmas_[i];
    std::vector<float> d(n);
    for (int64_t k = 0; k < n; ++k) d[k] = (x[k] - (x[k] - sigma * eps[k])) / sigma;
    derivs_.push_back(std::move(d));
    if (derivs_.size() > 4) derivs_.erase(derivs_.begin());
    const int order = std::min<int>((int)i + 1, 4);
    for (int c = 0; c < order; ++c) {
      const float coeff = (float)coefficient(order, (int)i, c);
      const auto& dv = derivs_[derivs_.size() - 1 - c];
      for (int64_t k = 0; k < n; ++k) x[k] += coeff * dv[k];
    }
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
  std::vector<std::vector<float>> derivs_;
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
  void step(size_t i, const float* eps, float* x, int64_t n, const float*) override {
    auto alpha_sigma = [](double sg, double* a, double* s) {
      *a = 1 / std::sqrt(sg * sg + 1);
      *s = sg * *a;
    };
    double a_t, s_t, a_s0, s_s0;
    alpha_sigma(sigmas_[i + 1], &a_t, &s_t);
    alpha_sigma(sigmas_[i], &a_s0, &s_s0);
    std::vector<float> m0(n);  // x0 prediction
    for (int64_t k = 0; k < n; ++k) m0[k] = (float)((x[k] - s_s0 * eps[k]) / a_s0);
    const double lam_t = std::log(a_t) - std::log(s_t), lam_s0 = std::log(a_s0) - std::log(s_s0);
    const double h = lam_t - lam_s0;
    const bool final_step = i + 1 == timesteps_.size();
    const float ratio = (float)(s_t / s_s0), c = (float)(a_t * (std::exp(-h) - 1.0));
    if (prev_.empty() || final_step) {
      for (int64_t k = 0; k < n; ++k) x[k] = ratio * x[k] - c * m0[k];
    } else {
      double a_s1, s_s1;
      alpha_sigma(sigmas_[i - 1], &a_s1, &s_s1);
      const double lam_s1 = std::log(a_s1) - std::log(s_s1);
      const float r0 = (float)((lam_s0 - lam_s1) / h);
      for (int64_t k = 0; k < n; ++k) {
        const float d1 = (1.f / r0) * (m0[k] - prev_[k]);
        x[k] = ratio * x[k] - c * m0[k] - 0.5f * c * d1;
      }
    }
    prev_ = std::move(m0);
  }
  void add_noise(size_t i, const float* x0, const float* noise, float* out, int64_t n) const override {
    double a, s;
    const double sg = sigmas_[i];
    a = 1 / std::sqrt(sg * sg + 1);
    s = sg * a;
    for (int64_t k = 0; k < n; ++k) out[k] = (float)(a * x0[k] + s * noise[k]);
  }

 private:
  std::vector<float> sigmas_, prev_;
};

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

}  // namespace

Result<SamplerKind> parse_sampler(const std::string& name, const std::string& schedule_type) {
  std::string n = lower(name), st = lower(schedule_type);
  for (const auto& e : kNames)
    if (n == e.engine || n == lower(e.webui)) return e.kind;
  if (n == "dpm++ 2m" && (st == "karras" || st.empty() || st == "automatic")) return SamplerKind::DPMpp2MKarras;
  if (n == "k_euler_a" || n == "euler_ancestral") return SamplerKind::EulerA;
  if (n == "k_lms") return SamplerKind::LMS;
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
