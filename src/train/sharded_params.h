#pragma once
// ZeRO-3 (FSDP's full_shard): each rank keeps only its shard of every trainable parameter bucket
// (ParamBuckets stage 3) and the model's parts are gathered whole while they compute. The model
// announces each part it is about to read (WeightResidency); this class all-gathers that part's
// buckets, frees them once the part is released, and gathers the part the model will most likely
// read next while the current one computes (the next layer in forward, the previous one in
// backward), as DeepSpeed's parameter prefetch does.
//
// Every rank must acquire the same parts in the same order: the all-gathers are collectives.
#include <functional>
#include <memory>
#include <vector>

#include "dist/comm.h"
#include "model/transformer.h"
#include "train/param_buckets.h"

namespace swiftlet {

class ShardedParams : public WeightResidency {
 public:
  // `buckets` are stage 3, each holding parameters of one unit (Bucket::unit); with tied
  // embeddings the head (unit num_layers) also reads the embedding's buckets (unit -1).
  // `on_change` runs after a bucket's slots were pointed at whole values or left undefined (the
  // caller re-derives aliases such as a tied LM head).
  ShardedParams(Device& dev, dist::Comm& comm, ParamBuckets& buckets, int64_t num_layers,
                bool tied_embeddings, std::function<void()> on_change);
  ~ShardedParams() override;

  void acquire(int64_t unit) override;
  void release(int64_t unit) override;
  // Waits for and frees what was gathered ahead of use, so that no stale copy outlives an
  // optimizer step that changes the shards.
  void drop_prefetched();
  // Every bucket whole (checkpoint saves) until release_all().
  void acquire_all();
  void release_all();
  // The most bytes of whole values alive at once while the model computed (saves not counted).
  size_t peak_working_bytes() const { return peak_working_bytes_; }

 private:
  void start_gather(size_t b);
  void finish_gather(size_t b);
  void free_bucket(size_t b);
  void prefetch(int64_t unit);
  const std::vector<size_t>& unit_buckets(int64_t unit) const {
    return unit_buckets_[size_t(unit + 1)];
  }

  Device& dev_;
  dist::Comm& comm_;
  ParamBuckets& buckets_;
  int64_t num_layers_;
  std::function<void()> on_change_;
  std::vector<std::vector<size_t>> unit_buckets_;     // index unit + 1
  std::vector<int> refs_;                             // per bucket: acquisitions not yet released
  std::vector<std::unique_ptr<dist::Work>> pending_;  // per bucket: its gather in flight
  int64_t last_unit_ = -2;                            // the unit acquired before
  bool all_ = false;                                  // inside acquire_all()
  size_t peak_working_bytes_ = 0;
};

}  // namespace swiftlet
