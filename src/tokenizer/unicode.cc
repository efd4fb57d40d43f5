#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace swiftlet::tok {

namespace detail {

namespace {

bool white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

uint8_t compute_bits(char32_t c) {
  const utf8proc_property_t* p = utf8proc_get_property(utf8proc_int32_t(c));
  uint8_t bits = kOther;
  int cat = p->category;
  if (c == '\r' || c == '\n') {
    bits = kNewline;
  } else if (white_space(c)) {
    bits = kSpace;
  } else if (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) {
    bits = kLetter;
  } else if (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) {
    bits = kNumber;
  }
  bool word = (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ND) ||
              cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_PC || c == 0x200C ||
              c == 0x200D;
  if (word) bits |= kWordBit;
  // utf8proc composes a character with the previous starter only when its comb_index is a
  // "second" index (>= 0x8000) or it is a Hangul medial vowel / final consonant; it rewrites a
  // character only when it has a canonical decomposition or a non-zero combining class.
  bool canonical_decomposition = p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0;
  bool second = p->comb_index != UINT16_MAX && p->comb_index >= 0x8000;
  bool hangul_vt = (c >= 0x1161 && c <= 0x1175) || (c >= 0x11A8 && c <= 0x11C2);
  bool surrogate = c >= 0xD800 && c <= 0xDFFF;
  if (p->combining_class == 0 && !canonical_decomposition && !second && !hangul_vt && !surrogate)
    bits |= kInertBit;
  return bits;
}

}  // namespace

const uint8_t* bmp_table() {
  static const std::unique_ptr<uint8_t[]> table = [] {
    auto t = std::make_unique<uint8_t[]>(0x10000);
    for (char32_t c = 0; c < 0x10000; ++c) t[c] = compute_bits(c);
    return t;
  }();
  return table.get();
}

uint8_t astral_bits(char32_t c) { return c > 0x10FFFF ? uint8_t(kOther) : compute_bits(c); }

}  // namespace detail

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c));
  } else if (c < 0x800) {
    out.push_back(char(0xC0 | (c >> 6)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(char(0xE0 | (c >> 12)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (c >> 18)));
    out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  }
}

namespace {

// Valid range of the second byte after lead byte b, and the total length (0: invalid lead).
struct LeadInfo {
  uint8_t length, lo, hi;
};
inline LeadInfo lead_info(unsigned char b) {
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // <= U+10FFFF
  return {0, 0, 0};
}

// Number of bytes of a valid sequence at p[0..n), or -k when only k bytes form a valid prefix
// (k >= 1; the sequence is either cut by the end or broken by p[k]).
inline int scan_sequence(const unsigned char* p, size_t n) {
  LeadInfo li = lead_info(p[0]);
  if (li.length == 0) return -1;
  size_t k = 1;
  for (; k < li.length; ++k) {
    if (k >= n) return -int(k);
    unsigned char lo = k == 1 ? li.lo : 0x80, hi = k == 1 ? li.hi : 0xBF;
    if (p[k] < lo || p[k] > hi) return -int(k);
  }
  return int(li.length);
}

inline size_t ascii_prefix(const unsigned char* p, size_t n) {
  size_t i = 0;
  while (i + 8 <= n) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & 0x8080808080808080ull) break;
    i += 8;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

}  // namespace

size_t find_invalid_utf8(std::string_view text) {
  auto p = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), i = 0;
  while (i < n) {
    i += ascii_prefix(p + i, n - i);
    if (i >= n) break;
    int len = scan_sequence(p + i, n - i);
    if (len < 0) return i;
    i += size_t(len);
  }
  return std::string_view::npos;
}

size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final) {
  auto p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size(), i = 0;
  while (i < n) {
    size_t a = ascii_prefix(p + i, n - i);
    out.append(bytes.data() + i, a);
    i += a;
    if (i >= n) break;
    int len = scan_sequence(p + i, n - i);
    if (len > 0) {
      out.append(bytes.data() + i, size_t(len));
      i += size_t(len);
      continue;
    }
    size_t k = size_t(-len);
    if (!final && i + k == n && lead_info(p[i]).length != 0) return i;  // wait for more bytes
    out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal invalid subpart
    i += k;
  }
  return n;
}

namespace {

utf8proc_option_t options_for(NormalizationForm form) {
  switch (form) {
    case NormalizationForm::kNFC:
      return utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case NormalizationForm::kNFD:
      return utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case NormalizationForm::kNFKC:
      return utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case NormalizationForm::kNFKD:
      return utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  return utf8proc_option_t(0);
}

void utf8proc_append(std::string& out, std::string_view text, NormalizationForm form) {
  utf8proc_uint8_t* dst = nullptr;
  utf8proc_ssize_t len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   utf8proc_ssize_t(text.size()), &dst, options_for(form));
  SWIFTLET_CHECK(len >= 0, "utf8proc_map failed on validated text: {}", utf8proc_errmsg(len));
  out.append(reinterpret_cast<const char*>(dst), size_t(len));
  std::free(dst);
}

}  // namespace

bool normalize(std::string_view text, NormalizationForm form, std::string& out) {
  auto p = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size();
  size_t first = ascii_prefix(p, n);
  if (first == n) return false;  // ASCII is invariant under every normalization form
  if (form != NormalizationForm::kNFC) {
    std::string tmp;
    utf8proc_append(tmp, text, form);
    if (tmp == text) return false;
    out = std::move(tmp);
    return true;
  }
  // NFC piecewise: a segment starts at the last inert character before a non-inert one and ends
  // at the next inert character; only such segments go through utf8proc.
  const uint8_t* bmp = detail::bmp_table();
  size_t flushed = 0, last_inert = 0, seg_start = std::string_view::npos;
  bool have_inert = first > 0, changed = false;
  if (have_inert) last_inert = first - 1;
  std::string result;
  auto close_segment = [&](size_t end) {
    if (!changed) {
      result.reserve(n + 16);
      changed = true;
    }
    result.append(text.data() + flushed, seg_start - flushed);
    utf8proc_append(result, text.substr(seg_start, end - seg_start), form);
    flushed = end;
    seg_start = std::string_view::npos;
  };
  for (size_t i = first; i < n;) {
    char32_t c;
    int len = utf8_decode(text.data() + i, &c);
    bool inert = (c < 0x10000 ? bmp[c] : detail::astral_bits(c)) & detail::kInertBit;
    if (inert) {
      if (seg_start != std::string_view::npos) close_segment(i);
      last_inert = i;
      have_inert = true;
    } else if (seg_start == std::string_view::npos) {
      seg_start = have_inert && last_inert >= flushed ? last_inert : flushed;
    }
    i += size_t(len);
  }
  if (seg_start != std::string_view::npos) close_segment(n);
  if (!changed) return false;
  result.append(text.data() + flushed, n - flushed);
  if (result == text) return false;
  out = std::move(result);
  return true;
}

}  // namespace swiftlet::tok
