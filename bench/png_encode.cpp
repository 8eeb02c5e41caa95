// PNG encoding time and size (sdrt::encode_pngs, as `sdrt generate`, `sdrt bench` and the server encode
// their images): a 512x512 noise image (what random-weight models make), a smooth synthetic one, and any
// binary PPM (P6) files given, cropped to at most 512 columns; then the float-to-byte conversion before the
// encode (sdrt::image_from_planes). Best and median of --repeats; threads from
// OpenMP (OMP_NUM_THREADS=1 for one core). --idle-ms sleeps before each encode, as the host does while the
// GPU generates an image (OpenMP's threads have gone to sleep by then and must be woken).
//   bench_png_encode photo.ppm --repeats 10
//   bench_png_encode --repeats 7 --idle-ms 300
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/png.h"

using sdrt::Image;

namespace {

bool load_ppm(const std::string& path, Image* im) {
  std::ifstream f(path, std::ios::binary);
  std::string magic;
  int w = 0, h = 0, maxval = 0;
  if (!(f >> magic >> w >> h >> maxval) || magic != "P6" || maxval != 255 || w <= 0 || h <= 0 || w > 16384 || h > 16384) return false;
  f.get();
  std::vector<uint8_t> all((size_t)w * h * 3);
  if (!f.read(reinterpret_cast<char*>(all.data()), (std::streamsize)all.size())) return false;
  const int cw = std::min(w, 512), x0 = (w - cw) / 2;
  im->width = cw, im->height = h;
  im->rgb.resize((size_t)cw * h * 3);
  for (int y = 0; y < h; ++y)
    std::copy(all.begin() + ((size_t)y * w + x0) * 3, all.begin() + ((size_t)y * w + x0 + cw) * 3, im->rgb.begin() + (size_t)y * cw * 3);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PNG encode benchmark"};
  std::vector<std::string> files;
  int repeats = 10, idle_ms = 0;
  app.add_option("files", files, "binary PPM (P6) images");
  app.add_option("--repeats", repeats, "encodes per image; the best is printed")->check(CLI::Range(1, 1000));
  app.add_option("--idle-ms", idle_ms, "sleep this long before each encode")->check(CLI::Range(0, 10000));
  CLI11_PARSE(app, argc, argv);
  std::vector<std::pair<std::string, Image>> images;
  std::mt19937 rng(1);
  Image noise{512, 512, std::vector<uint8_t>(512 * 512 * 3)}, smooth = noise;
  for (auto& b : noise.rgb) b = (uint8_t)(rng() & 255);
  for (int y = 0; y < 512; ++y)
    for (int x = 0; x < 512; ++x)
      for (int c = 0; c < 3; ++c)
        smooth.rgb[((size_t)y * 512 + x) * 3 + c] = (uint8_t)(127 + 100 * std::sin(x * 0.02 + c) * std::cos(y * 0.03) + (double)(rng() % 9));
  images.push_back({"noise 512x512", noise});
  images.push_back({"smooth 512x512", smooth});
  for (const auto& f : files) {
    Image im;
    if (!load_ppm(f, &im)) return std::fprintf(stderr, "%s: not a binary 8-bit PPM (P6) of at most 16384x16384, or truncated\n", f.c_str()), 1;
    images.push_back({f + " " + std::to_string(im.width) + "x" + std::to_string(im.height), im});
  }
  std::printf("%-60s %10s %10s %10s\n", "image", "best ms", "median ms", "bytes");
  for (const auto& [name, im] : images) {
    std::vector<double> ms;
    size_t bytes = 0;
    for (int r = 0; r < repeats; ++r) {
      if (idle_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
      const auto t0 = std::chrono::steady_clock::now();
      auto pngs = sdrt::encode_pngs({im}, {});  // the path of `sdrt generate`, `sdrt bench` and the server
      auto& png = pngs[0];
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (!png) return std::fprintf(stderr, "%s: %s\n", name.c_str(), png.status().message().c_str()), 1;
      bytes = png->size();
    }
    std::sort(ms.begin(), ms.end());
    std::printf("%-60s %10.2f %10.2f %10zu\n", name.c_str(), ms.front(), ms[ms.size() / 2], bytes);
  }
  // what comes before the encode: a VAE decoder's planar floats to 8-bit RGB (sdrt::image_from_planes)
  std::vector<float> planes(3 * 512 * 512);
  std::normal_distribution<float> nd(0.f, 0.6f);
  for (float& v : planes) v = nd(rng);
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const Image im = sdrt::image_from_planes(planes.data(), 512, 512);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (im.rgb.size() != planes.size()) return std::fprintf(stderr, "image_from_planes: wrong size\n"), 1;
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%-60s %10.2f %10.2f\n", "planes to bytes 512x512 (image_from_planes, one thread)", ms.front(), ms[ms.size() / 2]);
  return 0;
}
