#pragma once
// One fork-join pool for the process, passed explicitly to whoever computes (never created inside
// an op). parallel_for splits [0, n) into one contiguous chunk per thread; the caller is thread 0.
#include <atomic>
#include <condition_variable>
#include <cstdint>
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
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  // Threads to use when the user gave none: OMP_NUM_THREADS, else the cores this process may use.
  static int default_threads();

 private:
  void worker(int index);

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
};

}  // namespace swiftlet
