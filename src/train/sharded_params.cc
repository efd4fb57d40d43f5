#include "train/sharded_params.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace swiftlet {

ShardedParams::ShardedParams(Device& dev, dist::Comm& comm, ParamBuckets& buckets,
                             int64_t num_layers, bool tied_embeddings,
                             std::function<void()> on_change)
    : dev_(dev),
      comm_(comm),
      buckets_(buckets),
      num_layers_(num_layers),
      on_change_(std::move(on_change)),
      unit_buckets_(size_t(num_layers + 2)),
      refs_(buckets.buckets().size(), 0),
      pending_(buckets.buckets().size()) {
  SWIFTLET_CHECK(buckets.layout().stage >= 3, "sharded parameters need stage 3, not {}",
                 buckets.layout().stage);
  for (size_t b = 0; b < buckets.buckets().size(); ++b) {
    const int64_t u = buckets.buckets()[b].unit;
    SWIFTLET_CHECK(-1 <= u && u <= num_layers, "bucket {}: unit {} of {} layers", b, u, num_layers);
    unit_buckets_[size_t(u + 1)].push_back(b);
    if (u == -1 && tied_embeddings) unit_buckets_[size_t(num_layers + 1)].push_back(b);
  }
}

ShardedParams::~ShardedParams() {
  // A gather still in flight writes into its bucket: wait before the memory goes.
  for (auto& w : pending_)
    if (w) w->wait(comm_.timeout());
}

void ShardedParams::start_gather(size_t b) {
  auto& bk = buckets_.buckets()[b];
  buckets_.materialize_values(dev_, b);
  if (!all_) peak_working_bytes_ = std::max(peak_working_bytes_, buckets_.live_value_bytes());
  pending_[b] = comm_.all_gather(dist::buffer_of(bk.values.slice(bk.shard_begin, bk.shard_end)),
                                 dist::buffer_of(bk.values),
                                 fmt::format("parameter bucket {} (unit {})", b, bk.unit));
  on_change_();
}

void ShardedParams::finish_gather(size_t b) {
  if (!pending_[b]) return;
  dist::wait_or_abort(comm_, *pending_[b]);
  pending_[b].reset();
}

void ShardedParams::free_bucket(size_t b) {
  finish_gather(b);
  buckets_.release_values(b);
  on_change_();
}

void ShardedParams::prefetch(int64_t unit) {
  if (unit < -1 || unit > num_layers_) return;
  for (size_t b : unit_buckets(unit))
    if (!buckets_.values_live(b)) start_gather(b);
}

void ShardedParams::acquire(int64_t unit) {
  for (size_t b : unit_buckets(unit)) {
    if (!buckets_.values_live(b)) start_gather(b);
    ++refs_[b];
  }
  // The direction the model walks in: forward goes up (embedding, layers, head), backward down
  // (and after layer 0, the next micro-batch's embedding).
  const int64_t next = unit == last_unit_ + 1 ? unit + 1 : unit == last_unit_ - 1 ? unit - 1 : -2;
  if (unit != last_unit_) last_unit_ = unit;
  if (next >= -1) prefetch(next);
  for (size_t b : unit_buckets(unit)) finish_gather(b);
}

void ShardedParams::release(int64_t unit) {
  for (size_t b : unit_buckets(unit)) {
    SWIFTLET_CHECK(refs_[b] > 0, "bucket {} released more often than acquired", b);
    if (--refs_[b] == 0) free_bucket(b);
  }
}

void ShardedParams::drop_prefetched() {
  for (size_t b = 0; b < refs_.size(); ++b)
    if (refs_[b] == 0 && buckets_.values_live(b)) free_bucket(b);
  last_unit_ = -2;
}

void ShardedParams::acquire_all() {
  all_ = true;
  for (size_t b = 0; b < refs_.size(); ++b)
    if (refs_[b]++ == 0 && !buckets_.values_live(b)) start_gather(b);
  for (size_t b = 0; b < refs_.size(); ++b) finish_gather(b);
  all_ = false;
}

void ShardedParams::release_all() {
  for (size_t b = 0; b < refs_.size(); ++b)
    if (--refs_[b] == 0) free_bucket(b);
}

}  // namespace swiftlet
