#include "template/template_text.h"

namespace swiftlet::template_detail {
namespace {

// Decodes one UTF-8 code point at s[i]; returns its byte length, or 0 when the bytes are invalid.
size_t decode_utf8(std::string_view s, size_t i, char32_t* out) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  char32_t cp = 0;
  if (b0 < 0x80) {
    *out = b0;
    return 1;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2, cp = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, cp = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  *out = cp;
  return len;
}

}  // namespace

bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

size_t py_space_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp;
    const size_t len = decode_utf8(s, i, &cp);
    if (len == 0 || !is_py_space(cp)) break;
    i += len;
  }
  return i;
}

size_t py_space_suffix(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    // Step back over continuation bytes to the lead byte of the last code point.
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80)
      --start;
    char32_t cp;
    const size_t len = decode_utf8(s, start, &cp);
    if (len == 0 || start + len != end || !is_py_space(cp)) break;
    end = start;
  }
  return s.size() - end;
}

std::string py_strip(std::string_view s) {
  s.remove_prefix(py_space_prefix(s));
  s.remove_suffix(py_space_suffix(s));
  return std::string(s);
}

std::string_view lstrip_newlines(std::string_view s) {
  const size_t i = s.find_first_not_of('\n');
  return i == std::string_view::npos ? std::string_view() : s.substr(i);
}

std::string_view rstrip_newlines(std::string_view s) {
  const size_t i = s.find_last_not_of('\n');
  return i == std::string_view::npos ? std::string_view() : s.substr(0, i + 1);
}

std::string_view strip_newlines(std::string_view s) { return rstrip_newlines(lstrip_newlines(s)); }

size_t empty_think_prefix(std::string_view reply) {
  constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  size_t p = 0;
  if (reply.starts_with(kOpen)) {
    p = kOpen.size();
    p += py_space_prefix(reply.substr(p));
    if (!reply.substr(p).starts_with(kClose)) return 0;
    p += kClose.size();
  } else if (reply.starts_with(kClose)) {
    p = kClose.size();
  } else {
    return 0;
  }
  return p + py_space_prefix(reply.substr(p));
}

void SegmentBuilder::add(std::string_view text, bool loss) {
  if (text.empty()) return;
  if (!segments_.empty() && segments_.back().loss == loss) {
    segments_.back().text += text;
  } else {
    segments_.push_back({std::string(text), loss});
  }
}

}  // namespace swiftlet::template_detail
