// The quick start (`./run demo`) and every example script, run end to end in a reduced size
// (QUICK=1: a few steps; the tiny preset) against the built binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>

#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;

struct ScriptRun {
  int rc;
  std::string out;
};

ScriptRun run_script(const std::string& name, const TempDir& tmp, const std::string& env = "") {
  const std::string log = tmp / (name + ".log");
  const std::string cmd = fmt::format(
      "cd {} && QUICK=1 PRESET=tiny THREADS=2 WORK={} SWIFTLET={} {} bash examples/{} > {} 2>&1",
      SWIFTLET_SOURCE_DIR, tmp / "work", SWIFTLET_BINARY, env, name, log);
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, testing::read_bytes(log)};
}

TEST(Examples, QuickstartRunsTrainMergeInferServe) {
  TempDir tmp;
  ScriptRun r = run_script("quickstart.sh", tmp);
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* needle : {"before: arithmetic", "after-adapter: arithmetic", "after-merged: arithmetic",
                             "server answer:", "merged model:", "plots:"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << "\n" << r.out;
  // The merged model and the adapter answer the same (greedy, same weights up to rounding).
  const std::string a = testing::read_bytes(tmp / "work/answers-after-adapter.jsonl");
  const std::string m = testing::read_bytes(tmp / "work/answers-after-merged.jsonl");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, m);
}

class ExampleScript : public ::testing::TestWithParam<std::string> {};

TEST_P(ExampleScript, RunsReduced) {
  TempDir tmp;
  ScriptRun r = run_script(GetParam(), tmp);
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out.find("error:"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(All, ExampleScript,
                         ::testing::Values("sft_lora.sh", "sft_full.sh", "pt.sh", "resume.sh",
                                           "merge_infer.sh", "deploy.sh", "dpo.sh", "rm.sh", "grpo.sh"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace
}  // namespace swiftlet
