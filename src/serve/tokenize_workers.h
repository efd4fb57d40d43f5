#pragma once
// Tokenizer calls of the HTTP handlers run on a few dedicated threads: the tokenizer keeps a 2 MB
// BPE cache per calling thread, which over a pool of a hundred or more HTTP workers would hold
// hundreds of MB that never return.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace swiftlet::serve {

class TokenizeWorkers {
 public:
  TokenizeWorkers(const Tokenizer& tokenizer, int threads) : tokenizer_(tokenizer) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~TokenizeWorkers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  TokenizeWorkers(const TokenizeWorkers&) = delete;
  TokenizeWorkers& operator=(const TokenizeWorkers&) = delete;

  // Tokenizer::encode on a worker thread; its exceptions reach the caller.
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) {
    std::packaged_task<std::vector<int32_t>()> task(
        [this, &text, add_special_tokens] { return tokenizer_.encode(text, add_special_tokens); });
    std::future<std::vector<int32_t>> result = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
    return result.get();
  }

 private:
  void run() {
    for (;;) {
      std::packaged_task<std::vector<int32_t>()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  const Tokenizer& tokenizer_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<std::vector<int32_t>()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace swiftlet::serve
