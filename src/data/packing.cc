#include "data/packing.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace swiftlet {

namespace {

void shuffle(std::vector<size_t>& v, uint64_t seed) {
  Rng rng(seed);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);  // Fisher-Yates
}

}  // namespace

TokenizedSample join_samples(const std::vector<const TokenizedSample*>& parts) {
  TokenizedSample out;
  for (const TokenizedSample* s : parts) {
    out.input_ids.insert(out.input_ids.end(), s->input_ids.begin(), s->input_ids.end());
    out.labels.insert(out.labels.end(), s->labels.begin(), s->labels.end());
    if (s->packed_lengths.empty()) {
      out.packed_lengths.push_back(int64_t(s->input_ids.size()));
    } else {
      out.packed_lengths.insert(out.packed_lengths.end(), s->packed_lengths.begin(),
                                s->packed_lengths.end());
    }
  }
  return out;
}

std::vector<TokenizedSample> pack_samples(const std::vector<TokenizedSample>& samples,
                                          int64_t capacity, uint64_t seed) {
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return samples[a].input_ids.size() > samples[b].input_ids.size();
  });
  // Best fit: the open bin with the least room that still takes the sample (room -> bins,
  // earliest bin first among equal room).
  std::vector<std::vector<size_t>> bins;
  std::multimap<int64_t, size_t> by_room;
  for (size_t i : order) {
    const int64_t len = int64_t(samples[i].input_ids.size());
    SWIFTLET_CHECK(len <= capacity, "pack_samples: a sample of {} tokens exceeds {}", len,
                   capacity);
    auto it = by_room.lower_bound(len);
    if (it == by_room.end()) {
      bins.push_back({i});
      if (capacity - len > 0) by_room.emplace(capacity - len, bins.size() - 1);
      continue;
    }
    const size_t bin = it->second;
    const int64_t room = it->first - len;
    by_room.erase(it);
    bins[bin].push_back(i);
    if (room > 0) by_room.emplace(room, bin);
  }
  std::vector<size_t> bin_order(bins.size());
  std::iota(bin_order.begin(), bin_order.end(), size_t(0));
  shuffle(bin_order, seed);
  std::vector<TokenizedSample> out;
  out.reserve(bins.size());
  for (size_t b : bin_order) {
    std::vector<const TokenizedSample*> parts;
    for (size_t i : bins[b]) parts.push_back(&samples[i]);
    out.push_back(join_samples(parts));
  }
  return out;
}

std::vector<TokenizedSample> group_by_length(const std::vector<TokenizedSample>& samples,
                                             int64_t batch_size, uint64_t seed) {
  SWIFTLET_CHECK(batch_size >= 1, "group_by_length: batch size {}", batch_size);
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), size_t(0));
  shuffle(order, seed);
  const size_t mega = size_t(batch_size) * 50, batch = size_t(batch_size);
  std::vector<TokenizedSample> out;
  for (size_t m = 0; m < order.size(); m += mega) {
    const auto begin = order.begin() + long(m),
               end = order.begin() + long(std::min(order.size(), m + mega));
    std::stable_sort(begin, end, [&](size_t a, size_t b) {
      return samples[a].input_ids.size() > samples[b].input_ids.size();
    });
    for (auto it = begin; it < end; it += long(std::min<size_t>(batch, size_t(end - it)))) {
      std::vector<const TokenizedSample*> parts;
      for (auto j = it; j < it + long(std::min<size_t>(batch, size_t(end - it))); ++j)
        parts.push_back(&samples[*j]);
      out.push_back(join_samples(parts));
    }
  }
  return out;
}

}  // namespace swiftlet
