#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace swiftlet {

LogLevel log_level() {
  static const LogLevel level = [] {
    const char* s = std::getenv("LOG_LEVEL");
    if (!s) return LogLevel::kInfo;
    if (!strcasecmp(s, "DEBUG")) return LogLevel::kDebug;
    if (!strcasecmp(s, "WARNING") || !strcasecmp(s, "WARN")) return LogLevel::kWarning;
    if (!strcasecmp(s, "ERROR")) return LogLevel::kError;
    return LogLevel::kInfo;
  }();
  return level;
}

void log_message(LogLevel level, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warning", "error"};
  std::fprintf(stderr, "[%s] %s\n", names[int(level)], msg.c_str());
}

}  // namespace swiftlet
