#include "train/frozen_shards.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace swiftlet {

FrozenShards::FrozenShards(Device& dev, dist::Comm& comm, Transformer& model,
                           WeightResidency* inner)
    : dev_(dev),
      comm_(comm),
      model_(model),
      inner_(inner),
      dtype_(model.weight_dtype()),
      num_layers_(int64_t(model.config().num_hidden_layers)),
      tied_(model.config().tie_word_embeddings && !model.config().seq_cls()),
      units_(size_t(num_layers_ + 2)) {
  const ModelConfig& c = model.config();
  std::vector<WeightSlot> slots = weight_slots(c, &model.weights());
  std::vector<WeightSlot> base = weight_slots(c, &model.base_weights());
  SWIFTLET_CHECK(slots.size() == base.size(), "{} weights vs {} base weights", slots.size(),
                 base.size());
  const int64_t N = comm.size();
  for (size_t i = 0; i < slots.size(); ++i) {
    const WeightSlot& s = slots[i];
    const Tensor& t = *base[i].weight;  // the loaded weight (weights() may hold a replacement)
    if (!t.defined()) continue;
    SWIFTLET_CHECK(t.dtype() == dtype_, "base weight {}: {} in a {} model", s.name, t.describe(),
                   dtype_name(dtype_));
    const int64_t u = s.layer >= 0                                       ? s.layer
                      : s.name.find("embed_tokens") != std::string::npos ? -1
                                                                         : num_layers_;
    Unit& unit = unit_at(u);
    unit.entries.push_back({unit.padded, t.shape(), s.weight, base[i].weight});
    unit.padded += t.numel();
  }
  for (int64_t u = -1; u <= num_layers_; ++u) {
    Unit& unit = unit_at(u);
    if (unit.entries.empty()) continue;
    unit.padded = (unit.padded + N - 1) / N * N;
    const int64_t per = unit.padded / N, begin = per * comm.rank();
    // One unit whole at a time: its shard is copied out and the rest goes.
    Tensor whole = dev.zeros({unit.padded}, dtype_);
    for (const Entry& e : unit.entries)
      dev.copy(whole.slice(e.offset, e.offset + shape_numel(e.shape)).view(e.shape), *e.base_slot);
    unit.shard = dev.empty({per}, dtype_);
    dev.copy(unit.shard, whole.slice(begin, begin + per));
    whole_bytes_ += whole.nbytes();
    point(u, false);  // the model's tensors go: no rank keeps the whole base
  }
}

FrozenShards::~FrozenShards() {
  for (auto& u : units_)
    if (u.pending) u.pending->wait(comm_.timeout());
}

size_t FrozenShards::shard_bytes() const {
  size_t n = 0;
  for (const auto& u : units_) n += u.shard.defined() ? u.shard.nbytes() : 0;
  return n;
}

void FrozenShards::point(int64_t u, bool live) {
  Unit& unit = unit_at(u);
  for (const Entry& e : unit.entries) {
    const Tensor v =
        live ? unit.whole.slice(e.offset, e.offset + shape_numel(e.shape)).view(e.shape) : Tensor();
    // A slot of weights() replaced by the adapter (modules_to_save) keeps its replacement.
    if (!e.slot->defined() || e.slot->storage() == e.base_slot->storage()) *e.slot = v;
    *e.base_slot = v;
  }
  if (u == -1 && tied_) {
    model_.base_weights().lm_head = model_.base_weights().embed_tokens;
    model_.weights().lm_head = model_.weights().embed_tokens;
  }
}

void FrozenShards::start_gather(int64_t u) {
  Unit& unit = unit_at(u);
  const int64_t per = unit.padded / comm_.size(), begin = per * comm_.rank();
  unit.whole = dev_.empty({unit.padded}, dtype_);
  dev_.copy(unit.whole.slice(begin, begin + per), unit.shard);
  live_bytes_ += unit.whole.nbytes();
  peak_working_bytes_ = std::max(peak_working_bytes_, live_bytes_);
  unit.pending = comm_.all_gather(dist::bytes_of(unit.whole.slice(begin, begin + per)),
                                  dist::bytes_of(unit.whole),
                                  fmt::format("frozen base weights of unit {}", u));
  point(u, true);
}

void FrozenShards::finish_gather(int64_t u) {
  Unit& unit = unit_at(u);
  if (!unit.pending) return;
  dist::wait_or_abort(comm_, *unit.pending);
  unit.pending.reset();
}

void FrozenShards::free_unit(int64_t u) {
  Unit& unit = unit_at(u);
  finish_gather(u);
  point(u, false);
  live_bytes_ -= unit.whole.nbytes();
  unit.whole = Tensor();
}

std::vector<int64_t> FrozenShards::parts(int64_t unit) const {
  // The head of tied embeddings reads the embedding's weight.
  if (unit == num_layers_ && tied_) return {unit, -1};
  return {unit};
}

void FrozenShards::prefetch(int64_t u) {
  if (u < -1 || u > num_layers_) return;
  for (int64_t x : parts(u))
    if (!unit_at(x).entries.empty() && !unit_at(x).whole.defined()) start_gather(x);
}

void FrozenShards::acquire(int64_t unit) {
  for (int64_t x : parts(unit)) {
    Unit& un = unit_at(x);
    if (!un.entries.empty() && !un.whole.defined()) start_gather(x);
    ++un.refs;
  }
  // The direction the model walks in, as ShardedParams prefetches.
  const int64_t next = unit == last_unit_ + 1 ? unit + 1 : unit == last_unit_ - 1 ? unit - 1 : -2;
  if (unit != last_unit_) last_unit_ = unit;
  if (next >= -1) prefetch(next);
  for (int64_t x : parts(unit)) finish_gather(x);
  if (inner_) inner_->acquire(unit);
}

void FrozenShards::release(int64_t unit) {
  if (inner_) inner_->release(unit);
  for (int64_t x : parts(unit)) {
    Unit& un = unit_at(x);
    SWIFTLET_CHECK(un.refs > 0, "frozen unit {} released more often than acquired", x);
    if (--un.refs == 0 && un.whole.defined()) free_unit(x);
  }
}

void FrozenShards::drop_prefetched() {
  for (int64_t u = -1; u <= num_layers_; ++u)
    if (unit_at(u).refs == 0 && unit_at(u).whole.defined()) free_unit(u);
  last_unit_ = -2;
}

}  // namespace swiftlet
