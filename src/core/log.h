#pragma once
// Logging to stderr with a level from LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; default INFO).
#include <fmt/format.h>

#include <string>

namespace swiftlet {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// The level in effect for this process: LOG_LEVEL on rank 0 (or a single process); the other ranks
// of a distributed run log warnings and errors only, each prefixed with "[rank R/N]".
LogLevel log_level();
void log_message(LogLevel level, const std::string& msg);
void set_log_rank(int rank, int size);

template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kInfo) log_message(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kWarning)
    log_message(LogLevel::kWarning, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kDebug) log_message(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace swiftlet
