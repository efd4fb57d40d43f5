#pragma once
// Trainable parameters, their gradients and the AdamW moments in contiguous f32 buckets: bucket b
// is four device allocations (values, grads, exp_avg, exp_avg_sq) and every parameter is a view at
// the same offset of all four. A bucket is the unit a multi-process reducer all-reduces,
// reduce-scatters or shards, and zeroing or scaling gradients is one kernel per bucket.
#include <string>
#include <vector>

#include "backend/device.h"

namespace swiftlet {

// A trainable tensor's slots: where the model (or adapter) reads the value and where backward
// accumulates its gradient. The buckets re-point both at their views.
struct TrainableSlot {
  std::string name;
  Tensor* value;
  Tensor* grad;
};

class ParamBuckets {
 public:
  static constexpr size_t kDefaultBucketBytes = size_t(32) << 20;  // per tensor of a bucket

  struct Entry {
    std::string name;
    size_t bucket = 0;
    int64_t offset = 0;  // elements from the bucket's start
    Shape shape;
  };
  struct Bucket {
    Tensor values, grads, exp_avg, exp_avg_sq;  // f32 [numel] each
    std::vector<size_t> entries;                // indices into entries()
  };

  // Copies each value (any float dtype) into its bucket as f32 and points `*value` and `*grad` at
  // the bucket's views (grads zeroed). Buckets fill in reverse order of `params`, the order in
  // which backward produces gradients, so a reducer can start on a bucket as soon as it is
  // complete; each holds at most bucket_bytes per tensor unless one parameter is larger.
  ParamBuckets(Device& dev, const std::vector<TrainableSlot>& params,
               size_t bucket_bytes = kDefaultBucketBytes);

  const std::vector<Entry>& entries() const { return entries_; }  // in the order given
  std::vector<Bucket>& buckets() { return buckets_; }
  // The views of entry i.
  Tensor value(size_t i) const { return view(buckets_[entries_[i].bucket].values, i); }
  Tensor grad(size_t i) const { return view(buckets_[entries_[i].bucket].grads, i); }
  Tensor exp_avg(size_t i) const { return view(buckets_[entries_[i].bucket].exp_avg, i); }
  Tensor exp_avg_sq(size_t i) const { return view(buckets_[entries_[i].bucket].exp_avg_sq, i); }
  int64_t numel() const;

 private:
  Tensor view(const Tensor& flat, size_t i) const;
  std::vector<Entry> entries_;
  std::vector<Bucket> buckets_;
};

}  // namespace swiftlet
