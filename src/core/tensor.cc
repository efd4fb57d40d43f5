#include "core/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

namespace swiftlet {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, size_t byte_offset, Shape shape, DType dtype)
    : storage_(std::move(storage)), offset_(byte_offset), shape_(std::move(shape)), dtype_(dtype) {
  SWIFTLET_CHECK(offset_ + nbytes() <= storage_->bytes, "tensor {} exceeds its storage of {} bytes",
                 shape_str(shape_), storage_->bytes);
}

Tensor Tensor::host(const Shape& shape, DType dtype) {
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  // Large blocks (weights, KV caches) on 2 MiB boundaries with transparent huge pages: streaming
  // gigabytes of weights per decoded token misses the TLB constantly with 4 KiB pages.
  const size_t align = bytes >= kHugePageBytes ? kHugePageBytes : 64;
  size_t alloc = (bytes + align - 1) / align * align;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(align, alloc);
  if (!p) throw Error(fmt::format("out of host memory allocating {} bytes", bytes));
  if (align == kHugePageBytes) madvise(p, alloc, MADV_HUGEPAGE);
  auto st = std::make_shared<Storage>();
  st->ptr = p;
  st->bytes = bytes;
  st->release = [](void* q, size_t) { std::free(q); };
  return Tensor(std::move(st), 0, shape, dtype);
}

Tensor Tensor::host_zeros(const Shape& shape, DType dtype) {
  Tensor t = host(shape, dtype);
  std::memset(t.raw_ptr(), 0, t.nbytes());
  return t;
}

Tensor Tensor::host_from(const std::vector<float>& values, const Shape& shape) {
  Tensor t = host(shape, DType::kF32);
  SWIFTLET_CHECK(int64_t(values.size()) == t.numel(), "host_from: {} values for shape {}",
                 values.size(), shape_str(shape));
  std::memcpy(t.raw_ptr(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::host_from_i32(const std::vector<int32_t>& values, const Shape& shape) {
  Tensor t = host(shape, DType::kI32);
  SWIFTLET_CHECK(int64_t(values.size()) == t.numel(), "host_from_i32: {} values for shape {}",
                 values.size(), shape_str(shape));
  std::memcpy(t.raw_ptr(), values.data(), t.nbytes());
  return t;
}

bool Tensor::host_accessible() const {
  return storage_ && storage_->host_accessible;
}

std::string Tensor::describe() const {
  if (!defined()) return "<undefined tensor>";
  return fmt::format("{} {} on {}", shape_str(shape_), dtype_name(dtype_),
                     storage_->device_name.empty() ? std::string("host") : storage_->device_name);
}

Tensor Tensor::view(Shape shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      SWIFTLET_CHECK(infer < 0, "view: more than one -1 in {}", shape_str(shape));
      infer = int(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[infer] = known ? numel() / known : 0;
  SWIFTLET_CHECK(shape_numel(shape) == numel(), "view {} of {}", shape_str(shape), describe());
  return Tensor(storage_, offset_, std::move(shape), dtype_);
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  SWIFTLET_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                 "slice [{}, {}) of {}", begin, end, describe());
  Shape s = shape_;
  s[0] = end - begin;
  size_t row_bytes = size_t(numel() / (shape_[0] ? shape_[0] : 1)) * dtype_size(dtype_);
  return Tensor(storage_, offset_ + size_t(begin) * row_bytes, std::move(s), dtype_);
}

Tensor Tensor::rows2d() const {
  SWIFTLET_CHECK(ndim() >= 1, "rows2d of a scalar");
  int64_t last = shape_.back();
  return view({last ? numel() / last : 0, last});
}

std::vector<float> Tensor::to_f32_vector() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[size_t(i)] = item_f32(i);
  return out;
}

void Tensor::set_f32(int64_t i, float v) const {
  switch (dtype_) {
    case DType::kF32: data<float>()[i] = v; return;
    case DType::kBF16: data<uint16_t>()[i] = f32_to_bf16(v); return;
    case DType::kF16: data<uint16_t>()[i] = f32_to_f16(v); return;
    default: SWIFTLET_CHECK(false, "set_f32 on a {} tensor", dtype_name(dtype_));
  }
}

float Tensor::item_f32(int64_t i) const {
  switch (dtype_) {
    case DType::kF32: return data<float>()[i];
    case DType::kBF16: return bf16_to_f32(data<uint16_t>()[i]);
    case DType::kF16: return f16_to_f32(data<uint16_t>()[i]);
    case DType::kI32: return float(data<int32_t>()[i]);
    case DType::kI64: return float(data<int64_t>()[i]);
    case DType::kU8: return float(data<uint8_t>()[i]);
  }
  return 0;
}

}  // namespace swiftlet
