#pragma once
// Server internals shared by server.cc (lifecycle, routing, auth, errors, /v1/models, /health,
// /metrics) and completions.cc (the two generation endpoints).
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>

#include "core/rng.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/openai_api.h"
#include "serve/server.h"
#include "serve/tokenize_workers.h"

namespace swiftlet::serve {

using Clock = std::chrono::steady_clock;

struct Server::Impl {
  Impl(Runtime& rt, Engine& engine, ServerOptions opt);

  void handle_chat(const httplib::Request& req, httplib::Response& res);
  void handle_completion(const httplib::Request& req, httplib::Response& res);
  void handle_score(const ChatRequest& r, const ServedModel& m, std::shared_ptr<void> token,
                    httplib::Response& res);

  const ServedModel& find_model(const std::string& name) const;
  uint64_t random_seed();
  // The model's chat template, or `plain` with --use_chat_template false.
  const ChatTemplate& chat_template() const {
    return opt.use_chat_template ? rt.chat_template() : *plain_template;
  }
  // Held by a request from arrival until its response is fully written (counts in-flight work).
  std::shared_ptr<void> inflight_token();
  void engine_loop();

  Runtime& rt;
  Engine& engine;
  ServerOptions opt;
  Metrics metrics;
  HttpServer http;
  std::thread listen_thread, engine_thread;
  int port = 0;
  socket_t listen_socket = -1;  // set while binding (see start)
  std::atomic<bool> draining{false}, engine_stop{false}, listening{false}, stopped{false};
  std::atomic<int> inflight{0};
  std::mutex seed_mu;
  Rng seed_rng;
  std::optional<ChatTemplate> plain_template;
  TokenizeWorkers tokenize;
};

void send_error(httplib::Response& res, const ApiError& e);

}  // namespace swiftlet::serve
