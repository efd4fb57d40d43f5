// swiftlet: the command-line entry. Parses the subcommand and hands over to it; every user error
// ends as one `error:` line (plus a hint) on stderr and a non-zero exit.
#include <algorithm>
#include <cstdio>
#include <string>

#include <unistd.h>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "dist/faults.h"
#include "dist/launcher.h"


namespace {

// NPROC_PER_NODE / NNODES: as ms-swift re-executes itself under torchrun, swiftlet becomes mpirun
// running N copies of itself (only for sft, pt, rlhf; returns when one process is asked for).
void launch_if_distributed(const std::string& command, int argc, char** argv) {
  using namespace swiftlet;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  char host[256] = "";
  ::gethostname(host, sizeof host - 1);
  const auto plan = dist::plan_launch(
      command, n > 0 ? std::string(self, size_t(n)) : std::string(argv[0]),
      std::vector<std::string>(argv + 2, argv + argc), dist::current_environment(),
      int(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN))), ::geteuid() == 0, int(::getpid()), host);
  if (!plan) return;
  for (const auto& note : plan->notes) std::fprintf(stderr, "[info] %s\n", note.c_str());
  std::printf("run sh: `%s`\n", plan->shown().c_str());
  std::fflush(stdout);
  dist::exec_plan(*plan);
}

// An error on one rank of a distributed run ends every rank at once, naming the rank.
[[noreturn]] void fail_job(const std::string& message, const std::string& hint, int code) {
  swiftlet::dist::Comm* comm = swiftlet::dist::active_comm();
  comm->abort(code, fmt::format("[rank {}/{}] failed while {}: {}{}", comm->rank(), comm->size(),
                                swiftlet::dist::recorded_activity(), message,
                                hint.empty() ? "" : "\nhint: " + hint));
  std::_Exit(code);  // not reached: abort() ends the process
}

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
      launch_if_distributed(c.name, argc, argv);
      const int rc = c.run(argc, argv);
      dist::end_job();
      return rc;
    } catch (const Error& e) {
      if (dist::active_comm()) fail_job(e.what(), e.hint(), 1);
      std::fprintf(stderr, "error: %s\n", e.what());
      if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
      return 1;
    } catch (const std::bad_alloc&) {
      if (dist::active_comm()) fail_job("out of memory", "lower --max_length, the batch size or the model size", 1);
      std::fprintf(stderr, "error: out of memory\nhint: lower --max_length, the batch size or the model size\n");
      return 1;
    } catch (const std::exception& e) {
      if (dist::active_comm()) fail_job(e.what(), "", 70);
      std::fprintf(stderr, "error: %s\n", e.what());
      return 70;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s'\nhint: run swiftlet --help for the list of commands\n",
               argv[1]);
  return 2;
}
