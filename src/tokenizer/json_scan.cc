#include "tokenizer/json_scan.h"

#include <cstring>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace swiftlet::tok {

void JsonScanner::fail(const std::string& what) const {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
    if (text_[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  throw Error(fmt::format("{} is not valid JSON: {} at line {} column {}", file_, what, line, col),
              "the file may be truncated or hand-edited; download it again");
}

void JsonScanner::expect(char c) {
  if (!consume(c)) {
    if (pos_ >= text_.size()) fail(fmt::format("expected '{}' but the file ended", c));
    fail(fmt::format("expected '{}'", c));
  }
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

void JsonScanner::read_string(std::string& out) {
  expect('"');
  out.clear();
  const char* data = text_.data();
  size_t n = text_.size();
  while (true) {
    size_t start = pos_;
    while (pos_ < n && data[pos_] != '"' && data[pos_] != '\\' &&
           static_cast<unsigned char>(data[pos_]) >= 0x20)
      ++pos_;
    out.append(data + start, pos_ - start);
    if (pos_ >= n) fail("unterminated string");
    char c = data[pos_];
    if (c == '"') {
      ++pos_;
      break;
    }
    if (c != '\\') fail("control character in string");
    if (pos_ + 1 >= n) fail("unterminated string");
    char e = data[pos_ + 1];
    pos_ += 2;
    switch (e) {
      case '"': out.push_back('"'); break;
      case '\\': out.push_back('\\'); break;
      case '/': out.push_back('/'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'u': {
        auto read4 = [&]() -> char32_t {
          if (pos_ + 4 > n) fail("truncated \\u escape");
          char32_t v = 0;
          for (int k = 0; k < 4; ++k) {
            int h = hex_value(data[pos_ + size_t(k)]);
            if (h < 0) fail("bad \\u escape");
            v = v * 16 + char32_t(h);
          }
          pos_ += 4;
          return v;
        };
        char32_t cp = read4();
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (pos_ + 2 > n || data[pos_] != '\\' || data[pos_ + 1] != 'u')
            fail("unpaired surrogate in \\u escape");
          pos_ += 2;
          char32_t lo = read4();
          if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired surrogate in \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          fail("unpaired surrogate in \\u escape");
        }
        utf8_append(out, cp);
        break;
      }
      default:
        fail("bad escape in string");
    }
  }
}

int64_t JsonScanner::read_int() {
  skip_ws();
  size_t start = pos_;
  bool neg = pos_ < text_.size() && text_[pos_] == '-';
  if (neg) ++pos_;
  int64_t v = 0;
  size_t digits = 0;
  while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
    if (digits > 17) fail("integer too large");
    v = v * 10 + (text_[pos_] - '0');
    ++pos_;
    ++digits;
  }
  if (digits == 0 || (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' ||
                                               text_[pos_] == 'E'))) {
    pos_ = start;
    fail("expected an integer");
  }
  return neg ? -v : v;
}

void JsonScanner::skip_string() {
  ++pos_;  // opening quote
  const char* data = text_.data();
  size_t n = text_.size();
  while (true) {
    const void* q = std::memchr(data + pos_, '"', n - pos_);
    if (!q) {
      pos_ = n;
      fail("unterminated string");
    }
    size_t end = size_t(static_cast<const char*>(q) - data);
    // The quote is escaped when preceded by an odd number of backslashes.
    size_t bs = 0;
    while (end - bs > pos_ && data[end - bs - 1] == '\\') ++bs;
    pos_ = end + 1;
    if (bs % 2 == 0) return;
  }
}

std::string_view JsonScanner::skip_value() {
  skip_ws();
  size_t start = pos_;
  if (pos_ >= text_.size()) fail("expected a value but the file ended");
  char c = text_[pos_];
  if (c == '"') {
    skip_string();
  } else if (c == '{' || c == '[') {
    int depth = 0;
    while (pos_ < text_.size()) {
      char d = text_[pos_];
      if (d == '"') {
        skip_string();
        continue;
      }
      if (d == '{' || d == '[') ++depth;
      if (d == '}' || d == ']') {
        if (--depth == 0) {
          ++pos_;
          return text_.substr(start, pos_ - start);
        }
      }
      ++pos_;
    }
    fail("unterminated object or array");
  } else {
    while (pos_ < text_.size()) {
      char d = text_[pos_];
      if (d == ',' || d == '}' || d == ']' || d == ' ' || d == '\n' || d == '\r' || d == '\t')
        break;
      ++pos_;
    }
    if (pos_ == start) fail("expected a value");
  }
  return text_.substr(start, pos_ - start);
}

bool JsonScanner::next_key(std::string& key, bool& first) {
  if (consume('}')) return false;
  if (!first) expect(',');
  first = false;
  if (peek() != '"') fail("expected an object key");
  read_string(key);
  expect(':');
  return true;
}

bool JsonScanner::next_element(bool& first) {
  if (consume(']')) return false;
  if (!first) expect(',');
  first = false;
  return true;
}

}  // namespace swiftlet::tok
