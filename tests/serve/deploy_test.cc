// `swiftlet deploy` end to end: the server binary on a free loopback port with a tiny model and a
// LoRA adapter, driven by the official OpenAI node client (tests/serve/openai_client.cjs) and by
// raw HTTP for the error paths; greedy results compared with `swiftlet infer`; a bounded load test
// with clients leaving mid-stream; the queue limit; graceful shutdown; a busy port.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve/serve_fixture.h"

namespace swiftlet {
namespace {

using json = nlohmann::json;
using serve_testing::DeployProcess;
using testing::TempDir;

constexpr const char* kKey = "sk-test-key";

class DeployTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    model_ = testing::tiny_model("tiny");
    adapter_ = *dir_ / "lora";
    serve_testing::make_random_adapter(model_, adapter_, 5);
    server_ = new DeployProcess({"--model", model_, "--adapters", "lora1=" + adapter_, "--api_key",
                                 kKey, "--port", "0", "--log_interval", "-1"});
  }
  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->stop(), 0) << server_->err();
    }
    delete server_;
    delete dir_;
  }

  static httplib::Client client(int port = 0) {
    httplib::Client c("127.0.0.1", port ? port : server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  static httplib::Headers auth() { return {{"Authorization", std::string("Bearer ") + kKey}}; }

  // POST with the API key; returns (status, parsed body).
  static std::pair<int, json> post(const std::string& path, const std::string& body, int port = 0) {
    auto c = client(port);
    auto res = c.Post(path.c_str(), auth(), body, "application/json");
    if (!res) return {-1, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }

  static std::string served_name() { return std::filesystem::path(model_).filename().string(); }
  static std::map<std::string, std::string> client_env() {
    return {{"SWIFTLET_BASE_URL", server_->base_url()},
            {"SWIFTLET_API_KEY", kKey},
            {"SWIFTLET_MODEL", served_name()},
            {"SWIFTLET_ADAPTER", "lora1"}};
  }

  // A metric's value from /metrics (-1 when absent).
  static double metric(const std::string& name, int port = 0) {
    auto res = client(port).Get("/metrics", auth());
    return res ? serve_testing::metric_value(res->body, name) : -1;
  }

  static void expect_error(const std::pair<int, json>& r, int status,
                           const std::string& code_or_text) {
    EXPECT_EQ(r.first, status) << r.second.dump();
    ASSERT_TRUE(r.second.contains("error")) << r.second.dump();
    const json& e = r.second["error"];
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_TRUE(e["type"].is_string());
    EXPECT_TRUE(e.contains("code"));
    const std::string all = e.dump();
    EXPECT_NE(all.find(code_or_text), std::string::npos) << all;
  }

  static TempDir* dir_;
  static std::string model_, adapter_;
  static DeployProcess* server_;
};

TempDir* DeployTest::dir_ = nullptr;
std::string DeployTest::model_, DeployTest::adapter_;
DeployProcess* DeployTest::server_ = nullptr;

// `swiftlet infer` on one chat turn, greedy: (response, finish_reason, logprobs).
json infer_greedy(const std::string& model, const std::string& adapter, const std::string& question,
                  int max_new) {
  TempDir tmp;
  testing::write_text(
      tmp / "d.jsonl",
      json{{"messages", {{{"role", "user"}, {"content", question}}}}}.dump() + "\n");
  std::string cmd = std::string(SWIFTLET_BINARY) + " infer --model " + model + " --val_dataset " +
                    (tmp / "d.jsonl") + " --result_path " + (tmp / "r.jsonl") +
                    " --temperature 0 --logprobs true --max_new_tokens " + std::to_string(max_new);
  if (!adapter.empty()) cmd += " --adapters " + adapter;
  cmd += " > " + (tmp / "log") + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << serve_testing::slurp(tmp / "log");
  return json::parse(serve_testing::slurp(tmp / "r.jsonl"));
}

TEST_F(DeployTest, OpenAiClientAgreesWithInfer) {
  SWIFTLET_REQUIRE_OPENAI_CLIENT();
  serve_testing::NodeResult r = serve_testing::run_openai_client("api", client_env());
  ASSERT_EQ(r.status, 0) << r.err << "\nserver log:\n" << server_->err();
  json out = json::parse(r.out);
  // temperature 0 through the server gives exactly what `swiftlet infer` gives.
  for (const auto& [key, adapter] :
       {std::pair<std::string, std::string>{"greedy", ""}, {"adapter", adapter_}}) {
    json ref = infer_greedy(model_, adapter, "Tell me about swiftlets.", 12);
    const json& got = out[key];
    EXPECT_EQ(got["content"], ref["response"]) << key;
    EXPECT_EQ(got["finish_reason"], ref["finish_reason"]) << key;
    ASSERT_EQ(got["logprobs"].size(), ref["logprobs"].size()) << key;
    for (size_t i = 0; i < ref["logprobs"].size(); ++i)
      EXPECT_NEAR(got["logprobs"][i].get<double>(), ref["logprobs"][i]["logprob"].get<double>(),
                  1e-5)
          << key << " " << i;
  }
}

TEST_F(DeployTest, ErrorsUseOpenAiShapeAndStatus) {
  const std::string chat = "/v1/chat/completions";
  auto body = [](json extra) {
    json j = {{"model", served_name()},
              {"messages", {{{"role", "user"}, {"content", "hi"}}}},
              {"max_tokens", 2}};
    j.update(extra);
    return j.dump();
  };
  expect_error(post(chat, "{\"model\": \"tiny\", "), 400, "invalid_json");
  expect_error(post(chat, "[]"), 400, "invalid_json");
  expect_error(post(chat, body({{"temperature", "warm"}})), 400, "'temperature' must be a number");
  expect_error(post(chat, body({{"max_tokens", 1.5}})), 400, "'max_tokens' must be an integer");
  expect_error(post(chat, body({{"messages", "hi"}})), 400, "'messages' must be a list");
  expect_error(post(chat, body({{"messages", {{{"role", "user"}, {"content", 3}}}}})), 400,
               "messages[0].content");
  expect_error(post(chat, body({{"stop", {1, 2}}})), 400, "'stop' must be");
  expect_error(post(chat, body({{"stream", "yes"}})), 400, "'stream' must be a boolean");
  expect_error(post(chat, body({{"temperature", -0.5}})), 400, "temperature");
  expect_error(post(chat, body({{"top_p", 0}})), 400, "top_p");
  expect_error(post(chat, body({{"n", 0}})), 400, "'n' must be between");
  expect_error(post(chat, body({{"presence_penalty", 3}})), 400, "presence_penalty");
  expect_error(post(chat, body({{"logprobs", true}, {"top_logprobs", 21}})), 400, "top_logprobs");
  expect_error(post(chat, body({{"top_logprobs", 2}})), 400, "needs 'logprobs'");
  expect_error(post(chat, body({{"stream_options", {{"include_usage", true}}}})), 400,
               "stream_options");
  expect_error(post(chat, body({{"frobnicate", 1}})), 400, "unknown_parameter");
  expect_error(post(chat, body({{"tools", {{{"type", "function"}}}}})), 400,
               "unsupported_parameter");
  expect_error(post(chat, body({{"messages", {{{"role", "tool"}, {"content", "x"}}}}})), 400,
               "unsupported_role");
  // A prompt longer than the context (4096 positions), and one whose max_tokens does not fit.
  std::string longtext;
  for (int i = 0; i < 2100; ++i) longtext += "word ";
  expect_error(
      post(chat, body({{"messages", {{{"role", "user"}, {"content", longtext + longtext}}}}})), 400,
      "context_length_exceeded");
  expect_error(post(chat, body({{"max_tokens", 5000}})), 400, "context_length_exceeded");
  expect_error(post("/v1/completions", json{{"prompt", {1, 2, 3}}}.dump()), 400, "token ids");
  expect_error(post("/v1/completions", json{{"prompt", 7}}.dump()), 400, "'prompt' must be");
  // Unknown model and path.
  expect_error(post(chat, body({{"model", "gpt-4"}})), 404, "model_not_found");
  expect_error(post("/v1/nothing", "{}"), 404, "no route");
  auto c = client();
  auto nf = c.Get("/v1/models/gpt-4", auth());
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  // API key: missing and wrong are 401 on every route but /health (/metrics and /ping too).
  auto missing = c.Post(chat.c_str(), body(json::object()), "application/json");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  expect_error({missing->status, json::parse(missing->body)}, 401, "invalid_api_key");
  auto wrong = c.Get("/v1/models", httplib::Headers{{"Authorization", "Bearer nope"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  for (const char* path : {"/metrics", "/ping"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
    auto keyed = c.Get(path, auth());
    ASSERT_TRUE(keyed);
    EXPECT_EQ(keyed->status, 200) << path;
  }
  // Bodies over the limit (8 MiB) are refused before parsing.
  const std::string big = "{\"messages\": \"" + std::string(9 << 20, 'a') + "\"}";
  expect_error(post(chat, big), 413, "larger than");
  // The server is unharmed: a normal request still works, and the failures were counted.
  auto ok = post(chat, body(json::object()));
  EXPECT_EQ(ok.first, 200) << ok.second.dump();
  EXPECT_EQ(ok.second["choices"][0]["message"]["role"], "assistant");
  auto m = c.Get("/metrics", auth());
  ASSERT_TRUE(m);
  EXPECT_NE(
      m->body.find("swiftlet_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}"),
      std::string::npos);
  EXPECT_NE(m->body.find("swiftlet_time_to_first_token_seconds_bucket"), std::string::npos);
  EXPECT_NE(m->body.find("swiftlet_time_per_output_token_seconds_count"), std::string::npos);
  EXPECT_GT(metric("swiftlet_generation_tokens_total"), 0);
  EXPECT_GT(metric("swiftlet_prompt_tokens_total"), 0);
}

TEST_F(DeployTest, LoadWithClientsLeavingMidStreamKeepsResultsAndMemory) {
  SWIFTLET_REQUIRE_OPENAI_CLIENT();
  auto settle = [] {
    for (int i = 0; i < 200 && (metric("swiftlet_requests_running") != 0 ||
                                metric("swiftlet_requests_waiting") != 0);
         ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(800));  // the idle server trims the heap
  };
  // Warm up the same paths (threads, caches of 32 requests) before measuring the idle level.
  serve_testing::NodeResult warm = serve_testing::run_openai_client("load", client_env());
  ASSERT_EQ(warm.status, 0) << warm.err << "\nserver log:\n" << server_->err();
  settle();
  const int64_t idle_kb = server_->rss_kb();
  serve_testing::NodeResult r = serve_testing::run_openai_client("load", client_env());
  ASSERT_EQ(r.status, 0) << r.err << "\nserver log:\n" << server_->err();
  json out = json::parse(r.out);
  EXPECT_EQ(out["completed"], 24);
  EXPECT_EQ(out["abandoned"], 8);
  settle();
  const int64_t after_kb = server_->rss_kb();
  std::printf("server RSS: %lld kB idle, %lld kB after 32 more streams\n", (long long)idle_kb,
              (long long)after_kb);
  EXPECT_EQ(metric("swiftlet_kv_cache_used_bytes"), 0);
  EXPECT_LE(after_kb, idle_kb + idle_kb / 10 + 8 * 1024)
      << "idle " << idle_kb << " kB, after " << after_kb << " kB";
  auto health = client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

// Streams a chat request on its own connection; the receiver decides when to hang up.
class StreamClient {
 public:
  StreamClient(int port, json body) : port_(port) {
    body["stream"] = true;
    body_ = body.dump();
    thread_ = std::thread([this] { run(); });
  }
  ~StreamClient() {
    hang_up = true;
    if (thread_.joinable()) thread_.join();
  }
  bool wait_chunks(int n, double seconds) {
    for (int i = 0; i < int(seconds * 100) && chunks < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return chunks >= n;
  }
  void join() { thread_.join(); }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return data_;
  }
  std::atomic<bool> hang_up{false};
  std::atomic<int> chunks{0};
  std::atomic<int> status{0};

 private:
  void run() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.headers = {{"Content-Type", "application/json"}};
    req.body = body_;
    req.content_receiver = [this](const char* d, size_t n, uint64_t, uint64_t) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        data_.append(d, n);
      }
      ++chunks;
      return !hang_up.load();
    };
    auto res = c.send(req);
    status = res ? res->status : -1;
  }
  int port_;
  std::string body_;
  std::mutex mu_;
  std::string data_;
  std::thread thread_;
};

TEST(DeployQueue, FullQueueAnswers503AndLeavingClientsFreeTheirSlot) {
  DeployProcess s({"--model", testing::tiny_model("tiny"), "--port", "0", "--max_batch_size", "1",
                   "--max_queue_size", "1", "--log_interval", "-1"});
  const json req = {{"messages", {{{"role", "user"}, {"content", "hold the slot"}}}},
                    {"temperature", 0},
                    {"max_tokens", 4000}};
  StreamClient a(s.port(), req);
  ASSERT_TRUE(a.wait_chunks(2, 20)) << s.err();
  StreamClient b(s.port(), req);
  httplib::Client c("127.0.0.1", s.port());
  bool queued = false;
  for (int i = 0; i < 200 && !queued; ++i) {
    auto m = c.Get("/metrics");
    queued = m && m->body.find("\nswiftlet_requests_waiting 1\n") != std::string::npos;
    if (!queued) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(queued);
  auto busy = c.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503);
  EXPECT_NE(busy->body.find("server_overloaded"), std::string::npos) << busy->body;
  EXPECT_EQ(busy->get_header_value("Retry-After"), "1");
  // The running client leaves: its slot goes to the queued one at the next step.
  const int b_before = b.chunks;
  a.hang_up = true;
  a.join();
  ASSERT_TRUE(b.wait_chunks(b_before + 3, 10)) << "the queued request never started";
  b.hang_up = true;
  b.join();
  // Both left long before 4000 tokens: a short request runs at once.
  const auto t0 = std::chrono::steady_clock::now();
  json small = req;
  small["max_tokens"] = 4;
  auto ok = c.Post("/v1/chat/completions", small.dump(), "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_EQ(s.stop(SIGINT), 0) << s.err();
  EXPECT_NE(s.err().find("received SIGINT"), std::string::npos) << s.err();
}

// The accept-queue size of the IPv4 TCP socket listening on `port` (what `ss -lt` shows as
// Send-Q), asked from the kernel's socket diagnostics; -1 if no such socket.
int listen_backlog(int port) {
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG);
  if (fd < 0) return -1;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof(msg);
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = AF_INET;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = 1u << TCP_LISTEN;
  int found = -1;
  if (::send(fd, &msg, sizeof(msg), 0) == ssize_t(sizeof(msg))) {
    alignas(nlmsghdr) char buf[16384];
    for (bool done = false; !done;) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      int left = int(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        const auto* d = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        if (ntohs(d->id.idiag_sport) == port) found = int(d->idiag_wqueue);
      }
    }
  }
  ::close(fd);
  return found;
}

TEST(DeployLifecycle, BusyPortPlainPromptsAndGracefulShutdown) {
  // Occupy a port: the server moves to the next free one and says so.
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(sock, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  const int busy = ntohs(addr.sin_port);
  DeployProcess s({"--model", testing::tiny_model("tiny"), "--port", std::to_string(busy),
                   "--use_chat_template", "false", "--served_model_name", "plain-tiny",
                   "--log_interval", "-1", "--max_new_tokens", "6", "--temperature", "0"});
  ::close(sock);
  EXPECT_NE(s.port(), busy);
  // The socket it listens on (not the one that failed to bind) queues many pending connections,
  // not httplib's 5: 16 clients connecting at once must not wait for SYN retransmissions.
  int somaxconn = 4096;
  std::ifstream("/proc/sys/net/core/somaxconn") >> somaxconn;
  EXPECT_EQ(listen_backlog(s.port()), std::min(512, somaxconn));
  EXPECT_NE(
      s.err().find(fmt::format("port {} is busy; serving on port {} instead", busy, s.port())),
      std::string::npos)
      << s.err();
  EXPECT_NE(s.out().find("models: plain-tiny"), std::string::npos) << s.out();

  // Plain prompts: echo with logprobs returns the prompt's own tokens with their log-probabilities.
  httplib::Client c("127.0.0.1", s.port());
  json creq = {{"model", "plain-tiny"}, {"prompt", "The quick brown fox"},
               {"max_tokens", 3},       {"temperature", 0},
               {"echo", true},          {"logprobs", 1}};
  auto cres = c.Post("/v1/completions", creq.dump(), "application/json");
  ASSERT_TRUE(cres);
  ASSERT_EQ(cres->status, 200) << cres->body;
  json cj = json::parse(cres->body);
  const json& lp = cj["choices"][0]["logprobs"];
  const int64_t prompt_tokens = cj["usage"]["prompt_tokens"];
  ASSERT_EQ(int64_t(lp["tokens"].size()), prompt_tokens + 3);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  std::string joined;
  for (const auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, cj["choices"][0]["text"]);
  EXPECT_EQ(cj["choices"][0]["text"].get<std::string>().rfind("The quick brown fox", 0), 0u);
  for (size_t i = 1; i < lp["tokens"].size(); ++i) {
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 1u);
  }

  // Fields a request leaves out fall back to the server's flags: 6 tokens, greedy.
  json dreq = {{"messages", {{{"role", "user"}, {"content", "defaults"}}}}};
  auto d1 = c.Post("/v1/chat/completions", dreq.dump(), "application/json");
  auto d2 = c.Post("/v1/chat/completions", dreq.dump(), "application/json");
  ASSERT_TRUE(d1 && d2);
  json j1 = json::parse(d1->body), j2 = json::parse(d2->body);
  EXPECT_EQ(j1["usage"]["completion_tokens"], 6) << d1->body;
  EXPECT_EQ(j1["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j1["choices"][0]["message"]["content"], j2["choices"][0]["message"]["content"]);
  // vLLM's ignore_eos: only the token limit ends generation.
  json ie = {{"messages", {{{"role", "user"}, {"content", "x"}}}},
             {"ignore_eos", true},
             {"max_tokens", 9}};
  auto ir = c.Post("/v1/chat/completions", ie.dump(), "application/json");
  ASSERT_TRUE(ir);
  EXPECT_EQ(json::parse(ir->body)["usage"]["completion_tokens"], 9) << ir->body;
  ie["ignore_eos"] = "yes";
  auto ib = c.Post("/v1/chat/completions", ie.dump(), "application/json");
  ASSERT_TRUE(ib);
  EXPECT_EQ(ib->status, 400);

  // SIGTERM while a stream runs: the stream still completes, new connections are refused, exit 0.
  StreamClient st(s.port(), {{"messages", {{{"role", "user"}, {"content", "finish me"}}}},
                             {"temperature", 0},
                             {"max_tokens", 400}});
  ASSERT_TRUE(st.wait_chunks(2, 20));
  ::kill(s.pid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  httplib::Client late("127.0.0.1", s.port());
  late.set_connection_timeout(1, 0);
  auto refused = late.Get("/health");
  EXPECT_TRUE(!refused || refused->status == 503);
  st.join();
  EXPECT_EQ(st.status, 200);
  const std::string text = st.text();
  EXPECT_NE(text.find("\"finish_reason\":\"length\""), std::string::npos);
  EXPECT_EQ(text.substr(text.size() - 14), "data: [DONE]\n\n");
  EXPECT_EQ(s.stop(SIGTERM, 30), 0) << s.err();
  EXPECT_NE(s.err().find("shutting down"), std::string::npos);
}

TEST(DeployAdapters, UnnamedAdapterIsServedUnderTheBaseNameAndMixingIsRefused) {
  TempDir dir;
  const std::string model = testing::tiny_model("tiny");
  serve_testing::make_random_adapter(model, dir / "lora", 9);
  DeployProcess s({"--adapters", dir / "lora", "--port", "0", "--served_model_name", "tuned",
                   "--log_interval", "-1"});
  httplib::Client c("127.0.0.1", s.port());
  json req = {{"model", "tuned"},
              {"messages", {{{"role", "user"}, {"content", "Tell me about swiftlets."}}}},
              {"temperature", 0},
              {"max_tokens", 10}};
  auto res = c.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json ref = infer_greedy(model, dir / "lora", "Tell me about swiftlets.", 10);
  EXPECT_EQ(json::parse(res->body)["choices"][0]["message"]["content"], ref["response"]);
  EXPECT_EQ(s.stop(), 0) << s.err();

  DeployProcess mixed(
      {"--model", model, "--adapters", dir / "lora", "a=" + (dir / "lora"), "--port", "0"}, false);
  EXPECT_EQ(mixed.stop(0, 30), 1);
  EXPECT_NE(mixed.err().find("cannot be served together"), std::string::npos) << mixed.err();
}

}  // namespace
}  // namespace swiftlet
