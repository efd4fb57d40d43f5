#pragma once
// GPT-2's byte-level alphabet: each byte is written as a printable character so that tokens are
// valid strings. Printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves;
// the other 68 bytes take U+0100.. in byte order (a space is "Ġ" U+0120, a newline "Ċ" U+010A).
#include <string>
#include <string_view>

namespace swiftlet::tok {

char32_t byte_level_char(unsigned char b);
// Maps a token written in the byte-level alphabet back to its bytes. Returns false (raw
// unspecified) when the token has a character outside the alphabet.
bool byte_level_decode(std::string_view token, std::string& raw);
// The byte-level spelling of raw bytes (what HF shows as the token string).
std::string byte_level_encode(std::string_view raw);

}  // namespace swiftlet::tok
