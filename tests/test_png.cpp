// PNG output: the parameters text chunk (Latin-1 and UTF-8), a batch encoded in parallel keeping each
// image with its own infotext and order, and clean errors on bad input.
#include "io/png.h"

#include <algorithm>
#include <cmath>
#include "test_util.h"

using namespace sdrt;

namespace {

Image pattern(int w, int h, int seed) {
  Image im{w, h, std::vector<uint8_t>((size_t)w * h * 3)};
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = (uint8_t)((i * 7 + seed * 31 + (i / 3) % 13) & 0xff);
  return im;
}

}  // namespace

// A decoder's planes to bytes: every pixel as (v + 1) / 2 clamped, NaN to 0, times 255 rounded half up, in
// the interleaved order; exact ties, values one ulp either side of them, out of range and non-finite values.
TEST(Png, ImageFromPlanesRoundsEveryValueAsSpecified) {
  std::vector<float> vals = {0.f, -1.f, 1.f, -1.5f, 7.f, NAN, -NAN, INFINITY, -INFINITY, 1e-30f, -1e-30f, 0x1p-149f};
  for (int k = 0; k < 256; ++k) {
    const float tie = 2.f * ((float)k + 0.5f) / 255.f - 1.f;  // about where v * 255 = k + 0.5
    float t = tie;
    for (int j = 0; j < 3; ++j) t = std::nextafter(t, -2.f);
    for (int j = 0; j < 7; ++j, t = std::nextafter(t, 2.f)) vals.push_back(t);
  }
  uint32_t r = 12345;
  while (vals.size() % 3 != 0 || vals.size() < 6000) {
    r = r * 1664525u + 1013904223u;
    vals.push_back(((float)(r >> 8) / 16777216.f) * 2.4f - 1.2f);
  }
  const int W = 37, H = (int)(vals.size() / 3 + W - 1) / W;
  vals.resize((size_t)3 * W * H, 0.25f);
  const Image im = image_from_planes(vals.data(), W, H);
  ASSERT_EQ(im.width, W);
  ASSERT_EQ(im.height, H);
  ASSERT_EQ(im.rgb.size(), (size_t)W * H * 3);
  const size_t plane = (size_t)W * H;
  int checked_ties = 0;
  for (size_t p = 0; p < plane; ++p)
    for (int c = 0; c < 3; ++c) {
      const float x = vals[c * plane + p];
      const double v = std::isnan(x) ? 0.0 : std::clamp((double)(x / 2.f + 0.5f), 0.0, 1.0);
      const double s = (double)((float)v * 255.f);
      const int want = (int)std::floor(s + 0.5);
      if (s - std::floor(s) == 0.5) ++checked_ties;
      ASSERT_EQ((int)im.rgb[p * 3 + c], want) << "value " << x << " at pixel " << p << " channel " << c;
    }
  EXPECT_GT(checked_ties, 0) << "no exact tie among the values: the rounding direction was not checked";
}

TEST(Png, RoundTripWithParametersText) {
  const Image im = pattern(33, 17, 1);
  for (const std::string text : {"a cat\nSteps: 20, Seed: 1", "ein Kätzchen, 猫\nSteps: 20"}) {
    auto bytes = encode_png(im, {{"parameters", text}});
    ASSERT_TRUE(bytes.is_ok()) << bytes.status().message();
    std::map<std::string, std::string> got_text;
    auto back = decode_png(bytes->data(), bytes->size(), &got_text);
    ASSERT_TRUE(back.is_ok()) << back.status().message();
    EXPECT_EQ(back->width, 33);
    EXPECT_EQ(back->height, 17);
    EXPECT_EQ(back->rgb, im.rgb);
    EXPECT_EQ(got_text["parameters"], text);
  }
}

// Images taller than one stripe (32 rows) are deflated in parallel stripes: still one valid stream.
TEST(Png, ManyStripesDecodeExactly) {
  for (auto [w, h] : {std::pair{513, 300}, {64, 32}, {64, 33}, {1, 100}, {200, 1}}) {
    Image im = pattern(w, h, w + h);
    for (size_t i = 0; i < im.rgb.size(); i += 97) im.rgb[i] = (uint8_t)(i * 2654435761u >> 24);  // some noise
    auto bytes = encode_png(im, {{"parameters", "x"}});
    ASSERT_TRUE(bytes.is_ok());
    auto back = decode_png(bytes->data(), bytes->size());
    ASSERT_TRUE(back.is_ok()) << w << "x" << h << ": " << back.status().message();
    EXPECT_EQ(back->rgb, im.rgb) << w << "x" << h;
    EXPECT_LT(bytes->size(), im.rgb.size()) << "compressed";
  }
}

TEST(Png, BatchEncodedInParallelKeepsOrderAndTexts) {
  std::vector<Image> ims;
  std::vector<std::string> texts;
  for (int i = 0; i < 9; ++i) {
    ims.push_back(pattern(64 + i, 48, i));
    texts.push_back("image " + std::to_string(i));
  }
  auto pngs = encode_pngs(ims, texts);
  ASSERT_EQ(pngs.size(), ims.size());
  for (size_t i = 0; i < ims.size(); ++i) {
    ASSERT_TRUE(pngs[i].is_ok()) << pngs[i].status().message();
    std::map<std::string, std::string> t;
    auto back = decode_png(pngs[i]->data(), pngs[i]->size(), &t);
    ASSERT_TRUE(back.is_ok());
    EXPECT_EQ(back->rgb, ims[i].rgb) << i;
    EXPECT_EQ(t["parameters"], texts[i]);
  }
  // without infotexts: no text chunk; a bad image is its own error, the others still encode
  ims[4].rgb.pop_back();
  auto plain = encode_pngs(ims);
  EXPECT_FALSE(plain[4].is_ok());
  std::map<std::string, std::string> t;
  ASSERT_TRUE(plain[3].is_ok());
  ASSERT_TRUE(decode_png(plain[3]->data(), plain[3]->size(), &t).is_ok());
  EXPECT_TRUE(t.empty());
}

TEST(Png, GarbageAndTruncatedFilesAreErrors) {
  const std::vector<uint8_t> junk = {'n', 'o', 't', ' ', 'p', 'n', 'g'};
  EXPECT_FALSE(decode_png(junk.data(), junk.size()).is_ok());
  auto bytes = encode_png(pattern(20, 20, 2));
  ASSERT_TRUE(bytes.is_ok());
  EXPECT_FALSE(decode_png(bytes->data(), bytes->size() / 2).is_ok());
}
