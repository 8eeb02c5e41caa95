#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace sdrt {
namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

Result<SafeTensors> SafeTensors::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(path + ": not a regular file");
  }
  size_t size = (size_t)st.st_size;
  if (size < 8) {
    ::close(fd);
    return corrupt(path + ": truncated safetensors file (" + std::to_string(size) + " bytes, no header)");
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return io_error(path + ": mmap failed: " + std::strerror(errno));
  std::shared_ptr<const void> owner(p, [size](const void* q) { munmap(const_cast<void*>(q), size); });
  return parse(static_cast<const uint8_t*>(p), size, std::move(owner), path);
}

Result<SafeTensors> SafeTensors::parse(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                       const std::string& label) {
  if (size < 8) return corrupt(label + ": truncated safetensors file (" + std::to_string(size) + " bytes, no header)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian u64
  if (n > kMaxHeader) return corrupt(label + ": header length " + std::to_string(n) + " is larger than the 100 MiB limit");
  if (n > size - 8)
    return corrupt(label + ": header length " + std::to_string(n) + " exceeds the file size (" + std::to_string(size) +
                   " bytes): truncated or not a safetensors file");
  nlohmann::json j = nlohmann::json::parse(data + 8, data + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt(label + ": header is not valid JSON");
  if (!j.is_object()) return corrupt(label + ": header is not a JSON object");

  SafeTensors st;
  st.label_ = label;
  st.owner_ = std::move(owner);
  st.base_ = data + 8 + n;
  st.size_ = size;
  const uint64_t data_size = size - 8 - n;

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return corrupt(label + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        if (m.value().is_string()) st.metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    auto bad = [&](const std::string& why) { return corrupt(label + ": tensor '" + name + "': " + why); };
    if (!v.is_object()) return bad("entry is not an object");
    auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return bad("missing dtype");
    if (sh == v.end() || !sh->is_array()) return bad("missing shape");
    if (off == v.end() || !off->is_array() || off->size() != 2) return bad("data_offsets must be [begin, end]");
    TensorInfo info;
    info.name = name;
    info.dtype = dtype_from_safetensors(dt->get<std::string>());
    if (info.dtype == DType::Unknown)
      return Status(Code::Unsupported, label + ": tensor '" + name + "': unknown dtype '" + dt->get<std::string>() + "'");
    uint64_t count = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) return bad("shape has a non-integer or negative dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || mul_overflows(count, dim, &count)) return bad("shape is absurdly large");
      info.shape.push_back((int64_t)dim);
    }
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) return bad("data_offsets are not unsigned integers");
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.begin > info.end) return bad("data_offsets begin > end");
    if (info.end > data_size)
      return bad("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                 "] lie outside the data area (" + std::to_string(data_size) + " bytes): truncated file?");
    uint64_t bytes = 0;
    if (mul_overflows(count, dtype_size(info.dtype), &bytes) || bytes != info.end - info.begin)
      return bad("byte size " + std::to_string(info.end - info.begin) + " does not match shape " + shape_str(info.shape) +
                 " x " + dtype_name(info.dtype));
    st.infos_.push_back(std::move(info));
  }
  // No overlaps: sorted by offset, each tensor starts at or after the previous one's end.
  std::vector<const TensorInfo*> order;
  for (const auto& i : st.infos_) order.push_back(&i);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin || (a->begin == b->begin && a->end < b->end); });
  for (size_t k = 1; k < order.size(); ++k)
    if (order[k]->begin < order[k - 1]->end)
      return corrupt(label + ": tensors '" + order[k - 1]->name + "' and '" + order[k]->name + "' overlap");
  for (size_t k = 0; k < st.infos_.size(); ++k) st.index_[st.infos_[k].name] = k;
  return st;
}

const TensorInfo* SafeTensors::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &infos_[it->second];
}

Tensor SafeTensors::tensor(const TensorInfo& info) const {
  return Tensor::view(info.dtype, info.shape, base_ + info.begin, owner_);
}

Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    h[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8) hs.push_back(' ');  // keep the data area 8-byte aligned
  std::ofstream f(path, std::ios::binary);
  if (!f) return io_error(path + ": cannot write");
  uint64_t n = hs.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (char)((n >> (8 * i)) & 0xff);
  f.write(len, 8);
  f.write(hs.data(), (std::streamsize)hs.size());
  for (const auto& [name, t] : tensors) f.write(static_cast<const char*>(t.data()), (std::streamsize)t.nbytes());
  if (!f) return io_error(path + ": write failed");
  return Status::ok();
}

}  // namespace sdrt
