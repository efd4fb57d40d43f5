#pragma once
// User-facing errors and programmer checks.
//   throw Error("dataset train.jsonl line 3: expected a JSON object", "hint ...")  -- a user mistake
//   SWIFTLET_CHECK(a.dim(1) == b.dim(0), "gemm: inner dims {} vs {}", a.dim(1), b.dim(0)) -- an invariant
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace swiftlet {

// A mistake the user can fix: bad flag, missing file, malformed data, unsupported model.
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, std::string hint = {})
      : std::runtime_error(std::move(message)), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }

 private:
  std::string hint_;
};

// A broken internal invariant (a bug in swiftlet, not in the user's input).
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace swiftlet

#define SWIFTLET_CHECK(cond, ...)                                                        \
  do {                                                                                   \
    if (!(cond)) ::swiftlet::check_failed(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)
