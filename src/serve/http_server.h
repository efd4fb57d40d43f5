#pragma once
// httplib's server with the connection handling a public endpoint needs, which httplib 0.11 does
// not bound:
//   - the request head (request line and headers) must arrive within `client_timeout_s` of its
//     first byte and fit in `max_header_bytes` (else 408 / 431 and the connection closes), and the
//     body within `client_timeout_s` after the head (else 408): a client sending one byte every few
//     seconds no longer holds a worker thread for ever;
//   - accepted connections wait for a worker in a bounded queue; past it a small pool answers 503
//     with Retry-After at once, and past that the connection is closed unanswered;
//   - stop_accepting() ends the accept loop while open responses run to their end.
// httplib still parses the requests and routes them (Server::process_request on our own stream).
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace swiftlet::serve {

struct ConnectionLimits {
  size_t max_header_bytes = size_t(32) << 10;
  double client_timeout_s = 30;
  double write_timeout_s = 5;      // one blocked write (a client that stopped reading)
  double keep_alive_timeout_s = 5; // idle time between requests on one connection
  size_t keep_alive_max_requests = 100;
  size_t workers = 64;             // connections served at once
  size_t max_pending = 64;         // accepted connections waiting for a worker
  size_t refusers = 4;             // threads answering 503 when the queue is full
  size_t max_refusing = 256;       // connections waiting for them; past this: closed at once
};

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(ConnectionLimits limits);

  // Ends the accept loop; responses still streaming on open connections run to their end.
  void stop_accepting();
  // Called with the status of every answer the connection layer gives itself (408, 431, 503),
  // which httplib's logger never sees.
  std::function<void(int status)> on_refused;

  // On a worker thread inside a request: whether the request's body missed its deadline (httplib
  // then reports a 400; the error handler turns it into a 408).
  static bool current_request_timed_out();

  const ConnectionLimits& limits() const { return limits_; }

 private:
  bool process_and_close_socket(socket_t sock) override;
  void refuse(socket_t sock, int status, const std::string& message, const std::string& code);

  ConnectionLimits limits_;
};

}  // namespace swiftlet::serve
