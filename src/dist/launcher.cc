#include "dist/launcher.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

extern char** environ;

namespace swiftlet::dist {

namespace {

std::string get(const Environment& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? std::string() : it->second;
}

int positive(const Environment& env, const std::string& name) {
  const std::string s = get(env, name);
  if (s.empty()) return 1;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (!end || *end != '\0' || v < 1 || v > 4096)
    throw Error(fmt::format("{}={} is not a positive whole number", name, s),
                fmt::format("e.g. {}=2", name));
  return int(v);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

std::string quote(const std::string& s) {
  if (!s.empty() && s.find_first_of(" \t\n'\"\\$`*?[]{}()<>|&;#~") == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The first host of an Open MPI hostfile ("host slots=N" lines, # comments).
std::string first_host(const std::string& path) {
  std::ifstream f(path);
  if (!f)
    throw Error(fmt::format("SWIFTLET_HOSTFILE {} cannot be read", path),
                "write one line per machine: `<host> slots=<NPROC_PER_NODE>`");
  std::string line;
  while (std::getline(f, line)) {
    line = line.substr(0, line.find('#'));
    std::stringstream in(line);
    std::string host;
    if (in >> host) return host;
  }
  throw Error(fmt::format("SWIFTLET_HOSTFILE {} lists no host", path),
              "write one line per machine: `<host> slots=<NPROC_PER_NODE>`");
}

// The visible-device lists a user may set; each set one must have one entry per local rank.
void check_visible_devices(const Environment& env, int nproc) {
  for (const char* name :
       {"SWIFTLET_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"}) {
    auto it = env.find(name);
    if (it == env.end()) continue;
    const size_t n = split_list(it->second).size();
    if (n != size_t(nproc))
      throw Error(fmt::format("{}={} lists {} device{} for NPROC_PER_NODE={} ranks per machine",
                              name, it->second, n, n == 1 ? "" : "s", nproc),
                  fmt::format("list one device per rank (e.g. {} entries), or set NPROC_PER_NODE "
                              "to the number of devices listed",
                              nproc));
  }
}

}  // namespace

Environment current_environment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) env[std::string(*e, size_t(eq - *e))] = eq + 1;
  }
  return env;
}

std::string LaunchPlan::shown() const {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + quote(a);
  return s;
}

bool command_runs_distributed(const std::string& command) {
  return command == "sft" || command == "pt" || command == "rlhf" || command == "infer";
}

std::optional<LaunchPlan> plan_launch(const std::string& command, const std::string& self,
                                      const std::vector<std::string>& args, const Environment& env,
                                      int cores, bool root, int launcher_pid,
                                      const std::string& hostname) {
  if (!env.count("NPROC_PER_NODE") && !env.count("NNODES")) return std::nullopt;
  if (env.count("OMPI_COMM_WORLD_SIZE") || env.count("PMIX_RANK")) return std::nullopt;  // a rank
  if (!command_runs_distributed(command)) return std::nullopt;  // as ms-swift: one process
  const int nproc = positive(env, "NPROC_PER_NODE"), nnodes = positive(env, "NNODES");
  check_visible_devices(env, nproc);
  const std::string node_rank = get(env, "NODE_RANK");
  if (!node_rank.empty() && node_rank != "0")
    throw Error(fmt::format("NODE_RANK={}: under the MPI backend only node 0 starts the job, and "
                            "mpirun starts the ranks of the other machines itself",
                            node_rank),
                "run the command once, on node 0, with SWIFTLET_HOSTFILE listing every machine");
  if (nproc * nnodes == 1) return std::nullopt;
  if (command == "infer")
    throw Error(fmt::format("swiftlet infer runs in one process; NPROC_PER_NODE={} would run the "
                            "same inference {} times",
                            nproc, nproc * nnodes),
                "unset NPROC_PER_NODE and NNODES for infer");

  LaunchPlan p;
  p.argv = {"mpirun", "-np", std::to_string(nproc * nnodes)};
  const std::string hostfile = get(env, "SWIFTLET_HOSTFILE");
  if (nnodes > 1) {
    if (hostfile.empty())
      throw Error(fmt::format("NNODES={} needs the list of machines", nnodes),
                  "set SWIFTLET_HOSTFILE to a file with one `<host> slots=<NPROC_PER_NODE>` line "
                  "per machine, node 0 first (passwordless ssh to each, same paths)");
    const std::string master = get(env, "MASTER_ADDR");
    const std::string first = first_host(hostfile);
    if (!master.empty() && master != first && master != "127.0.0.1" && master != "localhost")
      throw Error(fmt::format("MASTER_ADDR={} is not the first host of SWIFTLET_HOSTFILE ({})",
                              master, first),
                  "node 0 (MASTER_ADDR) launches the job and must come first in the hostfile");
    p.argv.insert(p.argv.end(), {"--hostfile", hostfile, "--npernode", std::to_string(nproc)});
  } else if (!hostfile.empty()) {
    p.argv.insert(p.argv.end(), {"--hostfile", hostfile});
  }
  if (env.count("MASTER_PORT"))
    p.notes.push_back(fmt::format("MASTER_PORT={} is not used: Open MPI picks its own ports "
                                  "(btl_tcp_port_min_v4 restricts them)",
                                  get(env, "MASTER_PORT")));
  const std::string network = get(env, "SWIFTLET_NETWORK");
  if (!network.empty())
    p.argv.insert(p.argv.end(), {"--mca", "btl_tcp_if_include", network, "--mca",
                                 "oob_tcp_if_include", network});
  // Each local rank gets cores / nproc cores and as many threads; more ranks than cores run
  // unbound on shared cores with one thread each.
  const int per_rank = std::max(1, cores / nproc);
  if (nproc > cores) {
    p.argv.insert(p.argv.end(), {"--oversubscribe", "--bind-to", "none"});
  } else if (!env.count("OMPI_MCA_hwloc_base_binding_policy")) {
    p.argv.insert(p.argv.end(),
                  {"--map-by", fmt::format("slot:PE={}", per_rank), "--bind-to", "core"});
  }
  if (!env.count("OMP_NUM_THREADS")) p.set_env["OMP_NUM_THREADS"] = std::to_string(per_rank);
  if (root) {
    p.set_env["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
    p.set_env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
    p.notes.push_back("running as root: OMPI_ALLOW_RUN_AS_ROOT=1 lets mpirun start the ranks");
  }
  // execvp keeps the process id: the ranks can reach mpirun (to ask every rank for its stack).
  p.set_env["SWIFTLET_LAUNCHER_PID"] = std::to_string(launcher_pid);
  p.set_env["SWIFTLET_LAUNCHER_HOST"] = hostname;
  // mpirun hands its whole environment to local ranks; remote ones get the variables named here.
  Environment all = env;
  for (const auto& [k, v] : p.set_env) all[k] = v;
  for (const auto& [k, v] : all) {
    const bool forward = k.rfind("SWIFTLET_", 0) == 0 || k.rfind("OMP_", 0) == 0 ||
                         k.rfind("OPENBLAS_", 0) == 0 || k == "LOG_LEVEL" ||
                         k == "NPROC_PER_NODE" || k == "NNODES" || k == "MASTER_ADDR" ||
                         k == "MASTER_PORT" || k == "ASCEND_RT_VISIBLE_DEVICES" ||
                         k == "CUDA_VISIBLE_DEVICES" || k == "PATH" || k == "LD_LIBRARY_PATH" ||
                         k == "HOME";
    if (forward && nnodes > 1) p.argv.insert(p.argv.end(), {"-x", k});
  }
  p.argv.push_back(self);
  p.argv.push_back(command);
  p.argv.insert(p.argv.end(), args.begin(), args.end());
  return p;
}

std::string rank_device(const Environment& env, int local_rank, const std::string& fallback) {
  auto it = env.find("SWIFTLET_VISIBLE_DEVICES");
  if (it == env.end()) return fallback;
  const auto list = split_list(it->second);
  if (local_rank < 0 || size_t(local_rank) >= list.size())
    throw Error(fmt::format("SWIFTLET_VISIBLE_DEVICES={} has no entry for local rank {}",
                            it->second, local_rank),
                "list one device per rank");
  return list[size_t(local_rank)];
}

void exec_plan(const LaunchPlan& plan) {
  for (const auto& [k, v] : plan.set_env) ::setenv(k.c_str(), v.c_str(), 1);
  std::vector<char*> argv;
  for (const auto& a : plan.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  throw Error(fmt::format("cannot start {}: {}", plan.argv[0], std::strerror(errno)),
              "install Open MPI (apt-get install openmpi-bin) to train with NPROC_PER_NODE");
}

}  // namespace swiftlet::dist
