// swiftlet: the command-line entry. Parses the subcommand and hands over to it; every user error
// ends as one `error:` line (plus a hint) on stderr and a non-zero exit.
#include <algorithm>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/error.h"


namespace {
void print_usage() {
  std::printf("usage: swiftlet <command> [--flag value ...]\n\ncommands:\n");
  for (const auto& c : swiftlet::cli::commands()) std::printf("  %-12s %s\n", c.name.c_str(), c.summary.c_str());
  std::printf("\n`swiftlet <command> --help` lists the flags of a command with their defaults.\n");
}
}  // namespace

int main(int argc, char** argv) {
  using namespace swiftlet;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::printf("swiftlet %s\n", SWIFTLET_VERSION);
    return 0;
  }
  std::string name = argv[1];
  std::replace(name.begin(), name.end(), '_', '-');
  for (const auto& c : cli::commands()) {
    if (c.name != name) continue;
    try {
      return c.run(argc, argv);
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
      return 1;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "error: out of memory\nhint: lower --max_length, the batch size or the model size\n");
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 70;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s'\nhint: run swiftlet --help for the list of commands\n",
               argv[1]);
  return 2;
}
