#pragma once
// Unicode helpers for the tokenizer: UTF-8 decoding and validation, the character classes the
// pre-tokenizer regexes use (\p{L}, \p{N}, White_Space), lossy UTF-8 repair for decoding, and
// Unicode normalization (through utf8proc, with a fast path that skips text already in NFC).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace swiftlet::tok {

// Classes used by the split regexes. White_Space characters other than \r and \n are kSpace;
// \r and \n are kNewline (they are White_Space too, and the regexes treat them specially).
enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3, kNewline = 4 };

namespace detail {
// Per BMP code point: bits 0-2 CharClass, bit 3 "NFC-inert" (see is_nfc_inert), bit 4 word char.
const uint8_t* bmp_table();
uint8_t astral_bits(char32_t c);
inline constexpr uint8_t kInertBit = 8, kWordBit = 16;
}  // namespace detail

inline uint8_t char_bits(char32_t c) {
  return c < 0x10000 ? detail::bmp_table()[c] : detail::astral_bits(c);
}
inline CharClass char_class(char32_t c) { return CharClass(char_bits(c) & 7); }
inline bool is_white_space(char32_t c) {
  CharClass k = char_class(c);
  return k == kSpace || k == kNewline;
}
// Rust regex's \w (used by single_word added tokens): Alphabetic, marks, Nd, Pc, Join_Control.
// Alphabetic is approximated by L + Nl (utf8proc has no Other_Alphabetic table; marks cover most).
inline bool is_word_char(char32_t c) { return char_bits(c) & detail::kWordBit; }
// A character NFC leaves unchanged and that never combines with what precedes it: text splits
// before such a character into pieces that normalise independently.
inline bool is_nfc_inert(char32_t c) { return char_bits(c) & detail::kInertBit; }

// Decodes one code point from valid UTF-8 at p; returns its length in bytes.
inline int utf8_decode(const char* p, char32_t* cp) {
  auto b = static_cast<unsigned char>(p[0]);
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  if (b < 0xE0) {
    *cp = (char32_t(b & 0x1F) << 6) | (p[1] & 0x3F);
    return 2;
  }
  if (b < 0xF0) {
    *cp = (char32_t(b & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    return 3;
  }
  *cp = (char32_t(b & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) | (char32_t(p[2] & 0x3F) << 6) |
        (p[3] & 0x3F);
  return 4;
}
// Length of the UTF-8 sequence that starts with lead byte b (valid text assumed).
inline int utf8_length(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }
void utf8_append(std::string& out, char32_t c);

// Byte offset of the first byte that does not start a valid UTF-8 sequence, or npos.
size_t find_invalid_utf8(std::string_view text);

// Appends `bytes` as UTF-8, replacing each maximal invalid subsequence with U+FFFD (the rule of
// Rust's String::from_utf8_lossy and the WHATWG decoder). When `final` is false a trailing
// incomplete-but-valid-so-far sequence is held back: returns the number of bytes consumed.
size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final = true);

enum class NormalizationForm { kNFC, kNFD, kNFKC, kNFKD };

// Normalises text (valid UTF-8). Returns false when the text is already normalised (out is left
// untouched), true when `out` holds the normalised text.
bool normalize(std::string_view text, NormalizationForm form, std::string& out);

}  // namespace swiftlet::tok
