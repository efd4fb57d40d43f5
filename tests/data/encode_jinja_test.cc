// Multi-turn training samples against the models' own chat templates: each conversation is
// rendered by Hugging Face's @huggingface/jinja from the real tokenizer_config.json, and
//   - the sample's ids must equal the tokenizer's ids of that text, and
//   - its loss mask, token by token, must follow ms-swift's default loss_scale read off that text
//     (each assistant reply and the end-of-turn token after it are trained; Qwen3's empty think
//     block `^<think>\s*</think>\s*` is not; an end-of-turn is trained after a trained reply and
//     always at the end; labels[0] is never trained).
// It also measures how often tokenizing the template pieces one by one (ms-swift's way) would
// give other ids than tokenizing the whole text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/encode.h"
#include "template/conversations.h"
#include "template/jinja_oracle.h"
#include "tokenizer/byte_level.h"

namespace swiftlet {
namespace {

using testing::OracleCase;

const Tokenizer& tokenizer_of(const char* package) {
  static std::map<std::string, Tokenizer> loaded;
  auto it = loaded.find(package);
  if (it == loaded.end())
    it = loaded
             .emplace(package,
                      Tokenizer::load((testing::node_modules_dir() / package / "models").string()))
             .first;
  return it->second;
}

// Python's str.isspace() characters, as `\s` of ms-swift's regex.
bool py_space_at(const std::string& s, size_t i, size_t* len) {
  static const char* kSpaces[] = {" ",      "\t",     "\n",     "\r",     "\f",     "\v",
                                  "\x1c",   "\x1d",   "\x1e",   "\x1f",   "\u0085", "\u00a0",
                                  "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004",
                                  "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a",
                                  "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"};
  for (const char* sp : kSpaces) {
    const std::string_view v(sp);
    if (s.compare(i, v.size(), v) == 0) {
      *len = v.size();
      return true;
    }
  }
  return false;
}

// Length of ms-swift's ignore_empty_think match, `^<think>\s*</think>\s*` or `^</think>\s*`, at
// the start of `body`; 0 when neither matches.
size_t empty_think(const std::string& body) {
  size_t i = 0, len = 0;
  if (body.starts_with("<think>")) {
    i = 7;
    while (i < body.size() && py_space_at(body, i, &len)) i += len;
  }
  if (body.compare(i, 8, "</think>") != 0) return 0;
  i += 8;
  while (i < body.size() && py_space_at(body, i, &len)) i += len;
  return i;
}

// Trained bytes of a rendered conversation, read off its structure: the reply bodies between an
// assistant header and the end-of-turn token, plus that token under the rule above.
std::vector<bool> oracle_mask(const std::string& text, bool qwen) {
  const std::string head =
      qwen ? "<|im_start|>assistant\n" : "<|start_header_id|>assistant<|end_header_id|>\n\n";
  const std::string end = qwen ? "<|im_end|>\n" : "<|eot_id|>";
  std::vector<bool> mask(text.size(), false);
  for (size_t at = text.find(head); at != std::string::npos; at = text.find(head, at + 1)) {
    const size_t body_begin = at + head.size();
    const size_t body_end = text.find(qwen ? "<|im_end|>" : "<|eot_id|>", body_begin);
    EXPECT_NE(body_end, std::string::npos);
    const std::string body = text.substr(body_begin, body_end - body_begin);
    const size_t quiet = qwen ? empty_think(body) : 0;
    for (size_t i = body_begin + quiet; i < body_end; ++i) mask[i] = true;
    const bool final_turn = body_end + end.size() >= text.size();
    const size_t end_len = std::min(end.size(), text.size() - body_end);
    if (final_turn || quiet < body.size())
      for (size_t i = body_end; i < body_end + end_len; ++i) mask[i] = true;
  }
  return mask;
}

struct Stats {
  int compared = 0, dropped = 0, per_segment_differs = 0;
  std::vector<std::string> differing;
};

void check_against_jinja(const char* package, const std::string& template_name,
                         const std::vector<testing::Conversation>& conversations, Stats& stats) {
  const bool qwen = template_name == "qwen3";
  const Tokenizer& tok = tokenizer_of(package);
  const ChatTemplate tmpl =
      ChatTemplate::by_name(template_name, {tok.bos_token(), tok.eos_token()});
  EncodeSettings settings;
  settings.options.preserve_thinking = false;  // the Jinja templates drop history thinking
  settings.max_length = 1 << 20;
  std::vector<OracleCase> cases;
  std::vector<Conversation> rows;
  for (const testing::Conversation& c : conversations) {
    bool special_text = false, late_system = false;
    for (size_t i = 0; i < c.messages.size(); ++i) {
      const std::string both = c.messages[i].content + c.messages[i].reasoning_content;
      for (const char* s : {"<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|start_header_id|>"})
        special_text |= both.find(s) != std::string::npos;
      late_system |= i > 0 && c.messages[i].role == "system";
    }
    if (special_text || late_system) continue;  // the oracle parses the text by these tokens
    // What the data layer hands the template: merged turns, no empty system turn.
    std::vector<ChatMessage> m = merge_for_template(c.messages);
    if (m[0].role == "system" && m[0].content.empty()) m.erase(m.begin());
    if (m.empty()) continue;
    cases.push_back({package, m, /*add_generation_prompt=*/false, std::nullopt});
    rows.push_back({m});
  }
  const std::vector<std::string> rendered = testing::jinja_render(cases);
  ASSERT_EQ(rendered.size(), rows.size());
  for (size_t k = 0; k < rows.size(); ++k) {
    std::string text = rendered[k];
    ASSERT_FALSE(text.starts_with("ERROR")) << text;
    const std::string header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
    if (!qwen && text.ends_with(header)) text.resize(text.size() - header.size());
    const std::string where = nlohmann::json(text).dump();
    std::string ours;
    for (const auto& p : training_segments(tmpl, rows[k], settings)) ours += p.text;
    ASSERT_EQ(ours, text) << "rendering differs";

    const std::vector<bool> byte_mask = oracle_mask(text, qwen);
    const std::vector<int32_t> ids = tok.encode(text);
    std::vector<int32_t> labels(ids.size(), -100);
    size_t pos = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      std::string bytes;
      ASSERT_TRUE(tok::byte_level_decode(tok.id_to_token(ids[t]), bytes));
      bool trained = false;
      for (size_t b = pos; b < pos + bytes.size() && b < text.size(); ++b) trained |= byte_mask[b];
      if (trained && t > 0) labels[t] = ids[t];
      pos += bytes.size();
    }
    ASSERT_EQ(pos, text.size()) << where;

    const EncodedRow row = encode_conversation(tok, tmpl, rows[k], settings);
    const bool any = std::any_of(labels.begin(), labels.end(), [](int32_t l) { return l != -100; });
    if (!any) {
      EXPECT_TRUE(row.samples.empty() && row.no_trained_token) << where;
      ++stats.dropped;
      continue;
    }
    ASSERT_EQ(row.samples.size(), 1u) << where;
    EXPECT_FALSE(row.per_segment) << where;
    EXPECT_EQ(row.samples[0].input_ids, ids) << where;
    EXPECT_EQ(row.samples[0].labels, labels) << where;
    ++stats.compared;

    std::vector<int32_t> seg_ids, seg_labels;
    tokenize_per_segment(tok, training_segments(tmpl, rows[k], settings), seg_ids, seg_labels);
    if (seg_ids != ids) {
      ++stats.per_segment_differs;
      if (stats.differing.size() < 5) stats.differing.push_back(where);
    }
  }
}

class DataEncodeJinja : public testing::JinjaOracleTest {};

TEST_F(DataEncodeJinja, Qwen3MultiTurnIdsAndLossMaskMatchTheRealTemplate) {
  Stats stats;
  std::vector<testing::Conversation> convs = testing::fixed_conversations(true);
  for (auto& c : testing::random_conversations(31, 700, true)) convs.push_back(std::move(c));
  check_against_jinja(testing::kQwen3Package, "qwen3", convs, stats);
  EXPECT_GT(stats.compared, 200);
  std::cout << "qwen3: " << stats.compared << " conversations compared, " << stats.dropped
            << " without a trained token, " << stats.per_segment_differs
            << " where piece-by-piece tokenization differs\n";
  for (const auto& d : stats.differing) std::cout << "  e.g. " << d << "\n";
}

TEST_F(DataEncodeJinja, Llama3MultiTurnIdsAndLossMaskMatchTheRealTemplate) {
  Stats stats;
  std::vector<testing::Conversation> convs = testing::fixed_conversations(false);
  for (auto& c : testing::random_conversations(37, 700, false)) convs.push_back(std::move(c));
  check_against_jinja(testing::kLlama3Package, "llama3", convs, stats);
  EXPECT_GT(stats.compared, 200);
  std::cout << "llama3: " << stats.compared << " conversations compared, " << stats.dropped
            << " without a trained token, " << stats.per_segment_differs
            << " where piece-by-piece tokenization differs\n";
  for (const auto& d : stats.differing) std::cout << "  e.g. " << d << "\n";
}

}  // namespace
}  // namespace swiftlet
