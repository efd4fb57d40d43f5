#pragma once
// AdamW over named f32 parameters with decoupled weight decay (none on norms and biases, as
// HF's Trainer groups them), global-norm gradient clipping.
#include <cstdint>
#include <string>
#include <vector>

#include "backend/device.h"

namespace swiftlet {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;  // ms-swift's default
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct Param {
  std::string name;
  Tensor value;  // f32 on the device
  Tensor grad;   // f32, same shape
  Tensor m, v;   // optimizer state
  bool decay = true;
  // The whole parameter's shape, and the first element of its flattened form this Param covers:
  // under a sharded optimizer a rank updates only a piece (value..v are then 1-D, that long).
  Shape shape;
  int64_t offset = 0;
};

class AdamW {
 public:
  AdamW(Device& dev, AdamWOptions opt) : dev_(dev), opt_(opt) {}
  // Registers a parameter; decay is off for names of norms and biases. Moments are allocated here,
  // or given (views of the trainer's flat buckets).
  void add(const std::string& name, const Tensor& value, const Tensor& grad);
  void add(const std::string& name, const Tensor& value, const Tensor& grad, const Tensor& m,
           const Tensor& v);
  // A piece of parameter `name` (of `shape`): elements [offset, offset + value.numel()) of it.
  void add_piece(const std::string& name, const Shape& shape, int64_t offset, const Tensor& value,
                 const Tensor& grad, const Tensor& m, const Tensor& v);
  // Gradients live in these flat buffers (every param's grad a view of one): zeroing and
  // clipping run over them, one kernel each, instead of parameter by parameter.
  void set_flat_grads(std::vector<Tensor> flat) { flat_grads_ = std::move(flat); }
  std::vector<Param>& params() { return params_; }
  const AdamWOptions& options() const { return opt_; }
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }

  // sqrt(sum of squares of every gradient)
  double grad_norm();
  // The sum of squares of the gradients registered here (a rank's part of the global norm^2).
  // Of params()[begin, end) (all of them by default).
  double grad_sum_squares(size_t begin = 0, size_t end = SIZE_MAX);
  // Scales gradients so their global norm is at most max_norm (when > 0); returns the pre-clip
  // norm.
  double clip(double max_norm);
  // The same with the global norm computed by the caller (over every rank's pieces).
  void clip_to(double norm, double max_norm);
  void step(double lr);
  void zero_grad();

 private:
  Device& dev_;
  AdamWOptions opt_;
  std::vector<Param> params_;
  std::vector<Tensor> flat_grads_;
  int64_t step_ = 0;
};

}  // namespace swiftlet
