#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace swiftlet::tok {

namespace {

const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Text cursor for the hand-written matchers: class and length of the character at a position.
struct Cursor {
  const char* s;
  size_t n;
  const uint8_t* bmp;
  CharClass cls(size_t i, size_t* len) const {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      *len = 1;
      return CharClass(bmp[b] & 7);
    }
    char32_t c;
    *len = size_t(utf8_decode(s + i, &c));
    return CharClass((c < 0x10000 ? bmp[c] : detail::astral_bits(c)) & 7);
  }
  // End of the run of characters starting at i whose class satisfies pred (at most max chars).
  template <class P>
  size_t run(size_t i, P pred, size_t max = SIZE_MAX) const {
    size_t len, count = 0;
    while (i < n && count < max && pred(cls(i, &len))) i += len, ++count;
    return i;
  }
};

inline bool is_ws(CharClass k) { return k == kSpace || k == kNewline; }

// The whitespace alternatives shared by all three patterns, at i where a White_Space run starts.
//   \s*[\r\n]+  (Qwen/Llama only) -> up to and including the run's last \r or \n
//   \s+(?!\S)   -> the whole run at the end of text, else the run minus its last character
//   \s+         -> a single whitespace character
size_t match_whitespace(const Cursor& c, size_t i, bool newline_alternative) {
  size_t end = i, len, last_start = i, count = 0, after_newline = SIZE_MAX;
  while (end < c.n) {
    CharClass k = c.cls(end, &len);
    if (!is_ws(k)) break;
    if (k == kNewline) after_newline = end + len;
    last_start = end;
    end += len;
    ++count;
  }
  if (newline_alternative && after_newline != SIZE_MAX) return after_newline;
  if (end == c.n || count < 2) return end;
  return last_start;
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d) or its case-sensitive GPT-2 form; returns the end or 0.
size_t match_contraction(const Cursor& c, size_t i, bool ignore_case) {
  if (c.s[i] != '\'' || i + 1 >= c.n) return 0;
  auto low = [&](size_t k) -> char {
    char x = c.s[k];
    return ignore_case && x >= 'A' && x <= 'Z' ? char(x + 32) : x;
  };
  char a = low(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 >= c.n) return 0;
  char b = low(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  return 0;
}

// One match of the Qwen2 (max_digits 1) or Llama-3 (max_digits 3) pattern at i; every character
// starts some alternative, so the matches tile the text.
size_t match_qwen_llama(const Cursor& c, size_t i, size_t max_digits) {
  if (size_t e = match_contraction(c, i, true)) return e;
  size_t len0;
  CharClass k0 = c.cls(i, &len0);
  auto letter = [](CharClass k) { return k == kLetter; };
  if (k0 == kLetter) return c.run(i, letter);
  if (k0 == kNumber) return c.run(i, [](CharClass k) { return k == kNumber; }, max_digits);
  size_t j = i + len0, len1 = 0;
  CharClass k1 = j < c.n ? c.cls(j, &len1) : kOther;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (k0 != kNewline && j < c.n && k1 == kLetter) return c.run(j, letter);
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  bool other_after_space = c.s[i] == ' ' && j < c.n && k1 == kOther;
  if (k0 == kOther || other_after_space) {
    size_t e = c.run(k0 == kOther ? i : j, [](CharClass k) { return k == kOther; });
    return c.run(e, [](CharClass k) { return k == kNewline; });
  }
  return match_whitespace(c, i, true);
}

// One match of GPT-2's pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|...
size_t match_gpt2(const Cursor& c, size_t i) {
  if (size_t e = match_contraction(c, i, false)) return e;
  size_t len0;
  CharClass k = c.cls(i, &len0);
  size_t start = i;
  if (c.s[i] == ' ' && i + 1 < c.n) {
    size_t len1;
    CharClass k1 = c.cls(i + 1, &len1);
    if (!is_ws(k1)) start = i + 1, k = k1;
  }
  if (!is_ws(k)) return c.run(start, [k](CharClass x) { return x == k; });
  return match_whitespace(c, i, false);
}

}  // namespace

// A compiled PCRE2 pattern, with Oniguruma's \s, \S, \d, \D rewritten to the Unicode properties
// Oniguruma gives them (PCRE2's \s leaves out U+0085).
class Pcre2Regex {
 public:
  Pcre2Regex(const std::string& pattern, const std::string& file) {
    std::string p;
    for (size_t i = 0; i < pattern.size(); ++i) {
      if (pattern[i] == '\\' && i + 1 < pattern.size()) {
        char e = pattern[++i];
        if (e == 's') p += "\\p{White_Space}";
        else if (e == 'S') p += "\\P{White_Space}";
        else if (e == 'd') p += "\\p{Nd}";
        else if (e == 'D') p += "\\P{Nd}";
        else p.push_back('\\'), p.push_back(e);
        continue;
      }
      p.push_back(pattern[i]);
    }
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw Error(fmt::format("{}: pre-tokenizer regex '{}' does not compile: {} (at offset {})",
                              file, pattern, reinterpret_cast<const char*>(msg), offset));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if it fails
  }
  ~Pcre2Regex() { pcre2_code_free(code_); }
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  void find_all(std::string_view text, MatchFn on_match) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    SWIFTLET_CHECK(md != nullptr, "pcre2_match_data_create_from_pattern failed");
    auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t start = 0;
    while (start <= text.size()) {
      int rc = pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw Error(fmt::format("pre-tokenizer regex failed: {}", reinterpret_cast<const char*>(msg)));
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t s = ov[0], e = ov[1];
      on_match(s, e);
      if (e > s) {
        start = e;
      } else {  // empty match: resume one character later, as Oniguruma's iterator does
        if (e >= text.size()) break;
        start = e + size_t(utf8_length(static_cast<unsigned char>(text[e])));
      }
    }
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

void find_matches(const PreTokenizerStep& step, std::string_view text, MatchFn on_match) {
  Cursor c{text.data(), text.size(), detail::bmp_table()};
  switch (step.pattern) {
    case SplitPattern::kQwen2:
    case SplitPattern::kLlama3: {
      size_t max_digits = step.pattern == SplitPattern::kQwen2 ? 1 : 3;
      for (size_t i = 0; i < c.n;) {
        size_t e = match_qwen_llama(c, i, max_digits);
        on_match(i, e);
        i = e;
      }
      return;
    }
    case SplitPattern::kGpt2:
      for (size_t i = 0; i < c.n;) {
        size_t e = match_gpt2(c, i);
        on_match(i, e);
        i = e;
      }
      return;
    case SplitPattern::kRegex:
      step.regex->find_all(text, on_match);
      return;
    case SplitPattern::kLiteral: {
      if (step.literal.empty()) return;
      for (size_t i = text.find(step.literal); i != std::string_view::npos;
           i = text.find(step.literal, i + step.literal.size()))
        on_match(i, i + step.literal.size());
      return;
    }
  }
}

namespace {

// Applies a Split step: HF's NormalizedString::split. Matches and the gaps between them become
// (range, is_match) parts; invert swaps the roles; the behaviour then removes or merges them.
void split_with_behavior(const PreTokenizerStep& step, std::string_view text,
                         FunctionRef<void(std::string_view)> emit) {
  struct Part {
    size_t start, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  find_matches(step, text, [&](size_t s, size_t e) {
    if (prev != s) parts.push_back({prev, s, step.invert});
    parts.push_back({s, e, !step.invert});
    prev = e;
  });
  if (prev != text.size()) parts.push_back({prev, text.size(), step.invert});

  std::vector<Part> out;  // here `match` means "remove"
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) out.push_back({p.start, p.end, false});
      break;
    case SplitBehavior::kRemoved:
      out = parts;
      break;
    case SplitBehavior::kContiguous: {
      bool previous = false;
      for (const Part& p : parts) {
        if (p.match == previous && !out.empty()) out.back().end = p.end;
        else out.push_back({p.start, p.end, false});
        previous = p.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Part& p : parts) {
        if (p.match && !previous && !out.empty()) out.back().end = p.end;
        else out.push_back({p.start, p.end, false});
        previous = p.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous = false;
      for (size_t k = parts.size(); k-- > 0;) {
        const Part& p = parts[k];
        if (p.match && !previous && !out.empty()) out.back().start = p.start;
        else out.push_back({p.start, p.end, false});
        previous = p.match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  for (const Part& p : out)
    if (!p.match && p.end > p.start) emit(text.substr(p.start, p.end - p.start));
}

SplitBehavior parse_behavior(const std::string& s, const std::string& file) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  throw Error(fmt::format("{}: unknown Split behavior '{}'", file, s),
              "expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
}

bool get_bool(const nlohmann::json& j, const char* key, bool dflt, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean())
    throw Error(fmt::format("{}: pre_tokenizer field '{}' must be true or false", file, key));
  return j[key].get<bool>();
}

void parse_step(const nlohmann::json& j, const std::string& file, bool fast_paths,
                std::vector<PreTokenizerStep>& steps) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error(fmt::format("{}: each pre_tokenizer needs a string \"type\"", file));
  std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      throw Error(fmt::format("{}: Sequence pre_tokenizer needs a \"pretokenizers\" list", file));
    for (const auto& sub : j["pretokenizers"]) parse_step(sub, file, fast_paths, steps);
    return;
  }
  PreTokenizerStep step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::kByteLevel;
    step.add_prefix_space = get_bool(j, "add_prefix_space", true, file);
    step.use_regex = get_bool(j, "use_regex", true, file);
    // trim_offsets only changes offsets, which swiftlet does not report.
    if (step.use_regex) {
      step.pattern = fast_paths ? SplitPattern::kGpt2 : SplitPattern::kRegex;
      if (!fast_paths) step.regex = std::make_shared<Pcre2Regex>(kGpt2Pattern, file);
    }
    steps.push_back(std::move(step));
    return;
  }
  if (type != "Split")
    throw Error(fmt::format("{}: pre_tokenizer type '{}' is not supported", file, type),
                "supported pre-tokenizers: Sequence, Split, ByteLevel");
  const nlohmann::json& pat = j.contains("pattern") ? j["pattern"] : nlohmann::json();
  if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
    std::string re = pat["Regex"].get<std::string>();
    if (fast_paths && re == kQwen2Pattern) step.pattern = SplitPattern::kQwen2;
    else if (fast_paths && re == kLlama3Pattern) step.pattern = SplitPattern::kLlama3;
    else if (fast_paths && re == kGpt2Pattern) step.pattern = SplitPattern::kGpt2;
    else step.pattern = SplitPattern::kRegex, step.regex = std::make_shared<Pcre2Regex>(re, file);
  } else if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
    step.pattern = SplitPattern::kLiteral;
    step.literal = pat["String"].get<std::string>();
  } else {
    throw Error(fmt::format("{}: Split pre_tokenizer needs a pattern {{\"Regex\": ...}} or "
                            "{{\"String\": ...}}", file));
  }
  if (!j.contains("behavior") || !j["behavior"].is_string())
    throw Error(fmt::format("{}: Split pre_tokenizer needs a \"behavior\"", file));
  step.behavior = parse_behavior(j["behavior"].get<std::string>(), file);
  step.invert = get_bool(j, "invert", false, file);
  steps.push_back(std::move(step));
}

}  // namespace

PreTokenizer PreTokenizer::parse(const nlohmann::json& j, const std::string& file,
                                 bool fast_paths) {
  PreTokenizer p;
  if (!j.is_null()) parse_step(j, file, fast_paths, p.steps_);
  if (p.steps_.empty() || p.steps_.back().kind != PreTokenizerStep::kByteLevel)
    throw Error(fmt::format("{}: the pre_tokenizer does not end with a ByteLevel step", file),
                "swiftlet runs byte-level BPE tokenizers only (Qwen, Llama-3, GPT-2 style)");
  for (size_t i = 0; i + 1 < p.steps_.size(); ++i)
    if (p.steps_[i].kind == PreTokenizerStep::kByteLevel)
      throw Error(fmt::format("{}: a ByteLevel pre_tokenizer step must come last", file));
  return p;
}

void PreTokenizer::run_from(size_t k, std::string_view text,
                            FunctionRef<void(std::string_view)> emit) const {
  if (text.empty()) return;
  const PreTokenizerStep& step = steps_[k];
  if (step.kind == PreTokenizerStep::kSplit) {
    if (step.behavior == SplitBehavior::kIsolated && !step.invert &&
        step.pattern != SplitPattern::kRegex && step.pattern != SplitPattern::kLiteral) {
      // The hand-written patterns tile the text: each match is a piece.
      find_matches(step, text, [&](size_t s, size_t e) { run_from(k + 1, text.substr(s, e - s), emit); });
      return;
    }
    split_with_behavior(step, text, [&](std::string_view piece) { run_from(k + 1, piece, emit); });
    return;
  }
  // ByteLevel: prefix a space when asked, then split with the GPT-2 regex when use_regex.
  std::string prefixed;
  if (step.add_prefix_space && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (!step.use_regex) return emit(text);
  if (step.pattern == SplitPattern::kGpt2) {
    find_matches(step, text, [&](size_t s, size_t e) { emit(text.substr(s, e - s)); });
  } else {
    split_with_behavior(step, text, emit);  // Isolated, as HF's ByteLevel splits
  }
}

}  // namespace swiftlet::tok
