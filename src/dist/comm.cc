#include "dist/comm.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/log.h"
#include "dist/faults.h"

namespace swiftlet::dist {

namespace {

class DoneWork : public Work {
 public:
  explicit DoneWork(std::string what) : what_(std::move(what)) {}
  bool test() override { return true; }
  bool wait(std::chrono::milliseconds) override { return true; }
  std::string describe() const override { return what_; }

 private:
  std::string what_;
};

int env_int(const char* name, int fallback) {
  const char* s = std::getenv(name);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return end && *end == '\0' ? int(v) : fallback;
}

}  // namespace

size_t elem_size(ElemType t) {
  switch (t) {
    case ElemType::kF32: return 4;
    case ElemType::kF64: return 8;
    case ElemType::kI32: return 4;
    case ElemType::kI64: return 8;
    case ElemType::kU8: return 1;
  }
  return 0;
}

CommBuffer buffer_of(const Tensor& t) {
  SWIFTLET_CHECK(t.defined(), "collective on an undefined tensor");
  if (!t.host_accessible())
    throw Error(fmt::format("the MPI backend reaches host memory only, and this tensor is {}",
                            t.describe()),
                "train on a host-memory device (--device cpu) under MPI");
  CommBuffer b;
  b.data = t.raw_ptr();
  b.count = size_t(t.numel());
  switch (t.dtype()) {
    case DType::kF32: b.type = ElemType::kF32; break;
    case DType::kI32: b.type = ElemType::kI32; break;
    case DType::kI64: b.type = ElemType::kI64; break;
    case DType::kU8: b.type = ElemType::kU8; break;
    default:
      SWIFTLET_CHECK(false, "collectives take f32/i32/i64/u8 tensors, not {}", t.describe());
  }
  return b;
}

CommBuffer bytes_of(const Tensor& t) {
  if (t.defined() && t.dtype() != DType::kF32 && t.dtype() != DType::kI32 &&
      t.dtype() != DType::kI64 && t.dtype() != DType::kU8) {
    SWIFTLET_CHECK(t.host_accessible(), "collective on {}", t.describe());
    CommBuffer b;
    b.data = t.raw_ptr();
    b.count = t.nbytes();
    b.type = ElemType::kU8;
    return b;
  }
  CommBuffer b = buffer_of(t);
  b.count = b.bytes();
  b.type = ElemType::kU8;
  return b;
}

std::unique_ptr<Work> LocalComm::all_reduce(const CommBuffer&, ReduceOp, const std::string& what) {
  return std::make_unique<DoneWork>(what);
}

std::unique_ptr<Work> LocalComm::reduce_scatter(const CommBuffer& in, const CommBuffer& out, ReduceOp,
                                                const std::string& what) {
  SWIFTLET_CHECK(in.bytes() == out.bytes(), "reduce_scatter {}: in {} bytes, out {}", what,
                 in.bytes(), out.bytes());
  if (in.data != out.data) std::memmove(out.data, in.data, in.bytes());
  return std::make_unique<DoneWork>(what);
}

std::unique_ptr<Work> LocalComm::all_gather(const CommBuffer& in, const CommBuffer& out,
                                            const std::string& what) {
  SWIFTLET_CHECK(in.bytes() == out.bytes(), "all_gather {}: in {} bytes, out {}", what,
                 in.bytes(), out.bytes());
  if (in.data != out.data) std::memmove(out.data, in.data, in.bytes());
  return std::make_unique<DoneWork>(what);
}

std::unique_ptr<Work> LocalComm::broadcast(const CommBuffer&, int, const std::string& what) {
  return std::make_unique<DoneWork>(what);
}

std::unique_ptr<Work> LocalComm::barrier(const std::string& what) {
  return std::make_unique<DoneWork>(what);
}

void LocalComm::abort(int exit_code, const std::string& why) {
  std::fprintf(stderr, "error: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(exit_code);
}

void wait_or_abort(Comm& comm, Work& work) {
  if (work.test()) return;
  if (work.wait(comm.timeout())) return;
  const double seconds = double(comm.timeout().count()) / 1000.0;
  report_hang(comm, fmt::format("{} did not complete within --ddp_timeout {} s: another rank is "
                                "stuck, or died without the launcher noticing",
                                work.describe(), seconds));
}

void all_reduce(Comm& comm, const CommBuffer& inout, ReduceOp op, const std::string& what) {
  auto w = comm.all_reduce(inout, op, what);
  wait_or_abort(comm, *w);
}

void broadcast(Comm& comm, const CommBuffer& inout, int root, const std::string& what) {
  auto w = comm.broadcast(inout, root, what);
  wait_or_abort(comm, *w);
}

std::string broadcast_string(Comm& comm, const std::string& s, int root) {
  if (comm.size() == 1) return s;
  int64_t n = int64_t(s.size());
  broadcast(comm, {&n, 1, ElemType::kI64}, root, "string length");
  std::string out = comm.rank() == root ? s : std::string(size_t(n), '\0');
  if (n > 0) broadcast(comm, {out.data(), size_t(n), ElemType::kU8}, root, "string");
  return out;
}

std::vector<std::string> all_gather_strings(Comm& comm, const std::string& s) {
  if (comm.size() == 1) return {s};
  const size_t n = size_t(comm.size());
  int64_t len = int64_t(s.size());
  std::vector<int64_t> lens(n);
  auto w = comm.all_gather({&len, 1, ElemType::kI64}, {lens.data(), n, ElemType::kI64}, "lengths");
  wait_or_abort(comm, *w);
  const size_t width = size_t(std::max<int64_t>(1, *std::max_element(lens.begin(), lens.end())));
  std::string mine = s;
  mine.resize(width, '\0');
  std::string all(width * n, '\0');
  w = comm.all_gather({mine.data(), width, ElemType::kU8}, {all.data(), all.size(), ElemType::kU8},
                      "strings");
  wait_or_abort(comm, *w);
  std::vector<std::string> out;
  for (size_t r = 0; r < n; ++r) out.push_back(all.substr(r * width, size_t(lens[r])));
  return out;
}

std::vector<double> all_reduce_doubles(Comm& comm, std::vector<double> values, ReduceOp op,
                                       const std::string& what) {
  if (comm.size() == 1 || values.empty()) return values;
  all_reduce(comm, {values.data(), values.size(), ElemType::kF64}, op, what);
  return values;
}

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr;
}

RankInfo rank_info_from_env() {
  RankInfo r;
  r.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
  r.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
  r.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  r.local_size = std::max(1, env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1));
  r.node_rank = r.rank / r.local_size;
  return r;
}

}  // namespace swiftlet::dist
