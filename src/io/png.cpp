#include "io/png.h"

#include <png.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace sdrt {
namespace {

bool is_latin1(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;  // conservative: plain ASCII goes to tEXt, anything else to iTXt
  return true;
}

struct ReadCtx {
  const uint8_t* data;
  size_t size, pos;
};

}  // namespace

Result<std::vector<uint8_t>> encode_png(const Image& img, const std::map<std::string, std::string>& text) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != (size_t)img.width * img.height * 3)
    return invalid_argument("encode_png: image buffer does not match its size");
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) return Status(Code::Internal, "libpng: out of memory");
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return Status(Code::Internal, "libpng: write failed");
  }
  png_set_write_fn(png, &out, [](png_structp p, png_bytep d, png_size_t n) {
    auto* v = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
    v->insert(v->end(), d, d + n);
  }, [](png_structp) {});
  png_set_IHDR(png, info, img.width, img.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  std::vector<png_text> texts;
  std::vector<std::string> keys, vals;
  keys.reserve(text.size());
  vals.reserve(text.size());
  for (const auto& [k, v] : text) {
    keys.push_back(k);
    vals.push_back(v);
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    png_text t{};
    t.compression = is_latin1(vals[i]) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    t.key = keys[i].data();
    t.text = vals[i].data();
    if (t.compression == PNG_TEXT_COMPRESSION_NONE) t.text_length = vals[i].size();
    else t.itxt_length = vals[i].size();
    texts.push_back(t);
  }
  if (!texts.empty()) png_set_text(png, info, texts.data(), (int)texts.size());
  png_write_info(png, info);
  for (int y = 0; y < img.height; ++y) png_write_row(png, const_cast<png_bytep>(img.rgb.data() + (size_t)y * img.width * 3));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::vector<Result<std::vector<uint8_t>>> encode_pngs(const std::vector<Image>& images, const std::vector<std::string>& infotexts) {
  std::vector<Result<std::vector<uint8_t>>> out(images.size(), Result<std::vector<uint8_t>>(std::vector<uint8_t>{}));
#pragma omp parallel for schedule(dynamic, 1) if (images.size() > 1)
  for (size_t i = 0; i < images.size(); ++i) {
    std::map<std::string, std::string> text;
    if (i < infotexts.size()) text["parameters"] = infotexts[i];
    out[i] = encode_png(images[i], text);
  }
  return out;
}

Status write_png(const std::string& path, const Image& img, const std::map<std::string, std::string>& text) {
  auto bytes = encode_png(img, text);
  if (!bytes) return bytes.status();
  std::ofstream f(path, std::ios::binary);
  if (!f) return io_error(path + ": cannot write");
  f.write(reinterpret_cast<const char*>(bytes->data()), (std::streamsize)bytes->size());
  return f ? Status::ok() : io_error(path + ": write failed");
}

Result<Image> decode_png(const uint8_t* data, size_t size, std::map<std::string, std::string>* text) {
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0) return invalid_argument("not a PNG file");
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) return Status(Code::Internal, "libpng: out of memory");
  Image img;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return corrupt("corrupt or truncated PNG");
  }
  ReadCtx ctx{data, size, 0};
  png_set_read_fn(png, &ctx, [](png_structp p, png_bytep d, png_size_t n) {
    auto* c = static_cast<ReadCtx*>(png_get_io_ptr(p));
    if (c->pos + n > c->size) png_error(p, "truncated");
    std::memcpy(d, c->data + c->pos, n);
    c->pos += n;
  });
  png_set_user_limits(png, 16384, 16384);
  png_read_info(png, info);
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  png_read_update_info(png, info);
  img.width = (int)png_get_image_width(png, info);
  img.height = (int)png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != (size_t)img.width * 3) png_error(png, "unexpected row layout");
  img.rgb.resize((size_t)img.width * img.height * 3);
  std::vector<png_bytep> rows(img.height);
  for (int y = 0; y < img.height; ++y) rows[y] = img.rgb.data() + (size_t)y * img.width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, info);
  if (text) {
    png_textp t = nullptr;
    int n = png_get_text(png, info, &t, nullptr);
    for (int i = 0; i < n; ++i) (*text)[t[i].key] = std::string(t[i].text, t[i].compression > 0 ? t[i].itxt_length : t[i].text_length);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return img;
}

Result<Image> read_png(const std::string& path, std::map<std::string, std::string>* text) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return io_error(path + ": cannot open");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto r = decode_png(bytes.data(), bytes.size(), text);
  if (!r) return r.status().with_context(path);
  return r;
}

}  // namespace sdrt
