#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace swiftlet::serve {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(const std::string& name) const {
  std::string out;
  int64_t acc = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    acc += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], acc);
  }
  acc += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, acc, name, sum_,
                     name, count_);
  return out;
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
             10.0, 20.0, 40.0, 80.0}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
             1.0, 2.5, 5.0, 10.0}),
      e2e_({0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
            120.0, 300.0}) {}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt;
  generation_tokens_ += generated;
}

void Metrics::observe_first_token(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}

void Metrics::observe_token_interval(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  tpot_.observe(s);
}

void Metrics::observe_request(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  e2e_.observe(s);
}

std::pair<int64_t, int64_t> Metrics::token_totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {prompt_tokens_, generation_tokens_};
}

std::string Metrics::render(const EngineStats& engine) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out +=
      "# HELP swiftlet_requests_total HTTP requests answered, by endpoint and status.\n"
      "# TYPE swiftlet_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += fmt::format("swiftlet_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, n);
  out += fmt::format(
      "# HELP swiftlet_prompt_tokens_total Prompt tokens of finished generations.\n"
      "# TYPE swiftlet_prompt_tokens_total counter\nswiftlet_prompt_tokens_total {}\n"
      "# HELP swiftlet_generation_tokens_total Tokens generated.\n"
      "# TYPE swiftlet_generation_tokens_total counter\nswiftlet_generation_tokens_total {}\n",
      prompt_tokens_, generation_tokens_);
  out += fmt::format(
      "# HELP swiftlet_requests_running Generations in the running batch.\n"
      "# TYPE swiftlet_requests_running gauge\nswiftlet_requests_running {}\n"
      "# HELP swiftlet_requests_waiting Generations waiting in the queue.\n"
      "# TYPE swiftlet_requests_waiting gauge\nswiftlet_requests_waiting {}\n"
      "# HELP swiftlet_kv_cache_used_bytes KV cache memory held by running generations.\n"
      "# TYPE swiftlet_kv_cache_used_bytes gauge\nswiftlet_kv_cache_used_bytes {}\n"
      "# HELP swiftlet_kv_cache_budget_bytes KV cache memory budget (0: unlimited).\n"
      "# TYPE swiftlet_kv_cache_budget_bytes gauge\nswiftlet_kv_cache_budget_bytes {}\n"
      "# HELP swiftlet_preemptions_total Generations preempted to stay within the KV cache "
      "budget.\n"
      "# TYPE swiftlet_preemptions_total counter\nswiftlet_preemptions_total {}\n"
      "# HELP swiftlet_engine_steps_total Batched forward steps run.\n"
      "# TYPE swiftlet_engine_steps_total counter\nswiftlet_engine_steps_total {}\n",
      engine.running, engine.waiting, engine.kv_cache_used_bytes, engine.kv_cache_budget_bytes,
      engine.preemptions, engine.steps);
  out +=
      "# HELP swiftlet_time_to_first_token_seconds Time from request arrival to its first token.\n"
      "# TYPE swiftlet_time_to_first_token_seconds histogram\n";
  out += ttft_.render("swiftlet_time_to_first_token_seconds");
  out +=
      "# HELP swiftlet_time_per_output_token_seconds Time between consecutive tokens of a "
      "generation.\n"
      "# TYPE swiftlet_time_per_output_token_seconds histogram\n";
  out += tpot_.render("swiftlet_time_per_output_token_seconds");
  out +=
      "# HELP swiftlet_request_latency_seconds Time from request arrival to its last token.\n"
      "# TYPE swiftlet_request_latency_seconds histogram\n";
  out += e2e_.render("swiftlet_request_latency_seconds");
  return out;
}

}  // namespace swiftlet::serve
