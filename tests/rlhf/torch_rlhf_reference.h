#pragma once
// The rlhf loss tests' oracle: tests/reference/torch_rlhf.py (an independent PyTorch
// implementation with autograd gradients), and the tolerance its results are compared with.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "io/test_util.h"

namespace swiftlet::rlhf::testing {

// Both sides compute in float64; 1e-9 relative leaves room for different summation orders. The
// absolute `floor` only matters for values that are exactly 0 (hinge gradients, accuracies).
inline void expect_close(double got, double want, const std::string& what, double floor = 1e-14) {
  EXPECT_LE(std::fabs(got - want), 1e-9 * std::fabs(want) + floor)
      << what << ": got " << got << ", reference " << want;
}

// Runs the reference on `cases` (written to a temp dir) and returns its results in order.
inline nlohmann::json run_torch_rlhf(const nlohmann::json& cases) {
  swiftlet::testing::TempDir tmp;
  std::ofstream(tmp / "cases.json") << nlohmann::json{{"cases", cases}}.dump();
  const std::string script = SWIFTLET_SOURCE_DIR "/tests/reference/torch_rlhf.py";
  const std::string cmd =
      "/usr/bin/python3 " + script + " " + (tmp / "cases.json") + " " + (tmp / "out.json");
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  std::ifstream in(tmp / "out.json");
  return nlohmann::json::parse(in)["results"];
}

}  // namespace swiftlet::rlhf::testing
