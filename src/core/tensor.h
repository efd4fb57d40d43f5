#pragma once
// Tensor: a contiguous row-major block of one dtype, owned by shared storage that lives on a device.
// A tensor with device() == nullptr lives in plain host memory (heap or a memory-mapped file).
// Views (reshape, row slices) share storage. Element access through data<T>() is allowed only for
// host-accessible memory; backend code reaches device memory through raw_ptr().
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace swiftlet {

class Device;  // backend/device.h: core stores the pointer and never calls it
using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// A block of bytes and how to give it back.
struct Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  // The device owning the memory (nullptr: plain host memory) and what core needs to know of it,
  // written together by that device when it creates or adopts the storage (core is below backend/
  // and cannot ask the device).
  Device* device = nullptr;
  bool host_accessible = true;  // host code may read ptr directly
  std::string device_name;      // the device's name(), for messages; empty for plain host memory
  bool file_mapped = false;     // a read-only memory map of a file (safetensors weights)
  std::function<void(void*, size_t)> release;
  ~Storage() {
    if (release) release(ptr, bytes);
  }
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, size_t byte_offset, Shape shape, DType dtype);

  // Host tensors (heap, 64-byte aligned; blocks of kHugePageBytes or more on 2 MiB boundaries with
  // transparent huge pages).
  static constexpr size_t kHugePageBytes = size_t(2) << 20;
  static Tensor host(const Shape& shape, DType dtype);        // uninitialised
  static Tensor host_zeros(const Shape& shape, DType dtype);  // zero-filled
  static Tensor host_from(const std::vector<float>& values, const Shape& shape);
  static Tensor host_from_i32(const std::vector<int32_t>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device* device() const { return storage_ ? storage_->device : nullptr; }
  bool host_accessible() const;
  std::string describe() const;  // "[4, 8] f32 on cpu"

  // Same storage, new shape with the same element count (one dim may be -1).
  Tensor view(Shape shape) const;
  // Rows [begin, end) along dim 0.
  Tensor slice(int64_t begin, int64_t end) const;
  // Rows as a 2-D [prod(dims[:-1]), dims[-1]] view.
  Tensor rows2d() const;

  template <class T>
  T* data() const {
    SWIFTLET_CHECK(host_accessible(), "data<T>() on a tensor not in host memory: {}", describe());
    return reinterpret_cast<T*>(static_cast<char*>(storage_->ptr) + offset_);
  }
  // For backend implementations only: the address in the device's own address space.
  void* raw_ptr() const { return static_cast<char*>(storage_->ptr) + offset_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t byte_offset() const { return offset_; }

  // Host-only conveniences for tests and I/O.
  std::vector<float> to_f32_vector() const;  // any float dtype, host memory
  float item_f32(int64_t flat_index) const;
  // Stores v (rounded to the tensor's float dtype) at a flat index; host float tensors only.
  void set_f32(int64_t flat_index, float v) const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::kF32;
};

}  // namespace swiftlet
