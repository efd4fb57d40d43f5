#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace swiftlet {

void AdamW::add(const std::string& name, const Tensor& value, const Tensor& grad) {
  add(name, value, grad, dev_.zeros(value.shape(), DType::kF32),
      dev_.zeros(value.shape(), DType::kF32));
}

void AdamW::add(const std::string& name, const Tensor& value, const Tensor& grad, const Tensor& m,
                const Tensor& v) {
  add_piece(name, value.shape(), 0, value, grad, m, v);
}

void AdamW::add_piece(const std::string& name, const Shape& shape, int64_t offset,
                      const Tensor& value, const Tensor& grad, const Tensor& m, const Tensor& v) {
  SWIFTLET_CHECK(offset >= 0 && offset + value.numel() <= shape_numel(shape),
                 "AdamW::add_piece {}: {} elements at {} of {}", name, value.numel(), offset,
                 shape_numel(shape));
  SWIFTLET_CHECK(value.dtype() == DType::kF32 && grad.dtype() == DType::kF32 &&
                     value.shape() == grad.shape() && m.shape() == value.shape() &&
                     v.shape() == value.shape(),
                 "AdamW::add {}: value {} grad {} m {} v {}", name, value.describe(),
                 grad.describe(), m.describe(), v.describe());
  Param p;
  p.name = name;
  p.value = value;
  p.grad = grad;
  p.m = m;
  p.v = v;
  p.shape = shape;
  p.offset = offset;
  const bool is_norm = name.find("norm") != std::string::npos;
  const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  p.decay = !is_norm && !is_bias;
  params_.push_back(std::move(p));
}

double AdamW::grad_sum_squares(size_t begin, size_t end) {
  double sq = 0;
  for (size_t i = begin; i < std::min(end, params_.size()); ++i)
    sq += dev_.sum_squares(params_[i].grad);
  return sq;
}

double AdamW::grad_norm() { return std::sqrt(grad_sum_squares()); }

double AdamW::clip(double max_norm) {
  const double norm = grad_norm();
  clip_to(norm, max_norm);
  return norm;
}

void AdamW::clip_to(double norm, double max_norm) {
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) {
    // HF: clip_coef = max_norm / (norm + 1e-6)
    const float coef = float(max_norm / (norm + 1e-6));
    if (!flat_grads_.empty())
      for (auto& g : flat_grads_) dev_.scale_inplace(g, coef);
    else
      for (auto& p : params_) dev_.scale_inplace(p.grad, coef);
  }
}

void AdamW::step(double lr) {
  ++step_;
  for (auto& p : params_)
    dev_.adamw_step(p.value, p.grad, p.m, p.v, float(lr), float(opt_.beta1), float(opt_.beta2),
                    float(opt_.eps), p.decay ? float(opt_.weight_decay) : 0.0f, step_);
}

void AdamW::zero_grad() {
  if (!flat_grads_.empty())
    for (auto& g : flat_grads_) dev_.fill(g, 0.0f);
  else
    for (auto& p : params_) dev_.fill(p.grad, 0.0f);
}

}  // namespace swiftlet
