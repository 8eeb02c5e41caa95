#include "core/tensor.h"

#include <cassert>
#include <cstring>
#include <malloc.h>

#include <map>
#include <mutex>

namespace sdrt {

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

namespace {

// Freed blocks of 1 MiB and more are kept by exact size for the next tensor of that size (a graph run
// allocates the same shapes every step), up to 4 GiB in all; this saves the page faults of fresh mmaps.
class BlockPool {
 public:
  static BlockPool& get() {
    static BlockPool* p = new BlockPool();  // never destroyed: tensors may outlive static destruction
    return *p;
  }
  void* take(size_t bytes) {
    if (bytes >= kMin) {
      std::lock_guard<std::mutex> l(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        held_ -= bytes;
        return p;
      }
    }
    return ::operator new(bytes, std::align_val_t(64));
  }
  void clear() {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [b, p] : free_) ::operator delete(p, std::align_val_t(64));
    free_.clear();
    held_ = 0;
    malloc_trim(0);
  }
  void give(void* p, size_t bytes) {
    if (bytes >= kMin) {
      std::lock_guard<std::mutex> l(mu_);
      if (held_ + bytes <= kMax) {
        free_.emplace(bytes, p);
        held_ += bytes;
        return;
      }
    }
    ::operator delete(p, std::align_val_t(64));
  }

 private:
  static constexpr size_t kMin = 1 << 20, kMax = size_t(4) << 30;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t held_ = 0;
};

}  // namespace

Tensor Tensor::empty(DType dt, Shape shape) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  const size_t bytes = std::max<size_t>(t.nbytes(), 1);
  void* p = BlockPool::get().take(bytes);  // 64-byte aligned
  t.owner_ = std::shared_ptr<const void>(p, [bytes](const void* q) { BlockPool::get().give(const_cast<void*>(q), bytes); });
  t.data_ = p;
  return t;
}

void Tensor::release_cached_blocks() { BlockPool::get().clear(); }

Tensor Tensor::zeros(DType dt, Shape shape) {
  Tensor t = empty(dt, std::move(shape));
  std::memset(t.mutable_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::from_f32(Shape shape, const std::vector<float>& values) {
  Tensor t = empty(DType::F32, std::move(shape));
  assert((int64_t)values.size() == t.numel());
  std::memcpy(t.mutable_data(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::view(DType dt, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::reshaped(Shape s) const {
  assert(sdrt::numel(s) == numel());
  Tensor t = *this;
  t.shape_ = std::move(s);
  return t;
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::F32) return *this;
  Tensor out = empty(DType::F32, shape_);
  float* o = out.f32();
  const int64_t n = numel();
  switch (dtype_) {
    case DType::F16: {
      auto* p = static_cast<const uint16_t*>(data_);
      for (int64_t i = 0; i < n; ++i) o[i] = half_to_float(p[i]);
      break;
    }
    case DType::BF16: {
      auto* p = static_cast<const uint16_t*>(data_);
      for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_float(p[i]);
      break;
    }
    case DType::I64: {
      auto* p = static_cast<const int64_t*>(data_);
      for (int64_t i = 0; i < n; ++i) o[i] = (float)p[i];
      break;
    }
    case DType::I32: {
      auto* p = static_cast<const int32_t*>(data_);
      for (int64_t i = 0; i < n; ++i) o[i] = (float)p[i];
      break;
    }
    case DType::U8: {
      auto* p = static_cast<const uint8_t*>(data_);
      for (int64_t i = 0; i < n; ++i) o[i] = (float)p[i];
      break;
    }
    default: assert(false && "to_f32 of unknown dtype");
  }
  return out;
}

Tensor Tensor::to_f16() const {
  if (dtype_ == DType::F16) return *this;
  const Tensor f = to_f32();
  Tensor out = empty(DType::F16, shape_);
  auto* o = static_cast<uint16_t*>(out.mutable_data());
  const float* p = f.f32();
  const int64_t n = numel();
#pragma omp parallel for schedule(static) if (n > (1 << 20))
  for (int64_t i = 0; i < n; ++i) o[i] = float_to_half(p[i]);
  return out;
}

}  // namespace sdrt
