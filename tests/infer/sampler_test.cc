#include "infer/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace swiftlet {

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  std::vector<float> l{0.1f, 3.0f, 3.0f, -1.0f};
  SamplingParams p;
  p.temperature = 0;
  Rng rng(1);
  EXPECT_EQ(sample_token(l, p, rng), 1);
}

TEST(Sampler, RepetitionPenaltyFollowsHuggingFace) {
  // HF: seen tokens with positive logits are divided by the penalty, negative ones multiplied.
  std::vector<float> l{2.0f, -2.0f, 1.0f};
  SamplingParams p;
  p.repetition_penalty = 2.0;
  TokenHistory h;
  h.add_prompt(std::vector<int32_t>{0, 1});
  apply_penalties(l, p, h);
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], -4.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesUseGeneratedCounts) {
  std::vector<float> l{1.0f, 1.0f, 1.0f};
  SamplingParams p;
  p.presence_penalty = 0.5;
  p.frequency_penalty = 0.25;
  TokenHistory h;
  h.add_prompt(std::vector<int32_t>{2});  // prompt tokens are not penalised by these
  h.add_generated(0);
  h.add_generated(0);
  h.add_generated(1);
  apply_penalties(l, p, h);
  EXPECT_FLOAT_EQ(l[0], 1.0f - 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(l[1], 1.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
}

TEST(Sampler, DrawsFollowTheSoftmaxAndTopKTopP) {
  // p = softmax(log([0.5, 0.3, 0.15, 0.05])): frequencies converge to p.
  std::vector<float> base{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  Rng rng(123);
  std::map<int, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = base;
    counts[sample_token(l, p, rng)]++;
  }
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.01);
  EXPECT_NEAR(counts[3] / double(n), 0.05, 0.005);
  // top_k 2: only the two best, renormalised 0.5/0.8 and 0.3/0.8.
  p.top_k = 2;
  counts.clear();
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = base;
    counts[sample_token(l, p, rng)]++;
  }
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(counts[0] / double(n), 0.625, 0.01);
  // top_p 0.7: smallest prefix reaching 0.7 is {0, 1}; 0.85 needs {0, 1, 2}.
  p.top_k = 0;
  p.top_p = 0.7;
  counts.clear();
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l = base;
    counts[sample_token(l, p, rng)]++;
  }
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_GT(counts[1], 0);
}

TEST(Sampler, SameSeedSameDraws) {
  std::vector<float> base(50);
  for (int i = 0; i < 50; ++i) base[size_t(i)] = float(i % 7) * 0.3f;
  SamplingParams p;
  p.temperature = 0.8;
  Rng a(5), b(5);
  for (int i = 0; i < 100; ++i) {
    std::vector<float> l1 = base, l2 = base;
    EXPECT_EQ(sample_token(l1, p, a), sample_token(l2, p, b));
  }
}

TEST(Sampler, LogSoftmaxAndTopEntries) {
  std::vector<float> l{1.0f, 2.0f, 3.0f}, out(3);
  log_softmax(l, out);
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(out[2], 3.0 - std::log(z), 1e-6);
  auto top = top_entries(out, 2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].first, 2);
  EXPECT_EQ(top[1].first, 1);
}

}  // namespace swiftlet
