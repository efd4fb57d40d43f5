#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_impl.h"

namespace swiftlet {

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open {}", path.string()), "check the path and permissions");
  std::string data;
  in.seekg(0, std::ios::end);
  data.resize(size_t(in.tellg()));
  in.seekg(0, std::ios::beg);
  in.read(data.data(), std::streamsize(data.size()));
  if (!in) throw Error(fmt::format("cannot read {}", path.string()));
  return data;
}

void check_utf8(const std::string& text, const std::string& file) {
  size_t bad = tok::find_invalid_utf8(text);
  if (bad != std::string::npos)
    throw Error(fmt::format("{} is not valid UTF-8 (byte offset {})", file, bad),
                "the file is damaged; download it again");
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  fs::path p(path);
  fs::path json_path, config_path, template_path;
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    json_path = p / "tokenizer.json";
    if (!fs::is_regular_file(json_path, ec))
      throw Error(fmt::format("model folder {} has no tokenizer.json", path),
                  "swiftlet reads Hugging Face fast-tokenizer files (tokenizer.json)");
    config_path = p / "tokenizer_config.json";
    template_path = p / "chat_template.jinja";
  } else if (fs::is_regular_file(p, ec)) {
    json_path = p;
  } else {
    throw Error(fmt::format("tokenizer path {} does not exist", path),
                "pass a model folder or a tokenizer.json file");
  }
  auto impl = std::make_shared<Impl>();
  impl->file = json_path.string();
  std::string text = read_file(json_path);
  check_utf8(text, impl->file);
  parse_tokenizer_json(text, *impl);
  if (!config_path.empty() && fs::is_regular_file(config_path, ec)) {
    std::string config = read_file(config_path);
    check_utf8(config, config_path.string());
    parse_tokenizer_config(config, config_path.string(), *impl);
  }
  if (impl->chat_template.empty() && !template_path.empty() &&
      fs::is_regular_file(template_path, ec))
    impl->chat_template = read_file(template_path);
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

int32_t Tokenizer::Impl::token_to_id(std::string_view token) const {
  if (!added_ids.empty()) {
    auto it = added_ids.find(std::string(token));
    if (it != added_ids.end()) return it->second;
  }
  return model.token_to_id(token);
}

void Tokenizer::Impl::encode_section(std::string_view text, std::vector<int32_t>& ids) const {
  std::string normalized, tmp;
  std::string_view s = text;
  for (auto form : normalizer) {
    if (tok::normalize(s, form, tmp)) {
      normalized = std::move(tmp);
      s = normalized;
    }
  }
  auto bpe = [&](std::string_view piece) {
    pre_tokenizer.run(piece, [&](std::string_view p) { model.encode_piece(p, ids); });
  };
  if (normalized_matcher.empty()) return bpe(s);
  normalized_matcher.split(
      s, added, split_special_tokens, bpe,
      [&](int32_t index) { ids.push_back(added[size_t(index)].id); });
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  size_t bad = tok::find_invalid_utf8(text);
  if (bad != std::string_view::npos)
    throw Error(fmt::format("tokenizer input is not valid UTF-8 at byte offset {}", bad),
                "text must be UTF-8 encoded");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (m.raw_matcher.empty()) {
    m.encode_section(text, ids);
  } else {
    m.raw_matcher.split(
        text, m.added, m.split_special_tokens,
        [&](std::string_view section) { m.encode_section(section, ids); },
        [&](int32_t index) { ids.push_back(m.added[size_t(index)].id); });
  }
  // HF order: truncate (leaving room for the template's tokens), add the template, then pad.
  size_t n_special = add_special_tokens ? m.prefix_ids.size() + m.suffix_ids.size() : 0;
  if (m.truncation) {
    size_t max = m.truncation->max_length > n_special ? m.truncation->max_length - n_special : 0;
    if (ids.size() > max) {
      if (m.truncation->left) ids.erase(ids.begin(), ids.end() - std::ptrdiff_t(max));
      else ids.resize(max);
    }
  }
  if (add_special_tokens) {
    ids.insert(ids.begin(), m.prefix_ids.begin(), m.prefix_ids.end());
    ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  }
  if (m.padding) {
    size_t target = m.padding->fixed_length.value_or(ids.size());
    target = std::max(target, ids.size());
    if (m.padding->multiple_of > 0 && target % m.padding->multiple_of != 0)
      target += m.padding->multiple_of - target % m.padding->multiple_of;
    if (target > ids.size())
      ids.insert(m.padding->left ? ids.begin() : ids.end(), target - ids.size(), m.padding->pad_id);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens,
                              bool clean_up_tokenization_spaces) const {
  const Impl& m = *impl_;
  std::string bytes;
  for (int32_t id : ids) {
    if (!m.has_id(id) || (skip_special_tokens && m.special(id))) continue;
    bytes.append(m.decode_bytes.get(size_t(id)));
  }
  std::string text;
  text.reserve(bytes.size());
  tok::append_utf8_lossy(text, bytes);
  if (clean_up_tokenization_spaces) text = clean_up_tokenization(std::move(text));
  return text;
}

std::string clean_up_tokenization(std::string text) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},     {" !", "!"},       {" ,", ","},       {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"},   {" 's", "'s"},     {" 've", "'ve"},   {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string_view f(from);
    if (text.find(f) == std::string::npos) continue;
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    for (size_t j; (j = text.find(f, i)) != std::string::npos; i = j + f.size())
      out.append(text, i, j - i).append(to);
    out.append(text, i, std::string::npos);
    text = std::move(out);
  }
  return text;
}

int32_t Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }

std::string Tokenizer::id_to_token(int32_t id) const {
  const Impl& m = *impl_;
  if (!m.has_id(id)) return {};
  if (m.id_flags[size_t(id)] & Impl::kAdded) return std::string(m.decode_bytes.get(size_t(id)));
  return std::string(m.model.tokens().get(size_t(id)));
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
bool Tokenizer::is_special(int32_t id) const { return impl_->special(id); }
std::vector<int32_t> Tokenizer::special_ids() const {
  std::vector<int32_t> out;
  for (size_t id = 0; id < impl_->id_flags.size(); ++id)
    if (impl_->id_flags[id] & Impl::kSpecial) out.push_back(int32_t(id));
  return out;
}
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::pad_token() const { return impl_->pad_token; }
int32_t Tokenizer::eos_token_id() const {
  return impl_->eos_token.empty() ? -1 : impl_->token_to_id(impl_->eos_token);
}
int32_t Tokenizer::bos_token_id() const {
  return impl_->bos_token.empty() ? -1 : impl_->token_to_id(impl_->bos_token);
}
int32_t Tokenizer::pad_token_id() const {
  return impl_->pad_token.empty() ? -1 : impl_->token_to_id(impl_->pad_token);
}
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
int64_t Tokenizer::model_max_length() const { return impl_->model_max_length; }
bool Tokenizer::clean_up_tokenization_spaces() const {
  return impl_->clean_up_tokenization_spaces;
}
bool Tokenizer::split_special_tokens() const { return impl_->split_special_tokens; }

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : impl_(tokenizer.impl_), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::feed(int32_t id) {
  const Tokenizer::Impl& m = *impl_;
  if (!m.has_id(id) || (skip_special_tokens_ && m.special(id))) return {};
  pending_.append(m.decode_bytes.get(size_t(id)));
  std::string out;
  size_t used = tok::append_utf8_lossy(out, pending_, /*final=*/false);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out;
  tok::append_utf8_lossy(out, pending_, /*final=*/true);
  pending_.clear();
  return out;
}

}  // namespace swiftlet
