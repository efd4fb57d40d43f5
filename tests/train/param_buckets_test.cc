#include "train/param_buckets.h"

#include <gtest/gtest.h>

#include <vector>

namespace swiftlet {
namespace {

// Three parameters of 6, 5 and 3 elements in buckets of at most 8 floats: [p2 p1] (8, padded to
// 8) and [p0] (6), as backward fills them (reverse order).
struct Three {
  Tensor v0 = Tensor::host_from({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor v1 = Tensor::host_from({7, 8, 9, 10, 11}, {5});
  Tensor v2 = Tensor::host_from({12, 13, 14}, {3});
  Tensor g0, g1, g2;
  std::vector<TrainableSlot> slots() {
    return {{"p0", &v0, &g0}, {"p1", &v1, &g1}, {"p2", &v2, &g2}};
  }
};

// Over the ranks, the shard pieces cover every element of every parameter exactly once, and
// each rank's moments (stage 1 and 2) and gradient shard (stage 2) are its slice alone.
TEST(ParamBuckets, ShardsCoverEveryElementOnceAndHoldOnlyTheirSlice) {
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  for (int stage : {1, 2}) {
    for (int ranks : {2, 3}) {
      std::vector<std::vector<int>> seen = {std::vector<int>(6), std::vector<int>(5),
                                            std::vector<int>(3)};
      for (int r = 0; r < ranks; ++r) {
        Three t;
        ParamBuckets pb(*dev, t.slots(), 8 * sizeof(float), {r, ranks, stage});
        pb.allocate_states(*dev);
        ASSERT_EQ(pb.buckets().size(), 2u);
        EXPECT_EQ(pb.numel(), 14);
        for (size_t b = 0; b < 2; ++b) {
          const auto& bk = pb.buckets()[b];
          EXPECT_EQ(bk.values.numel() % ranks, 0);
          const int64_t per = bk.values.numel() / ranks;
          EXPECT_EQ(bk.shard_begin, per * r);
          EXPECT_EQ(bk.exp_avg.numel(), per);
          EXPECT_EQ(bk.exp_avg_sq.numel(), per);
          EXPECT_EQ(bk.grads.defined(), stage == 1);
          EXPECT_EQ(bk.grad_shard.defined(), stage == 2);
          for (const auto& p : pb.shard_pieces(b))
            for (int64_t i = p.begin; i < p.end; ++i) ++seen[p.entry][size_t(i)];
        }
        // Values are whole on every rank, at their parameters' views.
        EXPECT_EQ(t.v1.data<float>()[4], 11.0f);
        EXPECT_EQ(t.g1.defined(), stage == 1);
      }
      for (const auto& s : seen)
        for (int c : s) EXPECT_EQ(c, 1) << "stage " << stage << ", " << ranks << " ranks";
    }
  }
}

// Stage 2: a bucket's gradients exist between materialize and release; they start as zeros
// with this rank's accumulated shard in its own slice, and the slots follow.
TEST(ParamBuckets, StageTwoGradientsExistOnlyWhileMaterialized) {
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Three t;
  ParamBuckets pb(*dev, t.slots(), 8 * sizeof(float), {1, 2, 2});
  pb.allocate_states(*dev);
  auto& bk = pb.buckets()[0];  // [p2 p1], shard of rank 1 = elements 4..7
  dev->fill(bk.grad_shard, 0.5f);
  EXPECT_FALSE(t.g2.defined());
  pb.materialize_grads(*dev, 0);
  ASSERT_TRUE(t.g1.defined() && t.g2.defined());
  const float* g = bk.grads.data<float>();
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(g[i], i >= 4 ? 0.5f : 0.0f) << i;
  EXPECT_EQ(t.g1.data<float>(), g + 3);  // p1 after p2's 3 elements
  EXPECT_EQ(pb.live_bucket_grad_bytes(), 8 * sizeof(float));
  EXPECT_EQ(pb.peak_grad_bytes(), pb.shard_grad_bytes() + 8 * sizeof(float));
  pb.release_grads(0);
  EXPECT_FALSE(t.g1.defined() || t.g2.defined());
  EXPECT_EQ(pb.live_bucket_grad_bytes(), 0u);
  EXPECT_FALSE(pb.grads_live(0));
}

}  // namespace
}  // namespace swiftlet
