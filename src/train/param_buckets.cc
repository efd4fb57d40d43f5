#include "train/param_buckets.h"

namespace swiftlet {

ParamBuckets::ParamBuckets(Device& dev, const std::vector<TrainableSlot>& params,
                           size_t bucket_bytes) {
  entries_.resize(params.size());
  const int64_t cap = std::max<int64_t>(1, int64_t(bucket_bytes / sizeof(float)));
  std::vector<int64_t> sizes;
  for (size_t k = params.size(); k-- > 0;) {  // reverse: backward's order
    const Tensor& t = *params[k].value;
    SWIFTLET_CHECK(t.defined() && dtype_is_float(t.dtype()), "trainable {}: {}", params[k].name,
                   t.describe());
    const int64_t n = t.numel();
    if (sizes.empty() || (sizes.back() > 0 && sizes.back() + n > cap)) {
      sizes.push_back(0);
      buckets_.emplace_back();
    }
    entries_[k] = {params[k].name, buckets_.size() - 1, sizes.back(), t.shape()};
    buckets_.back().entries.push_back(k);
    sizes.back() += n;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bk = buckets_[b];
    bk.values = dev.empty({sizes[b]}, DType::kF32);
    bk.grads = dev.zeros({sizes[b]}, DType::kF32);
    bk.exp_avg = dev.zeros({sizes[b]}, DType::kF32);
    bk.exp_avg_sq = dev.zeros({sizes[b]}, DType::kF32);
  }
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor v = value(k);
    dev.copy(v, *params[k].value);
    *params[k].value = v;
    if (params[k].grad) *params[k].grad = grad(k);
  }
}

Tensor ParamBuckets::view(const Tensor& flat, size_t i) const {
  const Entry& e = entries_[i];
  return flat.slice(e.offset, e.offset + shape_numel(e.shape)).view(e.shape);
}

int64_t ParamBuckets::numel() const {
  int64_t n = 0;
  for (const auto& b : buckets_) n += b.values.numel();
  return n;
}

}  // namespace swiftlet
