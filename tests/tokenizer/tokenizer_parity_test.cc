// Parity with Hugging Face's JavaScript tokenizers (@huggingface/tokenizers) on the real Qwen3
// and Llama-3 tokenizer files, over thousands of generated strings; plus variants of those files
// that exercise other parts of the pipeline (a BOS template, GPT-2's ByteLevel regex, a regex
// that goes through PCRE2).
#include <gtest/gtest.h>

#include "tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using testing::TokenizerTempDir;

struct ParityStats {
  size_t strings = 0, id_mismatches = 0, text_mismatches = 0;
};

// Compares swiftlet with the oracle on every string; reports the first few differences.
ParityStats compare_with_oracle(const fs::path& model_dir, const std::vector<std::string>& texts,
                                bool check_roundtrip = true) {
  ParityStats st;
  std::vector<json> ref = testing::run_hf_oracle(model_dir, texts);
  if (ref.size() != texts.size()) return st;
  Tokenizer tok = Tokenizer::load(model_dir.string());
  int reported = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string& s = texts[i];
    std::vector<int32_t> ids = tok.encode(s), ids_special = tok.encode(s, true);
    auto expect_ids = ref[i]["ids"].get<std::vector<int32_t>>();
    auto expect_special = ref[i]["ids_special"].get<std::vector<int32_t>>();
    ++st.strings;
    if (ids != expect_ids || ids_special != expect_special) {
      ++st.id_mismatches;
      if (reported++ < 5)
        ADD_FAILURE() << "ids differ for " << json(s).dump() << "\n  swiftlet: " << json(ids).dump()
                      << "\n  HF:       " << json(expect_ids).dump()
                      << "\n  with specials: " << json(ids_special).dump() << " vs "
                      << json(expect_special).dump();
      continue;
    }
    std::string decoded = tok.decode(ids), skip = tok.decode(ids_special, true),
                clean = tok.decode(ids, false, true);
    bool ok = decoded == ref[i]["decoded"].get<std::string>() &&
              skip == ref[i]["decoded_skip"].get<std::string>() &&
              clean == ref[i]["decoded_clean"].get<std::string>();
    if (check_roundtrip) ok = ok && decoded == ref[i]["normalized"].get<std::string>();
    if (!ok) {
      ++st.text_mismatches;
      if (reported++ < 5)
        ADD_FAILURE() << "decode differs for " << json(s).dump() << "\n  swiftlet: "
                      << json(decoded).dump() << " / " << json(skip).dump() << " / "
                      << json(clean).dump() << "\n  HF:       " << ref[i].dump();
    }
  }
  return st;
}

#define SWIFTLET_REQUIRE_HF_ORACLE(dir)                                                        \
  SWIFTLET_REQUIRE_ORACLE(testing::node_available(), "node");                                  \
  SWIFTLET_REQUIRE_ORACLE(testing::hf_tokenizers_available(), "npm @huggingface/tokenizers in " \
                                                                  << testing::node_modules()); \
  SWIFTLET_REQUIRE_ORACLE(!(dir).empty(), "npm tokenizer package in " << testing::node_modules())

TEST(TokenizerParity, Qwen3MatchesHuggingFace) {
  fs::path dir = testing::npm_tokenizer_dir("qwen3");
  SWIFTLET_REQUIRE_HF_ORACLE(dir);
  auto texts = testing::generate_texts(1, 2400);
  ParityStats st = compare_with_oracle(dir, texts);
  EXPECT_EQ(st.strings, texts.size());
  EXPECT_EQ(st.id_mismatches, 0u);
  EXPECT_EQ(st.text_mismatches, 0u);
}

TEST(TokenizerParity, Llama3MatchesHuggingFace) {
  fs::path dir = testing::npm_tokenizer_dir("llama3");
  SWIFTLET_REQUIRE_HF_ORACLE(dir);
  auto texts = testing::generate_texts(2, 2400);
  ParityStats st = compare_with_oracle(dir, texts);
  EXPECT_EQ(st.strings, texts.size());
  EXPECT_EQ(st.id_mismatches, 0u);
  EXPECT_EQ(st.text_mismatches, 0u);
}

// Writes a copy of a model folder whose tokenizer.json is changed by edit().
template <class F>
void write_variant(const fs::path& src, const TokenizerTempDir& dst, F edit) {
  json t = json::parse(testing::read_text(src / "tokenizer.json"));
  edit(t);
  dst.write("tokenizer.json", t.dump());
  dst.write("tokenizer_config.json", testing::read_text(src / "tokenizer_config.json"));
}

// Meta's own Llama-3 files prepend <|begin_of_text|> through a TemplateProcessing step.
TEST(TokenizerParity, Llama3WithBosTemplateMatchesHuggingFace) {
  fs::path dir = testing::npm_tokenizer_dir("llama3");
  SWIFTLET_REQUIRE_HF_ORACLE(dir);
  TokenizerTempDir tmp;
  write_variant(dir, tmp, [](json& t) {
    json bytelevel = t["post_processor"];
    json tmpl = {{"type", "TemplateProcessing"},
                 {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"},
                                                            {"type_id", 0}}}},
                                         {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                 {"pair", json::array()},
                 {"special_tokens",
                  {{"<|begin_of_text|>",
                    {{"id", "<|begin_of_text|>"}, {"ids", {128000}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
    t["post_processor"] = {{"type", "Sequence"}, {"processors", json::array({bytelevel, tmpl})}};
  });
  auto texts = testing::generate_texts(3, 600);
  ParityStats st = compare_with_oracle(tmp.path(), texts);
  EXPECT_EQ(st.strings, texts.size());
  EXPECT_EQ(st.id_mismatches, 0u);
  EXPECT_EQ(st.text_mismatches, 0u);
  Tokenizer tok = Tokenizer::load(tmp.path().string());
  EXPECT_EQ(tok.encode("Hi", true).front(), 128000);
  EXPECT_EQ(tok.encode("Hi", false).front(), tok.token_to_id("Hi"));
}

// GPT-2 style: one ByteLevel pre-tokenizer with its own regex and a prefix space.
TEST(TokenizerParity, Gpt2StyleByteLevelRegexMatchesHuggingFace) {
  fs::path dir = testing::npm_tokenizer_dir("qwen3");
  SWIFTLET_REQUIRE_HF_ORACLE(dir);
  TokenizerTempDir tmp;
  write_variant(dir, tmp, [](json& t) {
    t["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true},
                          {"trim_offsets", true}, {"use_regex", true}};
  });
  testing::TextGenOptions opts;
  opts.js_whitespace_safe = true;  // the JS library uses JS's \s here, HF's Rust White_Space
  auto texts = testing::generate_texts(4, 600, opts);
  // With a prefix space the text no longer round-trips, so only HF's decode is compared.
  ParityStats st = compare_with_oracle(tmp.path(), texts, /*check_roundtrip=*/false);
  EXPECT_EQ(st.strings, texts.size());
  EXPECT_EQ(st.id_mismatches, 0u);
  EXPECT_EQ(st.text_mismatches, 0u);
}

// A pattern that is not one of the hand-written ones runs through PCRE2.
TEST(TokenizerParity, Pcre2RegexPathMatchesHuggingFace) {
  fs::path dir = testing::npm_tokenizer_dir("llama3");
  SWIFTLET_REQUIRE_HF_ORACLE(dir);
  TokenizerTempDir tmp;
  write_variant(dir, tmp, [](json& t) {
    auto& split = t["pre_tokenizer"]["pretokenizers"][0];
    split["pattern"]["Regex"] = "(?:" + split["pattern"]["Regex"].get<std::string>() + ")";
  });
  testing::TextGenOptions opts;
  opts.astral_random = false;            // PCRE2 10.42 knows Unicode 14 only
  opts.ascii_case_contractions = true;   // PCRE2's caseless 's' also matches U+017F
  auto texts = testing::generate_texts(5, 600, opts);
  ParityStats st = compare_with_oracle(tmp.path(), texts);
  EXPECT_EQ(st.strings, texts.size());
  EXPECT_EQ(st.id_mismatches, 0u);
  EXPECT_EQ(st.text_mismatches, 0u);
}

}  // namespace
}  // namespace swiftlet
