#pragma once
// ZeRO-3 with LoRA: the frozen base weights partitioned over ranks, as DeepSpeed ZeRO-3 does with
// a PEFT model. Each unit of the model (-1 the embedding, layer i, num_layers the final norm and
// head) is one flat buffer in the weights' own dtype (bf16 stays bf16) padded to a multiple of the
// ranks; rank r keeps slice r of it and the whole buffer exists only while the unit computes,
// all-gathered on acquire, the next unit gathered ahead, freed on release. Values only: the base
// has no gradients or moments.
//
// It wraps the trainable parameters' residency (`inner`, ShardedParams) so that the model sees
// one: a unit's acquire gathers its frozen weights, then its trainable ones.
#include <memory>
#include <vector>

#include "dist/comm.h"
#include "model/transformer.h"

namespace swiftlet {

class FrozenShards : public WeightResidency {
 public:
  // Copies this rank's slice of every base weight of `model` and drops the model's own tensors
  // (its loaded copies or mapped views), leaving every base slot undefined until acquired.
  FrozenShards(Device& dev, dist::Comm& comm, Transformer& model, WeightResidency* inner);
  ~FrozenShards() override;

  void acquire(int64_t unit) override;
  void release(int64_t unit) override;
  // Waits for and frees what was gathered ahead of use.
  void drop_prefetched();

  // Bytes of base weights this rank keeps (its slices), of the whole base (what one rank keeps
  // without sharding), and the most whole units alive at once.
  size_t shard_bytes() const;
  size_t whole_bytes() const { return whole_bytes_; }
  size_t peak_working_bytes() const { return peak_working_bytes_; }

 private:
  struct Entry {
    int64_t offset = 0;  // elements from the unit's start
    Shape shape;
    Tensor* slot = nullptr;       // in the model's weights()
    Tensor* base_slot = nullptr;  // in its base_weights()
  };
  struct Unit {
    std::vector<Entry> entries;
    Tensor whole;  // [padded] while gathered
    Tensor shard;  // [padded / ranks], this rank's slice
    int64_t padded = 0;
    int refs = 0;
    std::unique_ptr<dist::Work> pending;
  };
  Unit& unit_at(int64_t u) { return units_[size_t(u + 1)]; }
  void start_gather(int64_t u);
  void finish_gather(int64_t u);
  void free_unit(int64_t u);
  void point(int64_t u, bool live);
  void prefetch(int64_t u);
  std::vector<int64_t> parts(int64_t unit) const;

  Device& dev_;
  dist::Comm& comm_;
  Transformer& model_;
  WeightResidency* inner_;
  DType dtype_;
  int64_t num_layers_;
  bool tied_;
  std::vector<Unit> units_;  // index unit + 1
  int64_t last_unit_ = -2;
  size_t whole_bytes_ = 0, live_bytes_ = 0, peak_working_bytes_ = 0;
};

}  // namespace swiftlet
