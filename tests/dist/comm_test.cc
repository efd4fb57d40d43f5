// The communicator: LocalComm in this process, and MpiComm in 2 and 3 ranks started by mpirun on
// this test binary itself (the DistRankSide tests below run only as such ranks; each checks the
// results of every collective against values computed from the rank numbers, and a failed check
// fails the rank, which fails mpirun's exit code).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "dist/comm.h"
#include "dist/faults.h"
#include "dist/dist_fixture.h"
#include "io/test_util.h"

namespace swiftlet::dist {
namespace {

using namespace std::chrono_literals;
using testing::mpirun;
using testing::ProcessRun;
using testing::run_command;

TEST(DistComm, LocalCommIsOneRankAndCompletesAtOnce) {
  LocalComm c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_TRUE(c.is_main());
  std::vector<float> v = {1, 2, 3};
  auto w = c.all_reduce({v.data(), 3, ElemType::kF32}, ReduceOp::kSum, "test");
  EXPECT_TRUE(w->test());
  EXPECT_EQ(v, (std::vector<float>{1, 2, 3}));
  std::vector<float> out(3);
  c.reduce_scatter({v.data(), 3, ElemType::kF32}, {out.data(), 3, ElemType::kF32}, ReduceOp::kSum,
                   "rs");
  EXPECT_EQ(out, v);
  std::vector<float> gathered(3);
  c.all_gather({v.data(), 3, ElemType::kF32}, {gathered.data(), 3, ElemType::kF32}, "ag");
  EXPECT_EQ(gathered, v);
  EXPECT_EQ(broadcast_string(c, "run folder", 0), "run folder");
  EXPECT_EQ(all_reduce_doubles(c, {1.5, 2.5}, ReduceOp::kMax, "d"), (std::vector<double>{1.5, 2.5}));
}

TEST(DistComm, NoLauncherMeansLocalAndUnknownBackendsAreRefused) {
  testing::ScopedEnv size("OMPI_COMM_WORLD_SIZE", std::nullopt);
  testing::ScopedEnv pmix("PMIX_RANK", std::nullopt);
  EXPECT_EQ(make_comm("auto", 5s)->backend(), "local");
  EXPECT_EQ(make_comm("", 5s)->timeout(), 5000ms);
  try {
    make_comm("nccl", 5s);
    FAIL() << "nccl accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--ddp_backend nccl"), std::string::npos) << e.what();
  }
}

TEST(DistComm, BufferOfTakesHostTensors) {
  Tensor t = Tensor::host_zeros({4, 2}, DType::kF32);
  const CommBuffer b = buffer_of(t);
  EXPECT_EQ(b.count, 8u);
  EXPECT_EQ(b.bytes(), 32u);
  EXPECT_EQ(b.data, t.raw_ptr());
}

TEST(DistComm, FaultSpecIsChecked) {
  LocalComm c;
  {
    testing::ScopedEnv f("SWIFTLET_FAULT", "1:x:hang");
    EXPECT_THROW(inject_fault(c, 1), Error);
  }
  {
    testing::ScopedEnv f("SWIFTLET_FAULT", "0:2:error");
    EXPECT_NO_THROW(inject_fault(c, 1));  // another step
    EXPECT_THROW(inject_fault(c, 2), Error);
  }
  testing::ScopedEnv f("SWIFTLET_FAULT", "1:2:exit");
  EXPECT_NO_THROW(inject_fault(c, 2));  // another rank
}

// Every collective between 2 and 3 processes, through mpirun.
TEST(DistComm, MpiCollectivesBetweenRanks) {
  for (int np : {2, 3}) {
    const ProcessRun r = run_command(mpirun(np, "DistRankSide.Collectives"));
    EXPECT_EQ(r.status, 0) << r.out;
    size_t passed = 0;
    for (size_t at = r.out.find("[  PASSED  ] 1 test"); at != std::string::npos;
         at = r.out.find("[  PASSED  ] 1 test", at + 1))
      ++passed;
    EXPECT_EQ(passed, size_t(np)) << r.out;
    EXPECT_EQ(r.out.find("SKIPPED"), std::string::npos) << r.out;
  }
}

// A rank that never joins a collective: the others give up after the deadline with exit code 124,
// a message naming the collective, and their stacks.
TEST(DistComm, MpiDeadlineAbortsTheJob) {
  const ProcessRun r = run_command(mpirun(2, "DistRankSide.Deadline"));
  EXPECT_EQ(r.status, 124) << r.out;
  EXPECT_NE(r.out.find("all_reduce #1 (late, 0.00 MiB) did not complete within --ddp_timeout 1 s"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("[rank 0/2] stack of the main thread"), std::string::npos) << r.out;
  EXPECT_LT(r.seconds, 20) << r.out;
}

TEST(DistRankSide, Collectives) {
  if (!launched_by_mpirun()) GTEST_SKIP() << "runs as a rank of DistComm.MpiCollectivesBetweenRanks";
  auto comm = make_comm("mpi", 30s);
  const int r = comm->rank(), n = comm->size();
  ASSERT_EQ(comm->backend(), "mpi");
  ASSERT_GE(n, 2);
  // all_reduce sum / max / min, several in flight at once.
  std::vector<float> a(1000), b(7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(r + 1) * float(i);
  for (auto& x : b) x = float(r);
  std::vector<int64_t> m = {r, -r};
  auto wa = comm->all_reduce({a.data(), a.size(), ElemType::kF32}, ReduceOp::kSum, "a");
  auto wb = comm->all_reduce({b.data(), b.size(), ElemType::kF32}, ReduceOp::kMax, "b");
  auto wm = comm->all_reduce({m.data(), 2, ElemType::kI64}, ReduceOp::kMin, "m");
  wait_or_abort(*comm, *wm);
  wait_or_abort(*comm, *wa);
  wait_or_abort(*comm, *wb);
  const float ranks_sum = float(n * (n + 1) / 2);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], ranks_sum * float(i));
  for (float x : b) ASSERT_EQ(x, float(n - 1));
  EXPECT_EQ(m[0], 0);
  EXPECT_EQ(m[1], -(n - 1));
  // reduce_scatter: block k of every rank summed lands on rank k.
  const size_t blk = 5;
  std::vector<float> in(blk * size_t(n)), out(blk);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i) + float(100 * r);
  auto ws = comm->reduce_scatter({in.data(), in.size(), ElemType::kF32},
                                 {out.data(), blk, ElemType::kF32}, ReduceOp::kSum, "rs");
  wait_or_abort(*comm, *ws);
  for (size_t i = 0; i < blk; ++i)
    ASSERT_EQ(out[i], float(n) * float(size_t(r) * blk + i) + float(100 * n * (n - 1) / 2));
  // all_gather: block k from rank k.
  std::vector<int32_t> mine(3, r), all(3 * size_t(n), -1);
  auto wg = comm->all_gather({mine.data(), 3, ElemType::kI32}, {all.data(), all.size(), ElemType::kI32},
                             "ag");
  wait_or_abort(*comm, *wg);
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], int32_t(i / 3));
  // all_gather in place: each rank's block already sits at its place in the whole (a ZeRO shard
  // gathered into its bucket).
  std::vector<float> whole(4 * size_t(n), -1.0f);
  for (size_t i = 0; i < 4; ++i) whole[4 * size_t(r) + i] = float(10 * r) + float(i);
  auto wi = comm->all_gather({whole.data() + 4 * r, 4, ElemType::kF32},
                             {whole.data(), whole.size(), ElemType::kF32}, "in place");
  wait_or_abort(*comm, *wi);
  for (size_t i = 0; i < whole.size(); ++i) ASSERT_EQ(whole[i], float(10 * (i / 4)) + float(i % 4));
  // broadcast from the last rank, strings, doubles, barrier.
  EXPECT_EQ(broadcast_string(*comm, fmt::format("from {}", r), n - 1), fmt::format("from {}", n - 1));
  EXPECT_EQ(broadcast_string(*comm, r == 0 ? "" : "x", 0), "");
  const auto d = all_reduce_doubles(*comm, {0.25 * r, 1e-300}, ReduceOp::kSum, "d");
  EXPECT_DOUBLE_EQ(d[0], 0.25 * n * (n - 1) / 2);
  EXPECT_DOUBLE_EQ(d[1], 1e-300 * n);
  auto wbar = comm->barrier("end");
  wait_or_abort(*comm, *wbar);
}

TEST(DistRankSide, Deadline) {
  if (!launched_by_mpirun()) GTEST_SKIP() << "runs as a rank of DistComm.MpiDeadlineAbortsTheJob";
  auto comm = make_comm("mpi", 1s);
  comm->set_activity("waiting for a rank that sleeps");
  if (comm->rank() == 1) {
    std::this_thread::sleep_for(30s);  // never joins in time; mpirun ends it after the abort
    return;
  }
  float x = 1;
  auto w = comm->all_reduce({&x, 1, ElemType::kF32}, ReduceOp::kSum, "late");
  wait_or_abort(*comm, *w);
  ADD_FAILURE() << "the all_reduce completed without rank 1";
}

}  // namespace
}  // namespace swiftlet::dist
