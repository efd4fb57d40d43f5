// NPROC_PER_NODE / NNODES / NODE_RANK / the device lists turned into an mpirun command line, and
// the errors for settings that cannot work, checked before anything starts.
#include <gtest/gtest.h>

#include <algorithm>

#include "dist/launcher.h"
#include "io/test_util.h"

namespace swiftlet::dist {
namespace {

std::optional<LaunchPlan> plan(const Environment& env, const std::string& command = "sft",
                               int cores = 2, bool root = false) {
  return plan_launch(command, "/opt/swiftlet", {"--model", "m"}, env, cores, root, 4242, "nodeA");
}

bool has_seq(const std::vector<std::string>& v, const std::vector<std::string>& seq) {
  return std::search(v.begin(), v.end(), seq.begin(), seq.end()) != v.end();
}

std::string error_of(const Environment& env, const std::string& command = "sft") {
  try {
    plan(env, command);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DistLauncher, NoVariablesOrNotATrainingCommandMeansOneProcess) {
  EXPECT_FALSE(plan({}));
  EXPECT_FALSE(plan({{"NPROC_PER_NODE", "2"}}, "export"));
  EXPECT_FALSE(plan({{"NPROC_PER_NODE", "2"}}, "deploy"));
  EXPECT_FALSE(plan({{"NPROC_PER_NODE", "1"}}));
  // Already a rank: no second launch.
  EXPECT_FALSE(plan({{"NPROC_PER_NODE", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}}));
}

TEST(DistLauncher, TwoRanksOnTwoCoresBindOneCoreEach) {
  const auto p = plan({{"NPROC_PER_NODE", "2"}});
  ASSERT_TRUE(p);
  EXPECT_TRUE(has_seq(p->argv, {"mpirun", "-np", "2"}));
  EXPECT_TRUE(has_seq(p->argv, {"--map-by", "slot:PE=1", "--bind-to", "core"}));
  EXPECT_TRUE(has_seq(p->argv, {"/opt/swiftlet", "sft", "--model", "m"}));
  EXPECT_EQ(p->set_env.at("OMP_NUM_THREADS"), "1");
  EXPECT_EQ(p->set_env.at("SWIFTLET_LAUNCHER_PID"), "4242");
  EXPECT_FALSE(p->set_env.count("OMPI_ALLOW_RUN_AS_ROOT"));
  EXPECT_EQ(p->shown().rfind("mpirun -np 2 ", 0), 0u) << p->shown();
}

TEST(DistLauncher, MoreRanksThanCoresOversubscribeUnbound) {
  const auto p = plan({{"NPROC_PER_NODE", "3"}, {"OMP_NUM_THREADS", "2"}}, "pt");
  ASSERT_TRUE(p);
  EXPECT_TRUE(has_seq(p->argv, {"--oversubscribe", "--bind-to", "none"}));
  EXPECT_FALSE(p->set_env.count("OMP_NUM_THREADS"));  // the user's value stays
}

TEST(DistLauncher, RootGetsOpenMpisTwoVariables) {
  const auto p = plan({{"NPROC_PER_NODE", "2"}}, "rlhf", 8, true);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->set_env.at("OMPI_ALLOW_RUN_AS_ROOT"), "1");
  EXPECT_EQ(p->set_env.at("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"), "1");
  EXPECT_TRUE(has_seq(p->argv, {"--map-by", "slot:PE=4"}));
  EXPECT_EQ(p->set_env.at("OMP_NUM_THREADS"), "4");
}

TEST(DistLauncher, DeviceListsMustMatchTheRanks) {
  for (const char* var :
       {"SWIFTLET_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"}) {
    const std::string e = error_of({{"NPROC_PER_NODE", "4"}, {var, "0,1"}});
    EXPECT_NE(e.find(std::string(var) + "=0,1 lists 2 devices for NPROC_PER_NODE=4"),
              std::string::npos)
        << e;
    EXPECT_TRUE(plan({{"NPROC_PER_NODE", "2"}, {var, "0, 1"}}));
  }
  EXPECT_EQ(rank_device({{"SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0"}}, 1, "cpu:0"), "sim:0");
  EXPECT_EQ(rank_device({}, 1, "cpu:0"), "cpu:0");
}

TEST(DistLauncher, BadNumbersNodeRankAndMissingHostfileAreErrors) {
  EXPECT_NE(error_of({{"NPROC_PER_NODE", "two"}}).find("NPROC_PER_NODE=two is not a positive"),
            std::string::npos);
  EXPECT_NE(error_of({{"NPROC_PER_NODE", "0"}}).find("not a positive"), std::string::npos);
  EXPECT_NE(error_of({{"NPROC_PER_NODE", "2"}, {"NNODES", "2"}, {"NODE_RANK", "1"}})
                .find("NODE_RANK=1: under the MPI backend only node 0 starts the job"),
            std::string::npos);
  EXPECT_NE(error_of({{"NPROC_PER_NODE", "2"}, {"NNODES", "2"}}).find("NNODES=2 needs the list"),
            std::string::npos);
  EXPECT_NE(error_of({{"NPROC_PER_NODE", "2"}}, "infer").find("swiftlet infer runs in one process"),
            std::string::npos);
}

TEST(DistLauncher, SeveralMachinesFromAHostfile) {
  testing::TempDir tmp;
  testing::write_text(tmp / "hosts", "# nodes\n10.0.0.1 slots=2\n10.0.0.2 slots=2\n");
  const Environment env = {{"NPROC_PER_NODE", "2"},
                           {"NNODES", "2"},
                           {"NODE_RANK", "0"},
                           {"MASTER_ADDR", "10.0.0.1"},
                           {"MASTER_PORT", "29500"},
                           {"SWIFTLET_HOSTFILE", tmp / "hosts"},
                           {"SWIFTLET_NETWORK", "10.0.0.0/24"},
                           {"LOG_LEVEL", "INFO"}};
  const auto p = plan(env);
  ASSERT_TRUE(p);
  EXPECT_TRUE(has_seq(p->argv, {"-np", "4", "--hostfile", tmp / "hosts", "--npernode", "2"}));
  EXPECT_TRUE(has_seq(p->argv, {"--mca", "btl_tcp_if_include", "10.0.0.0/24"}));
  EXPECT_TRUE(has_seq(p->argv, {"-x", "LOG_LEVEL"}));
  EXPECT_TRUE(has_seq(p->argv, {"-x", "SWIFTLET_LAUNCHER_PID"}));
  ASSERT_FALSE(p->notes.empty());
  EXPECT_NE(p->notes.front().find("MASTER_PORT=29500 is not used"), std::string::npos);
  Environment wrong = env;
  wrong["MASTER_ADDR"] = "10.0.0.9";
  EXPECT_NE(error_of(wrong).find("MASTER_ADDR=10.0.0.9 is not the first host"), std::string::npos);
}

}  // namespace
}  // namespace swiftlet::dist
