// `swiftlet deploy` against hostile and careless clients, over raw loopback sockets: request heads
// over the limit (431), clients too slow with their headers or body (408), silent connections,
// a connection flood past the worker and queue limits (503 with Retry-After at once), and a bounded
// mixed load (streams run to the end, streams dropped mid-way, malformed JSON, oversized bodies,
// missing keys, huge headers) after which the server is whole: every answer had its status, no
// request is left running, the KV cache is empty and resident memory is back near where it was.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve/serve_fixture.h"

namespace swiftlet {
namespace {

using json = nlohmann::json;
using serve_testing::DeployProcess;
using Clock = std::chrono::steady_clock;

constexpr const char* kKey = "sk-hardening";

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One TCP connection to the server, written and read byte for byte.
class Conn {
 public:
  explicit Conn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Conn() { ::close(fd_); }
  bool connected() const { return connected_; }

  bool send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }
  // Reads until the peer closes or `seconds` pass; `closed` tells which.
  std::string read_all(double seconds, bool* closed = nullptr) {
    std::string out;
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    bool eof = false;
    while (Clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      const int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now())
                             .count());
      if (::poll(&p, 1, std::max(ms, 0)) <= 0) break;
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        eof = true;
        break;
      }
      out.append(buf, size_t(n));
    }
    if (closed) *closed = eof;
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// The status code of a raw HTTP response (0 when there is none).
int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::atoi(response.substr(9, 3).c_str());
}

std::string body_of(const std::string& response) {
  const size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

std::string request(const std::string& path, const std::string& body, bool with_key = true,
                    const std::string& extra_headers = "") {
  std::string r = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  if (with_key) r += std::string("Authorization: Bearer ") + kKey + "\r\n";
  r += extra_headers;
  r += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  return r;
}

std::string chat_body(int max_tokens, bool stream) {
  return json{{"messages", {{{"role", "user"}, {"content", "tell me a story"}}}},
              {"max_tokens", max_tokens},
              {"temperature", 0},
              {"stream", stream}}
      .dump();
}

double metric(int port, const std::string& name) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/metrics", httplib::Headers{{"Authorization", std::string("Bearer ") + kKey}});
  return res ? serve_testing::metric_value(res->body, name) : -1;
}

bool healthy(int port) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/health");
  return res && res->status == 200;
}

TEST(DeployHardening, OversizedHeadsSlowClientsAndFloodsAreRefusedInBoundedTime) {
  DeployProcess s({"--model", testing::tiny_model("tiny"), "--port", "0", "--api_key", kKey,
                   "--client_timeout", "2", "--http_threads", "4", "--log_interval", "-1"});
  ASSERT_GT(s.port(), 0);

  // A request head over 32 KiB: 431 in OpenAI's error shape, before anything is parsed.
  {
    Conn c(s.port());
    ASSERT_TRUE(c.connected());
    c.send("GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: " + std::string(40 << 10, 'a') + "\r\n\r\n");
    const std::string r = c.read_all(5);
    EXPECT_EQ(status_of(r), 431) << r.substr(0, 200);
    json e = json::parse(body_of(r), nullptr, false);
    EXPECT_EQ(e["error"]["code"], "headers_too_large") << body_of(r);
  }
  // Headers trickling in one byte every 100 ms: 408 once the 2 s budget is spent, not later.
  {
    Conn c(s.port());
    const auto t0 = Clock::now();
    const std::string head = request("/v1/chat/completions", chat_body(2, false));
    std::string r;
    for (size_t i = 0; i < head.size() && r.empty() && seconds_since(t0) < 5; ++i) {
      if (!c.send(head.substr(i, 1))) break;
      r = c.read_all(0.1);
    }
    if (r.empty()) r = c.read_all(3);
    EXPECT_EQ(status_of(r), 408) << r.substr(0, 200);
    EXPECT_NE(r.find("request_timeout"), std::string::npos) << r;
    EXPECT_GT(seconds_since(t0), 1.9);
    EXPECT_LT(seconds_since(t0), 4);
  }
  // A whole head, then a body that stops halfway: 408 within twice the budget.
  {
    Conn c(s.port());
    const auto t0 = Clock::now();
    const std::string full = request("/v1/chat/completions", chat_body(2, false));
    c.send(full.substr(0, full.size() - 10));
    const std::string r = c.read_all(5);
    EXPECT_EQ(status_of(r), 408) << r.substr(0, 300);
    EXPECT_LT(seconds_since(t0), 6);
  }
  // A connection that never says anything is closed after the budget.
  {
    Conn c(s.port());
    const auto t0 = Clock::now();
    bool closed = false;
    const std::string r = c.read_all(5, &closed);
    EXPECT_TRUE(closed);
    EXPECT_TRUE(r.empty()) << r;
    EXPECT_LT(seconds_since(t0), 4);
  }
  // A flood of silent connections: 4 are served (and time out), 4 wait for a worker, and every
  // one past those gets 503 with Retry-After at once instead of queueing without bound.
  {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the last worker frees up
    std::vector<std::unique_ptr<Conn>> flood;
    for (int i = 0; i < 16; ++i) flood.push_back(std::make_unique<Conn>(s.port()));
    // The refused ones are answered at once; the served ones hear nothing before their 2 s.
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    int refused = 0, retry_after = 0;
    std::vector<size_t> kept;
    for (size_t i = 0; i < flood.size(); ++i) {
      const std::string r = flood[i]->read_all(0.02);
      if (r.empty()) kept.push_back(i);
      if (status_of(r) == 503) ++refused;
      if (r.find("Retry-After: 1\r\n") != std::string::npos) ++retry_after;
    }
    EXPECT_EQ(refused, 8);
    EXPECT_EQ(retry_after, 8);
    EXPECT_EQ(kept.size(), 8u);
    for (size_t i : kept) {
      bool closed = false;
      flood[i]->read_all(8, &closed);
      EXPECT_TRUE(closed) << "connection " << i;
    }
  }
  // The server is whole and counted what it refused.
  EXPECT_TRUE(healthy(s.port()));
  {
    Conn c(s.port());
    c.send(request("/v1/chat/completions", chat_body(3, false)));
    const std::string r = c.read_all(30);
    EXPECT_EQ(status_of(r), 200) << r.substr(0, 300);
  }
  httplib::Client c("127.0.0.1", s.port());
  auto m = c.Get("/metrics", httplib::Headers{{"Authorization", std::string("Bearer ") + kKey}});
  ASSERT_TRUE(m);
  for (const char* line : {"swiftlet_requests_total{endpoint=\"other\",status=\"431\"} 1",
                           "swiftlet_requests_total{endpoint=\"other\",status=\"503\"} 8"})
    EXPECT_NE(m->body.find(line), std::string::npos) << line << "\n" << m->body;
  EXPECT_EQ(s.stop(), 0) << s.err();
}

// What one client of the mixed load does.
enum class Act { kStream, kHangUp, kMalformed, kOversized, kNoKey, kHugeHead };
constexpr Act kActs[] = {Act::kStream,    Act::kHangUp, Act::kStream,  Act::kMalformed,
                         Act::kOversized, Act::kNoKey,  Act::kHangUp, Act::kHugeHead};

int expected_status(Act a) {
  switch (a) {
    case Act::kStream:
    case Act::kHangUp:
      return 200;
    case Act::kMalformed:
      return 400;
    case Act::kOversized:
      return 413;
    case Act::kNoKey:
      return 401;
    case Act::kHugeHead:
      return 431;
  }
  return 0;
}

// Runs one action; returns the status seen (200 for a stream that was dropped on purpose after its
// first chunks) or 0 when nothing sensible came back.
int act(int port, Act a) {
  Conn c(port);
  if (!c.connected()) return 0;
  switch (a) {
    case Act::kStream: {
      c.send(request("/v1/chat/completions", chat_body(24, true)));
      const std::string r = c.read_all(60);
      return r.find("data: [DONE]") != std::string::npos ? status_of(r) : 0;
    }
    case Act::kHangUp: {
      c.send(request("/v1/chat/completions", chat_body(400, true)));
      std::string r;
      for (int i = 0; i < 600 && r.find("\"delta\"") == std::string::npos; ++i) r += c.read_all(0.1);
      return status_of(r);  // the connection closes here, mid-stream
    }
    case Act::kMalformed:
      c.send(request("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\""));
      return status_of(c.read_all(30));
    case Act::kOversized:
      c.send(request("/v1/completions", "{\"prompt\": \"" + std::string(9 << 20, 'x') + "\"}"));
      return status_of(c.read_all(30));
    case Act::kNoKey:
      c.send(request("/v1/chat/completions", chat_body(2, false), false));
      return status_of(c.read_all(30));
    case Act::kHugeHead:
      c.send(request("/v1/chat/completions", chat_body(2, false), true,
                     "Cookie: " + std::string(64 << 10, 'c') + "\r\n"));
      return status_of(c.read_all(30));
  }
  return 0;
}

TEST(DeployHardening, MixedHostileLoadLeavesTheServerWholeAndItsMemoryFlat) {
  DeployProcess s({"--model", testing::tiny_model("tiny"), "--port", "0", "--api_key", kKey,
                   "--max_batch_size", "4", "--log_interval", "-1", "--verbose", "false"});
  ASSERT_GT(s.port(), 0);
  constexpr int kClients = 8, kRounds = 12;  // 96 requests per pass
  auto pass = [&](std::map<int, int>& wrong) {
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int t = 0; t < kClients; ++t)
      threads.emplace_back([&, t] {
        for (int r = 0; r < kRounds; ++r) {
          const Act a = kActs[size_t(t + r) % std::size(kActs)];
          const int got = act(s.port(), a);
          if (got != expected_status(a)) {
            std::lock_guard<std::mutex> lock(mu);
            ++wrong[int(a) * 1000 + got];
          }
        }
      });
    for (auto& th : threads) th.join();
  };
  auto settle = [&] {
    for (int i = 0; i < 200 && (metric(s.port(), "swiftlet_requests_running") != 0 ||
                                metric(s.port(), "swiftlet_requests_waiting") != 0);
         ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(800));  // the idle server trims its heap
  };
  std::map<int, int> wrong;  // action * 1000 + status seen -> count
  pass(wrong);               // warm-up: threads, caches and buffers of the same load
  settle();
  const int64_t before_kb = s.rss_kb();
  const auto t0 = Clock::now();
  pass(wrong);
  const double took = seconds_since(t0);
  settle();
  const int64_t after_kb = s.rss_kb();
  std::printf("mixed load: %d requests in %.1f s; server RSS %lld kB before, %lld kB after\n",
              kClients * kRounds, took, (long long)before_kb, (long long)after_kb);
  for (const auto& [k, n] : wrong)
    ADD_FAILURE() << n << " x action " << k / 1000 << " answered " << k % 1000 << ", expected "
                  << expected_status(Act(k / 1000));
  EXPECT_LT(took, 120);
  EXPECT_EQ(metric(s.port(), "swiftlet_requests_running"), 0);
  EXPECT_EQ(metric(s.port(), "swiftlet_requests_waiting"), 0);
  EXPECT_EQ(metric(s.port(), "swiftlet_kv_cache_used_bytes"), 0);
  EXPECT_LE(after_kb, before_kb + before_kb / 10 + 8 * 1024)
      << "before " << before_kb << " kB, after " << after_kb << " kB";
  EXPECT_TRUE(healthy(s.port()));
  EXPECT_EQ(s.stop(), 0) << s.err();
}

}  // namespace
}  // namespace swiftlet
