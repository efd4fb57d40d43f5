#include "serve/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "core/log.h"
#include "serve/openai_api.h"

namespace swiftlet::serve {

namespace {

using Clock = std::chrono::steady_clock;

// How the thread running a connection job treats it (set by the queue that runs the job).
enum class Mode { kServe, kRefuse, kClose };
thread_local Mode t_mode = Mode::kServe;

class RequestStream;
thread_local const RequestStream* t_stream = nullptr;

int millis_until(Clock::time_point t) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
  return int(std::clamp<int64_t>(ms, 0, 1 << 30));
}

Clock::time_point after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Waits for `events` on the socket until the deadline; false on timeout or a socket error.
bool wait_socket(socket_t sock, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{sock, events, 0};
    const int r = ::poll(&p, 1, millis_until(deadline));
    if (r > 0) return (p.revents & (events | POLLHUP)) != 0 && !(p.revents & (POLLERR | POLLNVAL));
    if (r == 0) {
      if (Clock::now() >= deadline) return false;
      continue;  // woke a little early
    }
    if (errno != EINTR) return false;
  }
}

// Whether the peer is still there: no pending data means alive; pending data or EOF is peeked.
bool socket_alive(socket_t sock) {
  pollfd p{sock, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return true;
  char c;
  return ::recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void address_of(socket_t sock, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int r = peer ? ::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len)
                     : ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  ip.clear();
  port = 0;
  if (r != 0) return;
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    port = ntohs(a->sin6_port);
  }
  ip = buf;
}

// The socket as httplib reads and writes it, with a deadline on reads (the request's) and a
// timeout on each blocked write.
class RequestStream final : public httplib::Stream {
 public:
  RequestStream(socket_t sock, double write_timeout_s)
      : sock_(sock), write_timeout_s_(write_timeout_s) {}

  void set_read_deadline(Clock::time_point t) {
    read_deadline_ = t;
    timed_out_ = false;
  }
  bool timed_out() const { return timed_out_; }

  bool is_readable() const override {
    if (pos_ < len_) return true;
    if (wait_socket(sock_, POLLIN, read_deadline_)) return true;
    timed_out_ = Clock::now() >= read_deadline_;
    return false;
  }
  bool is_writable() const override {
    return wait_socket(sock_, POLLOUT, after(write_timeout_s_)) && socket_alive(sock_);
  }
  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == len_) {
      if (!is_readable()) return -1;
      ssize_t n;
      do n = ::recv(sock_, buf_, sizeof(buf_), 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      pos_ = 0;
      len_ = size_t(n);
    }
    const size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return ssize_t(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address_of(sock_, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address_of(sock_, false, ip, port);
  }
  socket_t socket() const override { return sock_; }

  // Bytes read from the socket that httplib has not consumed yet (a pipelined request).
  size_t buffered() const { return len_ - pos_; }

 private:
  socket_t sock_;
  double write_timeout_s_;
  Clock::time_point read_deadline_ = Clock::time_point::max();
  mutable bool timed_out_ = false;
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

enum class Head { kComplete, kTooLarge, kTimeout, kClosed };

// Waits, without consuming anything, until the socket holds a whole request head ("\r\n\r\n"),
// more than `limit` bytes without one, the deadline passes, or the peer closes.
Head wait_for_head(socket_t sock, size_t limit, Clock::time_point deadline) {
  std::vector<char> buf(limit + 1);
  ssize_t seen = -1;
  for (;;) {
    const ssize_t n = ::recv(sock, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return Head::kClosed;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return Head::kClosed;
    if (n > 0) {
      static constexpr char kEnd[] = "\r\n\r\n";
      if (std::search(buf.begin(), buf.begin() + n, kEnd, kEnd + 4) != buf.begin() + n)
        return Head::kComplete;
      if (size_t(n) > limit) return Head::kTooLarge;
    }
    if (Clock::now() >= deadline) return Head::kTimeout;
    if (n == seen || n < 0) {
      // Nothing new: data already pending keeps the socket readable, so poll would not wait.
      if (n < 0)
        wait_socket(sock, POLLIN, std::min(deadline, after(0.05)));
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    seen = n;
  }
}

const char* reason(int status) {
  switch (status) {
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

void close_socket(socket_t sock) {
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

// Connection jobs: `workers` threads serve them; when `max_pending` wait already, `refusers`
// threads answer them 503; when those have `max_refusing` waiting, the accept thread closes the
// connection itself. Every queue is bounded, so a flood costs memory and time in proportion to
// the limits, not to the flood.
class ConnectionQueue final : public httplib::TaskQueue {
 public:
  explicit ConnectionQueue(const ConnectionLimits& l)
      : serve_(l.workers, l.max_pending), refuse_(l.refusers, l.max_refusing) {
    for (size_t i = 0; i < l.workers; ++i) threads_.emplace_back([this] { run(serve_, Mode::kServe); });
    for (size_t i = 0; i < l.refusers; ++i)
      threads_.emplace_back([this] { run(refuse_, Mode::kRefuse); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Lane* lane : {&serve_, &refuse_})
        if (lane->jobs.size() + lane->busy < lane->threads + lane->capacity) {
          lane->jobs.push_back(std::move(fn));
          lane->cv.notify_one();
          return;
        }
    }
    const Mode saved = t_mode;
    t_mode = Mode::kClose;
    fn();
    t_mode = saved;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    serve_.cv.notify_all();
    refuse_.cv.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  struct Lane {
    Lane(size_t n, size_t cap) : threads(n), capacity(cap) {}
    size_t threads, capacity;  // jobs admitted: one per idle thread, then `capacity` waiting
    size_t busy = 0;           // threads running a job
    std::deque<std::function<void()>> jobs;
    std::condition_variable cv;
  };

  void run(Lane& lane, Mode mode) {
    t_mode = mode;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        lane.cv.wait(lock, [&] { return stop_ || !lane.jobs.empty(); });
        if (lane.jobs.empty()) return;  // stopping, and nothing left to finish
        fn = std::move(lane.jobs.front());
        lane.jobs.pop_front();
        ++lane.busy;
      }
      fn();
      std::lock_guard<std::mutex> lock(mu_);
      --lane.busy;
    }
  }

  std::mutex mu_;
  bool stop_ = false;
  Lane serve_, refuse_;
  std::vector<std::thread> threads_;
};

}  // namespace

HttpServer::HttpServer(ConnectionLimits limits) : limits_(limits) {
  new_task_queue = [this] { return new ConnectionQueue(limits_); };
}

void HttpServer::stop_accepting() {
  // Shutting the listening socket down ends httplib's accept loop without marking the server as
  // stopped, so responses still streaming on open connections run to their end.
  const socket_t s = svr_sock_.load();
  if (s != INVALID_SOCKET) ::shutdown(s, SHUT_RDWR);
}

bool HttpServer::current_request_timed_out() { return t_stream && t_stream->timed_out(); }

void HttpServer::refuse(socket_t sock, int status, const std::string& message,
                        const std::string& code) {
  const std::string body =
      error_json(status, message, status >= 500 ? "server_error" : "invalid_request_error", code)
          .dump();
  const std::string head = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
      "Connection: close\r\n{}\r\n",
      status, reason(status), body.size(), status == 503 ? "Retry-After: 1\r\n" : "");
  const std::string out = head + body;
  const auto deadline = after(1.0);
  size_t sent = 0;
  while (sent < out.size() && wait_socket(sock, POLLOUT, deadline)) {
    const ssize_t n = ::send(sock, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += size_t(n);
  }
  // Read what the client sent (or sends within a moment) before closing: closing with unread
  // data resets the connection, and the client might lose the answer.
  ::shutdown(sock, SHUT_WR);
  char drain[4096];
  const auto until = after(0.1);
  size_t drained = 0;
  while (drained < (size_t(1) << 20) && wait_socket(sock, POLLIN, until)) {
    const ssize_t n = ::recv(sock, drain, sizeof(drain), MSG_DONTWAIT);
    if (n <= 0) break;
    drained += size_t(n);
  }
  if (on_refused) on_refused(status);
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (t_mode == Mode::kClose) {
    close_socket(sock);
    if (on_refused) on_refused(503);
    return false;
  }
  if (t_mode == Mode::kRefuse) {
    refuse(sock, 503, "the server is at its connection limit; retry later", "overloaded");
    close_socket(sock);
    return false;
  }
  RequestStream strm(sock, limits_.write_timeout_s);
  bool ok = true;
  for (size_t n = 0; n < limits_.keep_alive_max_requests && is_running(); ++n) {
    // An idle keep-alive connection ends quietly; a request's first byte starts its clock.
    // (A pipelined request already read into the stream's buffer skips the head check; the
    // stream's read deadline still bounds it.)
    const bool pipelined = strm.buffered() > 0;
    if (!pipelined && !wait_socket(sock, POLLIN, after(n == 0 ? limits_.client_timeout_s
                                                               : limits_.keep_alive_timeout_s)))
      break;
    const Head head = pipelined ? Head::kComplete
                                : wait_for_head(sock, limits_.max_header_bytes,
                                                after(limits_.client_timeout_s));
    if (head == Head::kClosed) break;
    if (head == Head::kTooLarge) {
      refuse(sock, 431,
             fmt::format("the request line and headers are larger than {} bytes",
                         limits_.max_header_bytes),
             "headers_too_large");
      break;
    }
    if (head == Head::kTimeout) {
      refuse(sock, 408,
             fmt::format("the request headers did not arrive within {:g} s",
                         limits_.client_timeout_s),
             "request_timeout");
      break;
    }
    strm.set_read_deadline(after(2 * limits_.client_timeout_s));
    t_stream = &strm;
    bool closed = false;
    const bool last = n + 1 == limits_.keep_alive_max_requests;
    ok = process_request(strm, last, closed, nullptr);
    t_stream = nullptr;
    if (!ok || closed || strm.timed_out()) break;
  }
  close_socket(sock);
  return ok;
}

}  // namespace swiftlet::serve
