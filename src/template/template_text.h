#pragma once
// Internal helpers of the template layer: Python/Jinja string semantics the chat templates rely
// on (str.strip(), strip('\n'), re `\s`) on UTF-8 text, and the builder of loss segments.
#include <string>
#include <string_view>
#include <vector>

#include "template/chat_template.h"

namespace swiftlet::template_detail {

// Python's str.isspace() for one code point: what Jinja's `trim` and re's `\s` remove/match.
bool is_py_space(char32_t c);
// Bytes of Python whitespace at the start / end of UTF-8 text (invalid UTF-8 stops the scan).
size_t py_space_prefix(std::string_view s);
size_t py_space_suffix(std::string_view s);
// Jinja `| trim` (Python str.strip()).
std::string py_strip(std::string_view s);
// Python s.lstrip('\n') / s.rstrip('\n') / s.strip('\n').
std::string_view lstrip_newlines(std::string_view s);
std::string_view rstrip_newlines(std::string_view s);
std::string_view strip_newlines(std::string_view s);

// Length of ms-swift's ignore_empty_think match at the start of a reply: `^<think>\s*</think>\s*`
// or `^</think>\s*`; 0 when neither matches.
size_t empty_think_prefix(std::string_view reply);

// Collects rendered text with loss flags; adjacent pieces with the same flag are merged and empty
// pieces dropped, so the result is canonical (as ms-swift's _simplify_context_list).
class SegmentBuilder {
 public:
  void add(std::string_view text, bool loss);
  // The last emitted text carries loss (ms-swift's "end-of-turn after a trained token" rule).
  bool ends_with_loss() const { return !segments_.empty() && segments_.back().loss; }
  std::vector<TemplateSegment> take() { return std::move(segments_); }

 private:
  std::vector<TemplateSegment> segments_;
};

}  // namespace swiftlet::template_detail
