#include "dist/grad_sync.h"

#include "core/error.h"

namespace swiftlet::dist {

BucketSync::BucketSync(Comm& comm, Mode mode, std::vector<CommBuffer> buckets,
                       std::vector<CommBuffer> shards)
    : comm_(comm), mode_(mode), buckets_(std::move(buckets)), shards_(std::move(shards)) {
  work_.resize(buckets_.size());
  if (mode_ == Mode::kReduceScatter) {
    SWIFTLET_CHECK(shards_.size() == buckets_.size(), "reduce-scatter: {} buckets, {} shards",
                   buckets_.size(), shards_.size());
    for (size_t b = 0; b < buckets_.size(); ++b)
      SWIFTLET_CHECK(buckets_[b].count == shards_[b].count * size_t(comm_.size()),
                     "bucket {}: {} gradients for shards of {} on {} ranks", b, buckets_[b].count,
                     shards_[b].count, comm_.size());
  }
}

void BucketSync::set_bucket(size_t b, const CommBuffer& bucket) {
  SWIFTLET_CHECK(!work_[b] && bucket.count == buckets_[b].count && bucket.type == buckets_[b].type,
                 "bucket {}: {} elements for a bucket of {}{}", b, bucket.count, buckets_[b].count,
                 work_[b] ? " while its collective runs" : "");
  buckets_[b] = bucket;
}

bool BucketSync::done(size_t b) { return work_[b] && work_[b]->test(); }

void BucketSync::wait(size_t b) {
  SWIFTLET_CHECK(work_[b] != nullptr, "waiting for bucket {}, which was not started", b);
  wait_or_abort(comm_, *work_[b]);
}

void BucketSync::start(size_t b) {
  if (work_[b]) return;
  const std::string what = fmt::format("gradient bucket {} of {}", b, buckets_.size());
  work_[b] = mode_ == Mode::kAllReduce
                 ? comm_.all_reduce(buckets_[b], ReduceOp::kSum, what)
                 : comm_.reduce_scatter(buckets_[b], shards_[b], ReduceOp::kSum, what);
}

void BucketSync::finish() {
  for (size_t b = 0; b < buckets_.size(); ++b) start(b);
  for (auto& w : work_) wait_or_abort(comm_, *w);
  for (auto& w : work_) w.reset();
}

ShardRange shard_of(int64_t n, int rank, int ranks) {
  SWIFTLET_CHECK(ranks > 0 && n % ranks == 0, "{} elements do not split over {} ranks", n, ranks);
  const int64_t per = n / ranks;
  return {per * rank, per * (rank + 1)};
}

}  // namespace swiftlet::dist
