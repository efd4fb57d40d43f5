#pragma once
// Trainable parameters, their gradients and the AdamW moments in contiguous f32 buckets: bucket b
// is four device allocations (values, grads, exp_avg, exp_avg_sq) and every parameter is a view at
// the same offset of all four. A bucket is the unit a multi-process reducer all-reduces,
// reduce-scatters or shards, and zeroing or scaling gradients is one kernel per bucket.
//
// Sharded (ZeRO) layouts: each bucket is padded to a multiple of the rank count and rank r owns
// the contiguous slice r of it (its shard). Stage 1 keeps only the shard's moments; stage 2 also
// keeps only the shard's gradients (grad_shard), the whole bucket's gradients existing only while
// backward fills them, between materialize_grads() and release_grads(). Stage 3 also keeps only
// the shard's values (value_shard): a bucket's whole values exist only between
// materialize_values() and release_values(), while the part of the model it belongs to computes.
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

// Which states are split over the ranks of a data-parallel job (ZeRO's stages).
struct ShardLayout {
  int rank = 0, ranks = 1;
  // 0: nothing, 1: optimizer states, 2: optimizer states and gradients, 3: and parameters
  int stage = 0;
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
    Tensor values;                           // f32 [padded numel]; stage 3: only while gathered
    Tensor value_shard;                      // stage 3: f32 [shard], this rank's values
    Tensor grads;                            // f32 [padded numel]; stage 2: only while materialized
    Tensor grad_shard;                       // stage 2: f32 [shard], this rank's summed gradients
    Tensor exp_avg, exp_avg_sq;              // f32 [padded numel], or [shard] from stage 1
    int64_t shard_begin = 0, shard_end = 0;  // the slice of the bucket this rank owns
    std::vector<size_t> entries;             // indices into entries()
    int64_t unit = 0;                        // the units given to the constructor (else 0)
  };
  // The part of entry `entry` inside its bucket's shard: elements [begin, end) of the flattened
  // parameter.
  struct Piece {
    size_t entry = 0;
    int64_t begin = 0, end = 0;
  };

  // Copies each value (any float dtype) into its bucket as f32 and points `*value` at the
  // bucket's view. Buckets fill in reverse order of `params`, the order in which backward
  // produces gradients, so a reducer can start on a bucket as soon as it is complete; each holds
  // at most bucket_bytes per tensor unless one parameter is larger.
  // `units` (one per parameter, or empty): a bucket never holds parameters of two units (the
  // parts of the model gathered together under stage 3). Stage 3 keeps each bucket's shard of
  // the values and leaves `*value` undefined until materialize_values.
  ParamBuckets(Device& dev, const std::vector<TrainableSlot>& params,
               size_t bucket_bytes = kDefaultBucketBytes, ShardLayout layout = {},
               const std::vector<int64_t>& units = {});
  // Allocates gradients (zeroed; `*grad` pointed at their views) and moments. A second step, so
  // that the caller can drop the values' former tensors first (a writable model's copies) and
  // the two never coexist with the states. The moments go to `moments_dev` when given (host
  // memory under optimizer offload), so they never take device memory.
  void allocate_states(Device& dev, Device* moments_dev = nullptr);

  const std::vector<Entry>& entries() const { return entries_; }  // in the order given
  std::vector<Bucket>& buckets() { return buckets_; }
  const ShardLayout& layout() const { return layout_; }
  // The views of entry i (grad: while the bucket's gradients exist; moments: unsharded only).
  Tensor value(size_t i) const { return view(buckets_[entries_[i].bucket].values, i); }
  Tensor grad(size_t i) const { return view(buckets_[entries_[i].bucket].grads, i); }
  Tensor exp_avg(size_t i) const { return view(buckets_[entries_[i].bucket].exp_avg, i); }
  Tensor exp_avg_sq(size_t i) const { return view(buckets_[entries_[i].bucket].exp_avg_sq, i); }
  // The pieces of bucket b's entries that fall in its shard, in bucket order.
  std::vector<Piece> shard_pieces(size_t b) const;
  // Elements [lo, hi) of the bucket-sized (or, when `sharded`, shard-sized) flat tensor `flat` of
  // bucket b, where lo/hi are offsets of the whole bucket.
  Tensor flat_range(const Tensor& flat, size_t b, int64_t lo, int64_t hi, bool sharded) const;
  int64_t numel() const;  // trainable elements (without padding)
  // Bucket b's length with its padding (what values and grads hold when whole).
  int64_t padded_numel(size_t b) const {
    const Bucket& bk = buckets_[b];
    return (bk.shard_end - bk.shard_begin) * (layout_.stage > 0 ? layout_.ranks : 1);
  }

  // Stage 2: allocates bucket b's gradients (zeros, with this rank's accumulated shard added
  // into its own slice, so that a reduce-scatter sums old and new), and points its entries'
  // grad slots at them; release_grads frees them and leaves the slots undefined.
  void materialize_grads(Device& dev, size_t b);
  void release_grads(size_t b);
  // Stage 2: undoes what this round added to bucket b's gradients (back to zeros with the
  // accumulated shard in its slice).
  void drop_round_grads(Device& dev, size_t b);
  bool grads_live(size_t b) const { return buckets_[b].grads.defined(); }
  // Stage 3: allocates bucket b's whole values with this rank's shard copied into its slice (the
  // caller all-gathers the other slices into them) and points the entries' value slots at them;
  // release_values frees them and leaves the slots undefined.
  void materialize_values(Device& dev, size_t b);
  void release_values(size_t b);
  bool values_live(size_t b) const { return buckets_[b].values.defined(); }

  // Bytes this rank holds: values, moments, and gradients (the most at once so far).
  // Stage 3: the shards' bytes, and the most whole values alive at once (peak_value_bytes).
  size_t value_bytes() const;
  size_t peak_value_bytes() const { return peak_value_bytes_; }
  size_t live_value_bytes() const { return live_value_bytes_; }
  size_t moment_bytes() const;
  size_t peak_grad_bytes() const { return peak_grad_bytes_; }
  // Stage 2: the bytes of whole-bucket gradients alive now (the shards not counted), and of the
  // shards alone.
  size_t live_bucket_grad_bytes() const { return live_bucket_grad_bytes_; }
  size_t shard_grad_bytes() const;

 private:
  Tensor view(const Tensor& flat, size_t i) const;
  void point_grads(size_t b, bool live);
  void point_values(size_t b, bool live);
  std::vector<Entry> entries_;
  std::vector<Bucket> buckets_;
  std::vector<TrainableSlot> slots_;
  ShardLayout layout_;
  size_t live_grad_bytes_ = 0, peak_grad_bytes_ = 0, live_bucket_grad_bytes_ = 0;
  size_t live_value_bytes_ = 0, peak_value_bytes_ = 0;
};

}  // namespace swiftlet
