#include "bench_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace sdrt::app {

Stat stats(std::vector<double> v) {
  Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  auto pct = [&](double p) {  // linear interpolation, as numpy.percentile
    double idx = p * (v.size() - 1);
    size_t lo = (size_t)std::floor(idx), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (idx - lo);
  };
  s.p50 = pct(0.5);
  s.p90 = pct(0.9);
  return s;
}

namespace {

const std::pair<const char*, Stat BenchRow::*> kStats[] = {{"whole", &BenchRow::whole},         {"text_encoder", &BenchRow::text},
                                                           {"unet_step", &BenchRow::unet_step}, {"unet_total", &BenchRow::unet},
                                                           {"scheduler", &BenchRow::scheduler}, {"vae_decode", &BenchRow::vae},
                                                           {"png_encode", &BenchRow::png}};

nlohmann::ordered_json row_json(const BenchRow& r) {
  nlohmann::ordered_json j;
  j["opt"] = r.opt;
  j["batch"] = r.batch;
  j["status"] = r.status;
  for (auto [name, m] : kStats) {
    const Stat& s = r.*m;
    j[std::string(name) + "_s"] = {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}};
  }
  j["unet_evals"] = r.unet_evals;
  j["images_per_s"] = r.images_per_s;
  j["steps_per_s"] = r.steps_per_s;
  j["unet_tflops"] = r.unet_tflops;
  j["peak_tflops"] = r.peak_tflops > 0 ? nlohmann::ordered_json(r.peak_tflops) : nlohmann::ordered_json(nullptr);
  j["peak_host_gib"] = r.peak_host_gib;
  j["peak_device_gib"] = r.peak_device_gib >= 0 ? nlohmann::ordered_json(r.peak_device_gib) : nlohmann::ordered_json(nullptr);
  j["device_used_gib"] = r.device_used_gib >= 0 ? nlohmann::ordered_json(r.device_used_gib) : nlohmann::ordered_json(nullptr);
  return j;
}

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : std::string(1, c);
  return o;
}

}  // namespace

Status write_csv(const std::string& path, const BenchMeta& meta, const std::vector<BenchRow>& rows) {
  std::ofstream f(path);
  if (!f) return io_error(path + ": cannot write");
  std::vector<std::string> mk;
  for (const auto& [k, v] : meta.fields) mk.push_back(k);
  f << "opt,batch,status";
  for (auto [name, m] : kStats) f << "," << name << "_mean_s," << name << "_p50_s," << name << "_p90_s";
  f << ",unet_evals,images_per_s,steps_per_s,unet_tflops,peak_tflops,peak_host_gib,peak_device_gib,device_used_gib";
  for (const auto& k : mk) f << "," << k;
  f << "\n";
  auto q = [](const std::string& s) {
    std::string o = "\"";
    for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
    return o + "\"";
  };
  for (const auto& r : rows) {
    f << r.opt << "," << r.batch << "," << q(r.status);
    for (auto [name, m] : kStats) f << "," << (r.*m).mean << "," << (r.*m).p50 << "," << (r.*m).p90;
    f << "," << r.unet_evals << "," << r.images_per_s << "," << r.steps_per_s << "," << r.unet_tflops << ",";
    if (r.peak_tflops > 0) f << r.peak_tflops;
    f << "," << r.peak_host_gib << ",";
    if (r.peak_device_gib >= 0) f << r.peak_device_gib;
    f << ",";
    if (r.device_used_gib >= 0) f << r.device_used_gib;
    for (const auto& k : mk) f << "," << q(meta.fields.at(k));
    f << "\n";
  }
  return f ? Status::ok() : io_error(path + ": write failed");
}

Status write_json(const std::string& path, const BenchMeta& meta, const std::vector<BenchRow>& rows) {
  nlohmann::ordered_json j;
  j["meta"] = meta.fields;
  j["rows"] = nlohmann::ordered_json::array();
  for (const auto& r : rows) j["rows"].push_back(row_json(r));
  std::ofstream f(path);
  if (!f) return io_error(path + ": cannot write");
  f << j.dump(2) << "\n";
  return f ? Status::ok() : io_error(path + ": write failed");
}

// Two panels: seconds per image and peak memory, by batch size, one line per optimisation level.
Status write_svg(const std::string& path, const BenchMeta& meta, const std::vector<BenchRow>& rows) {
  const int W = 960, H = 440, pw = 400, ph = 300, top = 80, lefts[2] = {70, 550};
  std::set<int> batches;
  std::set<std::string> opts;
  for (const auto& r : rows) {
    batches.insert(r.batch);
    opts.insert(r.opt);
  }
  std::vector<int> bs(batches.begin(), batches.end());
  auto xpos = [&](int panel, int b) {
    size_t i = std::find(bs.begin(), bs.end(), b) - bs.begin();
    return lefts[panel] + (bs.size() == 1 ? pw / 2.0 : 20 + (pw - 40) * (double)i / (bs.size() - 1));
  };
  const bool device_mem = std::any_of(rows.begin(), rows.end(), [](const BenchRow& r) { return r.peak_device_gib >= 0; });
  auto value = [&](int panel, const BenchRow& r) {
    if (panel == 0) return r.images_per_s > 0 ? 1.0 / r.images_per_s : 0.0;
    return device_mem ? r.peak_device_gib : r.peak_host_gib;
  };
  double ymax[2] = {0, 0};
  for (const auto& r : rows)
    if (r.status == "ok")
      for (int p = 0; p < 2; ++p) ymax[p] = std::max(ymax[p], value(p, r));
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  auto get = [&](const char* k) { auto it = meta.fields.find(k); return it == meta.fields.end() ? std::string() : it->second; };
  s << "<text x=\"" << W / 2 << "\" y=\"28\" font-size=\"18\" text-anchor=\"middle\">sdrt bench: " << esc(get("model")) << ", "
    << esc(get("size")) << ", " << esc(get("steps")) << " steps (" << esc(get("sampler")) << ")</text>\n";
  s << "<text x=\"" << W / 2 << "\" y=\"50\" font-size=\"13\" text-anchor=\"middle\" fill=\"#555\">" << esc(get("device")) << ", backend "
    << esc(get("backend")) << ", sdrt " << esc(get("sdrt_version")) << " (" << esc(get("git_revision")) << ")</text>\n";
  const char* titles[2] = {"seconds per image (lower is better)", device_mem ? "peak device memory, GiB" : "peak host memory, GiB"};
  const char* colors[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd"};
  for (int p = 0; p < 2; ++p) {
    const int L = lefts[p];
    const double ym = ymax[p] > 0 ? ymax[p] * 1.15 : 1;
    auto ypos = [&](double v) { return top + ph - ph * v / ym; };
    s << "<text x=\"" << L + pw / 2 << "\" y=\"" << top - 8 << "\" font-size=\"14\" text-anchor=\"middle\">" << titles[p] << "</text>\n";
    s << "<rect x=\"" << L << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph << "\" fill=\"none\" stroke=\"#333\"/>\n";
    for (int t = 0; t <= 4; ++t) {
      const double v = ym * t / 4, y = ypos(v);
      char lab[32];
      std::snprintf(lab, sizeof lab, v >= 10 ? "%.0f" : v >= 1 ? "%.1f" : "%.2f", v);
      s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << y << "\" y2=\"" << y << "\" stroke=\"#ddd\"/>\n";
      s << "<text x=\"" << L - 6 << "\" y=\"" << y + 4 << "\" font-size=\"11\" text-anchor=\"end\">" << lab << "</text>\n";
    }
    for (int b : bs)
      s << "<text x=\"" << xpos(p, b) << "\" y=\"" << top + ph + 18 << "\" font-size=\"11\" text-anchor=\"middle\">" << b << "</text>\n";
    s << "<text x=\"" << L + pw / 2 << "\" y=\"" << top + ph + 38 << "\" font-size=\"12\" text-anchor=\"middle\">batch size</text>\n";
    int ci = 0;
    for (const auto& o : opts) {
      const char* col = colors[ci++ % 4];
      std::string pts;
      for (const auto& r : rows)
        if (r.opt == o && r.status == "ok") {
          const double x = xpos(p, r.batch), y = ypos(value(p, r));
          pts += std::to_string(x) + "," + std::to_string(y) + " ";
          s << "<circle cx=\"" << x << "\" cy=\"" << y << "\" r=\"4\" fill=\"" << col << "\"/>\n";
        } else if (r.opt == o) {
          s << "<text x=\"" << xpos(p, r.batch) << "\" y=\"" << top + 16 << "\" font-size=\"11\" fill=\"" << col << "\" text-anchor=\"middle\">"
            << esc(r.status.substr(0, 8)) << "</text>\n";
        }
      if (!pts.empty()) s << "<polyline points=\"" << pts << "\" fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\"/>\n";
    }
  }
  int ci = 0;
  for (const auto& o : opts) {
    const int x = W / 2 - 120 + 140 * ci;
    s << "<rect x=\"" << x << "\" y=\"" << H - 24 << "\" width=\"14\" height=\"14\" fill=\"" << colors[ci % 4] << "\"/>\n";
    s << "<text x=\"" << x + 20 << "\" y=\"" << H - 12 << "\" font-size=\"13\">" << esc(o) << "</text>\n";
    ++ci;
  }
  s << "</svg>\n";
  std::ofstream f(path);
  if (!f) return io_error(path + ": cannot write");
  f << s.str();
  return f ? Status::ok() : io_error(path + ": write failed");
}

}  // namespace sdrt::app
