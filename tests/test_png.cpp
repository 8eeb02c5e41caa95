// PNG output: the parameters text chunk (Latin-1 and UTF-8), a batch encoded in parallel keeping each
// image with its own infotext and order, and clean errors on bad input.
#include "io/png.h"
#include "test_util.h"

using namespace sdrt;

namespace {

Image pattern(int w, int h, int seed) {
  Image im{w, h, std::vector<uint8_t>((size_t)w * h * 3)};
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = (uint8_t)((i * 7 + seed * 31 + (i / 3) % 13) & 0xff);
  return im;
}

}  // namespace

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
