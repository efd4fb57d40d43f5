#include "cli/flags.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

namespace swiftlet::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string normalise(std::string s) {
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

std::vector<std::string> split_spaces(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(' ', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

}  // namespace

bool parse_bool(const std::string& flag, const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), ::tolower);
  if (t == "true" || t == "1") return true;
  if (t == "false" || t == "0") return false;
  throw Error(fmt::format("--{} expects true or false, got '{}'", flag, text));
}

Flags::Flags(std::string command, std::vector<FlagSpec> specs)
    : command_(std::move(command)), specs_(std::move(specs)) {}

const FlagSpec& Flags::spec(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return s;
  SWIFTLET_CHECK(false, "flag --{} is not declared by command {}", name, command_);
  return specs_.front();
}

bool Flags::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.rfind("--", 0) != 0)
      throw Error(fmt::format("unexpected argument '{}' for swiftlet {}", arg, command_),
                  fmt::format("flags look like --name value; see swiftlet {} --help", command_));
    std::string name = arg.substr(2);
    std::vector<std::string> vals;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      vals.push_back(name.substr(eq + 1));
      name = name.substr(0, eq);
      inline_value = true;
    }
    name = normalise(name);
    const FlagSpec* found = nullptr;
    for (const auto& s : specs_) {
      if (s.name == name) found = &s;
      for (const auto& a : s.aliases)
        if (a == name) found = &s;
    }
    if (!found) {
      std::string best;
      size_t best_d = 4;
      for (const auto& s : specs_) {
        size_t d = edit_distance(name, s.name);
        if (d < best_d) best_d = d, best = s.name;
      }
      std::string hint = best.empty()
                             ? fmt::format("see swiftlet {} --help for the flags it takes", command_)
                             : fmt::format("did you mean --{}?", best);
      throw Error(fmt::format("unknown flag --{} for swiftlet {}", name, command_), hint);
    }
    if (!inline_value) {
      while (i + 1 < argc) {
        std::string next = argv[i + 1];
        if (next.rfind("--", 0) == 0 && next.size() > 2) break;
        vals.push_back(next);
        ++i;
        if (found->kind != FlagKind::kList) break;
      }
    }
    if (vals.empty()) {
      if (found->kind == FlagKind::kBool) {
        vals.push_back("true");  // a bare boolean flag means true
      } else if (found->kind != FlagKind::kList) {
        throw Error(fmt::format("--{} needs a value", found->name));
      }
    }
    // Validate the value now so the error names the flag.
    const std::string& v = vals.empty() ? std::string() : vals.front();
    switch (found->kind) {
      case FlagKind::kInt: {
        char* end = nullptr;
        std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end) throw Error(fmt::format("--{} expects an integer, got '{}'", found->name, v));
        break;
      }
      case FlagKind::kFloat: {
        char* end = nullptr;
        std::strtod(v.c_str(), &end);
        if (v.empty() || *end) throw Error(fmt::format("--{} expects a number, got '{}'", found->name, v));
        break;
      }
      case FlagKind::kBool: parse_bool(found->name, v); break;
      default: break;
    }
    auto& slot = given_[found->name];
    if (found->kind == FlagKind::kList) {
      slot.insert(slot.end(), vals.begin(), vals.end());
    } else {
      slot = vals;
    }
  }
  return true;
}

bool Flags::given(const std::string& name) const {
  spec(name);
  return given_.count(name) > 0;
}

std::string Flags::str(const std::string& name) const {
  const auto& s = spec(name);
  auto it = given_.find(name);
  if (it == given_.end()) return s.default_value;
  std::string r;
  for (size_t i = 0; i < it->second.size(); ++i) r += (i ? " " : "") + it->second[i];
  return r;
}

int64_t Flags::i64(const std::string& name) const {
  std::string v = str(name);
  return v.empty() ? 0 : std::strtoll(v.c_str(), nullptr, 10);
}

double Flags::f64(const std::string& name) const {
  std::string v = str(name);
  return v.empty() ? 0.0 : std::strtod(v.c_str(), nullptr);
}

bool Flags::boolean(const std::string& name) const {
  std::string v = str(name);
  return v.empty() ? false : parse_bool(name, v);
}

std::vector<std::string> Flags::list(const std::string& name) const {
  const auto& s = spec(name);
  auto it = given_.find(name);
  if (it == given_.end()) return split_spaces(s.default_value);
  return it->second;
}

std::map<std::string, std::string> Flags::values() const {
  std::map<std::string, std::string> out;
  for (const auto& s : specs_) out[s.name] = str(s.name);
  return out;
}

std::string Flags::help_text(const std::string& summary) const {
  std::string out = fmt::format("usage: swiftlet {} [--flag value ...]\n\n{}\n\nflags:\n", command_, summary);
  for (const auto& s : specs_) {
    std::string def = s.default_value.empty() ? "" : fmt::format(" (default: {})", s.default_value);
    std::string names = "--" + s.name;
    for (const auto& a : s.aliases) names += ", --" + a;
    out += fmt::format("  {:<30} {}{}\n", names, s.help, def);
  }
  return out;
}

}  // namespace swiftlet::cli
