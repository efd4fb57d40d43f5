#pragma once
// Helpers for tests that touch files: a temporary folder, environment overrides, error checks.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "core/error.h"

namespace swiftlet::testing {

// A fresh folder under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "swiftlet-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    if (!p) throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f << text;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Runs a shell command with its stdout and stderr sent to a file in `dir`; returns its exit code
// (-1 if it did not exit normally) and what it printed.
inline std::pair<int, std::string> run_shell(const std::string& cmd, const TempDir& dir) {
  const std::string out = dir / "out.txt";
  const int rc = std::system((cmd + " > '" + out + "' 2>&1").c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_bytes(out)};
}

// Sets (or with nullopt unsets) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, std::optional<std::string> value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value) {
      ::setenv(name_.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Runs fn, expects swiftlet::Error, returns "message\nhint" for substring checks.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(e.what()) + "\n" + e.hint();
  }
  ADD_FAILURE() << "expected swiftlet::Error, none thrown";
  return "";
}

#define EXPECT_ERROR_HAS(statement, text)                                          \
  do {                                                                             \
    std::string swiftlet_msg_ = ::swiftlet::testing::error_of([&] { statement; }); \
    EXPECT_NE(swiftlet_msg_.find(text), std::string::npos)                         \
        << "error was: " << swiftlet_msg_ << "\nexpected to contain: " << (text);  \
  } while (0)

inline bool require_references() {
  const char* v = std::getenv("SWIFTLET_REQUIRE_REFERENCES");
  return v && std::string(v) == "1";
}

inline std::string node_modules_dir() {
  const char* v = std::getenv("SWIFTLET_NODE_MODULES");
  return v && *v ? std::string(v) : std::string(SWIFTLET_SOURCE_DIR "/node/node_modules");
}

}  // namespace swiftlet::testing
