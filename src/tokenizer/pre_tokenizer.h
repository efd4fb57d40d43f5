#pragma once
// The pre-tokenizer of a tokenizer.json: a sequence of Split steps and a final ByteLevel step
// that cut normalised text into the pieces BPE encodes one by one.
// The split regexes of Qwen2/Qwen3, Llama-3 and GPT-2 run as hand-written matchers that follow
// the regex alternation exactly (with \s = White_Space and ASCII-only case folding, as HF's
// tokenizers does); any other regex runs through PCRE2 (UTF + UCP, JIT).
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace swiftlet::tok {

// A non-owning reference to a callable (std::function without the allocation).
template <class Sig>
class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT: implicit by design
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class SplitPattern { kQwen2, kLlama3, kGpt2, kRegex, kLiteral };

class Pcre2Regex;

struct PreTokenizerStep {
  enum Kind { kSplit, kByteLevel } kind = kSplit;
  SplitPattern pattern = SplitPattern::kRegex;
  std::string literal;                // kLiteral
  std::shared_ptr<Pcre2Regex> regex;  // kRegex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel: split with the GPT-2 regex first
};

// Byte ranges [start, end) of the matches of a split pattern in text, in order.
using MatchFn = FunctionRef<void(size_t, size_t)>;
void find_matches(const PreTokenizerStep& step, std::string_view text, MatchFn on_match);

class PreTokenizer {
 public:
  // Parses the "pre_tokenizer" value of tokenizer.json (`file` names it in errors). With
  // fast_paths false every regex goes through PCRE2 (tests compare the two).
  static PreTokenizer parse(const nlohmann::json& j, const std::string& file,
                            bool fast_paths = true);
  // Calls emit(piece) for each piece of text, in order; pieces are raw UTF-8 bytes.
  void run(std::string_view text, FunctionRef<void(std::string_view)> emit) const {
    run_from(0, text, emit);
  }
  const std::vector<PreTokenizerStep>& steps() const { return steps_; }

 private:
  void run_from(size_t step, std::string_view text, FunctionRef<void(std::string_view)> emit) const;
  std::vector<PreTokenizerStep> steps_;
};

}  // namespace swiftlet::tok
