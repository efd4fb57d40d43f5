#pragma once
// ms-swift's launch variables turned into an mpirun command line. As `swift sft` re-executes
// itself under torchrun when NPROC_PER_NODE or NNODES is set, `swiftlet sft|pt|rlhf` re-executes
// itself under mpirun (execvp: mpirun takes over the process, the terminal's signals and the exit
// code). Variables read:
//   NPROC_PER_NODE   ranks per machine (default 1)
//   NNODES           machines (default 1); more than one needs SWIFTLET_HOSTFILE (Open MPI's
//                    `host slots=N` lines), and the command is run once, on node 0
//   NODE_RANK        0 or unset: under MPI only node 0 launches (any other value is an Error)
//   MASTER_ADDR      with NNODES > 1: node 0, which must be the hostfile's first host
//   MASTER_PORT      not needed by MPI (it picks its own ports); a note says so
//   SWIFTLET_NETWORK interface or CIDR carrying the job's traffic (btl/oob_tcp_if_include)
//   SWIFTLET_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES: when set, exactly
//                    NPROC_PER_NODE entries, one per local rank
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace swiftlet::dist {

using Environment = std::map<std::string, std::string>;
Environment current_environment();

struct LaunchPlan {
  std::vector<std::string> argv;  // mpirun ... <self> <args>
  Environment set_env;            // variables to set before the exec
  std::vector<std::string> notes; // one line each, printed before the exec
  std::string shown() const;      // the command line, shell-quoted
};

// The commands ms-swift runs under torchrun.
bool command_runs_distributed(const std::string& command);

// The mpirun command for `self args...` when the environment asks for more than one rank and this
// process is not a rank already; nullopt otherwise. Error for inconsistent variables (a device
// list that does not match NPROC_PER_NODE, NODE_RANK > 0, NNODES > 1 without a hostfile, ...).
// `cores`: the cores of this machine (threads and binding are split between local ranks).
std::optional<LaunchPlan> plan_launch(const std::string& command, const std::string& self,
                                      const std::vector<std::string>& args, const Environment& env,
                                      int cores, bool root, int launcher_pid,
                                      const std::string& hostname);

// The device a rank trains on: entry `local_rank` of SWIFTLET_VISIBLE_DEVICES when it is set,
// else `fallback`.
std::string rank_device(const Environment& env, int local_rank, const std::string& fallback);

// Replaces this process by the plan's command (returns only on failure, as an Error).
[[noreturn]] void exec_plan(const LaunchPlan& plan);

}  // namespace swiftlet::dist
