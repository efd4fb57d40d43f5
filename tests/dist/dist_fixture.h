#pragma once
// Helpers of the multi-process tests: running a command with its output and wall time, and
// mpirun with what root and a 2-core machine need.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/test_util.h"

namespace swiftlet::testing {

struct ProcessRun {
  std::string out;  // stdout and stderr together
  int status = -1;  // exit code, -1 when killed by a signal
  double seconds = 0;
};

inline ProcessRun run_command(const std::string& cmd) {
  ProcessRun r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

inline std::string self_exe() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, size_t(n)) : std::string();
}

// 24 short chat rows ("Say red twice." -> "red red") in tmp/data.jsonl.
inline std::string write_dataset(const TempDir& tmp) {
  const std::string path = tmp / "data.jsonl";
  std::ofstream f(path);
  const char* words[] = {"red", "blue", "green", "cat", "dog", "sun", "moon", "tree"};
  for (int i = 0; i < 24; ++i)
    f << nlohmann::json{{"messages",
                         {{{"role", "user"}, {"content", fmt::format("Say {} twice.", words[i % 8])}},
                          {{"role", "assistant"}, {"content", fmt::format("{0} {0}", words[i % 8])}}}}}
             .dump()
      << "\n";
  return path;
}

// 16 preference rows ("Say red." -> "red", rejected "blue") in tmp/pairs.jsonl.
inline std::string write_pairs(const TempDir& tmp) {
  const std::string path = tmp / "pairs.jsonl";
  std::ofstream f(path);
  const char* words[] = {"red", "blue", "green", "cat", "dog", "sun", "moon", "tree"};
  for (int i = 0; i < 16; ++i)
    f << nlohmann::json{{"messages",
                         {{{"role", "user"}, {"content", fmt::format("Say {}.", words[i % 8])}},
                          {{"role", "assistant"}, {"content", words[i % 8]}}}},
                        {"rejected_response", words[(i + 1) % 8]}}
             .dump()
      << "\n";
  return path;
}

// The training records (those with a loss) of every run folder under `out`, in order.
inline std::vector<nlohmann::json> train_logs(const std::string& out) {
  std::vector<nlohmann::json> logs;
  for (const auto& run : std::filesystem::directory_iterator(out)) {
    std::ifstream f(run.path() / "logging.jsonl");
    for (std::string line; std::getline(f, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) logs.push_back(j);
    }
  }
  return logs;
}

// The one run folder under `out`.
inline std::filesystem::path only_run(const std::string& out) {
  std::vector<std::filesystem::path> runs{std::filesystem::directory_iterator(out),
                                          std::filesystem::directory_iterator()};
  EXPECT_EQ(runs.size(), 1u);
  return runs.empty() ? std::filesystem::path() : runs[0];
}

// Training records b equal to a's from index a_from on: step, and loss and grad_norm to 2e-5 (the
// same samples, only the order of float sums differs, and the logs round to 1e-6).
inline void expect_same_steps(const std::vector<nlohmann::json>& a,
                              const std::vector<nlohmann::json>& b, size_t a_from,
                              const std::string& what) {
  ASSERT_EQ(a.size(), a_from + b.size()) << what;
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(a[a_from + i]["step"], b[i]["step"]) << what;
    EXPECT_NEAR(a[a_from + i]["loss"].get<double>(), b[i]["loss"].get<double>(), 2e-5)
        << what << " step " << b[i]["step"];
    EXPECT_NEAR(a[a_from + i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 2e-5)
        << what << " step " << b[i]["step"];
  }
}

// mpirun of this test binary running the tests `filter` in `np` ranks (shared memory only).
inline std::string mpirun(int np, const std::string& filter, const std::string& env = "") {
  return fmt::format(
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=vader,self "
      "{} timeout 60 mpirun -np {} --oversubscribe --bind-to none {} --gtest_color=no --gtest_filter='{}'",
      env, np, self_exe(), filter);
}

}  // namespace swiftlet::testing
