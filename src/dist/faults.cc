#include "dist/faults.h"

#include <execinfo.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>

#include "core/log.h"

namespace swiftlet::dist {

namespace {

// Read by signal handlers: fixed buffers, no allocation.
constexpr size_t kActivityBytes = 480;
char g_activity[2][kActivityBytes];
std::atomic<int> g_activity_slot{0};
char g_rank_prefix[64] = "";
pid_t g_main_tid = 0;
std::atomic<bool> g_stack_printed_by_hang{false};

void write_str(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(2, s, n);
    if (w <= 0) {
      if (errno == EINTR) continue;
      return;
    }
    s += w;
    n -= size_t(w);
  }
}

pid_t current_tid() { return pid_t(::syscall(SYS_gettid)); }

void write_backtrace() {
  void* frames[64];
  const int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, 2);
}

void on_usr1(int) {
  const int saved = errno;
  const pid_t tid = current_tid();
  if (g_stack_printed_by_hang.load() && tid == g_main_tid) {
    errno = saved;
    return;  // report_hang printed this thread's stack already
  }
  write_str(g_rank_prefix);
  write_str(tid == g_main_tid ? " stack of the main thread:\n" : " stack of a worker thread:\n");
  write_backtrace();
  // The signal may land on any thread; the main thread's stack is the one that says where the
  // rank is, so pass it on.
  if (tid != g_main_tid && g_main_tid != 0) ::syscall(SYS_tgkill, ::getpid(), g_main_tid, SIGUSR1);
  errno = saved;
}

void on_term(int sig) {
  write_str(g_rank_prefix);
  write_str(" stopped by the launcher (another rank failed or the job was cancelled) while ");
  write_str(g_activity[g_activity_slot.load()]);
  write_str("\n");
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void sleep_seconds(double s) {
  timespec ts{time_t(s), long((s - double(time_t(s))) * 1e9)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace

void install_rank_signal_handlers(const RankInfo& rank) {
  std::snprintf(g_rank_prefix, sizeof g_rank_prefix, "[rank %d/%d]", rank.rank, rank.size);
  g_main_tid = current_tid();
  record_activity("starting up");
  struct sigaction sa {};
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = on_term;
  ::sigaction(SIGTERM, &sa, nullptr);
}

void record_activity(const std::string& text) {
  const int next = 1 - g_activity_slot.load();
  const size_t n = std::min(text.size(), kActivityBytes - 1);
  std::memcpy(g_activity[next], text.data(), n);
  g_activity[next][n] = '\0';
  g_activity_slot.store(next);
}

std::string recorded_activity() { return g_activity[g_activity_slot.load()]; }

void print_stack(const std::string& header) {
  write_str((header + "\n").c_str());
  write_backtrace();
}

void report_hang(Comm& comm, const std::string& what) {
  const std::string prefix = fmt::format("[rank {}/{}]", comm.rank(), comm.size());
  std::fprintf(stderr, "error: %s %s; this rank was %s\n", prefix.c_str(), what.c_str(),
               recorded_activity().c_str());
  std::fflush(stderr);
  print_stack(prefix + " stack of the main thread:");
  g_stack_printed_by_hang = true;
  // mpirun forwards SIGUSR1 to every rank of the job; it is this process's ancestor only on the
  // machine it runs on, which the launcher's host name tells.
  const char* pid = std::getenv("SWIFTLET_LAUNCHER_PID");
  const char* host = std::getenv("SWIFTLET_LAUNCHER_HOST");
  char here[256] = "";
  ::gethostname(here, sizeof here - 1);
  if (pid && host && std::strcmp(host, here) == 0 && std::atoi(pid) > 1) {
    std::fprintf(stderr, "%s asking every rank for its stack (SIGUSR1 through the launcher)\n",
                 prefix.c_str());
    std::fflush(stderr);
    ::kill(pid_t(std::atoi(pid)), SIGUSR1);
    sleep_seconds(2.0);  // time for the other ranks to print
  }
  comm.abort(124, fmt::format("{} aborting the job: {}", prefix, what));
  std::_Exit(124);  // not reached: abort() ends the process
}

void inject_fault(const Comm& comm, int64_t step) {
  const char* spec = std::getenv("SWIFTLET_FAULT");
  if (!spec || !*spec) return;
  int rank = -1;
  long long at = -1;
  char kind[16] = "";
  if (std::sscanf(spec, "%d:%lld:%15s", &rank, &at, kind) != 3 ||
      (std::strcmp(kind, "error") && std::strcmp(kind, "exit") && std::strcmp(kind, "kill") &&
       std::strcmp(kind, "hang")))
    throw Error(fmt::format("SWIFTLET_FAULT={} is not <rank>:<step>:<error|exit|kill|hang>", spec));
  if (rank != comm.rank() || at != step) return;
  const std::string k = kind;
  log_warning("rank {}: SWIFTLET_FAULT injects '{}' at step {}", rank, k, step);
  if (k == "error")
    throw Error(fmt::format("fault injected by SWIFTLET_FAULT at step {}", step),
                "unset SWIFTLET_FAULT");
  if (k == "exit") std::_Exit(3);
  if (k == "kill") ::raise(SIGKILL);
  record_activity(fmt::format("step {}: stuck (fault injected by SWIFTLET_FAULT)", step));
  for (;;) sleep_seconds(3600);
}

}  // namespace swiftlet::dist
