#include "infer/infer_runner.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/log.h"
#include "infer/scoring.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

GenerationRequest make_request(Runtime& rt, const InferOptions& opt, std::vector<int32_t> prompt) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = opt.max_new_tokens;
  r.sampling = rt.default_sampling();
  if (opt.temperature) r.sampling.temperature = *opt.temperature;
  if (opt.top_k) r.sampling.top_k = *opt.top_k;
  if (opt.top_p) r.sampling.top_p = *opt.top_p;
  if (opt.repetition_penalty) r.sampling.repetition_penalty = *opt.repetition_penalty;
  r.seed = opt.seed;
  r.stop_token_ids = rt.stop_token_ids();
  r.stop_strings = opt.stop_words;
  r.include_stop_str_in_output = true;  // ms-swift keeps --stop_words in the output
  r.top_logprobs = opt.logprobs ? opt.top_logprobs : -1;
  return r;
}

namespace {

std::vector<int32_t> encode_prompt(Runtime& rt, const InferOptions& opt,
                                   const std::vector<ChatMessage>& messages) {
  TemplateOptions t;
  t.system = opt.system;
  t.enable_thinking = opt.enable_thinking ? opt.enable_thinking : rt.default_enable_thinking();
  t.add_generation_prompt = true;
  return rt.tokenizer().encode(rt.chat_template().render(messages, t));
}

std::string timestamp() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&now));
  return buf;
}

}  // namespace

void run_chat(Runtime& rt, const InferOptions& opt, std::istream& in, std::ostream& out) {
  if (rt.scores())
    throw Error(fmt::format("{} is a reward model ({}): it scores whole conversations instead of "
                            "chatting",
                            rt.folder().path, rt.folder().config.architecture),
                "pass --val_dataset FILE (rows whose messages end with the reply to score), or "
                "serve it with swiftlet deploy and POST the conversation to /v1/chat/completions");
  const bool stream = opt.stream.value_or(true);
  std::vector<ChatMessage> history;
  out << "Type a message and press Enter; 'clear' resets the conversation, 'exit' quits.\n";
  std::string line;
  while (true) {
    out << "<<< " << std::flush;
    if (!std::getline(in, line)) break;
    if (line == "exit") break;
    if (line == "clear") {
      history.clear();
      out << "(conversation cleared)\n";
      continue;
    }
    if (line.empty()) continue;
    history.push_back({"user", line, ""});
    GenerationRequest req = make_request(rt, opt, encode_prompt(rt, opt, history));
    GenerationCallbacks cb;
    if (stream) {
      cb.on_delta = [&](const std::string& d, const TokenLogprob*) {
        out << d << std::flush;
        return true;
      };
    }
    GenerationOutput o = rt.engine().generate(std::move(req), std::move(cb));
    if (!stream) out << o.text;
    out << "\n";
    if (o.finish_reason == "length") out << "(stopped at the token limit)\n";
    history.push_back({"assistant", o.text, ""});
  }
}

std::string open_result_file(const InferOptions& opt, const std::string& default_dir, std::ofstream& f) {
  std::string path = opt.result_path;
  if (path.empty()) path = (fs::path(default_dir) / "infer_result" / (timestamp() + ".jsonl")).string();
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  f.open(path, std::ios::app);
  if (!f) throw Error(fmt::format("cannot write the result file {}", path));
  return path;
}

std::string run_dataset_inference(Runtime& rt, const InferOptions& opt, const std::string& default_dir) {
  if (rt.scores()) return run_dataset_scoring(rt, opt, default_dir);
  const std::vector<ParsedRow> rows = read_infer_rows<ParsedRow>(opt, [](const DataRow& r) {
    return ParsedRow{r.where, parse_conversation(r.value, r.where)};
  });
  std::ofstream f;
  const std::string path = open_result_file(opt, default_dir, f);
  log_info("batch inference over {} rows of {} -> {}", rows.size(), opt.val_dataset, path);

  struct Pending {
    json out;
    GenerationOutput result;
    bool done = false;
  };
  std::vector<Pending> pending(rows.size());
  Engine& engine = rt.engine();
  for (size_t i = 0; i < rows.size(); ++i) {
    Conversation conv = rows[i].conversation;
    std::string label;
    bool has_label = false;
    if (conv.messages.back().role == "assistant") {
      label = conv.messages.back().content;
      has_label = true;
      conv.messages.pop_back();
    }
    json msgs = json::array();
    for (const auto& m : conv.messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
    for (auto it = conv.messages.rbegin(); it != conv.messages.rend(); ++it)
      if (it->role == "user") {
        pending[i].out["query"] = it->content;
        break;
      }
    pending[i].out["messages"] = msgs;
    if (has_label) pending[i].out["labels"] = label;
    GenerationCallbacks cb;
    cb.on_finish = [&pending, i](const GenerationOutput& o) {
      pending[i].result = o;
      pending[i].done = true;
    };
    engine.submit(make_request(rt, opt, encode_prompt(rt, opt, conv.messages)), std::move(cb));
  }
  size_t written = 0;
  while (written < pending.size()) {
    const bool busy = engine.step();
    // Write finished rows in dataset order as soon as all earlier ones are done.
    while (written < pending.size() && pending[written].done) {
      Pending& p = pending[written];
      p.out["response"] = p.result.text;
      p.out["finish_reason"] = p.result.finish_reason;
      if (opt.logprobs) {
        json lps = json::array();
        for (const auto& lp : p.result.logprobs) {
          json e = {{"token_id", lp.token}, {"token", rt.tokenizer().decode(std::vector<int32_t>{lp.token})},
                    {"logprob", lp.logprob}};
          if (!lp.top.empty()) {
            json top = json::array();
            for (const auto& [id, v] : lp.top) top.push_back({{"token_id", id}, {"logprob", v}});
            e["top_logprobs"] = top;
          }
          lps.push_back(e);
        }
        p.out["logprobs"] = lps;
      }
      f << p.out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
      f.flush();
      ++written;
    }
    SWIFTLET_CHECK(busy || written == pending.size(), "engine idle with {} rows unfinished",
                   pending.size() - written);
  }
  return path;
}

}  // namespace swiftlet
