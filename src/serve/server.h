#pragma once
// `swiftlet deploy`'s HTTP server: the OpenAI API (/v1/models, /v1/chat/completions,
// /v1/completions, streaming as server-sent events) plus /health and /metrics, over one Engine.
// One engine thread runs the batched steps; HTTP worker threads parse, tokenize, submit to the
// engine and stream tokens back as the engine produces them. A client that goes away cancels its
// generations at the next step.
//
//   Server server(runtime, engine, options);
//   server.start();                 // binds (the next free port when busy), prints the address
//   ...                             // until SIGTERM
//   server.shutdown();              // stop accepting, finish in-flight requests, stop threads
#include <memory>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "infer/infer_runner.h"
#include "infer/runtime.h"

namespace swiftlet::serve {

// A model id clients may send in `model`: the base model (adapter nullptr: the engine's base
// adapter) or a named LoRA adapter.
struct ServedModel {
  std::string name;
  const LoraAdapter* adapter = nullptr;
  std::string root;  // what it was loaded from (shown in /v1/models)
};

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;      // 0: any free port; busy: the next free one up to +100 (logged)
  std::string api_key;  // when set, every route but /health needs "Authorization: Bearer <key>"
  std::string owned_by = "swift";
  std::vector<ServedModel> models;  // the first is the base served name
  InferOptions defaults;  // the flags' generation defaults (sampling, max_new_tokens, stop, ...)
  // false (ms-swift --use_chat_template false, for base models): completion prompts are plain
  // text to continue and chat messages use the `plain` template.
  bool use_chat_template = true;
  int max_logprobs = 20;
  size_t max_body_bytes = size_t(8) << 20;   // larger bodies: 413
  size_t max_header_bytes = size_t(32) << 10; // larger request heads: 431
  // A request's head must arrive within this many seconds of its first byte and the whole
  // request within twice that (else 408); a new connection silent this long is closed.
  double client_timeout_s = 30;
  // Worker threads; each open stream and each idle keep-alive connection holds one. 0: 64.
  // As many accepted connections more wait for one; past them the server answers 503 at once.
  int http_threads = 0;
  double shutdown_timeout_s = 30;  // in-flight requests get this long after shutdown() starts
  bool verbose = true;             // log one line per finished generation request
  double log_interval_s = 20;      // throughput log period; <= 0: off
};

class Server {
 public:
  Server(Runtime& runtime, Engine& engine, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the engine and HTTP threads; prints the address and the model names on
  // stdout. Throws Error when no port can be bound.
  void start();
  int port() const;
  // False once the HTTP listener stopped on its own (an error) or after shutdown().
  bool running() const;
  // Stops accepting connections, lets in-flight requests finish (cancelling what is left after
  // shutdown_timeout_s), then stops the threads. Idempotent.
  void shutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Half of the memory the system reports available (MemAvailable), for the KV cache budget.
int64_t default_kv_cache_bytes();

}  // namespace swiftlet::serve
