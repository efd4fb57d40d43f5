#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>

namespace swiftlet {

namespace {
int g_rank = 0, g_size = 1;
}  // namespace

void set_log_rank(int rank, int size) {
  g_rank = rank;
  g_size = size;
}

LogLevel log_level() {
  static const LogLevel env_level = [] {
    const char* s = std::getenv("LOG_LEVEL");
    if (!s) return LogLevel::kInfo;
    if (!strcasecmp(s, "DEBUG")) return LogLevel::kDebug;
    if (!strcasecmp(s, "WARNING") || !strcasecmp(s, "WARN")) return LogLevel::kWarning;
    if (!strcasecmp(s, "ERROR")) return LogLevel::kError;
    return LogLevel::kInfo;
  }();
  return g_rank == 0 ? env_level : std::max(env_level, LogLevel::kWarning);
}

void log_message(LogLevel level, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warning", "error"};
  if (g_size > 1)
    std::fprintf(stderr, "[%s] [rank %d/%d] %s\n", names[int(level)], g_rank, g_size, msg.c_str());
  else
    std::fprintf(stderr, "[%s] %s\n", names[int(level)], msg.c_str());
}

}  // namespace swiftlet
