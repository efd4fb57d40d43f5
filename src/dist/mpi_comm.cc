// The Open MPI backend. One comm thread per process owns MPI (MPI_THREAD_SERIALIZED, as PyTorch's
// ProcessGroupMPI): callers enqueue collectives; the thread starts them in order with the
// nonblocking calls and polls them with MPI_Test and short sleeps. Open MPI 4.1 has no
// asynchronous progress ("OMPI progress: no"), so polling is what lets a gradient bucket's
// all-reduce advance while backward computes the next one; a thread blocked inside MPI would
// instead spin a core at 100 %.
#include <mpi.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "core/log.h"
#include "dist/comm.h"
#include "dist/faults.h"

namespace swiftlet::dist {

namespace {

Comm* g_active = nullptr;

MPI_Datatype mpi_type(ElemType t) {
  switch (t) {
    case ElemType::kF32: return MPI_FLOAT;
    case ElemType::kF64: return MPI_DOUBLE;
    case ElemType::kI32: return MPI_INT32_T;
    case ElemType::kI64: return MPI_INT64_T;
    case ElemType::kU8: return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

std::string mib(size_t bytes) { return fmt::format("{:.2f} MiB", double(bytes) / (1 << 20)); }

enum class OpKind { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kBarrier };
const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kReduceScatter: return "reduce_scatter";
    case OpKind::kAllGather: return "all_gather";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kBarrier: return "barrier";
  }
  return "?";
}

// One collective from enqueue to completion; shared by the caller's Work and the comm thread.
struct Op {
  OpKind kind;
  CommBuffer in, out;
  ReduceOp reduce = ReduceOp::kSum;
  int root = 0;
  uint64_t seq = 0;
  std::string what;
  MPI_Request request = MPI_REQUEST_NULL;
  bool done = false;  // guarded by MpiComm::mu_
};

class MpiComm;

class MpiWork : public Work {
 public:
  MpiWork(MpiComm& comm, std::shared_ptr<Op> op) : comm_(comm), op_(std::move(op)) {}
  bool test() override;
  bool wait(std::chrono::milliseconds timeout) override;
  std::string describe() const override {
    return fmt::format("{} #{} ({}, {})", op_name(op_->kind), op_->seq, op_->what,
                       mib(std::max(op_->in.bytes(), op_->out.bytes())));
  }

 private:
  MpiComm& comm_;
  std::shared_ptr<Op> op_;
};

class MpiComm : public Comm {
 public:
  explicit MpiComm(std::chrono::milliseconds timeout) {
    set_timeout(timeout);
    thread_ = std::thread([this] { run(); });
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return started_; });
    if (!init_error_.empty()) {
      lk.unlock();
      thread_.join();
      throw Error(init_error_, "check the Open MPI installation (mpirun --version)");
    }
    install_rank_signal_handlers(info_);
    set_log_rank(info_.rank, info_.size);
    g_active = this;
  }

  ~MpiComm() override {
    g_active = nullptr;
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  const RankInfo& info() const override { return info_; }
  std::string backend() const override { return "mpi"; }

  std::unique_ptr<Work> all_reduce(const CommBuffer& inout, ReduceOp op,
                                   const std::string& what) override {
    return submit(OpKind::kAllReduce, inout, inout, op, 0, what);
  }
  std::unique_ptr<Work> reduce_scatter(const CommBuffer& in, const CommBuffer& out, ReduceOp op,
                                       const std::string& what) override {
    SWIFTLET_CHECK(in.type == out.type && in.count == out.count * size_t(size()),
                   "reduce_scatter {}: {} elements in, {} out, {} ranks", what, in.count, out.count,
                   size());
    return submit(OpKind::kReduceScatter, in, out, op, 0, what);
  }
  std::unique_ptr<Work> all_gather(const CommBuffer& in, const CommBuffer& out,
                                   const std::string& what) override {
    SWIFTLET_CHECK(in.type == out.type && out.count == in.count * size_t(size()),
                   "all_gather {}: {} elements in, {} out, {} ranks", what, in.count, out.count,
                   size());
    return submit(OpKind::kAllGather, in, out, ReduceOp::kSum, 0, what);
  }
  std::unique_ptr<Work> broadcast(const CommBuffer& inout, int root,
                                  const std::string& what) override {
    return submit(OpKind::kBroadcast, inout, inout, ReduceOp::kSum, root, what);
  }
  std::unique_ptr<Work> barrier(const std::string& what) override {
    return submit(OpKind::kBarrier, {}, {}, ReduceOp::kSum, 0, what);
  }

  void abort(int exit_code, const std::string& why) override {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    std::fflush(stderr);
    // MPI_Abort ends every rank of the job in well under a second (measured 0.06 s), where an exit
    // would leave them to mpirun's one-second SIGTERM and the next second's SIGKILL.
    std::lock_guard lk(mpi_mu_);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

  void set_activity(const std::string& activity) override { record_activity(activity); }

  // The caller's side of a Work.
  bool op_done(const Op& op) {
    std::lock_guard lk(mu_);
    return op.done;
  }
  bool wait_op(const Op& op, std::chrono::milliseconds timeout) {
    // In slices: ms-swift's default --ddp_timeout (18,000,000 s) overflows a steady_clock deadline.
    std::unique_lock lk(mu_);
    for (auto left = timeout; left.count() > 0;) {
      const auto slice = std::min<std::chrono::milliseconds>(left, std::chrono::seconds(1));
      if (done_cv_.wait_for(lk, slice, [&] { return op.done; })) return true;
      left -= slice;
    }
    return op.done;
  }

 private:
  std::unique_ptr<Work> submit(OpKind kind, const CommBuffer& in, const CommBuffer& out,
                               ReduceOp reduce, int root, const std::string& what) {
    if (in.device || out.device)
      throw Error("the MPI backend reaches host memory only (Open MPI here is not device-aware)");
    auto op = std::make_shared<Op>();
    op->kind = kind;
    op->in = in;
    op->out = out;
    op->reduce = reduce;
    op->root = root;
    op->what = what;
    {
      std::lock_guard lk(mu_);
      op->seq = ++seq_;
      queue_.push_back(op);
    }
    cv_.notify_all();
    return std::make_unique<MpiWork>(*this, op);
  }

  void fail(const std::shared_ptr<Op>& op, int rc) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, text, &len);
    abort(1, fmt::format("[rank {}/{}] {} #{} ({}) failed: {}", info_.rank, info_.size,
                         op_name(op->kind), op->seq, op->what, text));
  }

  void start(const std::shared_ptr<Op>& op) {
    std::lock_guard lk(mpi_mu_);
    const int n = int(op->out.count);
    int rc = MPI_SUCCESS;
    switch (op->kind) {
      case OpKind::kAllReduce:
        rc = MPI_Iallreduce(MPI_IN_PLACE, op->out.data, n, mpi_type(op->out.type),
                            mpi_op(op->reduce), MPI_COMM_WORLD, &op->request);
        break;
      case OpKind::kReduceScatter:
        rc = MPI_Ireduce_scatter_block(op->in.data, op->out.data, n, mpi_type(op->out.type),
                                       mpi_op(op->reduce), MPI_COMM_WORLD, &op->request);
        break;
      case OpKind::kAllGather: {
        // `in` may already be this rank's block of `out` (a shard gathered into its bucket):
        // MPI forbids aliased buffers and spells that case MPI_IN_PLACE.
        const char* my_block =
            static_cast<const char*>(op->out.data) + op->in.bytes() * size_t(info_.rank);
        const bool in_place = static_cast<const char*>(op->in.data) == my_block;
        rc = MPI_Iallgather(in_place ? MPI_IN_PLACE : op->in.data, int(op->in.count),
                            mpi_type(op->in.type), op->out.data, int(op->in.count),
                            mpi_type(op->out.type), MPI_COMM_WORLD, &op->request);
        break;
      }
      case OpKind::kBroadcast:
        rc = MPI_Ibcast(op->out.data, n, mpi_type(op->out.type), op->root, MPI_COMM_WORLD,
                        &op->request);
        break;
      case OpKind::kBarrier:
        rc = MPI_Ibarrier(MPI_COMM_WORLD, &op->request);
        break;
    }
    if (rc != MPI_SUCCESS) fail(op, rc);
  }

  // Tests every collective in flight (all of them progress while tested); true when one
  // completed.
  bool poll(std::vector<std::shared_ptr<Op>>& active) {
    bool any = false;
    for (auto& op : active) {
      int flag = 0, rc;
      {
        std::lock_guard lk(mpi_mu_);
        rc = MPI_Test(&op->request, &flag, MPI_STATUS_IGNORE);
      }
      if (rc != MPI_SUCCESS) fail(op, rc);
      if (flag) {
        std::lock_guard lk(mu_);
        op->done = true;
        any = true;
      }
    }
    if (any) {
      std::erase_if(active, [](const std::shared_ptr<Op>& op) { return op->request == MPI_REQUEST_NULL; });
      done_cv_.notify_all();
    }
    return any;
  }

  void run() {
    int provided = 0;
    int rc;
    {
      std::lock_guard lk(mpi_mu_);
      rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    }
    {
      std::lock_guard lk(mu_);
      if (rc != MPI_SUCCESS || provided < MPI_THREAD_SERIALIZED) {
        init_error_ = fmt::format("MPI_Init_thread failed (rc {}, thread level {} of {} needed)",
                                  rc, provided, int(MPI_THREAD_SERIALIZED));
      } else {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        info_ = rank_info_from_env();
        MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &info_.size);
        info_.node_rank = info_.rank / std::max(1, info_.local_size);
      }
      started_ = true;
    }
    cv_.notify_all();
    if (!init_error_.empty()) return;

    std::vector<std::shared_ptr<Op>> active;
    for (;;) {
      std::deque<std::shared_ptr<Op>> fresh;
      {
        std::unique_lock lk(mu_);
        if (active.empty())
          cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty() && active.empty()) break;
        fresh.swap(queue_);
      }
      for (auto& op : fresh) {
        start(op);
        active.push_back(op);
      }
      if (!poll(active) && !active.empty()) ::usleep(150);
    }
    std::lock_guard lk(mpi_mu_);
    MPI_Finalize();
  }

  RankInfo info_;
  std::thread thread_;
  std::mutex mu_;  // queue, flags, Op::done
  std::condition_variable cv_, done_cv_;
  std::deque<std::shared_ptr<Op>> queue_;
  uint64_t seq_ = 0;
  bool started_ = false, stop_ = false;
  std::string init_error_;
  std::recursive_mutex mpi_mu_;  // every MPI call (the comm thread's, and abort's)
};

bool MpiWork::test() { return comm_.op_done(*op_); }
bool MpiWork::wait(std::chrono::milliseconds timeout) { return comm_.wait_op(*op_, timeout); }

}  // namespace

std::unique_ptr<Comm> make_comm(const std::string& backend, std::chrono::milliseconds timeout) {
  if (!backend.empty() && backend != "auto" && backend != "mpi")
    throw Error(fmt::format("--ddp_backend {} is not available in this build", backend),
                "use mpi (or auto); nccl and hccl come with the CUDA and Ascend devices");
  if (!launched_by_mpirun()) {
    auto local = std::make_unique<LocalComm>();
    local->set_timeout(timeout);
    return local;
  }
  return std::make_unique<MpiComm>(timeout);
}

namespace {
std::unique_ptr<Comm>& job_comm_slot() {
  static std::unique_ptr<Comm> comm;
  return comm;
}
}  // namespace

Comm& job_comm(const std::string& backend, std::chrono::milliseconds timeout) {
  auto& slot = job_comm_slot();
  if (!slot) slot = make_comm(backend, timeout);
  return *slot;
}

void end_job() { job_comm_slot().reset(); }

Comm* active_comm() { return g_active; }

}  // namespace swiftlet::dist
