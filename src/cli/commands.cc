#include "cli/commands.h"

#include <algorithm>

namespace swiftlet::cli {

namespace {
std::vector<Command>& table() {
  static std::vector<Command> t;
  return t;
}
}  // namespace

bool register_command(Command c) {
  table().push_back(std::move(c));
  return true;
}

const std::vector<Command>& commands() {
  std::sort(table().begin(), table().end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  return table();
}

}  // namespace swiftlet::cli
