// Two "machines" on one: network namespaces A and B joined by a veth pair, mpirun started in A
// reaching B through a launch agent that runs Open MPI's daemon with `ip netns exec B` (no sshd).
// NNODES=2 with a hostfile trains across them and logs the losses of one process accumulating
// twice; the job's traffic crosses the veth pair. The namespaces and the pair are deleted after.
// Needs root (CAP_NET_ADMIN); without it the test is skipped saying so.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dist/dist_fixture.h"
#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::ProcessRun;
using testing::run_command;

// The namespaces, the veth pair and their addresses; torn down in the destructor.
class TwoNamespaces {
 public:
  TwoNamespaces() {
    const int id = int(::getpid());
    a_ = fmt::format("swla{}", id);
    b_ = fmt::format("swlb{}", id);
    va_ = fmt::format("va{}", id % 100000);
    vb_ = fmt::format("vb{}", id % 100000);
    net_ = fmt::format("10.231.{}", id % 250);
    const ProcessRun r = run_command(fmt::format(
        "ip netns add {a} && ip netns add {b} && ip link add {va} type veth peer name {vb} && "
        "ip link set {va} netns {a} && ip link set {vb} netns {b} && "
        "ip -n {a} addr add {n}.1/24 dev {va} && ip -n {b} addr add {n}.2/24 dev {vb} && "
        "ip -n {a} link set lo up && ip -n {b} link set lo up && ip -n {a} link set {va} up && "
        "ip -n {b} link set {vb} up",
        fmt::arg("a", a_), fmt::arg("b", b_), fmt::arg("va", va_), fmt::arg("vb", vb_),
        fmt::arg("n", net_)));
    ok_ = r.status == 0;
    error_ = r.out;
  }
  ~TwoNamespaces() {
    // Deleting a namespace deletes the veth end inside it, and with it the pair.
    run_command(fmt::format("ip netns del {} ; ip netns del {}", a_, b_));
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  std::string host(int i) const { return fmt::format("{}.{}", net_, i); }
  std::string subnet() const { return net_ + ".0/24"; }
  int64_t bytes_sent_from_a() const {
    const ProcessRun r = run_command(
        fmt::format("ip netns exec {} cat /sys/class/net/{}/statistics/tx_bytes", a_, va_));
    return r.status == 0 ? std::stoll(r.out) : -1;
  }

 private:
  std::string a_, b_, va_, vb_, net_, error_;
  bool ok_ = false;
};

std::vector<nlohmann::json> train_logs(const std::string& out) {
  std::vector<nlohmann::json> logs;
  for (const auto& run : fs::directory_iterator(out)) {
    std::ifstream f(run.path() / "logging.jsonl");
    for (std::string line; std::getline(f, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) logs.push_back(j);
    }
  }
  return logs;
}

TEST(DistTwoMachines, TrainAcrossTwoNetworkNamespaces) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN) to create network namespaces";
  if (run_command("command -v ip").status != 0) GTEST_SKIP() << "needs ip (Debian: iproute2)";
  std::string ns_a, ns_b;
  {
    TwoNamespaces ns;
    if (!ns.ok() && ns.error().find("Operation not permitted") != std::string::npos)
      GTEST_SKIP() << "no CAP_NET_ADMIN: " << ns.error();
    ASSERT_TRUE(ns.ok()) << ns.error();
    ns_a = ns.a();
    ns_b = ns.b();
    const std::string model = testing::tiny_model("tiny");
    testing::TempDir tmp;
    {
      std::ofstream f(tmp / "data.jsonl");
      const char* words[] = {"red", "blue", "green", "cat", "dog", "sun", "moon", "tree"};
      for (int i = 0; i < 24; ++i)
        f << nlohmann::json{{"messages",
                             {{{"role", "user"}, {"content", fmt::format("Say {}.", words[i % 8])}},
                              {{"role", "assistant"}, {"content", words[i % 8]}}}}}
                 .dump()
          << "\n";
    }
    // Open MPI runs `agent <host> <daemon command>`; the agent runs it inside that host's namespace.
    testing::write_text(tmp / "agent.sh",
                        fmt::format("#!/bin/sh\nhost=$1; shift\ncase \"$host\" in\n"
                                    "  {}) ns={} ;;\n  {}) ns={} ;;\n"
                                    "  *) echo \"unknown host $host\" >&2; exit 1 ;;\nesac\n"
                                    "exec ip netns exec $ns /bin/sh -c \"$*\"\n",
                                    ns.host(1), ns.a(), ns.host(2), ns.b()));
    fs::permissions(tmp / "agent.sh", fs::perms::owner_all);
    testing::write_text(tmp / "hosts",
                        fmt::format("{} slots=1\n{} slots=1\n", ns.host(1), ns.host(2)));
    const std::string cmd = fmt::format(
        "{} sft --model {} --dataset {} --max_steps 3 --logging_steps 1 "
        "--per_device_train_batch_size 2 --learning_rate 1e-3 --lora_rank 4 --save_steps 100 "
        "--load_from_cache_file false --ddp_timeout 30",
        SWIFTLET_BINARY, model, tmp / "data.jsonl");
    const ProcessRun one =
        run_command(cmd + " --gradient_accumulation_steps 2 --output_dir " + (tmp / "one"));
    ASSERT_EQ(one.status, 0) << one.out;
    const int64_t sent_before = ns.bytes_sent_from_a();
    const ProcessRun two = run_command(fmt::format(
        "ip netns exec {} env NPROC_PER_NODE=1 NNODES=2 NODE_RANK=0 MASTER_ADDR={} "
        "SWIFTLET_HOSTFILE={} SWIFTLET_NETWORK={} OMPI_MCA_plm_rsh_agent={} OMPI_MCA_btl=tcp,self "
        "OMPI_MCA_hwloc_base_binding_policy=none timeout 120 {} --gradient_accumulation_steps 1 "
        "--output_dir {}",
        ns.a(), ns.host(1), tmp / "hosts", ns.subnet(), tmp / "agent.sh", cmd, tmp / "two"));
    ASSERT_EQ(two.status, 0) << two.out;
    EXPECT_NE(two.out.find("--hostfile"), std::string::npos) << two.out;
    EXPECT_GT(ns.bytes_sent_from_a() - sent_before, 10000) << "no traffic crossed the veth pair";
    const auto a = train_logs(tmp / "one"), b = train_logs(tmp / "two");
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(b.size(), 3u);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 2e-5) << i;
      EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 2e-5) << i;
    }
  }
  // Cleaned up: neither namespace nor the pair is left.
  EXPECT_NE(run_command("ip netns list | grep -E '^(" + ns_a + "|" + ns_b + ")( |$)'").status, 0);
}

}  // namespace
}  // namespace swiftlet
