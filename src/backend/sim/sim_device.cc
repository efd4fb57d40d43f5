#include "backend/sim/sim_device.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>

namespace swiftlet {

// One reserved address range: a first-fit allocator over it, and the protection switch. The part
// ever handed out ([base, base + top)) is PROT_NONE except between enter() and leave().
class SimArena {
 public:
  SimArena(const std::string& name, size_t capacity) : name_(name), capacity_(capacity) {
    void* p =
        mmap(nullptr, capacity_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      throw Error(fmt::format("{}: cannot reserve {} bytes of address space: {}", name_, capacity_,
                              std::strerror(errno)));
    base_ = static_cast<char*>(p);
    page_ = size_t(sysconf(_SC_PAGESIZE));
  }
  ~SimArena() { munmap(base_, capacity_); }

  // Serialises the device's calls and makes its memory accessible while any call is active.
  void enter() {
    call_mu_.lock();
    if (depth_++ == 0) set_access(PROT_READ | PROT_WRITE);
  }
  void leave() {
    if (--depth_ == 0) set_access(PROT_NONE);
    call_mu_.unlock();
  }

  // Called with a call active (enter()), so new memory is made accessible at once.
  void* allocate(size_t bytes) {
    size_t need = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    std::lock_guard<std::mutex> lock(alloc_mu_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < need) continue;
      size_t off = it->first, len = it->second;
      free_.erase(it);
      if (len > need) free_[off + need] = len - need;
      return base_ + off;
    }
    if (top_ + need > capacity_)
      throw Error(fmt::format("{}: out of memory allocating {} bytes ({} of {} in use)", name_,
                              bytes, top_, capacity_),
                  "the sim device is a test device; use smaller shapes");
    size_t off = top_;
    top_ += need;
    size_t extent = round_pages(top_);
    if (depth_ > 0 && extent > rw_extent_) {
      if (mprotect(base_ + rw_extent_, extent - rw_extent_, PROT_READ | PROT_WRITE) != 0)
        throw Error(fmt::format("{}: mprotect failed: {}", name_, std::strerror(errno)));
      rw_extent_ = extent;
    }
    return base_ + off;
  }

  // May run on any thread (a tensor's last reference going away): bookkeeping only.
  void release(void* p, size_t bytes) {
    size_t len = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    size_t off = size_t(static_cast<char*>(p) - base_);
    std::lock_guard<std::mutex> lock(alloc_mu_);
    auto next = free_.lower_bound(off);
    if (next != free_.end() && next->first == off + len) {  // merge with the following block
      len += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {  // merge with the preceding block
      auto prev = std::prev(next);
      if (prev->first + prev->second == off) {
        off = prev->first;
        len += prev->second;
        free_.erase(prev);
      }
    }
    if (off + len == top_) {
      top_ = off;  // the block ends the bump region: give it back to it
    } else {
      free_[off] = len;
    }
  }

  size_t capacity() const { return capacity_; }
  // The bump region less its free blocks (sizes rounded up to 64 bytes, as allocated).
  size_t in_use() {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    size_t n = top_;
    for (const auto& [off, len] : free_) n -= len;
    return n;
  }

 private:
  size_t round_pages(size_t n) const { return (n + page_ - 1) / page_ * page_; }
  // Entering opens [base, top) rounded to pages; leaving closes everything opened since, which
  // covers memory allocated (extending the range) or freed (shrinking top) during the call.
  void set_access(int prot) {
    size_t extent;
    if (prot == PROT_NONE) {
      extent = rw_extent_;
    } else {
      std::lock_guard<std::mutex> lock(alloc_mu_);
      extent = round_pages(top_);
    }
    if (extent > 0 && mprotect(base_, extent, prot) != 0)
      throw Error(fmt::format("{}: mprotect failed: {}", name_, std::strerror(errno)));
    rw_extent_ = prot == PROT_NONE ? 0 : extent;
  }

  std::string name_;
  size_t capacity_;
  size_t page_ = 4096;
  char* base_ = nullptr;
  std::recursive_mutex call_mu_;
  std::mutex alloc_mu_;
  int depth_ = 0;                  // nesting of active calls (guarded by call_mu_)
  size_t rw_extent_ = 0;           // bytes from base_ currently readable/writable
  size_t top_ = 0;                 // end of the bump region (guarded by alloc_mu_)
  std::map<size_t, size_t> free_;  // offset -> length of free blocks below top_
};

namespace {

// Makes the device's memory accessible for the lifetime of the object.
class Access {
 public:
  explicit Access(SimArena& arena) : arena_(arena) { arena_.enter(); }
  ~Access() { arena_.leave(); }
  Access(const Access&) = delete;
  Access& operator=(const Access&) = delete;

 private:
  SimArena& arena_;
};

}  // namespace

SimDevice::SimDevice(ThreadPool& pool, std::string name, size_t capacity)
    : CpuDevice(pool, std::move(name)),
      arena_(std::make_shared<SimArena>(this->name(), capacity)) {}

SimDevice::~SimDevice() = default;

size_t SimDevice::allocated_bytes() const { return arena_->in_use(); }

DeviceInfo SimDevice::info() const {
  DeviceInfo d;
  d.name = name();
  d.description = fmt::format(
      "test device: CPU kernels on memory that is PROT_NONE outside its own calls ({} threads)",
      pool().size());
  d.memory_bytes = arena_->capacity();
  return d;
}

void SimDevice::check_here(const char* kernel, const Tensor& t) const {
  SWIFTLET_CHECK(t.defined(), "{} on {}: a required tensor argument is undefined", kernel, name());
  SWIFTLET_CHECK(t.device() == this, "{} on {}: tensor {} does not live on {} (upload it first)",
                 kernel, name(), t.describe(), name());
}

Tensor SimDevice::empty(const Shape& shape, DType dtype) {
  Access access(*arena_);
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  auto st = std::make_shared<Storage>();
  st->ptr = arena_->allocate(bytes);
  st->bytes = bytes;
  own(*st);
  st->release = [arena = arena_](void* p, size_t n) { arena->release(p, n); };
  return Tensor(std::move(st), 0, shape, dtype);
}

Tensor SimDevice::upload(const Tensor& host) {
  SWIFTLET_CHECK(host.defined() && host.host_accessible(), "upload to {}: {} is not host memory",
                 name(), host.describe());
  Access access(*arena_);
  Tensor t = empty(host.shape(), host.dtype());
  std::memcpy(t.raw_ptr(), host.raw_ptr(), host.nbytes());
  return t;
}

Tensor SimDevice::download(const Tensor& t) {
  check_here("download", t);
  Tensor h = Tensor::host(t.shape(), t.dtype());
  Access access(*arena_);
  std::memcpy(h.raw_ptr(), t.raw_ptr(), t.nbytes());
  return h;
}

// Every kernel: make the memory accessible, run the CPU kernel (whose argument checks call this
// device's check_here), protect again.
void SimDevice::copy(const Tensor& dst, const Tensor& src) {
  Access access(*arena_);
  CpuDevice::copy(dst, src);
}
void SimDevice::fill(const Tensor& t, float value) {
  Access access(*arena_);
  CpuDevice::fill(t, value);
}
void SimDevice::gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                     float alpha, float beta) {
  Access access(*arena_);
  CpuDevice::gemm(a, trans_a, b, trans_b, c, alpha, beta);
}
void SimDevice::add(const Tensor& out, const Tensor& a, const Tensor& b) {
  Access access(*arena_);
  CpuDevice::add(out, a, b);
}
void SimDevice::add_inplace(const Tensor& a, const Tensor& b, float scale) {
  Access access(*arena_);
  CpuDevice::add_inplace(a, b, scale);
}
void SimDevice::scale_inplace(const Tensor& a, float s) {
  Access access(*arena_);
  CpuDevice::scale_inplace(a, s);
}
void SimDevice::add_bias(const Tensor& x, const Tensor& bias) {
  Access access(*arena_);
  CpuDevice::add_bias(x, bias);
}
void SimDevice::bias_backward(const Tensor& dbias, const Tensor& dy) {
  Access access(*arena_);
  CpuDevice::bias_backward(dbias, dy);
}
double SimDevice::sum_squares(const Tensor& a) {
  Access access(*arena_);
  return CpuDevice::sum_squares(a);
}
void SimDevice::embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table) {
  Access access(*arena_);
  CpuDevice::embedding_forward(out, ids, table);
}
void SimDevice::embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  Access access(*arena_);
  CpuDevice::embedding_backward(dtable, dout, ids);
}
void SimDevice::rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                                const Tensor& w, float eps) {
  Access access(*arena_);
  CpuDevice::rmsnorm_forward(y, rstd, x, w, eps);
}
void SimDevice::rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                 const Tensor& x, const Tensor& w, const Tensor& rstd) {
  Access access(*arena_);
  CpuDevice::rmsnorm_backward(dx, dw, dy, x, w, rstd);
}
void SimDevice::rope_forward(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                             float attention_scaling) {
  Access access(*arena_);
  CpuDevice::rope_forward(x, positions, inv_freq, attention_scaling);
}
void SimDevice::rope_backward(const Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                              float attention_scaling) {
  Access access(*arena_);
  CpuDevice::rope_backward(dx, positions, inv_freq, attention_scaling);
}
void SimDevice::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                  std::span<const AttnSegment> segments, float scale) {
  Access access(*arena_);
  CpuDevice::attention_forward(out, lse, q, segments, scale);
}
void SimDevice::attention_backward(const Tensor& dq, const Tensor& dout, const Tensor& q,
                                   const Tensor& out, const Tensor& lse,
                                   std::span<const AttnSegment> segments, float scale) {
  Access access(*arena_);
  CpuDevice::attention_backward(dq, dout, q, out, lse, segments, scale);
}
void SimDevice::scale_rows_forward(const Tensor& out, const Tensor& x, const Tensor& s) {
  Access access(*arena_);
  CpuDevice::scale_rows_forward(out, x, s);
}
void SimDevice::scale_rows_backward(const Tensor& dx, const Tensor& ds, const Tensor& dout,
                                    const Tensor& x, const Tensor& s) {
  Access access(*arena_);
  CpuDevice::scale_rows_backward(dx, ds, dout, x, s);
}
void SimDevice::split_columns(std::span<const Tensor> outs, const Tensor& in) {
  Access access(*arena_);
  CpuDevice::split_columns(outs, in);
}
void SimDevice::gather_columns(const Tensor& out, const Tensor& in, const Tensor& index) {
  Access access(*arena_);
  CpuDevice::gather_columns(out, in, index);
}
void SimDevice::causal_conv1d_silu(const Tensor& y, const Tensor& x, const Tensor& w,
                                   const Tensor& state) {
  Access access(*arena_);
  CpuDevice::causal_conv1d_silu(y, x, w, state);
}
void SimDevice::l2norm_rows(const Tensor& x, float eps, float scale) {
  Access access(*arena_);
  CpuDevice::l2norm_rows(x, eps, scale);
}
void SimDevice::gdn_gates(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b,
                          const Tensor& a_log, const Tensor& dt_bias) {
  Access access(*arena_);
  CpuDevice::gdn_gates(g, beta, a, b, a_log, dt_bias);
}
void SimDevice::gated_delta_rule(const Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& g, const Tensor& beta, const Tensor& state) {
  Access access(*arena_);
  CpuDevice::gated_delta_rule(o, q, k, v, g, beta, state);
}
void SimDevice::mul_sigmoid(const Tensor& out, const Tensor& x, const Tensor& gate) {
  Access access(*arena_);
  CpuDevice::mul_sigmoid(out, x, gate);
}
void SimDevice::concat_columns(const Tensor& out, std::span<const Tensor> ins) {
  Access access(*arena_);
  CpuDevice::concat_columns(out, ins);
}
void SimDevice::causal_conv1d_silu_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                            const Tensor& x, const Tensor& w, const Tensor& state) {
  Access access(*arena_);
  CpuDevice::causal_conv1d_silu_backward(dx, dw, dy, x, w, state);
}
void SimDevice::l2norm_rows_backward(const Tensor& dx, const Tensor& dy, const Tensor& x, float eps,
                                     float scale) {
  Access access(*arena_);
  CpuDevice::l2norm_rows_backward(dx, dy, x, eps, scale);
}
void SimDevice::gdn_gates_backward(const Tensor& da, const Tensor& db, const Tensor& d_a_log,
                                   const Tensor& d_dt_bias, const Tensor& dg, const Tensor& dbeta,
                                   const Tensor& a, const Tensor& b, const Tensor& a_log,
                                   const Tensor& dt_bias) {
  Access access(*arena_);
  CpuDevice::gdn_gates_backward(da, db, d_a_log, d_dt_bias, dg, dbeta, a, b, a_log, dt_bias);
}
void SimDevice::gated_delta_rule_chunked(const Tensor& o, const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& g, const Tensor& beta,
                                         const Tensor& state, int64_t chunk) {
  Access access(*arena_);
  CpuDevice::gated_delta_rule_chunked(o, q, k, v, g, beta, state, chunk);
}
void SimDevice::gated_delta_rule_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                          const Tensor& dg, const Tensor& dbeta,
                                          const Tensor& d_state0, const Tensor& d_o,
                                          const Tensor& q, const Tensor& k, const Tensor& v,
                                          const Tensor& g, const Tensor& beta, const Tensor& state0,
                                          int64_t chunk) {
  Access access(*arena_);
  CpuDevice::gated_delta_rule_backward(dq, dk, dv, dg, dbeta, d_state0, d_o, q, k, v, g, beta,
                                       state0, chunk);
}
void SimDevice::gated_rmsnorm_forward(const Tensor& out, const Tensor& o, const Tensor& z,
                                      const Tensor& w, float eps) {
  Access access(*arena_);
  CpuDevice::gated_rmsnorm_forward(out, o, z, w, eps);
}
void SimDevice::gated_rmsnorm_backward(const Tensor& d_o, const Tensor& dz, const Tensor& dw,
                                       const Tensor& dout, const Tensor& o, const Tensor& z,
                                       const Tensor& w, float eps) {
  Access access(*arena_);
  CpuDevice::gated_rmsnorm_backward(d_o, dz, dw, dout, o, z, w, eps);
}
void SimDevice::mul_sigmoid_backward(const Tensor& dx, const Tensor& dgate, const Tensor& dout,
                                     const Tensor& x, const Tensor& gate) {
  Access access(*arena_);
  CpuDevice::mul_sigmoid_backward(dx, dgate, dout, x, gate);
}
void SimDevice::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  Access access(*arena_);
  CpuDevice::swiglu_forward(out, gate, up);
}
void SimDevice::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                const Tensor& gate, const Tensor& up) {
  Access access(*arena_);
  CpuDevice::swiglu_backward(dgate, dup, dout, gate, up);
}
void SimDevice::cross_entropy(const Tensor& loss, const Tensor& correct, const Tensor& dlogits,
                              const Tensor& logits, const Tensor& labels, float grad_scale,
                              const Tensor& row_scale) {
  Access access(*arena_);
  CpuDevice::cross_entropy(loss, correct, dlogits, logits, labels, grad_scale, row_scale);
}
void SimDevice::softmax_entropy(const Tensor& out, const Tensor& logits, float scale) {
  Access access(*arena_);
  CpuDevice::softmax_entropy(out, logits, scale);
}
void SimDevice::log_softmax_inplace(const Tensor& x) {
  Access access(*arena_);
  CpuDevice::log_softmax_inplace(x);
}
void SimDevice::adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m,
                           const Tensor& v, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int64_t step) {
  Access access(*arena_);
  CpuDevice::adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step);
}
void SimDevice::dropout_forward(const Tensor& out, const Tensor& in, float p, uint64_t seed) {
  Access access(*arena_);
  CpuDevice::dropout_forward(out, in, p, seed);
}
void SimDevice::dropout_backward(const Tensor& din, const Tensor& dout, float p, uint64_t seed) {
  Access access(*arena_);
  CpuDevice::dropout_backward(din, dout, p, seed);
}

}  // namespace swiftlet
