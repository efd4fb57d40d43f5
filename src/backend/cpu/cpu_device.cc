// CpuDevice: memory, transfers, dtype conversion and the device description.
#include "backend/cpu/cpu_device.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_info.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet {

using cpu::expect_numel;
using cpu::parallel;

CpuDevice::CpuDevice(ThreadPool& pool, std::string name) : pool_(pool), name_(std::move(name)) {
  blas::info();  // load the GEMM library now, so a missing library fails at device creation
}

DeviceInfo CpuDevice::info() const {
  const CpuFeatures& f = cpu_features();
  const blas::BlasInfo& b = blas::info();
  DeviceInfo d;
  d.name = name_;
  d.description = fmt::format("{}, {} threads, {} kernels, GEMM {} ({} kernels)", f.model,
                              pool_.size(), build_simd_level(), b.library, b.core);
  d.memory_bytes = memory_info().total_bytes;
  return d;
}

void CpuDevice::check_here(const char* kernel, const Tensor& t) const {
  SWIFTLET_CHECK(t.defined(), "{} on {}: a required tensor argument is undefined", kernel, name_);
  SWIFTLET_CHECK(t.host_accessible(), "{} on {}: tensor {} lives on another device", kernel, name_,
                 t.describe());
}

Tensor CpuDevice::empty(const Shape& shape, DType dtype) {
  // The host allocator: large blocks on transparent huge pages (see Tensor::host).
  Tensor t = Tensor::host(shape, dtype);
  own(*t.storage());
  return t;
}

namespace {
constexpr size_t kUploadReserve = size_t(1) << 30;  // memory left free when copying weights
}  // namespace

Tensor CpuDevice::upload(const Tensor& host) {
  check_here("upload", host);
  // Weights in a memory-mapped file sit on 4 KiB pages; copied to huge pages, batched decode
  // (4 sequences, Qwen3-0.6B shapes, bf16) spends 30 instead of 41 ms per step in its matmuls.
  // The file's pages are then dropped from this process (they stay in the page cache) so the
  // weights are not resident twice. When memory (or the container's limit) runs short, the mapping
  // is shared instead: slower, but a model larger than memory still runs.
  if (host.storage()->file_mapped && host.nbytes() >= Tensor::kHugePageBytes &&
      memory_info().available_bytes >= host.nbytes() + kUploadReserve) {
    Tensor t = empty(host.shape(), host.dtype());
    std::memcpy(t.raw_ptr(), host.raw_ptr(), host.nbytes());
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    uintptr_t lo = (reinterpret_cast<uintptr_t>(host.raw_ptr()) + page - 1) / page * page;
    uintptr_t hi = (reinterpret_cast<uintptr_t>(host.raw_ptr()) + host.nbytes()) / page * page;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    return t;
  }
  auto st = std::make_shared<Storage>();
  st->ptr = host.raw_ptr();
  st->bytes = host.nbytes();
  own(*st);
  st->release = [keep = host.storage()](void*, size_t) {};  // holds the host storage alive
  return Tensor(std::move(st), 0, host.shape(), host.dtype());
}

Tensor CpuDevice::download(const Tensor& t) {
  check_here("download", t);
  Tensor h = Tensor::host(t.shape(), t.dtype());
  std::memcpy(h.raw_ptr(), t.raw_ptr(), t.nbytes());
  return h;
}

namespace {

template <DType DD, DType DS>
void convert(void* dst, const void* src, int64_t b, int64_t e) {
  constexpr int W = simd::kWidth;
  int64_t i = b;
  for (; i + W <= e; i += W) simd::store_as<DD>(dst, i, simd::load_as<DS>(src, i));
  for (; i < e; ++i) simd::store1_as<DD>(dst, i, simd::load1_as<DS>(src, i));
}

}  // namespace

void CpuDevice::copy(const Tensor& dst, const Tensor& src) {
  check_here("copy", dst);
  check_here("copy", src);
  expect_numel("copy", "dst", dst, src.numel());
  int64_t n = src.numel();
  if (dst.dtype() == src.dtype()) {
    size_t es = dtype_size(src.dtype());
    char* d = static_cast<char*>(dst.raw_ptr());
    const char* s = static_cast<const char*>(src.raw_ptr());
    if (d == s) return;
    parallel(pool_, n, 1 << 18, [&](int64_t b, int64_t e) {
      std::memmove(d + b * es, s + b * es, size_t(e - b) * es);
    });
    return;
  }
  SWIFTLET_CHECK(dtype_is_float(dst.dtype()) && dtype_is_float(src.dtype()),
                 "copy: cannot convert {} to {}", src.describe(), dst.describe());
  void* d = dst.raw_ptr();
  const void* s = src.raw_ptr();
  simd::with_float_dtype(dst.dtype(), [&](auto dd) {
    simd::with_float_dtype(src.dtype(), [&](auto ds) {
      parallel(pool_, n, 1 << 16, [&](int64_t b, int64_t e) {
        convert<decltype(dd)::value, decltype(ds)::value>(d, s, b, e);
      });
    });
  });
}

void CpuDevice::fill(const Tensor& t, float value) {
  check_here("fill", t);
  int64_t n = t.numel();
  void* p = t.raw_ptr();
  switch (t.dtype()) {
    case DType::kI32: {
      int32_t v = int32_t(value);
      parallel(pool_, n, 1 << 16, [&](int64_t b, int64_t e) {
        std::fill(static_cast<int32_t*>(p) + b, static_cast<int32_t*>(p) + e, v);
      });
      return;
    }
    case DType::kI64: {
      int64_t v = int64_t(value);
      parallel(pool_, n, 1 << 16, [&](int64_t b, int64_t e) {
        std::fill(static_cast<int64_t*>(p) + b, static_cast<int64_t*>(p) + e, v);
      });
      return;
    }
    case DType::kU8: {
      std::memset(p, int(uint8_t(value)), size_t(n));
      return;
    }
    default:
      break;
  }
  simd::with_float_dtype(t.dtype(), [&](auto d) {
    parallel(pool_, n, 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) simd::store1_as<decltype(d)::value>(p, i, value);
    });
  });
}

}  // namespace swiftlet
