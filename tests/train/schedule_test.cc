#include "train/schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace swiftlet {

TEST(LrSchedule, MatchesHuggingFaceFormulas) {
  LrSchedule s{"cosine", 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(5), 0.5e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-4);
  EXPECT_NEAR(s.at(60), 1e-4 * 0.5 * (1 + std::cos(std::numbers::pi * 0.5)), 1e-15);
  EXPECT_NEAR(s.at(110), 0.0, 1e-15);
  LrSchedule lin{"linear", 2e-4, 0, 100};
  EXPECT_DOUBLE_EQ(lin.at(25), 1.5e-4);
  LrSchedule c{"constant", 3e-4, 50, 100};
  EXPECT_DOUBLE_EQ(c.at(0), 3e-4);
  LrSchedule cw{"constant_with_warmup", 3e-4, 4, 100};
  EXPECT_DOUBLE_EQ(cw.at(1), 0.75e-4);
  EXPECT_DOUBLE_EQ(cw.at(90), 3e-4);
  EXPECT_THROW(check_lr_scheduler_type("polynomial"), Error);
}

}  // namespace swiftlet
