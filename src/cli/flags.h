#pragma once
// Command-line flags in ms-swift's style: `--name value`, `--name=value`, lists as several values
// (`--dataset a.jsonl b.jsonl`), booleans as true/false. Each command declares its flags with a
// default and one line of help; an unknown flag is an error with a "did you mean" hint.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace swiftlet::cli {

enum class FlagKind { kString, kInt, kFloat, kBool, kList };

struct FlagSpec {
  std::string name;
  FlagKind kind = FlagKind::kString;
  std::string default_value;  // as text; "" for none; lists: space-separated
  std::string help;
  std::vector<std::string> aliases;  // older ms-swift names accepted for this flag
};

class Flags {
 public:
  Flags(std::string command, std::vector<FlagSpec> specs);

  // Parses argv[first..argc). Throws Error for unknown flags and malformed values.
  // Returns false when --help / -h was given (help_text() should be printed).
  bool parse(int argc, char** argv, int first = 2);

  bool given(const std::string& name) const;
  std::string str(const std::string& name) const;
  int64_t i64(const std::string& name) const;
  double f64(const std::string& name) const;
  bool boolean(const std::string& name) const;
  std::vector<std::string> list(const std::string& name) const;
  // Every flag and its effective value, for args.json.
  std::map<std::string, std::string> values() const;
  const std::vector<FlagSpec>& specs() const { return specs_; }

  std::string help_text(const std::string& summary) const;

 private:
  const FlagSpec& spec(const std::string& name) const;
  std::string command_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::vector<std::string>> given_;
};

// Parses "true"/"false"/"1"/"0" (case-insensitive); throws Error naming the flag otherwise.
bool parse_bool(const std::string& flag, const std::string& text);

}  // namespace swiftlet::cli
