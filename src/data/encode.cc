#include "data/encode.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace swiftlet {

namespace {

// The bytes a token stands for: byte-level tokens decode through GPT-2's alphabet; added tokens
// whose spelling is outside it ("hello world") are their own text.
std::string token_bytes(const Tokenizer& tokenizer, int32_t id) {
  const std::string spelling = tokenizer.id_to_token(id);
  std::string raw;
  if (tok::byte_level_decode(spelling, raw)) return raw;
  return spelling;
}

bool any_trained(const std::vector<int32_t>& labels) {
  return std::any_of(labels.begin(), labels.end(), [](int32_t l) { return l != kIgnoreIndex; });
}

TokenizedSample make_sample(std::vector<int32_t> ids, std::vector<int32_t> labels) {
  if (!labels.empty()) labels[0] = kIgnoreIndex;  // nothing predicts the first token
  return {std::move(ids), std::move(labels), {}};
}

}  // namespace

bool tokenize_joined(const Tokenizer& tokenizer, const std::vector<TemplateSegment>& pieces,
                     std::vector<int32_t>& ids, std::vector<int32_t>& labels) {
  std::string text;
  std::vector<size_t> piece_end;  // byte offset where each piece ends
  for (const TemplateSegment& p : pieces) {
    text += p.text;
    piece_end.push_back(text.size());
  }
  ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  labels.assign(ids.size(), kIgnoreIndex);
  size_t pos = 0, piece = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const std::string bytes = token_bytes(tokenizer, ids[t]);
    if (bytes.empty() || text.compare(pos, bytes.size(), bytes) != 0) return false;
    const size_t end = pos + bytes.size();
    // The token covers [pos, end): trained when any piece it touches carries loss.
    while (piece < pieces.size() && piece_end[piece] <= pos) ++piece;
    bool loss = false;
    for (size_t q = piece; q < pieces.size(); ++q) {
      const size_t q_begin = q == 0 ? 0 : piece_end[q - 1];
      if (q_begin >= end) break;
      loss |= pieces[q].loss && piece_end[q] > q_begin;
    }
    if (loss) labels[t] = ids[t];
    pos = end;
  }
  return pos == text.size();
}

void tokenize_per_segment(const Tokenizer& tokenizer, const std::vector<TemplateSegment>& pieces,
                          std::vector<int32_t>& ids, std::vector<int32_t>& labels) {
  ids.clear();
  labels.clear();
  for (const TemplateSegment& p : pieces) {
    const std::vector<int32_t> part = tokenizer.encode(p.text, /*add_special_tokens=*/false);
    ids.insert(ids.end(), part.begin(), part.end());
    if (p.loss) {
      labels.insert(labels.end(), part.begin(), part.end());
    } else {
      labels.insert(labels.end(), part.size(), kIgnoreIndex);
    }
  }
}

std::vector<TemplateSegment> training_segments(const ChatTemplate& chat_template,
                                               const Conversation& conversation,
                                               const EncodeSettings& settings) {
  std::vector<ChatMessage> messages = merge_for_template(conversation.messages);
  TemplateOptions options = settings.options;
  options.add_generation_prompt = false;
  // A row's empty system prompt means "no system turn" (ms-swift), not an empty system block.
  if (!messages.empty() && messages[0].role == "system" && messages[0].content.empty()) {
    messages.erase(messages.begin());
    options.system = "";
  }
  std::vector<TemplateSegment> pieces = chat_template.render_segments(messages, options);
  if (settings.loss_all) {
    std::string all;
    for (const TemplateSegment& p : pieces) all += p.text;
    pieces = {{std::move(all), true}};
  } else if (settings.last_round) {
    // Every template renders the final reply and its end-of-turn as the last trained piece (an
    // untrained assistant header always comes before it): keep only that one trained. A
    // conversation that does not end with a reply has no last round to train.
    std::vector<TemplateSegment> out;
    size_t last = pieces.size();
    if (!messages.empty() && messages.back().role == "assistant")
      for (size_t i = 0; i < pieces.size(); ++i)
        if (pieces[i].loss) last = i;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const bool loss = i == last;
      if (!out.empty() && out.back().loss == loss) {
        out.back().text += pieces[i].text;
      } else {
        out.push_back({pieces[i].text, loss});
      }
    }
    pieces = std::move(out);
  }
  return pieces;
}

EncodedRow encode_conversation(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                               const Conversation& conversation, const EncodeSettings& settings) {
  const std::vector<TemplateSegment> pieces =
      training_segments(chat_template, conversation, settings);
  EncodedRow row;
  std::vector<int32_t> ids, labels;
  if (!tokenize_joined(tokenizer, pieces, ids, labels)) {
    tokenize_per_segment(tokenizer, pieces, ids, labels);
    row.per_segment = true;
  }
  const int64_t n = int64_t(ids.size()), max_len = settings.max_length;
  row.length = n;
  row.over_length = n > max_len;
  const std::string& strategy = settings.truncation_strategy;
  if (row.over_length && strategy == "delete") return row;
  if (row.over_length && strategy == "split") {
    for (int64_t begin = 0; begin < n; begin += max_len) {
      const int64_t end = std::min(n, begin + max_len);
      std::vector<int32_t> chunk_labels(labels.begin() + begin, labels.begin() + end);
      chunk_labels[0] = kIgnoreIndex;
      if (!any_trained(chunk_labels)) continue;
      row.samples.push_back(
          make_sample(std::vector<int32_t>(ids.begin() + begin, ids.begin() + end), chunk_labels));
    }
    row.no_trained_token = row.samples.empty();
    return row;
  }
  if (row.over_length) {
    const int64_t cut = n - max_len;
    if (strategy == "left") {
      ids.erase(ids.begin(), ids.begin() + cut);
      labels.erase(labels.begin(), labels.begin() + cut);
    } else {
      ids.resize(size_t(max_len));
      labels.resize(size_t(max_len));
    }
  }
  TokenizedSample sample = make_sample(std::move(ids), std::move(labels));
  if (!any_trained(sample.labels)) {
    row.no_trained_token = true;
    return row;
  }
  row.samples.push_back(std::move(sample));
  return row;
}

}  // namespace swiftlet
