// swiftlet tokenize: text on stdin -> token ids as JSON, with a model's tokenizer.json.
//   swiftlet tokenize --model DIR < text.txt            one JSON array for all of stdin
//   swiftlet tokenize --model DIR --jsonl true < x.jsonl  one JSON string per line -> one array per line
//   swiftlet tokenize --model DIR --messages conv.json     the conversation through the chat template
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "data/conversation.h"
#include "io/file.h"
#include "io/json.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet::cli {

namespace {

constexpr const char* kSummary = "Print the token ids of text read from stdin";

std::string read_stdin() {
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) data.append(buf, n);
  if (std::ferror(stdin)) throw Error("cannot read stdin");
  return data;
}

void print_ids(const std::vector<int32_t>& ids, std::string& out) {
  out.push_back('[');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out.push_back(',');
    out += std::to_string(ids[i]);
  }
  out += "]\n";
}

int run_tokenize(int argc, char** argv) {
  Flags flags("tokenize",
              {{"model", FlagKind::kString, "", "model folder or tokenizer.json file"},
               {"jsonl", FlagKind::kBool, "false",
                "read one JSON string per line and print one array of ids per line"},
               {"add_special_tokens", FlagKind::kBool, "false",
                "add the tokens of the tokenizer's post-processor template (e.g. BOS)"},
               {"messages", FlagKind::kString, "",
                "a JSON file with a conversation (a list of messages or a dataset row): apply the "
                "chat template, then tokenize (stdin is not read)"},
               {"template", FlagKind::kString, "", "chat template for --messages (default: detected)"},
               {"system", FlagKind::kString, "", "system prompt for --messages"},
               {"enable_thinking", FlagKind::kBool, "", "Qwen3 thinking for --messages"},
               {"add_generation_prompt", FlagKind::kBool, "", "end with the assistant header (default: "
                "true when the last message is not the assistant's)"}});
  if (!flags.parse(argc, argv)) {
    std::fputs(flags.help_text(kSummary).c_str(), stdout);
    return 0;
  }
  if (flags.str("model").empty())
    throw Error("swiftlet tokenize needs --model", "pass a model folder holding tokenizer.json");
  Tokenizer tokenizer = Tokenizer::load(flags.str("model"));
  bool add_special = flags.boolean("add_special_tokens");
  std::string out;
  if (!flags.str("messages").empty()) {
    const std::string path = flags.str("messages");
    io::Json j = io::parse_json(io::read_file(path), path);
    if (j.is_array()) j = io::Json{{"messages", j}};
    Conversation conv = parse_conversation(j, path);
    std::string model_type;
    const std::string cfg = flags.str("model") + "/config.json";
    if (io::is_regular_file(cfg)) model_type = io::read_json_file(cfg).value("model_type", "");
    const std::string name = flags.str("template").empty()
                                 ? ChatTemplate::detect(model_type, tokenizer.chat_template())
                                 : flags.str("template");
    ChatTemplate t = ChatTemplate::by_name(name, {tokenizer.bos_token(), tokenizer.eos_token()});
    TemplateOptions o;
    if (flags.given("system")) o.system = flags.str("system");
    if (flags.given("enable_thinking")) o.enable_thinking = flags.boolean("enable_thinking");
    o.add_generation_prompt = flags.given("add_generation_prompt") ? flags.boolean("add_generation_prompt")
                                                                    : conv.messages.back().role != "assistant";
    print_ids(tokenizer.encode(t.render(conv.messages, o), add_special), out);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  std::string input = read_stdin();
  if (!flags.boolean("jsonl")) {
    print_ids(tokenizer.encode(input, add_special), out);
  } else {
    size_t line_no = 0;
    for (size_t i = 0; i < input.size();) {
      size_t e = input.find('\n', i);
      if (e == std::string::npos) e = input.size();
      std::string_view line(input.data() + i, e - i);
      i = e + 1;
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        throw Error(fmt::format("stdin line {}: not valid JSON", line_no),
                    "with --jsonl true each line must be a JSON string such as \"Hello\"");
      }
      if (!j.is_string())
        throw Error(fmt::format("stdin line {}: expected a JSON string, got {}", line_no,
                                j.type_name()),
                    "with --jsonl true each line must be a JSON string such as \"Hello\"");
      print_ids(tokenizer.encode(j.get<std::string>(), add_special), out);
      if (out.size() > (1 << 20)) {
        std::fwrite(out.data(), 1, out.size(), stdout);
        out.clear();
      }
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

const bool registered = register_command({"tokenize", kSummary, run_tokenize});

}  // namespace

}  // namespace swiftlet::cli
