// safetensors reading: round trip, dtype conversion, and every kind of corrupt header is an error.
#include <cstring>
#include <fstream>

#include "io/safetensors.h"
#include "test_util.h"

using namespace sdrt;
namespace fs = std::filesystem;

namespace {

fs::path tmp(const std::string& name) { return test::scratch_file("sdrt_test_st", name); }

// A file built by hand: 8-byte length, header text, data bytes.
fs::path raw_file(const std::string& name, const std::string& header, size_t data_bytes, int64_t declared_len = -1) {
  fs::path p = tmp(name);
  std::ofstream f(p, std::ios::binary);
  uint64_t n = declared_len < 0 ? header.size() : (uint64_t)declared_len;
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header;
  f << std::string(data_bytes, '\0');
  return p;
}

std::string open_error(const fs::path& p) {
  auto r = SafeTensors::open(p.string());
  return r.is_ok() ? std::string() : r.status().message();
}

}  // namespace

TEST(SafeTensors, RoundTripAllFloatDtypes) {
  Tensor a = Tensor::from_f32({2, 2}, {1.f, -2.f, 0.5f, 65504.f});
  Tensor h = Tensor::empty(DType::F16, {3});
  uint16_t hv[3] = {0x3c00, 0xc000, 0x0001};  // 1, -2, smallest subnormal
  std::memcpy(h.mutable_data(), hv, 6);
  Tensor bf = Tensor::empty(DType::BF16, {2});
  uint16_t bv[2] = {0x3f80, 0xc0a0};  // 1, -5
  std::memcpy(bf.mutable_data(), bv, 4);
  auto p = tmp("ok.safetensors");
  ASSERT_TRUE(write_safetensors(p.string(), {{"a", a}, {"h", h}, {"bf", bf}}, {{"format", "pt"}}).is_ok());
  auto st = SafeTensors::open(p.string());
  ASSERT_TRUE(st.is_ok()) << st.status().message();
  EXPECT_EQ(st->tensors().size(), 3u);
  EXPECT_EQ(st->metadata().at("format"), "pt");
  Tensor ra = st->tensor(*st->find("a")).to_f32();
  EXPECT_EQ(std::vector<float>(ra.f32(), ra.f32() + 4), (std::vector<float>{1.f, -2.f, 0.5f, 65504.f}));
  Tensor rh = st->tensor(*st->find("h")).to_f32();
  EXPECT_EQ(rh.f32()[0], 1.f);
  EXPECT_EQ(rh.f32()[1], -2.f);
  EXPECT_FLOAT_EQ(rh.f32()[2], 5.9604645e-08f);
  Tensor rb = st->tensor(*st->find("bf")).to_f32();
  EXPECT_EQ(rb.f32()[0], 1.f);
  EXPECT_EQ(rb.f32()[1], -5.f);
}

TEST(SafeTensors, HalfRoundingMatchesIeee) {
  EXPECT_EQ(float_to_half(1.f), 0x3c00);
  EXPECT_EQ(float_to_half(65504.f), 0x7bff);
  EXPECT_EQ(float_to_half(70000.f), 0x7c00);
  EXPECT_EQ(float_to_half(5.9604645e-08f), 0x0001);
  EXPECT_EQ(float_to_half(1.f + 1.f / 2048), 0x3c00);  // tie rounds to even
  EXPECT_EQ(float_to_half(1.f + 3.f / 2048), 0x3c02);
  for (uint32_t h = 0; h < 0x7c00; h += 7) EXPECT_EQ(float_to_half(half_to_float((uint16_t)h)), h);
}

TEST(SafeTensors, TruncatedFile) {
  auto p = tmp("trunc.safetensors");
  ASSERT_TRUE(write_safetensors(p.string(), {{"a", Tensor::zeros(DType::F32, {64})}}).is_ok());
  fs::resize_file(p, fs::file_size(p) - 10);
  EXPECT_NE(open_error(p).find("outside the data area"), std::string::npos) << open_error(p);
  fs::resize_file(p, 5);
  EXPECT_NE(open_error(p).find("truncated"), std::string::npos) << open_error(p);
}

TEST(SafeTensors, HeaderLengthLargerThanFile) {
  auto p = raw_file("biglen.safetensors", "{}", 0, 4096);
  EXPECT_NE(open_error(p).find("exceeds the file size"), std::string::npos) << open_error(p);
  auto q = raw_file("hugelen.safetensors", "{}", 0, int64_t(1) << 40);
  EXPECT_NE(open_error(q).find("100 MiB limit"), std::string::npos) << open_error(q);
}

TEST(SafeTensors, OffsetsOutsideData) {
  auto p = raw_file("off.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  EXPECT_NE(open_error(p).find("outside the data area"), std::string::npos) << open_error(p);
  auto q = raw_file("off2.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8);
  EXPECT_NE(open_error(q).find("begin > end"), std::string::npos) << open_error(q);
}

TEST(SafeTensors, UnknownDtype) {
  auto p = raw_file("dt.safetensors", R"({"a":{"dtype":"F8_E9M9","shape":[4],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(open_error(p).find("unknown dtype 'F8_E9M9'"), std::string::npos) << open_error(p);
}

TEST(SafeTensors, SizeMismatchOverlapAndMalformedJson) {
  auto p = raw_file("size.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(open_error(p).find("does not match shape"), std::string::npos) << open_error(p);
  auto q = raw_file("overlap.safetensors",
                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  EXPECT_NE(open_error(q).find("overlap"), std::string::npos) << open_error(q);
  auto r = raw_file("json.safetensors", R"({"a":{"dtype":"F32",)", 8);
  EXPECT_NE(open_error(r).find("not valid JSON"), std::string::npos) << open_error(r);
  auto s = raw_file("neg.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(open_error(s).find("negative"), std::string::npos) << open_error(s);
  auto t = raw_file("arr.safetensors", R"([1,2,3])", 0);
  EXPECT_NE(open_error(t).find("not a JSON object"), std::string::npos) << open_error(t);
  EXPECT_NE(open_error(tmp("does-not-exist.safetensors")).find("cannot open"), std::string::npos);
}
