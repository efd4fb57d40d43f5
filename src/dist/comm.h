#pragma once
// Collective communication between the ranks of one training job, shaped like PyTorch's c10d
// ProcessGroup: a Comm per group of ranks, every collective asynchronous and returning a Work to
// wait on with a deadline. Backends: LocalComm (one process, nothing to exchange) and MpiComm
// (Open MPI, dist/mpi_comm.cc); a device backend (NCCL, HCCL) is one more Comm whose Work waits
// on a stream event, and nothing above this header changes.
//
// A collective reads and writes its buffers until its Work completes. Every rank must issue the
// same collectives in the same order.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace swiftlet::dist {

enum class ReduceOp { kSum, kMax, kMin };
enum class ElemType { kF32, kF64, kI32, kI64, kU8 };
size_t elem_size(ElemType t);

// Memory a collective works on. `device` is null for host memory; a backend that cannot reach a
// device's memory says so (MPI here is not CUDA-aware).
struct CommBuffer {
  void* data = nullptr;
  size_t count = 0;  // elements
  ElemType type = ElemType::kF32;
  const void* device = nullptr;
  size_t bytes() const { return count * elem_size(type); }
};
// A tensor's memory (f32, i32, i64 or u8); Error when the tensor is not host-accessible.
CommBuffer buffer_of(const Tensor& t);
// A tensor's memory of any dtype as bytes (u8), for collectives that only move data (all-gather,
// broadcast): a bf16 weight is gathered as it is, never reduced.
CommBuffer bytes_of(const Tensor& t);

// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  // True once the collective completed (never blocks).
  virtual bool test() = 0;
  // Blocks until completion or until `timeout` passed; false on timeout.
  virtual bool wait(std::chrono::milliseconds timeout) = 0;
  // "all_reduce #12 (bucket 3, 4.00 MiB)": for messages about a collective that did not finish.
  virtual std::string describe() const = 0;
};

// Where this process sits in the job, from the launcher's environment (OMPI_COMM_WORLD_*).
struct RankInfo {
  int rank = 0, size = 1;              // in the whole job
  int local_rank = 0, local_size = 1;  // on this machine
  int node_rank = 0;                   // rank / local_size (not OMPI_COMM_WORLD_NODE_RANK)
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual const RankInfo& info() const = 0;
  int rank() const { return info().rank; }
  int size() const { return info().size; }
  bool is_main() const { return info().rank == 0; }
  // "mpi" | "local"
  virtual std::string backend() const = 0;

  // `what` names the collective in timeout and failure messages ("bucket 3").
  // In place: every rank's buffer becomes the reduction of all ranks' buffers.
  virtual std::unique_ptr<Work> all_reduce(const CommBuffer& inout, ReduceOp op,
                                           const std::string& what) = 0;
  // in: size() equal blocks; out (one block): the reduction of every rank's block rank().
  virtual std::unique_ptr<Work> reduce_scatter(const CommBuffer& in, const CommBuffer& out, ReduceOp op,
                                               const std::string& what) = 0;
  // in: one block; out: size() blocks, block r from rank r. `in` may be block rank() of `out`.
  virtual std::unique_ptr<Work> all_gather(const CommBuffer& in, const CommBuffer& out,
                                           const std::string& what) = 0;
  // In place: every rank's buffer becomes root's.
  virtual std::unique_ptr<Work> broadcast(const CommBuffer& inout, int root,
                                          const std::string& what) = 0;
  virtual std::unique_ptr<Work> barrier(const std::string& what) = 0;

  // Ends the whole job now: logs `why` with this rank's number and makes every rank exit with
  // `exit_code` (MPI_Abort; a device backend aborts its communicator first).
  [[noreturn]] virtual void abort(int exit_code, const std::string& why) = 0;

  // How long a collective may take before the job is declared hung (--ddp_timeout).
  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

  // What the calling rank is doing ("step 3: backward of micro-batch 2"), named in the messages of
  // a failure or a hang.
  virtual void set_activity(const std::string& activity) = 0;

 private:
  std::chrono::milliseconds timeout_{std::chrono::hours(24)};
};

// Waits for `work` within comm.timeout(); on expiry prints this rank's stacks, asks every rank for
// theirs, and aborts the job with exit code 124 and a message naming the collective.
void wait_or_abort(Comm& comm, Work& work);
// Blocking helpers over the async calls.
void all_reduce(Comm& comm, const CommBuffer& inout, ReduceOp op, const std::string& what);
void broadcast(Comm& comm, const CommBuffer& inout, int root, const std::string& what);
// Root's string on every rank.
std::string broadcast_string(Comm& comm, const std::string& s, int root);
// Every rank's string, in rank order.
std::vector<std::string> all_gather_strings(Comm& comm, const std::string& s);
std::vector<double> all_reduce_doubles(Comm& comm, std::vector<double> values, ReduceOp op,
                                       const std::string& what);

// One process: collectives complete at once with the input as the result.
class LocalComm : public Comm {
 public:
  const RankInfo& info() const override { return info_; }
  std::string backend() const override { return "local"; }
  std::unique_ptr<Work> all_reduce(const CommBuffer& inout, ReduceOp op,
                                   const std::string& what) override;
  std::unique_ptr<Work> reduce_scatter(const CommBuffer& in, const CommBuffer& out, ReduceOp op,
                                       const std::string& what) override;
  std::unique_ptr<Work> all_gather(const CommBuffer& in, const CommBuffer& out,
                                   const std::string& what) override;
  std::unique_ptr<Work> broadcast(const CommBuffer& inout, int root, const std::string& what) override;
  std::unique_ptr<Work> barrier(const std::string& what) override;
  [[noreturn]] void abort(int exit_code, const std::string& why) override;
  void set_activity(const std::string&) override {}

 private:
  RankInfo info_;
};

// The launcher's rank variables, or none (a plain single process).
bool launched_by_mpirun();
RankInfo rank_info_from_env();

// The job's communicator: MpiComm when this process was started by mpirun, else LocalComm.
// `backend` is --ddp_backend: "" or "auto" (mpi under mpirun), "mpi"; others are refused with an
// Error naming what exists.
std::unique_ptr<Comm> make_comm(const std::string& backend, std::chrono::milliseconds timeout);

// The job's communicator for a command: made by the first call (make_comm), alive until
// end_job(), so that an error escaping the command still finds it. Later calls return the same.
Comm& job_comm(const std::string& backend, std::chrono::milliseconds timeout);
// After a command returned: MPI_Finalize (a no-op without a job communicator).
void end_job();

// The MPI communicator of a distributed run, for the last-resort error path of main(): an error
// that escapes the command on one rank must bring the whole job down at once (MPI_Abort), not
// leave the other ranks waiting in a collective. Null in a single process.
Comm* active_comm();

}  // namespace swiftlet::dist
