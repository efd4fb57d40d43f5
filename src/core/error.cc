#include "core/error.h"

namespace swiftlet {

void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  throw InternalError(fmt::format("internal check failed at {}:{}: ({}) {}", file, line, cond, msg));
}

}  // namespace swiftlet
