// swiftlet tokenize: text on stdin -> token ids as JSON, with a model's tokenizer.json.
//   swiftlet tokenize --model DIR < text.txt            one JSON array for all of stdin
//   swiftlet tokenize --model DIR --jsonl true < x.jsonl  one JSON string per line -> one array per line
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
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
                "add the tokens of the tokenizer's post-processor template (e.g. BOS)"}});
  if (!flags.parse(argc, argv)) {
    std::fputs(flags.help_text(kSummary).c_str(), stdout);
    return 0;
  }
  if (flags.str("model").empty())
    throw Error("swiftlet tokenize needs --model", "pass a model folder holding tokenizer.json");
  Tokenizer tokenizer = Tokenizer::load(flags.str("model"));
  bool add_special = flags.boolean("add_special_tokens");
  std::string input = read_stdin(), out;
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
