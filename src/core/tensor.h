// Host tensor: dtype, shape, contiguous row-major data that is either owned or a view into a
// mapping (an mmap'd checkpoint) kept alive by a shared owner.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace sdrt {

using Shape = std::vector<int64_t>;
int64_t numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 4, 64, 64]"

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(DType dt, Shape shape);
  // Returns the storage blocks kept for reuse to the system (between benchmark configurations).
  static void release_cached_blocks();
  static Tensor zeros(DType dt, Shape shape);
  static Tensor from_f32(Shape shape, const std::vector<float>& values);
  // A view of external memory that `owner` keeps alive.
  static Tensor view(DType dt, Shape shape, const void* data, std::shared_ptr<const void> owner);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return (int)shape_.size(); }
  int64_t numel() const { return sdrt::numel(shape_); }
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || numel() == 0; }

  const void* data() const { return data_; }
  void* mutable_data() { return const_cast<void*>(data_); }
  const float* f32() const { return static_cast<const float*>(data_); }
  float* f32() { return static_cast<float*>(const_cast<void*>(data_)); }

  // Same data, another shape of equal element count.
  Tensor reshaped(Shape s) const;
  // A float32 copy (or this tensor when already F32); converts F16/BF16/I32/I64.
  Tensor to_f32() const;
  // An F16 copy of an F32 tensor (round to nearest even, on several threads), or this tensor when F16.
  Tensor to_f16() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  const void* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace sdrt
