// `swiftlet env` end to end: the report lists what it promises, --check passes on cpu and sim and
// exits 0, and bad input exits non-zero with an error line.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

struct CommandResult {
  std::string out;
  int status = -1;
};

// Runs the swiftlet binary with `args`, `env_assignments` ("A=1 B=2") prefixed through env(1).
CommandResult run(const std::string& args, const std::string& env_assignments = "") {
  CommandResult r;
  std::string cmd = (env_assignments.empty() ? "" : "env " + env_assignments + " ") +
                    std::string(SWIFTLET_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(EnvCommand, ReportsBuildCpuGemmAndDevices) {
  CommandResult r = run("env --threads 2", "-u SWIFTLET_VISIBLE_DEVICES");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* want :
       {"swiftlet      " SWIFTLET_VERSION " (" SWIFTLET_BUILD_TYPE " build)", "\ncpu ", "\ncores ",
        "\nsimd (cpu) ", "\nsimd (build) ", "\nmemory ", "\ngemm          OpenBLAS",
        "\nthreads       2 (--threads)", "\ndevices       cpu:0 (", "\n  cpu:0 "})
    EXPECT_NE(r.out.find(want), std::string::npos) << "missing '" << want << "' in:\n" << r.out;
  EXPECT_EQ(r.out.find("sim:0  "), std::string::npos) << "sim is not visible by default:\n"
                                                      << r.out;
}

TEST(EnvCommand, CheckPassesOnEveryVisibleDevice) {
  CommandResult r = run("env --check --threads 2", "SWIFTLET_VISIBLE_DEVICES=cpu:0,sim:0");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("\n  cpu:0    pass"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  sim:0    pass"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("all devices pass"), std::string::npos) << r.out;
}

TEST(EnvCommand, RejectsBadInput) {
  CommandResult r = run("env --threads 0");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("error: --threads must be between 1 and 4096"), std::string::npos) << r.out;
  r = run("env --thread 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("did you mean --threads"), std::string::npos) << r.out;
  r = run("env", "SWIFTLET_VISIBLE_DEVICES=npu:0");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("unknown device 'npu:0'"), std::string::npos) << r.out;
}

}  // namespace
