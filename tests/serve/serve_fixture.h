#pragma once
// Test helpers for the server: a `swiftlet deploy` child process on a free loopback port, a LoRA
// adapter with random weights, and the node runner for the OpenAI client script.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backend/device.h"
#include "core/rng.h"
#include "model/folder.h"
#include "model/model_fixture.h"
#include "tuner/lora.h"

namespace swiftlet::serve_testing {

using testing::TempDir;

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The value of an unlabelled metric in a /metrics page (-1 when absent).
inline double metric_value(const std::string& page, const std::string& name) {
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

// A LoRA adapter for the model folder (rank 4 on every projection) whose B is random, so it
// changes the model's output; saved in PEFT's format to `dir`.
inline void make_random_adapter(const std::string& model_dir, const std::string& dir,
                                uint64_t seed) {
  ModelFolder folder = load_model_folder(model_dir);
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  LoraConfig cfg;
  cfg.rank = 4;
  cfg.alpha = 8;
  cfg.base_model_name_or_path = model_dir;
  Rng rng(seed);
  LoraAdapter ad = LoraAdapter::create(*dev, folder.config, cfg, rng);
  for (auto& [name, t] : ad.named_tensors())
    if (name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float(rng.normal());
  ad.save(dir);
}

// `swiftlet deploy ARGS --host 127.0.0.1` as a child process; stdout and stderr go to files.
class DeployProcess {
 public:
  explicit DeployProcess(const std::vector<std::string>& args, bool wait_ready = true) {
    out_ = dir_ / "stdout.txt";
    err_ = dir_ / "stderr.txt";
    std::vector<std::string> all{SWIFTLET_BINARY, "deploy", "--host", "127.0.0.1"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(o, 1);
      ::dup2(e, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (wait_ready) wait_listening();
  }
  ~DeployProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // Waits for the "listening on http://127.0.0.1:PORT" line; false (with the logs) on failure.
  bool wait_listening(double timeout_s = 60) {
    const std::regex re(R"(listening on http://127\.0\.0\.1:(\d+))");
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < until) {
      std::smatch m;
      const std::string out = slurp(out_);
      if (std::regex_search(out, m, re)) {
        port_ = std::stoi(m[1]);
        return true;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        status_ = status;
        ADD_FAILURE() << "swiftlet deploy exited early:\n" << slurp(err_);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "swiftlet deploy did not start listening:\n" << slurp(err_);
    return false;
  }

  // Sends a signal and waits for the exit; returns the exit code (-1: killed after the timeout).
  int stop(int sig = SIGTERM, double timeout_s = 30) {
    if (exited_) return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
    ::kill(pid_, sig);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  // Resident memory of the server process in kB (VmRSS).
  int64_t rss_kb() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
    return -1;
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string out() const { return slurp(out_); }
  std::string err() const { return slurp(err_); }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

 private:
  TempDir dir_;
  std::string out_, err_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool exited_ = false;
  int status_ = 0;
};

inline std::filesystem::path node_modules() { return testing::npm_modules(); }

// Why the OpenAI node client cannot run ("" when it can).
inline std::string openai_client_missing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not on PATH";
  if (!std::filesystem::exists(node_modules() / "openai" / "package.json"))
    return (node_modules() / "openai").string() + " is missing (run ./run setup)";
  return "";
}

#define SWIFTLET_REQUIRE_OPENAI_CLIENT()                                  \
  do {                                                                    \
    std::string why = ::swiftlet::serve_testing::openai_client_missing(); \
    if (!why.empty()) {                                                   \
      if (::swiftlet::testing::require_references_env()) FAIL() << why;   \
      GTEST_SKIP() << why;                                                \
    }                                                                     \
  } while (0)

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct NodeResult {
  int status = -1;
  std::string out, err;
};

// Runs tests/serve/openai_client.cjs with a scenario and environment variables.
inline NodeResult run_openai_client(const std::string& scenario,
                                    const std::map<std::string, std::string>& env) {
  TempDir tmp;
  std::string cmd = "env";
  for (const auto& [k, v] : env) cmd += " " + k + "=" + shell_quote(v);
  const std::string script = std::string(SWIFTLET_SOURCE_DIR) + "/tests/serve/openai_client.cjs";
  cmd += " node " + shell_quote(script) + " " + shell_quote(node_modules().string()) + " " +
         scenario + " > " + (tmp / "out") + " 2> " + (tmp / "err");
  NodeResult r;
  const int rc = std::system(cmd.c_str());
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = slurp(tmp / "out");
  r.err = slurp(tmp / "err");
  return r;
}

}  // namespace swiftlet::serve_testing
