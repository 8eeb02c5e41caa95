// SHA-256 (FIPS 180-4): file checksums for downloads and the WebUI's model hash.
#pragma once
#include <cstdint>
#include <string>

#include "sdrt/status.h"

namespace sdrt {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();  // finishes; call once

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

Result<std::string> sha256_file(const std::string& path);
std::string sha256_hex(const std::string& data);

}  // namespace sdrt
