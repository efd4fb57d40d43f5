#pragma once
// The "sim" device: a test-only second device that behaves like an accelerator with its own
// memory. Its buffers come from one mmap region kept PROT_NONE except while one of its own methods
// runs (then it runs the CPU kernels on them and protects the region again), so host code that
// touches device memory directly crashes, and Tensor::data<T>() on its tensors throws. Every kernel
// checks that all its tensor arguments live on it. Running a model on "sim:0" proves that nothing
// above backend/ reaches into device memory: the boundary a CUDA or Ascend backend plugs into.
// Calls are serialised (one at a time per device); it is meant for tests, not for speed.
#include <memory>
#include <string>

#include "backend/cpu/cpu_device.h"

namespace swiftlet {

class SimArena;

class SimDevice : public CpuDevice {
 public:
  static constexpr size_t kDefaultCapacity = size_t(16) << 30;  // address space reserved

  explicit SimDevice(ThreadPool& pool, std::string name = "sim:0",
                     size_t capacity = kDefaultCapacity);
  ~SimDevice() override;

  DeviceInfo info() const override;
  bool host_accessible() const override { return false; }
  // Bytes of this device's memory held by live tensors now (what tests check is not resident).
  size_t allocated_bytes() const;

  Tensor empty(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host) override;  // always copies
  Tensor download(const Tensor& t) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill(const Tensor& t, float value) override;

  void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
            float alpha = 1.0f, float beta = 0.0f) override;
  void add(const Tensor& out, const Tensor& a, const Tensor& b) override;
  void add_inplace(const Tensor& a, const Tensor& b, float scale = 1.0f) override;
  void scale_inplace(const Tensor& a, float s) override;
  void add_bias(const Tensor& x, const Tensor& bias) override;
  void bias_backward(const Tensor& dbias, const Tensor& dy) override;
  double sum_squares(const Tensor& a) override;
  void embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table) override;
  void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) override;
  void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                       float eps) override;
  void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                        const Tensor& w, const Tensor& rstd) override;
  void rope_forward(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                    float attention_scaling) override;
  void rope_backward(const Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                     float attention_scaling) override;
  void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                         std::span<const AttnSegment> segments, float scale) override;
  void attention_backward(const Tensor& dq, const Tensor& dout, const Tensor& q, const Tensor& out,
                          const Tensor& lse, std::span<const AttnSegment> segments,
                          float scale) override;
  void scale_rows_forward(const Tensor& out, const Tensor& x, const Tensor& s) override;
  void scale_rows_backward(const Tensor& dx, const Tensor& ds, const Tensor& dout, const Tensor& x,
                           const Tensor& s) override;
  void split_columns(std::span<const Tensor> outs, const Tensor& in) override;
  void gather_columns(const Tensor& out, const Tensor& in, const Tensor& index) override;
  void causal_conv1d_silu(const Tensor& y, const Tensor& x, const Tensor& w,
                          const Tensor& state) override;
  void l2norm_rows(const Tensor& x, float eps, float scale) override;
  void gdn_gates(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b,
                 const Tensor& a_log, const Tensor& dt_bias) override;
  void gated_delta_rule(const Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& g, const Tensor& beta, const Tensor& state) override;
  void mul_sigmoid(const Tensor& out, const Tensor& x, const Tensor& gate) override;
  void concat_columns(const Tensor& out, std::span<const Tensor> ins) override;
  void causal_conv1d_silu_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                   const Tensor& x, const Tensor& w, const Tensor& state) override;
  void l2norm_rows_backward(const Tensor& dx, const Tensor& dy, const Tensor& x, float eps,
                            float scale) override;
  void gdn_gates_backward(const Tensor& da, const Tensor& db, const Tensor& d_a_log,
                          const Tensor& d_dt_bias, const Tensor& dg, const Tensor& dbeta,
                          const Tensor& a, const Tensor& b, const Tensor& a_log,
                          const Tensor& dt_bias) override;
  void gated_delta_rule_chunked(const Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& g, const Tensor& beta, const Tensor& state,
                                int64_t chunk) override;
  void gated_delta_rule_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                 const Tensor& dg, const Tensor& dbeta, const Tensor& d_state0,
                                 const Tensor& d_o, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const Tensor& g, const Tensor& beta,
                                 const Tensor& state0, int64_t chunk) override;
  void gated_rmsnorm_forward(const Tensor& out, const Tensor& o, const Tensor& z, const Tensor& w,
                             float eps) override;
  void gated_rmsnorm_backward(const Tensor& d_o, const Tensor& dz, const Tensor& dw,
                              const Tensor& dout, const Tensor& o, const Tensor& z, const Tensor& w,
                              float eps) override;
  void mul_sigmoid_backward(const Tensor& dx, const Tensor& dgate, const Tensor& dout,
                            const Tensor& x, const Tensor& gate) override;
  void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                       const Tensor& gate, const Tensor& up) override;
  void cross_entropy(const Tensor& loss, const Tensor& correct, const Tensor& dlogits,
                     const Tensor& logits, const Tensor& labels, float grad_scale,
                     const Tensor& row_scale = Tensor()) override;
  void log_softmax_inplace(const Tensor& x) override;
  void softmax_entropy(const Tensor& out, const Tensor& logits, float scale) override;
  void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  int64_t step) override;
  void dropout_forward(const Tensor& out, const Tensor& in, float p, uint64_t seed) override;
  void dropout_backward(const Tensor& din, const Tensor& dout, float p, uint64_t seed) override;

 protected:
  void check_here(const char* kernel, const Tensor& t) const override;

 private:
  std::shared_ptr<SimArena> arena_;
};

}  // namespace swiftlet
