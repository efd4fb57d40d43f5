#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace swiftlet::tok {

void AddedTokenMatcher::build(const std::vector<std::pair<std::string, int32_t>>& patterns) {
  nodes_.assign(1, Node{});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (const auto& [text, index] : patterns) {
    if (text.empty()) continue;
    int32_t node = 0;
    for (unsigned char b : text) {
      int32_t next = child(node, b);
      if (next < 0) {
        next = int32_t(nodes_.size());
        nodes_[size_t(node)].children.emplace_back(b, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    // Two tokens with the same text: the first one listed keeps it.
    if (nodes_[size_t(node)].value < 0) nodes_[size_t(node)].value = index;
    first_byte_[static_cast<unsigned char>(text[0])] = true;
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
  for (const auto& [c, n] : nodes_[size_t(node)].children)
    if (c == b) return n;
  return -1;
}

namespace {

// Previous / next character of text around a byte offset (valid UTF-8).
char32_t char_before(std::string_view text, size_t pos, size_t* start) {
  size_t i = pos - 1;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  char32_t c;
  utf8_decode(text.data() + i, &c);
  *start = i;
  return c;
}

}  // namespace

void AddedTokenMatcher::split(std::string_view text, const std::vector<AddedToken>& tokens,
                              bool skip_special, FunctionRef<void(std::string_view)> on_text,
                              FunctionRef<void(int32_t)> on_token) const {
  size_t n = text.size(), emitted = 0, i = 0;
  auto bytes = reinterpret_cast<const unsigned char*>(text.data());
  while (i < n) {
    if (!first_byte_[bytes[i]]) {
      ++i;
      continue;
    }
    // Longest pattern starting at i.
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < n; ++j) {
      node = child(node, bytes[j]);
      if (node < 0) break;
      if (nodes_[size_t(node)].value >= 0) best = nodes_[size_t(node)].value, best_end = j + 1;
    }
    if (best < 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = best_end;
    i = best_end;  // the search resumes after this match even when the match is discarded
    const AddedToken& t = tokens[size_t(best)];
    if (skip_special && t.special) continue;
    if (t.single_word) {
      size_t dummy;
      bool free_left = start == 0 || !is_word_char(char_before(text, start, &dummy));
      char32_t next = 0;
      if (stop < n) utf8_decode(text.data() + stop, &next);
      bool free_right = stop == n || !is_word_char(next);
      if (!free_left || !free_right) continue;
    }
    if (t.lstrip) {  // swallow the whitespace before, but not text already emitted
      size_t s = start, prev;
      while (s > emitted && is_white_space(char_before(text, s, &prev))) s = prev;
      start = std::max(s, emitted);
    }
    if (t.rstrip) {
      while (stop < n) {
        char32_t c;
        int len = utf8_decode(text.data() + stop, &c);
        if (!is_white_space(c)) break;
        stop += size_t(len);
      }
      i = std::max(i, stop);
    }
    if (emitted < start) on_text(text.substr(emitted, start - emitted));
    on_token(best);
    emitted = stop;
  }
  if (emitted < n) on_text(text.substr(emitted));
}

}  // namespace swiftlet::tok
