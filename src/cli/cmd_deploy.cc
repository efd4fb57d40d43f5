// swiftlet deploy: serve a model (and LoRA adapters) over the OpenAI HTTP API until SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <csignal>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags.h"
#include "core/log.h"
#include "serve/server.h"

namespace swiftlet::cli {

namespace {

namespace fs = std::filesystem;

const char* kSummary =
    "Serve a model and LoRA adapters over the OpenAI API (chat, completions, streaming).";

struct NamedAdapter {
  std::string name, path;
};

// "name=path" names an adapter (its own model id); a bare path is applied to the base model.
void split_adapters(const std::vector<std::string>& args, std::vector<std::string>& unnamed,
                    std::vector<NamedAdapter>& named) {
  for (const auto& a : args) {
    const size_t eq = a.find('=');
    if (eq == std::string::npos || a.substr(0, eq).find('/') != std::string::npos) {
      unnamed.push_back(a);
      continue;
    }
    NamedAdapter n{a.substr(0, eq), a.substr(eq + 1)};
    if (n.name.empty() || n.path.empty())
      throw Error(fmt::format("--adapters '{}': expected name=path", a),
                  "for example --adapters mylora=output/v0/checkpoint-100");
    for (const auto& m : named)
      if (m.name == n.name)
        throw Error(fmt::format("--adapters: the name '{}' is given twice", n.name));
    named.push_back(std::move(n));
  }
}

// ms-swift's default served name: the model's last path component, ModelScope's "___" as ".".
std::string default_served_name(const std::string& model) {
  fs::path p(model);
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name.compare(i, 3, "___") == 0) {
      out += '.';
      i += 2;
    } else {
      out += name[i];
    }
  }
  return out.empty() ? "model" : out;
}

int run(int argc, char** argv) {
  std::vector<FlagSpec> specs = runtime_flag_specs();
  for (auto& s : generation_flag_specs()) specs.push_back(s);
  specs.insert(
      specs.end(),
      {
          {"host", FlagKind::kString, "0.0.0.0",
           "address to listen on: every interface by default, as in ms-swift; 127.0.0.1 for this "
           "machine only"},
          {"port", FlagKind::kInt, "8000",
           "port to listen on (busy: the next free one; 0: any free port)"},
          {"api_key", FlagKind::kString, "",
           "require 'Authorization: Bearer <key>' on every route but /health"},
          {"served_model_name", FlagKind::kString, "",
           "model id clients send (default: last path component of --model)"},
          {"owned_by", FlagKind::kString, "swift", "owned_by field of /v1/models"},
          {"max_logprobs", FlagKind::kInt, "20", "largest top_logprobs a request may ask for"},
          {"use_chat_template", FlagKind::kBool, "true",
           "false: prompts are continued as plain text (base models)"},
          {"verbose", FlagKind::kBool, "true", "log one line per finished request"},
          {"log_interval", FlagKind::kFloat, "20",
           "seconds between throughput log lines (-1: off)"},
          {"kv_cache_gb", FlagKind::kFloat, "0",
           "KV cache memory budget in GB (0: half of the available memory)"},
          {"max_queue_size", FlagKind::kInt, "128",
           "requests waiting for a batch slot before new ones get HTTP 503"},
          {"shutdown_timeout", FlagKind::kFloat, "30",
           "seconds in-flight requests get to finish on SIGINT/SIGTERM"},
          {"http_threads", FlagKind::kInt, "0",
           "HTTP worker threads (0: max_batch_size + max_queue_size + 32); as many connections "
           "more may wait for one, past that new ones get HTTP 503"},
          {"client_timeout", FlagKind::kFloat, "30",
           "seconds a client has to send a request's headers (the whole request: twice this); "
           "slower ones get HTTP 408"},
      });
  // What the shared flags mean for a server: defaults of the requests that leave a field out.
  for (auto& s : specs) {
    if (s.name == "adapters")
      s.help =
          "LoRA checkpoints: name=CKPT serves one as model 'name'; a bare CKPT is applied to the "
          "base model";
    if (s.name == "max_new_tokens")
      s.help = "max_tokens of requests that give none (-1: up to the context limit)";
    if (s.name == "seed") s.help = "seeds the sampling seeds of requests that give none";
    if (s.name == "stop_words")
      s.help = "stop strings of requests that give no 'stop' (kept in the output)";
    if (s.name == "logprobs") s.help = "logprobs of requests that do not set them";
    if (s.name == "top_logprobs")
      s.help = "top_logprobs of requests that do not set logprobs, with --logprobs";
  }
  Flags flags("deploy", specs);
  if (!flags.parse(argc, argv)) {
    std::cout << flags.help_text(kSummary);
    return 0;
  }
  RuntimeOptions ro = runtime_options(flags);
  InferOptions defaults = infer_options(flags);
  std::vector<NamedAdapter> named;
  std::vector<std::string> unnamed;
  split_adapters(ro.adapters, unnamed, named);
  if (!unnamed.empty() && !named.empty())
    throw Error(
        "--adapters: a default adapter (given without name=) and named adapters cannot be served "
        "together",
        "merge the default adapter first (swiftlet export --merge_lora true) and serve the named "
        "ones on the merged model");
  ro.adapters = unnamed;
  if (ro.model.empty() && !named.empty()) ro.model = adapter_base_model(named.front().path);
  if (ro.model.empty() && !unnamed.empty()) ro.model = adapter_base_model(unnamed.front());

  serve::ServerOptions so;
  so.host = flags.str("host");
  so.port = int(flags.i64("port"));
  so.api_key = flags.str("api_key");
  so.owned_by = flags.str("owned_by");
  so.max_logprobs = int(flags.i64("max_logprobs"));
  so.use_chat_template = flags.boolean("use_chat_template");
  so.verbose = flags.boolean("verbose");
  so.log_interval_s = flags.f64("log_interval");
  so.shutdown_timeout_s = flags.f64("shutdown_timeout");
  so.defaults = defaults;
  const int64_t max_queue = flags.i64("max_queue_size");
  const double kv_gb = flags.f64("kv_cache_gb");
  if (so.port < 0 || so.port > 65535)
    throw Error(fmt::format("--port must be between 0 and 65535, got {}", so.port));
  if (so.max_logprobs < 0 || so.max_logprobs > 100)
    throw Error("--max_logprobs must be between 0 and 100");
  if (so.defaults.top_logprobs > so.max_logprobs)
    throw Error("--top_logprobs is larger than --max_logprobs");
  if (max_queue < 1) throw Error("--max_queue_size must be at least 1");
  if (kv_gb < 0) throw Error("--kv_cache_gb must be >= 0 (0: automatic)");
  if (so.shutdown_timeout_s < 0) throw Error("--shutdown_timeout must be >= 0");
  so.client_timeout_s = flags.f64("client_timeout");
  if (!(so.client_timeout_s > 0)) throw Error("--client_timeout must be > 0 seconds");
  const int64_t threads = flags.i64("http_threads");
  if (threads < 0) throw Error("--http_threads must be >= 0 (0: automatic)");
  so.http_threads =
      int(threads > 0 ? threads : std::min<int64_t>(1024, ro.max_batch_size + max_queue + 32));

  // SIGINT/SIGTERM are taken by sigwait below: block them before any thread starts (threads
  // inherit the mask). A client closing its socket must not kill the process with SIGPIPE.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  Runtime rt(ro);
  std::vector<std::unique_ptr<LoraAdapter>> adapters;
  const std::string base_name =
      flags.given("served_model_name") && !flags.str("served_model_name").empty()
          ? flags.str("served_model_name")
          : default_served_name(rt.folder().path);
  so.models.push_back({base_name, nullptr, rt.folder().path});
  for (const auto& n : named) {
    if (n.name == base_name)
      throw Error(fmt::format("--adapters: the adapter name '{}' is the served model name", n.name),
                  "pick another adapter name or --served_model_name");
    adapters.push_back(
        std::make_unique<LoraAdapter>(LoraAdapter::load(rt.device(), n.path, rt.folder().config)));
    // Requests on different adapters share one forward with per-row LoRA pairs; whole replaced
    // modules cannot be per row.
    if (adapters.back()->has_modules_to_save())
      throw Error(fmt::format("--adapters {}={}: adapters with modules_to_save cannot be served by name", n.name, n.path),
                  "serve it alone (--adapters PATH) or merge it first (swiftlet export --merge_lora true)");
    so.models.push_back({n.name, adapters.back().get(), n.path});
  }

  EngineOptions eo;
  eo.max_batch_size = ro.max_batch_size;
  eo.max_model_len = ro.max_model_len;
  eo.kv_cache_bytes = kv_gb > 0 ? int64_t(kv_gb * 1e9) : serve::default_kv_cache_bytes();
  eo.max_waiting = max_queue;
  eo.base_adapter = rt.adapter();
  Engine engine(rt.model(), rt.decoder_factory(), eo);
  log_info(
      "engine: max_batch_size {}, max_model_len {}, KV cache budget {:.2f} GB ({} tokens), queue "
      "{}",
      eo.max_batch_size, engine.max_model_len(), double(eo.kv_cache_bytes) / 1e9,
      eo.kv_cache_bytes / engine.kv_bytes_per_token(), max_queue);

  if (!so.defaults.enable_thinking) so.defaults.enable_thinking = rt.default_enable_thinking();
  serve::Server server(rt, engine, so);
  server.start();
  int sig = 0;
  while (server.running()) {
    timespec wait{0, 200 * 1000 * 1000};
    const int got = sigtimedwait(&stop_signals, nullptr, &wait);
    if (got > 0) {
      sig = got;
      break;
    }
  }
  if (sig) log_info("received {}", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.shutdown();
  if (!sig) throw Error("the HTTP listener stopped unexpectedly");
  return 0;
}

const bool registered = register_command({"deploy", kSummary, run});

}  // namespace
}  // namespace swiftlet::cli
