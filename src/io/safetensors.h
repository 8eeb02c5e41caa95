// safetensors files: mmap'd, every header field validated before any tensor is touched (header length
// inside the file, well-formed JSON, known dtypes, offsets inside the data area, byte size = shape x dtype,
// no two tensors overlapping). Tensors are zero-copy views kept alive by the mapping.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "sdrt/status.h"

namespace sdrt {

struct TensorInfo {
  std::string name;
  DType dtype = DType::Unknown;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets within the data area
};

class SafeTensors {
 public:
  static Result<SafeTensors> open(const std::string& path);
  // Parses an in-memory file image; `owner` keeps `data` alive for the returned views.
  static Result<SafeTensors> parse(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                   const std::string& label = "<memory>");

  const std::vector<TensorInfo>& tensors() const { return infos_; }
  const TensorInfo* find(const std::string& name) const;
  Tensor tensor(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return label_; }
  size_t file_size() const { return size_; }

 private:
  std::string label_;
  std::shared_ptr<const void> owner_;
  const uint8_t* base_ = nullptr;  // start of the data area
  size_t size_ = 0;
  std::vector<TensorInfo> infos_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any dtype) in safetensors layout, names sorted as the reference implementation does.
Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace sdrt
