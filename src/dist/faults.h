#pragma once
// What a rank says when the job fails. Open MPI 4.1 brings a job down when one rank dies or exits
// non-zero (the survivors get SIGTERM a second later) but hangs forever when a rank is stuck, so:
//   - every rank records what it is doing (Comm::set_activity) and says it when it is stopped;
//   - SIGUSR1 prints the rank's stack (`kill -USR1 <mpirun pid>` forwards it to every rank);
//   - a collective past --ddp_timeout prints the stacks of every rank reachable and aborts the
//     job with exit code 124 (report_hang).
#include <cstdint>
#include <string>

#include "dist/comm.h"

namespace swiftlet::dist {

// SIGUSR1: this process's stack to stderr; SIGTERM: "[rank R] stopped while <activity>".
void install_rank_signal_handlers(const RankInfo& rank);
// Copies the text where the signal handlers can read it (truncated to a few hundred bytes).
void record_activity(const std::string& text);
std::string recorded_activity();
// The calling thread's stack to stderr, after a header line.
void print_stack(const std::string& header);
// A collective that did not finish: the message, this rank's stack, a request to every rank for
// theirs (through the launcher, which forwards SIGUSR1), then Comm::abort(124).
[[noreturn]] void report_hang(Comm& comm, const std::string& what);

// Failure rehearsal: SWIFTLET_FAULT=<rank>:<step>:<kind> makes that rank, as it starts that
// optimizer step (1-based), fail with kind `error` (an Error), `exit` (exits with status 3),
// `kill` (SIGKILL to itself) or `hang` (stops making progress). Unset: nothing. A malformed value
// is an Error.
void inject_fault(const Comm& comm, int64_t step);

}  // namespace swiftlet::dist
