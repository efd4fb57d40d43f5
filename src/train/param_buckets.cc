#include "train/param_buckets.h"

#include <algorithm>

namespace swiftlet {

ParamBuckets::ParamBuckets(Device& dev, const std::vector<TrainableSlot>& params,
                           size_t bucket_bytes, ShardLayout layout,
                           const std::vector<int64_t>& units)
    : slots_(params), layout_(layout) {
  SWIFTLET_CHECK(layout.ranks >= 1 && 0 <= layout.rank && layout.rank < layout.ranks &&
                     0 <= layout.stage && layout.stage <= 3,
                 "shard layout: rank {} of {}, stage {}", layout.rank, layout.ranks, layout.stage);
  SWIFTLET_CHECK(units.empty() || units.size() == params.size(), "{} units for {} parameters",
                 units.size(), params.size());
  entries_.resize(params.size());
  const int64_t cap = std::max<int64_t>(1, int64_t(bucket_bytes / sizeof(float)));
  std::vector<int64_t> sizes;
  for (size_t k = params.size(); k-- > 0;) {  // reverse: backward's order
    const Tensor& t = *params[k].value;
    SWIFTLET_CHECK(t.defined() && dtype_is_float(t.dtype()), "trainable {}: {}", params[k].name,
                   t.describe());
    const int64_t n = t.numel();
    const int64_t unit = units.empty() ? 0 : units[k];
    if (sizes.empty() || (sizes.back() > 0 && sizes.back() + n > cap) ||
        unit != buckets_.back().unit) {
      sizes.push_back(0);
      buckets_.emplace_back();
      buckets_.back().unit = unit;
    }
    entries_[k] = {params[k].name, buckets_.size() - 1, sizes.back(), t.shape()};
    buckets_.back().entries.push_back(k);
    sizes.back() += n;
  }
  const int64_t N = layout_.stage > 0 ? layout_.ranks : 1;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bk = buckets_[b];
    // Padded to a multiple of the ranks so that every shard has the same size (the padding
    // stays zero: no parameter reads it and backward never writes it).
    const int64_t padded = (sizes[b] + N - 1) / N * N, per = padded / N;
    bk.shard_begin = layout_.stage > 0 ? per * layout_.rank : 0;
    bk.shard_end = bk.shard_begin + per;
    bk.values = dev.zeros({padded}, DType::kF32);
    for (size_t k : bk.entries) {
      Tensor v = value(k);
      dev.copy(v, *params[k].value);
      *params[k].value = v;
    }
    if (layout_.stage >= 3) {  // keep the shard; the whole bucket goes (one at a time here)
      bk.value_shard = dev.empty({per}, DType::kF32);
      dev.copy(bk.value_shard, bk.values.slice(bk.shard_begin, bk.shard_end));
      point_values(b, false);
      bk.values = Tensor();
    }
  }
}

void ParamBuckets::point_values(size_t b, bool live) {
  for (size_t k : buckets_[b].entries) *slots_[k].value = live ? value(k) : Tensor();
}

void ParamBuckets::materialize_values(Device& dev, size_t b) {
  Bucket& bk = buckets_[b];
  SWIFTLET_CHECK(layout_.stage >= 3 && !bk.values.defined(), "materialize_values of bucket {}", b);
  bk.values = dev.empty({padded_numel(b)}, DType::kF32);
  dev.copy(bk.values.slice(bk.shard_begin, bk.shard_end), bk.value_shard);
  live_value_bytes_ += bk.values.nbytes();
  peak_value_bytes_ = std::max(peak_value_bytes_, live_value_bytes_);
  point_values(b, true);
}

void ParamBuckets::release_values(size_t b) {
  Bucket& bk = buckets_[b];
  SWIFTLET_CHECK(layout_.stage >= 3 && bk.values.defined(), "release_values of bucket {}", b);
  point_values(b, false);
  live_value_bytes_ -= bk.values.nbytes();
  bk.values = Tensor();
}

void ParamBuckets::allocate_states(Device& dev, Device* moments_dev) {
  SWIFTLET_CHECK(buckets_.empty() || !buckets_[0].exp_avg.defined(), "states allocated twice");
  Device& mdev = moments_dev ? *moments_dev : dev;
  for (auto& bk : buckets_) {
    const int64_t per = bk.shard_end - bk.shard_begin;
    const int64_t padded = per * (layout_.stage > 0 ? layout_.ranks : 1);
    const int64_t moments = layout_.stage >= 1 ? per : padded;
    bk.exp_avg = mdev.zeros({moments}, DType::kF32);
    bk.exp_avg_sq = mdev.zeros({moments}, DType::kF32);
    if (layout_.stage >= 2) {
      bk.grad_shard = dev.zeros({per}, DType::kF32);
      live_grad_bytes_ += bk.grad_shard.nbytes();
    } else {
      bk.grads = dev.zeros({padded}, DType::kF32);
      live_grad_bytes_ += bk.grads.nbytes();
    }
  }
  peak_grad_bytes_ = live_grad_bytes_;
  for (size_t b = 0; b < buckets_.size(); ++b) point_grads(b, layout_.stage < 2);
}

Tensor ParamBuckets::view(const Tensor& flat, size_t i) const {
  const Entry& e = entries_[i];
  return flat.slice(e.offset, e.offset + shape_numel(e.shape)).view(e.shape);
}

void ParamBuckets::point_grads(size_t b, bool live) {
  for (size_t k : buckets_[b].entries)
    if (slots_[k].grad) *slots_[k].grad = live ? grad(k) : Tensor();
}

std::vector<ParamBuckets::Piece> ParamBuckets::shard_pieces(size_t b) const {
  const Bucket& bk = buckets_[b];
  std::vector<Piece> out;
  // Entries are laid out in the order of bk.entries, each at its offset.
  for (size_t k : bk.entries) {
    const Entry& e = entries_[k];
    const int64_t lo = std::max(e.offset, bk.shard_begin);
    const int64_t hi = std::min(e.offset + shape_numel(e.shape), bk.shard_end);
    if (lo < hi) out.push_back({k, lo - e.offset, hi - e.offset});
  }
  return out;
}

Tensor ParamBuckets::flat_range(const Tensor& flat, size_t b, int64_t lo, int64_t hi,
                                bool sharded) const {
  const int64_t base = sharded ? buckets_[b].shard_begin : 0;
  return flat.slice(lo - base, hi - base);
}

void ParamBuckets::materialize_grads(Device& dev, size_t b) {
  Bucket& bk = buckets_[b];
  SWIFTLET_CHECK(layout_.stage >= 2 && !bk.grads.defined(), "materialize_grads of bucket {}", b);
  bk.grads = dev.zeros({padded_numel(b)}, DType::kF32);
  dev.copy(bk.grads.slice(bk.shard_begin, bk.shard_end), bk.grad_shard);
  live_grad_bytes_ += bk.grads.nbytes();
  live_bucket_grad_bytes_ += bk.grads.nbytes();
  peak_grad_bytes_ = std::max(peak_grad_bytes_, live_grad_bytes_);
  point_grads(b, true);
}

void ParamBuckets::drop_round_grads(Device& dev, size_t b) {
  Bucket& bk = buckets_[b];
  SWIFTLET_CHECK(layout_.stage >= 2 && bk.grads.defined(), "drop_round_grads of bucket {}", b);
  dev.fill(bk.grads, 0.0f);
  dev.copy(bk.grads.slice(bk.shard_begin, bk.shard_end), bk.grad_shard);
}

void ParamBuckets::release_grads(size_t b) {
  Bucket& bk = buckets_[b];
  SWIFTLET_CHECK(layout_.stage >= 2 && bk.grads.defined(), "release_grads of bucket {}", b);
  point_grads(b, false);
  live_grad_bytes_ -= bk.grads.nbytes();
  live_bucket_grad_bytes_ -= bk.grads.nbytes();
  bk.grads = Tensor();
}

size_t ParamBuckets::value_bytes() const {
  size_t n = 0;
  for (const auto& b : buckets_) n += layout_.stage >= 3 ? b.value_shard.nbytes() : b.values.nbytes();
  return n;
}

size_t ParamBuckets::shard_grad_bytes() const {
  size_t n = 0;
  for (const auto& b : buckets_) n += b.grad_shard.defined() ? b.grad_shard.nbytes() : 0;
  return n;
}

size_t ParamBuckets::moment_bytes() const {
  size_t n = 0;
  for (const auto& b : buckets_) n += b.exp_avg.nbytes() + b.exp_avg_sq.nbytes();
  return n;
}

int64_t ParamBuckets::numel() const {
  int64_t n = 0;
  for (const auto& e : entries_) n += shape_numel(e.shape);
  return n;
}

}  // namespace swiftlet
