#include "serve/server.h"

#include <sys/socket.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "core/log.h"
#include "serve/server_impl.h"

namespace swiftlet::serve {

namespace {

constexpr int kPortTries = 100;  // ms-swift moves on to the next free port, up to +100
// Pending connections the kernel queues for accept(). httplib 0.11 listens with a backlog of 5:
// when more clients connect at once than the accept thread takes in, the rest wait in SYN-RECV
// for retransmissions, and their requests can outlast the server's 5 s wait for a first request
// (seen as rare client read errors with 16 simultaneous streams on a busy machine).
constexpr int kListenBacklog = 512;

// Prometheus label for a path: the known endpoints, else "other" (bounded label values).
std::string endpoint_label(const std::string& path) {
  for (const char* p :
       {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/ping"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

const char* default_message(int status) {
  switch (status) {
    case 400:
      return "bad request";
    case 401:
      return "unauthorized";
    case 404:
      return "not found";
    case 408:
      return "the request body did not arrive in time";
    case 413:
      return "the request body is larger than the server accepts";
    case 503:
      return "the server is not available";
    default:
      return status >= 500 ? "internal server error" : "request failed";
  }
}

// Compares a presented key with the expected one in time independent of where they differ.
bool same_secret(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  return diff == 0;
}

ConnectionLimits connection_limits(const ServerOptions& opt) {
  ConnectionLimits l;
  l.max_header_bytes = opt.max_header_bytes;
  l.client_timeout_s = opt.client_timeout_s;
  // Each open stream and each idle keep-alive connection holds a worker thread.
  l.workers = size_t(opt.http_threads > 0 ? opt.http_threads : 64);
  l.max_pending = l.workers;
  return l;
}

template <class F>
void guarded(httplib::Response& res, F&& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {
    send_error(res, ApiError(400, e.what()));
  } catch (const std::exception& e) {
    log_warning("request failed: {}", e.what());
    send_error(res, ApiError(500, fmt::format("internal error: {}", e.what()), "server_error"));
  }
}

}  // namespace

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  // Overloaded or shutting down: a well-behaved client waits a moment and retries (elsewhere).
  if (e.status == 503 || e.status == 429) res.set_header("Retry-After", "1");
  res.set_content(error_json(e).dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

int64_t default_kv_cache_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024 / 2;
  return int64_t(4) << 30;
}

Server::Impl::Impl(Runtime& r, Engine& e, ServerOptions o)
    : rt(r),
      engine(e),
      opt(std::move(o)),
      http(connection_limits(opt)),
      seed_rng(opt.defaults.seed),
      tokenize(r.tokenizer(), 2) {
  if (opt.models.empty()) throw Error("the server needs at least one model name");
  if (!opt.use_chat_template) plain_template = ChatTemplate::by_name("plain");
}

const ServedModel& Server::Impl::find_model(const std::string& name) const {
  if (name.empty()) return opt.models.front();
  for (const auto& m : opt.models)
    if (m.name == name) return m;
  std::string known;
  for (const auto& m : opt.models) known += (known.empty() ? "" : ", ") + m.name;
  throw ApiError(404,
                 fmt::format("The model '{}' does not exist; this server has: {}", name, known),
                 "invalid_request_error", "model_not_found", "model");
}

uint64_t Server::Impl::random_seed() {
  std::lock_guard<std::mutex> lock(seed_mu);
  return seed_rng.next_u64();
}

std::shared_ptr<void> Server::Impl::inflight_token() {
  ++inflight;
  return std::shared_ptr<void>(nullptr, [this](void*) { --inflight; });
}

void Server::Impl::engine_loop() {
  auto last_log = Clock::now();
  auto last_totals = metrics.token_totals();
  auto last_busy = Clock::now();
  bool trimmed = true;
  while (!engine_stop) {
    engine.wait_for_work(std::chrono::milliseconds(50));
    bool busy = false;
    try {
      busy = engine.step();
    } catch (const std::exception& e) {
      log_warning("engine step failed (its requests ended with an error): {}", e.what());
    }
    // Once no request has been in flight for a moment, hand the memory the request threads freed
    // back to the system as well (the engine trims only what it freed itself).
    if (busy || inflight > 0) {
      last_busy = Clock::now();
      trimmed = false;
    } else if (!trimmed && Clock::now() - last_busy > std::chrono::milliseconds(300)) {
#ifdef __GLIBC__
      malloc_trim(0);
#endif
      trimmed = true;
    }
    if (opt.log_interval_s > 0) {
      const auto now = Clock::now();
      const double dt = std::chrono::duration<double>(now - last_log).count();
      if (dt >= opt.log_interval_s) {
        const auto totals = metrics.token_totals();
        const EngineStats st = engine.stats();
        if (totals != last_totals || st.running > 0 || st.waiting > 0)
          log_info(
              "throughput: prompt {:.1f} tokens/s, generation {:.1f} tokens/s; running {}, waiting "
              "{}, "
              "KV cache {:.1f} MB",
              double(totals.first - last_totals.first) / dt,
              double(totals.second - last_totals.second) / dt, st.running, st.waiting,
              double(st.kv_cache_used_bytes) / 1e6);
        last_log = now;
        last_totals = totals;
      }
    }
  }
}

Server::Server(Runtime& runtime, Engine& engine, ServerOptions options)
    : impl_(std::make_unique<Impl>(runtime, engine, std::move(options))) {}

Server::~Server() { shutdown(); }

int Server::port() const { return impl_->port; }

bool Server::running() const { return impl_->listening && !impl_->stopped; }

void Server::start() {
  Impl& s = *impl_;
  httplib::Server& http = s.http;
  const ServerOptions& opt = s.opt;
  // SO_REUSEADDR only: httplib's default SO_REUSEPORT would let two servers share a busy port.
  // The callback sees each socket httplib creates while binding; the last is the listening one.
  http.set_socket_options([&s](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    s.listen_socket = sock;
  });
  http.set_payload_max_length(opt.max_body_bytes);
  s.http.on_refused = [&s](int status) { s.metrics.count_request("other", status); };

  http.set_pre_routing_handler([&s](const httplib::Request& req, httplib::Response& res) {
    // With --api_key every route but /health (load balancers' liveness probe) needs the key:
    // /metrics and /ping included.
    const bool needs_key = req.path != "/health";
    if (s.draining && req.path != "/metrics") {
      send_error(res,
                 ApiError(503, "the server is shutting down", "server_error", "shutting_down"));
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (needs_key && !s.opt.api_key.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      if (!same_secret(auth, "Bearer " + s.opt.api_key)) {
        send_error(
            res,
            ApiError(401,
                     auth.empty() ? "missing API key: send the header 'Authorization: Bearer <key>'"
                                  : "incorrect API key provided",
                     "invalid_request_error", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 400 && HttpServer::current_request_timed_out()) {
          res.status = 408;
          res.set_header("Connection", "close");
        }
        std::string msg = default_message(res.status);
        if (res.status == 404) msg = fmt::format("no route for {} {}", req.method, req.path);
        send_error(res, ApiError(res.status, msg,
                                 res.status >= 500 ? "server_error" : "invalid_request_error"));
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, "internal error: " + what, "server_error"));
      });
  http.set_logger([&s](const httplib::Request& req, const httplib::Response& res) {
    s.metrics.count_request(endpoint_label(req.path), res.status);
  });

  auto model_json = [&s](const ServedModel& m) {
    return json{{"id", m.name},
                {"object", "model"},
                {"created", int64_t(std::time(nullptr))},
                {"owned_by", s.opt.owned_by},
                {"root", m.root},
                {"parent", nullptr}};
  };
  http.Get("/v1/models", [&s, model_json](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const auto& m : s.opt.models) data.push_back(model_json(m));
    res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
  });
  http.Get(R"(/v1/models/(.+))",
           [&s, model_json](const httplib::Request& req, httplib::Response& res) {
             guarded(res, [&] {
               res.set_content(model_json(s.find_model(req.matches[1])).dump(), "application/json");
             });
           });
  http.Post("/v1/chat/completions", [&s](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { s.handle_chat(req, res); });
  });
  http.Post("/v1/completions", [&s](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { s.handle_completion(req, res); });
  });
  http.Get("/health", [&s](const httplib::Request&, httplib::Response& res) {
    if (!s.listening || s.draining) {
      send_error(res, ApiError(503, "the server is not ready", "server_error"));
      return;
    }
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  auto ping = [](const httplib::Request&, httplib::Response& res) {
    res.set_content("pong", "text/plain");
  };
  http.Get("/ping", ping);
  http.Post("/ping", ping);
  http.Get("/metrics", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_content(s.metrics.render(s.engine.stats()), "text/plain; version=0.0.4");
  });

  // Bind: the port asked for, else the next free one (ms-swift does this silently; we say so).
  int port = -1;
  if (opt.port == 0) {
    port = http.bind_to_any_port(opt.host);
  } else {
    for (int p = opt.port; p <= std::min(opt.port + kPortTries, 65535); ++p)
      if (http.bind_to_port(opt.host, p)) {
        port = p;
        break;
      }
    if (port > 0 && port != opt.port)
      log_warning("port {} is busy; serving on port {} instead", opt.port, port);
  }
  if (port <= 0)
    throw Error(
        fmt::format("cannot listen on {} port {}{}", opt.host, opt.port,
                    opt.port ? fmt::format(" (nor the {} ports after it)", kPortTries) : ""),
        "check --host, or pick a free --port");
  s.port = port;
  // Listening again on a listening socket only resizes its queue (capped by net.core.somaxconn).
  if (::listen(s.listen_socket, kListenBacklog) != 0)
    log_warning("could not enlarge the listen queue of port {}: {}", port, std::strerror(errno));
  s.engine_thread = std::thread([&s] { s.engine_loop(); });
  s.listening = true;
  s.listen_thread = std::thread([&s] {
    s.http.listen_after_bind();
    s.listening = false;
  });

  std::string names;
  for (const auto& m : opt.models) names += (names.empty() ? "" : ", ") + m.name;
  const std::string shown =
      opt.host.find(':') != std::string::npos ? "[" + opt.host + "]" : opt.host;
  std::printf("swiftlet deploy: listening on http://%s:%d (OpenAI API under /v1)\n", shown.c_str(),
              port);
  std::printf("swiftlet deploy: models: %s\n", names.c_str());
  std::fflush(stdout);
}

void Server::shutdown() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  if (!s.listen_thread.joinable()) return;  // never started
  s.draining = true;
  const int open = s.inflight;
  log_info(
      "shutting down: no new connections; {} request(s) in flight get up to {:.0f} s to finish",
      open, s.opt.shutdown_timeout_s);
  s.http.stop_accepting();
  auto wait_idle = [&s](double secs) {
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(secs));
    while (s.inflight > 0 && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return s.inflight == 0;
  };
  if (!wait_idle(s.opt.shutdown_timeout_s)) {
    log_warning("shutting down: {} request(s) still running after {:.0f} s are cancelled",
                int(s.inflight), s.opt.shutdown_timeout_s);
    s.engine.cancel_all();
    wait_idle(5);
  }
  s.http.stop();
  s.listen_thread.join();
  s.engine_stop = true;
  s.engine_thread.join();
  log_info("server stopped");
}

}  // namespace swiftlet::serve
