// Reading tokenizer.json and tokenizer_config.json into a Tokenizer::Impl.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace swiftlet {

namespace {

using nlohmann::json;

std::string type_of(const json& j, const std::string& file, const char* part) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error(fmt::format("{}: {} needs a string \"type\"", file, part));
  return j["type"].get<std::string>();
}

void parse_normalizer(const json& j, const std::string& file,
                      std::vector<tok::NormalizationForm>& forms) {
  if (j.is_null()) return;
  std::string type = type_of(j, file, "normalizer");
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      throw Error(fmt::format("{}: Sequence normalizer needs a \"normalizers\" list", file));
    for (const auto& sub : j["normalizers"]) parse_normalizer(sub, file, forms);
  } else if (type == "NFC") {
    forms.push_back(tok::NormalizationForm::kNFC);
  } else if (type == "NFD") {
    forms.push_back(tok::NormalizationForm::kNFD);
  } else if (type == "NFKC") {
    forms.push_back(tok::NormalizationForm::kNFKC);
  } else if (type == "NFKD") {
    forms.push_back(tok::NormalizationForm::kNFKD);
  } else {
    throw Error(fmt::format("{}: normalizer type '{}' is not supported", file, type),
                "supported normalizers: NFC, NFD, NFKC, NFKD and Sequence of them");
  }
}

// Adds a post-processor's tokens around the sequence: (prefix + A + suffix).
void parse_post_processor(const json& j, const std::string& file, std::vector<int32_t>& prefix,
                          std::vector<int32_t>& suffix) {
  if (j.is_null()) return;
  std::string type = type_of(j, file, "post_processor");
  auto id_pair = [&](const char* field) -> int32_t {
    const json& v = j.contains(field) ? j[field] : json();
    if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
      throw Error(fmt::format("{}: {} post_processor field \"{}\" must be [token, id]", file, type,
                              field));
    return v[1].get<int32_t>();
  };
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      throw Error(fmt::format("{}: Sequence post_processor needs a \"processors\" list", file));
    for (const auto& sub : j["processors"]) {
      // Each processor wraps what the previous ones produced.
      std::vector<int32_t> p, s;
      parse_post_processor(sub, file, p, s);
      prefix.insert(prefix.begin(), p.begin(), p.end());
      suffix.insert(suffix.end(), s.begin(), s.end());
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(id_pair("cls"));
    suffix.push_back(id_pair("sep"));
    return;
  }
  if (type != "TemplateProcessing")
    throw Error(fmt::format("{}: post_processor type '{}' is not supported", file, type),
                "supported post-processors: TemplateProcessing, ByteLevel, RobertaProcessing, "
                "BertProcessing and Sequence of them");
  if (!j.contains("single") || !j["single"].is_array())
    throw Error(fmt::format("{}: TemplateProcessing needs a \"single\" template", file));
  const json specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
  bool seen_a = false;
  for (const auto& item : j["single"]) {
    if (item.contains("Sequence")) {
      if (item["Sequence"].value("id", "") != "A")
        throw Error(fmt::format("{}: TemplateProcessing single template refers to sequence B",
                                file));
      seen_a = true;
    } else if (item.contains("SpecialToken")) {
      std::string name = item["SpecialToken"].value("id", "");
      if (!specials.contains(name) || !specials[name].contains("ids") ||
          !specials[name]["ids"].is_array())
        throw Error(fmt::format("{}: TemplateProcessing uses special token '{}' that is not in "
                                "its special_tokens",
                                file, name));
      for (const auto& id : specials[name]["ids"])
        (seen_a ? suffix : prefix).push_back(id.get<int32_t>());
    } else {
      throw Error(fmt::format("{}: unknown TemplateProcessing item {}", file, item.dump()));
    }
  }
  if (!seen_a)
    throw Error(fmt::format("{}: TemplateProcessing single template has no $A", file));
}

void parse_decoder(const json& j, const std::string& file) {
  std::string type = j.is_null() ? "null" : type_of(j, file, "decoder");
  // ByteLevel's options (add_prefix_space, trim_offsets, use_regex) do not change decoding.
  if (type != "ByteLevel")
    throw Error(fmt::format("{}: decoder type '{}' is not supported", file, type),
                "byte-level BPE tokenizers decode with the ByteLevel decoder");
}

void parse_truncation(const json& j, const std::string& file, Tokenizer::Impl& impl) {
  if (j.is_null()) return;
  Tokenizer::Impl::Truncation t;
  if (!j.contains("max_length") || !j["max_length"].is_number_unsigned())
    throw Error(fmt::format("{}: truncation needs a non-negative \"max_length\"", file));
  t.max_length = j["max_length"].get<size_t>();
  std::string dir = j.value("direction", "Right");
  if (dir != "Right" && dir != "Left")
    throw Error(fmt::format("{}: truncation direction '{}' is not Right or Left", file, dir));
  t.left = dir == "Left";
  if (j.value("strategy", "LongestFirst") == "OnlySecond")
    throw Error(fmt::format("{}: truncation strategy OnlySecond needs sentence pairs, which "
                            "swiftlet does not encode",
                            file));
  impl.truncation = t;  // stride only shapes the overflowing pieces, which are not returned
}

void parse_padding(const json& j, const std::string& file, Tokenizer::Impl& impl) {
  if (j.is_null()) return;
  Tokenizer::Impl::Padding p;
  const json& s = j.contains("strategy") ? j["strategy"] : json("BatchLongest");
  if (s.is_object() && s.contains("Fixed") && s["Fixed"].is_number_unsigned()) {
    p.fixed_length = s["Fixed"].get<size_t>();
  } else if (!(s.is_string() && s.get<std::string>() == "BatchLongest")) {
    throw Error(fmt::format("{}: padding strategy {} is not supported", file, s.dump()));
  }
  std::string dir = j.value("direction", "Right");
  if (dir != "Right" && dir != "Left")
    throw Error(fmt::format("{}: padding direction '{}' is not Right or Left", file, dir));
  p.left = dir == "Left";
  if (j.contains("pad_to_multiple_of") && j["pad_to_multiple_of"].is_number_unsigned())
    p.multiple_of = j["pad_to_multiple_of"].get<size_t>();
  p.pad_id = j.value("pad_id", 0);
  impl.padding = p;
}

void parse_added_tokens(const json& j, const std::string& file, Tokenizer::Impl& impl) {
  if (j.is_null()) return;
  if (!j.is_array()) throw Error(fmt::format("{}: added_tokens must be a list", file));
  for (const auto& t : j) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_unsigned() ||
        !t.contains("content") || !t["content"].is_string())
      throw Error(fmt::format("{}: each added token needs an \"id\" and a \"content\"", file));
    tok::AddedToken a;
    a.id = t["id"].get<int32_t>();
    a.content = t["content"].get<std::string>();
    a.single_word = t.value("single_word", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    a.special = t.value("special", false);
    a.normalized = t.value("normalized", !a.special);
    if (a.content.empty()) continue;  // HF ignores empty added tokens
    impl.added.push_back(std::move(a));
  }
}

}  // namespace

void parse_tokenizer_json(std::string_view text, Tokenizer::Impl& impl) {
  const std::string& file = impl.file;
  tok::JsonScanner js(text, file);
  std::map<std::string, json> sections;
  bool have_model = false;
  js.expect('{');
  bool first = true;
  std::string key;
  while (js.next_key(key, first)) {
    if (key == "model") {
      impl.model.parse(js);
      have_model = true;
      continue;
    }
    std::string_view raw = js.skip_value();
    try {
      sections[key] = json::parse(raw);
    } catch (const json::exception& e) {
      throw Error(fmt::format("{} is not valid JSON in \"{}\": {}", file, key, e.what()));
    }
  }
  if (!js.at_end()) js.fail("unexpected text after the top-level object");
  if (!have_model) throw Error(fmt::format("{} has no \"model\" section", file),
                               "is this a Hugging Face tokenizer.json?");
  auto section = [&](const char* name) { return sections.count(name) ? sections[name] : json(); };

  parse_normalizer(section("normalizer"), file, impl.normalizer);
  impl.pre_tokenizer = tok::PreTokenizer::parse(section("pre_tokenizer"), file);
  parse_decoder(section("decoder"), file);
  parse_truncation(section("truncation"), file, impl);
  parse_padding(section("padding"), file, impl);
  parse_added_tokens(section("added_tokens"), file, impl);
  parse_post_processor(section("post_processor"), file, impl.prefix_ids, impl.suffix_ids);

  // Matchers: non-normalized tokens against the raw text, the others in normalised form.
  std::vector<std::pair<std::string, int32_t>> raw_patterns, normalized_patterns;
  for (size_t i = 0; i < impl.added.size(); ++i) {
    const tok::AddedToken& a = impl.added[i];
    if (!a.normalized || impl.normalizer.empty()) {
      (a.normalized ? normalized_patterns : raw_patterns).emplace_back(a.content, int32_t(i));
      continue;
    }
    std::string content = a.content, tmp;
    for (auto form : impl.normalizer)
      if (tok::normalize(content, form, tmp)) content = tmp;
    normalized_patterns.emplace_back(content, int32_t(i));
  }
  impl.raw_matcher.build(raw_patterns);
  impl.normalized_matcher.build(normalized_patterns);

  // Decode table and flags for every id.
  const tok::StringTable& tokens = impl.model.tokens();
  size_t n = tokens.size();
  for (const auto& a : impl.added) n = std::max(n, size_t(a.id) + 1);
  impl.decode_bytes.resize(n);
  impl.id_flags.assign(n, 0);
  std::vector<bool> is_added(n, false);
  for (const auto& a : impl.added) is_added[size_t(a.id)] = true;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (!tokens.has(id) || is_added[id]) continue;
    // A token outside the byte-level alphabet decodes to its own UTF-8 bytes (HF's fallback).
    const tok::StringTable& raw = impl.model.raw_tokens();
    impl.decode_bytes.set(id, raw.has(id) ? raw.get(id) : tokens.get(id));
  }
  int64_t extra = 0;
  for (const auto& a : impl.added) {
    if (!impl.decode_bytes.has(size_t(a.id))) impl.decode_bytes.set(size_t(a.id), a.content);
    impl.id_flags[size_t(a.id)] |= Tokenizer::Impl::kAdded;
    if (a.special) impl.id_flags[size_t(a.id)] |= Tokenizer::Impl::kSpecial;
    if (!impl.added_ids.count(a.content)) {
      impl.added_ids[a.content] = a.id;
      if (impl.model.token_to_id(a.content) < 0) ++extra;
    }
  }
  impl.vocab_size = int64_t(impl.model.vocab_count()) + extra;
  for (int32_t id : impl.prefix_ids)
    if (!impl.has_id(id)) throw Error(fmt::format("{}: post_processor adds id {}, which is not in "
                                                  "the vocabulary", file, id));
  for (int32_t id : impl.suffix_ids)
    if (!impl.has_id(id)) throw Error(fmt::format("{}: post_processor adds id {}, which is not in "
                                                  "the vocabulary", file, id));
}

void parse_tokenizer_config(std::string_view text, const std::string& file, Tokenizer::Impl& impl) {
  json c;
  try {
    c = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{} is not valid JSON: {}", file, e.what()));
  }
  if (!c.is_object()) throw Error(fmt::format("{} must hold a JSON object", file));
  auto token_field = [&](const char* name) -> std::string {
    if (!c.contains(name) || c[name].is_null()) return {};
    const json& v = c[name];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string())
      return v["content"].get<std::string>();
    throw Error(fmt::format("{}: {} must be a string or an AddedToken object", file, name));
  };
  impl.eos_token = token_field("eos_token");
  impl.bos_token = token_field("bos_token");
  impl.pad_token = token_field("pad_token");
  if (c.contains("chat_template") && !c["chat_template"].is_null()) {
    const json& t = c["chat_template"];
    if (t.is_string()) {
      impl.chat_template = t.get<std::string>();
    } else if (t.is_array()) {  // [{"name": ..., "template": ...}]: the "default" one
      for (const auto& e : t)
        if (e.value("name", "") == "default") impl.chat_template = e.value("template", "");
    } else {
      throw Error(fmt::format("{}: chat_template must be a string", file));
    }
  }
  if (c.contains("model_max_length") && c["model_max_length"].is_number()) {
    const json& m = c["model_max_length"];
    if (m.is_number_integer() && !m.is_number_unsigned()) {
      impl.model_max_length = m.get<int64_t>();
    } else if (m.is_number_unsigned()) {
      uint64_t u = m.get<uint64_t>();
      impl.model_max_length = u > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(u);
    } else {
      double d = m.get<double>();
      impl.model_max_length = d >= 9.2e18 ? INT64_MAX : int64_t(d);
    }
  }
  if (c.contains("clean_up_tokenization_spaces") && c["clean_up_tokenization_spaces"].is_boolean())
    impl.clean_up_tokenization_spaces = c["clean_up_tokenization_spaces"].get<bool>();
  if (c.contains("split_special_tokens") && c["split_special_tokens"].is_boolean())
    impl.split_special_tokens = c["split_special_tokens"].get<bool>();
  // transformers treats additional_special_tokens as special when decoding.
  if (c.contains("additional_special_tokens") && c["additional_special_tokens"].is_array()) {
    for (const auto& t : c["additional_special_tokens"]) {
      std::string s = t.is_string() ? t.get<std::string>()
                      : t.is_object() ? t.value("content", "")
                                      : std::string();
      int32_t id = impl.token_to_id(s);
      if (id >= 0 && size_t(id) < impl.id_flags.size())
        impl.id_flags[size_t(id)] |= Tokenizer::Impl::kSpecial;
    }
  }
}

}  // namespace swiftlet
