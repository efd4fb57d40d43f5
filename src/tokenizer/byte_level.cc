#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/unicode.h"

namespace swiftlet::tok {

namespace {

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 0x144> to_byte{};  // every character of the alphabet is below U+0144
  Tables() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_char[size_t(b)] = printable ? char32_t(b) : next++;
      to_byte[to_char[size_t(b)]] = int16_t(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t byte_level_char(unsigned char b) { return tables().to_char[b]; }

bool byte_level_decode(std::string_view token, std::string& raw) {
  const Tables& t = tables();
  raw.clear();
  for (size_t i = 0; i < token.size();) {
    char32_t c;
    i += size_t(utf8_decode(token.data() + i, &c));
    if (c >= t.to_byte.size() || t.to_byte[c] < 0) return false;
    raw.push_back(char(t.to_byte[c]));
  }
  return true;
}

std::string byte_level_encode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char b : raw) utf8_append(out, tables().to_char[b]);
  return out;
}

}  // namespace swiftlet::tok
