#pragma once
// The CPU device: host memory, kernels vectorised for the compile-time SIMD level (simd.h), GEMM
// through OpenBLAS (blas.h) plus hand-written small-M kernels, all threaded over the ThreadPool it
// is given. Kernels never create threads; every split is a fixed function of the shapes and the
// pool size, so results repeat bit for bit for the same thread count.
#include <string>

#include "backend/device.h"

namespace swiftlet {

class CpuDevice : public Device {
 public:
  explicit CpuDevice(ThreadPool& pool, std::string name = "cpu:0");

  const std::string& name() const override { return name_; }
  DeviceInfo info() const override;
  bool host_accessible() const override { return true; }
  ThreadPool& pool() const { return pool_; }

  Tensor empty(const Shape& shape, DType dtype) override;
  // Shares the host tensor's storage (kept alive by the result), except large tensors of
  // memory-mapped files, copied to huge pages (see Device::upload).
  Tensor upload(const Tensor& host) override;
  Tensor download(const Tensor& t) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill(const Tensor& t, float value) override;

  // True when gemm rounds op(A) to bf16 for this shape: bf16 B used as [N, K] (trans_b) with
  // M <= 32 on CPUs with AVX512_BF16 dot products (the decode matmuls; products exact, f32 sums).
  static bool gemm_rounds_a_to_bf16(int64_t M, bool trans_b, DType b);
  // One line on the small-M (decode) GEMM kernels, for `swiftlet env`.
  static std::string gemv_summary();
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
  // Makes this device the owner of st: sets the device fields of Storage (device, host_accessible,
  // device_name) that core reads. Every storage a device hands out goes through it.
  void own(Storage& st) {
    st.device = this;
    st.host_accessible = host_accessible();
    st.device_name = name();
  }
  // Throws InternalError naming the kernel unless `t` is defined and lives where this device's
  // kernels may read it (host memory for the CPU device; the sim device narrows it to its own).
  virtual void check_here(const char* kernel, const Tensor& t) const;
  // The same for optional arguments: an undefined tensor passes.
  void check_here_optional(const char* kernel, const Tensor& t) const {
    if (t.defined()) check_here(kernel, t);
  }

 private:
  ThreadPool& pool_;
  std::string name_;
};

}  // namespace swiftlet
