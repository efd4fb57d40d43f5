#pragma once
// One fork-join pool for the process, passed explicitly to whoever computes (never created inside
// an op). parallel_for splits [0, n) into one contiguous chunk per thread; the caller is thread 0.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace swiftlet {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return num_threads_; }

  // fn(begin, end, thread_index) over [0, n) split in size() near-equal chunks. Blocks until done.
  // Calls from inside a task run serially on the calling thread (no nested parallelism).
  // An exception thrown by fn on any thread reaches the caller as that exception, after every
  // chunk has ended (the other chunks still run); when several chunks throw, the first one caught
  // wins. The pool stays usable.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  // Threads to use when the user gave none: OMP_NUM_THREADS, else the cores this process may use.
  static int default_threads();

 private:
  void worker(int index);
  // Runs one chunk; an exception is kept in error_ (the first one only) instead of escaping.
  void run_chunk(const std::function<void(int64_t, int64_t, int)>& fn, int64_t b, int64_t e,
                 int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t, int)>* task_ = nullptr;
  int64_t task_n_ = 0;
  // Workers spin briefly on generation_ before sleeping, and the caller on pending_: decode
  // issues hundreds of short parallel_for calls a token, where a sleep/wake per call costs more
  // than the work.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  std::atomic<bool> busy_{false};
  // The first exception of the current call. failed_ elects its writer; error_ is read by the
  // caller only after pending_ reaches 0, which orders it after the worker's write.
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

}  // namespace swiftlet
