#pragma once
// Server metrics in Prometheus' text format (GET /metrics): request counts by endpoint and status,
// prompt and generated tokens, running/waiting requests and KV cache use from the engine, and
// histograms of time to first token, time per output token and request latency.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "infer/engine.h"

namespace swiftlet::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // "name_bucket{le=...} n" lines (cumulative), then name_sum and name_count.
  std::string render(const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int64_t prompt, int64_t generated);
  void observe_first_token(double seconds);
  void observe_token_interval(double seconds);
  void observe_request(double seconds);
  // Totals so far, for the periodic throughput log: (prompt tokens, generated tokens).
  std::pair<int64_t, int64_t> token_totals() const;
  std::string render(const EngineStats& engine) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, tpot_, e2e_;
};

}  // namespace swiftlet::serve
