#pragma once
// A small JSON reader for the large parts of tokenizer.json (model.vocab: ~150k entries,
// model.merges: ~150-280k entries), which a DOM parser builds too slowly. It reads values in
// place, hands out the raw text of the small sections (parsed with nlohmann::json afterwards) and
// reports errors with the file name, line and column.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace swiftlet::tok {

class JsonScanner {
 public:
  JsonScanner(std::string_view text, std::string file) : text_(text), file_(std::move(file)) {}
  // Scans only the part of `text` that `part` views, keeping positions (for messages) in text.
  JsonScanner(std::string_view text, std::string_view part, std::string file)
      : text_(text.substr(0, size_t(part.data() - text.data()) + part.size())),
        file_(std::move(file)),
        pos_(size_t(part.data() - text.data())) {}

  void skip_ws() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
      ++pos_;
    }
  }
  // Skips whitespace, then consumes c if it is next.
  bool consume(char c) {
    skip_ws();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c);
  char peek() {
    skip_ws();
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }
  bool at_end() {
    skip_ws();
    return pos_ >= text_.size();
  }
  // Reads a string value (unescaped) into out.
  void read_string(std::string& out);
  int64_t read_int();
  // Skips any value and returns its raw text.
  std::string_view skip_value();
  // Iterates an object: expect('{'); bool first = true; while (next_key(key, first)) {read value}.
  bool next_key(std::string& key, bool& first);
  // Iterates an array: expect('['); bool first = true; while (next_element(first)) {read value}.
  bool next_element(bool& first);

  [[noreturn]] void fail(const std::string& what) const;
  const std::string& file() const { return file_; }
  std::string_view text() const { return text_; }
  size_t pos() const { return pos_; }

 private:
  void skip_string();
  std::string_view text_;
  std::string file_;
  size_t pos_ = 0;
};

}  // namespace swiftlet::tok
