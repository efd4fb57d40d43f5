#pragma once
// The table of `swiftlet <command>` entries. Each cmd_*.cc registers itself with a static
// `const bool registered = register_command({...});` so adding a command touches one file.
#include <string>
#include <vector>

namespace swiftlet::cli {

struct Command {
  std::string name;     // "infer"
  std::string summary;  // one line for `swiftlet --help`
  int (*run)(int argc, char** argv);  // argv[1] is the command name; flags start at argv[2]
};

bool register_command(Command c);
const std::vector<Command>& commands();

}  // namespace swiftlet::cli
