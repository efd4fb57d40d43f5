#pragma once
// Shared by the fuzz targets: the input as a file (for readers that take a path) and the rule that
// an input may be refused only with swiftlet::Error (a clear message). Anything else escaping a
// target -- InternalError, std::out_of_range, a nlohmann exception, a crash, a sanitizer report --
// is a bug libFuzzer stops on.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.h"

namespace swiftlet::fuzz {

// A per-process scratch file holding `data`; returns its path.
inline std::string as_file(const uint8_t* data, size_t size, const std::string& name) {
  const std::string dir = "/tmp/swiftlet-fuzz-" + std::to_string(::getpid());
  static bool made = [&] { return std::system(("mkdir -p " + dir).c_str()) == 0; }();
  (void)made;
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

template <class F>
void refused_only_with_error(F&& f) {
  try {
    f();
  } catch (const Error&) {
  }
}

}  // namespace swiftlet::fuzz
