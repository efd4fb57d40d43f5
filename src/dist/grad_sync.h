#pragma once
// Data-parallel gradient exchange over flat gradient buckets, in the order backward fills them
// (PyTorch DDP's Reducer): a bucket's collective starts as soon as backward has written its last
// gradient and runs on the comm thread while backward computes the next buckets; finish() starts
// what is left and waits for everything within the deadline.
//   all-reduce (DDP, ZeRO-1): every rank ends with the sum of every rank's bucket;
//   reduce-scatter (ZeRO-2/3): rank r ends with the sum of slice r of the bucket (its shard).
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"

namespace swiftlet::dist {

class BucketSync {
 public:
  enum class Mode { kAllReduce, kReduceScatter };
  // `buckets[b]`: the f32 gradients of bucket b; with kReduceScatter its length is a multiple of
  // comm.size() and `shards[b]` receives slice rank() (size / comm.size() elements).
  BucketSync(Comm& comm, Mode mode, std::vector<CommBuffer> buckets,
             std::vector<CommBuffer> shards = {});
  // Points bucket b at other memory of the same length (gradients made afresh each round);
  // not while its collective runs.
  void set_bucket(size_t b, const CommBuffer& bucket);
  // Starts bucket b's collective (once per round).
  void start(size_t b);
  // True once bucket b's collective of this round completed (never blocks).
  bool done(size_t b);
  // Waits for bucket b's collective (started) within the deadline.
  void wait(size_t b);
  // Starts the buckets not started yet, waits for all, and opens the next round.
  void finish();
  size_t size() const { return buckets_.size(); }
  bool started(size_t b) const { return work_[b] != nullptr; }

 private:
  Comm& comm_;
  Mode mode_;
  std::vector<CommBuffer> buckets_, shards_;
  std::vector<std::unique_ptr<Work>> work_;
};

// The slice of n elements rank r of `ranks` owns: [r * n / ranks, (r + 1) * n / ranks) with n a
// multiple of ranks (buckets are padded to one).
struct ShardRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
ShardRange shard_of(int64_t n, int rank, int ranks);

}  // namespace swiftlet::dist
