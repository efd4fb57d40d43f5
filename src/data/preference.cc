// load_preference_datasets: read -> parse pairs -> #N sample -> split -> shuffle -> (kto: KL
// completions) -> render + tokenize each side (threads) -> truncate each side -> report, with the
// tokenized result cached by content and rlhf type.
#include "data/preference.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "data/cache.h"
#include "data/encode.h"
#include "data/pipeline.h"
#include "io/file.h"
#include "model/folder.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using namespace data_pipeline;

enum class Kind { kPair, kKto };

Kind kind_of(const std::string& type) {
  if (type == "dpo" || type == "orpo" || type == "simpo" || type == "cpo" || type == "rm")
    return Kind::kPair;
  if (type == "kto") return Kind::kKto;
  if (type == "grpo" || type == "ppo" || type == "gkd")
    throw Error(fmt::format("--rlhf_type {} trains on prompts it generates replies for; preference "
                            "datasets are for dpo, orpo, simpo, cpo, kto and rm",
                            type),
                "load its dataset as prompts, not as preference pairs");
  throw Error(fmt::format("--rlhf_type {} is not known", type),
              "use dpo, orpo, simpo, cpo, kto or rm");
}

const json* value_of(const json& row, const char* key) {
  return row.contains(key) && !row[key].is_null() ? &row[key] : nullptr;
}

bool is_blank(const json& v) {
  return v.is_null() || ((v.is_string() || v.is_array() || v.is_object()) && v.empty());
}

// A value for an error message, cut short.
std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

// One past the last user message: where the final round (the replies being compared) starts.
size_t prompt_end(const std::vector<ChatMessage>& messages) {
  for (size_t i = messages.size(); i-- > 0;)
    if (messages[i].role == "user") return i + 1;
  return 0;
}

// The hint for TRL-style rows (prompt / chosen / rejected), which ms-swift reads only renamed.
constexpr const char* kColumnsHint =
    "map the chosen/rejected columns with --columns '{\"chosen\": \"response\", "
    "\"rejected\": \"rejected_response\"}'";

bool has_trl_columns(const json& row) {
  return row.is_object() && (row.contains("chosen") || row.contains("rejected"));
}

void check_conversation(
    const Conversation& c, const std::string& where, const char* what,
    const char* hint = "the final assistant message is the reply being judged") {
  if (c.messages.back().role != "assistant")
    throw Error(
        fmt::format("{}: {} must end with an assistant reply, but it ends with a {} message", where,
                    what, c.messages.back().role),
        hint);
  if (prompt_end(c.messages) == 0)
    throw Error(fmt::format("{}: {} has no user message", where, what),
                "a preference row needs a prompt (a user message) before the reply");
}

bool same_conversation(const Conversation& a, const Conversation& b) {
  const std::vector<ChatMessage> x = merge_for_template(a.messages);
  const std::vector<ChatMessage> y = merge_for_template(b.messages);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i].role != y[i].role || x[i].content != y[i].content ||
        x[i].reasoning_content != y[i].reasoning_content)
      return false;
  return true;
}

void refuse_rejected_media(const json& row, const std::string& where) {
  for (const char* key :
       {"rejected_images", "rejected_videos", "rejected_audios", "rejected_objects"})
    if (row.contains(key) && !is_blank(row[key]))
      throw Error(fmt::format("{}: the row has {}", where, key),
                  "swiftlet trains text-only models for now: remove images/audio/video from the "
                  "dataset");
  if (row.contains("rejected_tools") && !is_blank(row["rejected_tools"]))
    throw Error(fmt::format("{}: the row has rejected_tools", where),
                "tool calling is not supported for training yet: remove tool definitions and tool "
                "turns");
}

// ms-swift's kto label: a boolean; 1/0 and the strings CSV cells hold are read as well.
bool parse_label(const json& v, const std::string& where) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) {
    const int64_t n = v.get<int64_t>();
    if (n == 0 || n == 1) return n == 1;
  }
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "true" || s == "1") return true;
    if (s == "false" || s == "0") return false;
  }
  throw Error(fmt::format("{}: label must be true or false, got {}", where, shown(v)),
              "a kto label is true (a desirable reply) or false (an undesirable one)");
}

double parse_margin(const json& v, const std::string& where) {
  double m = 0;
  if (v.is_number()) {
    m = v.get<double>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    char* end = nullptr;
    m = std::strtod(s.c_str(), &end);
    while (end && (*end == ' ' || *end == '\t')) ++end;
    if (s.empty() || end == s.c_str() || *end != '\0')
      throw Error(fmt::format("{}: margin must be a number, got {}", where, shown(v)),
                  "margin is how much better the chosen reply is, e.g. \"margin\": 1.5");
  } else {
    throw Error(fmt::format("{}: margin must be a number, got {}", where, v.type_name()),
                "margin is how much better the chosen reply is, e.g. \"margin\": 1.5");
  }
  if (!std::isfinite(m))
    throw Error(fmt::format("{}: margin must be a finite number, got {}", where, shown(v)));
  return m;
}

// messages[:i] + the rejected reply(s), i one past the last user message (ms-swift's
// _compat_rejected_response).
Conversation rejected_from_response(const Conversation& chosen, const json& r,
                                    const std::string& where) {
  const size_t end = prompt_end(chosen.messages);
  Conversation out;
  out.messages.assign(chosen.messages.begin(), chosen.messages.begin() + long(end));
  if (r.is_string()) {
    const std::string text = r.get<std::string>();
    if (text == chosen.messages.back().content)
      throw Error(fmt::format("{}: rejected_response equals the chosen reply", where),
                  "a preference pair needs a rejected reply that differs from the chosen one");
    out.messages.push_back({"assistant", text, ""});
    return out;
  }
  if (!r.is_array())
    throw Error(fmt::format("{}: rejected_response must be a string or a list of messages, got {}",
                            where, r.type_name()));
  if (r.empty()) throw Error(fmt::format("{}: rejected_response is an empty list", where));
  const Conversation replies =
      parse_conversation(json{{"messages", r}}, fmt::format("{} rejected_response", where));
  for (size_t i = 0; i < replies.messages.size(); ++i)
    if (replies.messages[i].role != "assistant")
      throw Error(fmt::format("{} rejected_response message {}: a rejected response holds "
                              "assistant messages, got a {} message",
                              where, i, replies.messages[i].role),
                  "the prompt is taken from messages; give the whole rejected conversation as "
                  "rejected_messages instead");
  out.messages.insert(out.messages.end(), replies.messages.begin(), replies.messages.end());
  return out;
}

// The hint for a pair row without a rejected side.
std::string missing_rejected_hint(const json& row) {
  if (has_trl_columns(row)) return kColumnsHint;
  return "add \"rejected_response\": \"<a worse reply>\", or the whole rejected conversation as "
         "\"rejected_messages\"";
}

}  // namespace

const std::vector<std::string>& preference_rlhf_types() {
  static const std::vector<std::string> kTypes = {"dpo", "orpo", "simpo", "cpo", "kto", "rm"};
  return kTypes;
}

std::string rlhf_default_loss_scale(const std::string& rlhf_type) {
  return rlhf_type == "orpo" ? "default" : "last_round";
}

PreferenceRow parse_preference_row(const json& input, const std::string& where,
                                   const ParseOptions& options, const std::string& rlhf_type) {
  const Kind kind = kind_of(rlhf_type);
  const json row = rename_columns(input, options);
  PreferenceRow out;
  out.where = where;
  out.chosen = parse_conversation(row, where);  // also: an object, no media or tools
  refuse_rejected_media(row, where);
  if (kind == Kind::kKto) {
    check_conversation(out.chosen, where, "a kto row");
    const json* label = value_of(row, "label");
    if (!label)
      throw Error(fmt::format("{}: a kto row needs a label", where),
                  "add \"label\": true (a desirable reply) or false (an undesirable one)");
    out.label = parse_label(*label, where);
    return out;  // rejected_response / margin: not used by kto
  }
  check_conversation(out.chosen, where, "the chosen conversation",
                     has_trl_columns(row)
                         ? kColumnsHint
                         : "the final assistant message is the reply being judged");
  const json* response = value_of(row, "rejected_response");
  const json* messages = value_of(row, "rejected_messages");
  if (response && messages)
    throw Error(fmt::format("{}: the row has both rejected_response and rejected_messages", where),
                "give one of them: the rejected reply, or the whole rejected conversation");
  if (messages) {
    if (!messages->is_array())
      throw Error(fmt::format("{}: rejected_messages must be a list of messages, got {}", where,
                              messages->type_name()));
    out.rejected = parse_conversation(json{{"messages", *messages}},
                                      fmt::format("{} rejected_messages", where));
    check_conversation(*out.rejected, where, "rejected_messages");
    // ms-swift reads rejected_messages alone: a system column goes to the chosen side only.
    const bool system_column = value_of(row, "system") || value_of(row, "system_prompt");
    out.system_chosen_only = system_column && out.rejected->messages[0].role != "system";
  } else if (response) {
    out.rejected = rejected_from_response(out.chosen, *response, where);
  } else {
    throw Error(fmt::format("{}: no rejected response: a {} row needs rejected_response or "
                            "rejected_messages",
                            where, rlhf_type),
                missing_rejected_hint(row));
  }
  if (same_conversation(out.chosen, *out.rejected))
    throw Error(fmt::format("{}: the rejected conversation equals the chosen one", where),
                "a preference pair needs a rejected reply that differs from the chosen one");
  if (rlhf_type == "rm")
    if (const json* margin = value_of(row, "margin")) out.margin = parse_margin(*margin, where);
  return out;
}

namespace {

struct EncodedPair {
  PreferenceSample sample;
  bool kept = false, over_length = false, no_trained = false, truncated_away = false,
       per_segment = false;
};

EncodedPair encode_pair(const Tokenizer& tok, const ChatTemplate& tmpl, const PreferenceRow& row,
                        const EncodeSettings& settings) {
  EncodedPair out;
  EncodedRow chosen = encode_conversation(tok, tmpl, row.chosen, settings);
  std::optional<EncodedRow> rejected;
  if (row.rejected) rejected = encode_conversation(tok, tmpl, *row.rejected, settings);
  for (const EncodedRow* side : {&chosen, rejected ? &*rejected : nullptr}) {
    if (!side) continue;
    out.over_length |= side->over_length;
    out.no_trained |= side->no_trained_token;
    out.truncated_away |= side->no_trained_token && side->over_length;
    out.per_segment |= side->per_segment;
  }
  out.kept = !chosen.samples.empty() && (!rejected || !rejected->samples.empty());
  if (!out.kept) return out;
  out.sample.chosen = std::move(chosen.samples[0]);
  if (rejected) out.sample.rejected = std::move(rejected->samples[0]);
  out.sample.label = row.label;
  out.sample.margin = row.margin;
  return out;
}

std::vector<PreferenceSample> encode_pairs(const std::vector<PreferenceRow>& rows,
                                           const Tokenizer& tok, const ChatTemplate& tmpl,
                                           const EncodeSettings& settings, const DataArgs& a,
                                           ThreadPool& pool, EncodeTotals& totals) {
  std::vector<std::optional<EncodedPair>> encoded = encode_parallel<EncodedPair>(
      rows, pool, a.strict, totals.skipped,
      [&](const PreferenceRow& r) { return encode_pair(tok, tmpl, r, settings); });
  std::vector<PreferenceSample> out;
  for (std::optional<EncodedPair>& p : encoded) {
    if (!p) continue;
    totals.over_length += p->over_length;
    totals.no_trained += p->no_trained;
    totals.truncated_away += p->truncated_away;
    totals.per_segment += p->per_segment;
    if (p->kept) out.push_back(std::move(p->sample));
  }
  return out;
}

// ms-swift's prepare_kto_dataset: in chunks of `batch` rows taken in `order`, row k's KL
// completion is row k-1's final reply (the chunk's first row takes its last), after row k's
// own prompt.
void add_kl_completions(std::vector<PreferenceRow>& rows, size_t batch,
                        const std::vector<size_t>& order) {
  std::vector<std::string> replies;
  for (size_t i : order) replies.push_back(rows[i].chosen.messages.back().content);
  for (size_t begin = 0; begin < order.size(); begin += batch) {
    const size_t end = std::min(order.size(), begin + batch);
    for (size_t k = begin; k < end; ++k) {
      PreferenceRow& row = rows[order[k]];
      const std::vector<ChatMessage>& m = row.chosen.messages;
      Conversation kl;
      kl.messages.assign(m.begin(), m.begin() + long(prompt_end(m)));
      kl.messages.push_back({"assistant", replies[k == begin ? end - 1 : k - 1], ""});
      row.rejected = std::move(kl);
    }
  }
}

nlohmann::ordered_json row_to_json(const PreferenceRow& r, bool kto) {
  nlohmann::ordered_json j = conversation_to_json(r.chosen);
  if (r.rejected && !kto) j["rejected_messages"] = conversation_to_json(*r.rejected)["messages"];
  if (r.label) j["label"] = *r.label;
  if (r.margin) j["margin"] = *r.margin;
  return j;
}

void check_preference_args(const DataArgs& a, Kind kind, const PreferenceOptions& options) {
  check_common_args(a);
  if (a.packing)
    throw Error("--packing is not supported for rlhf",
                "leave --packing out: chosen and rejected are batched side by side, unpacked");
  if (a.group_by_length)
    throw Error("--group_by_length is not supported for rlhf", "leave --group_by_length out");
  if (a.truncation_strategy == "split")
    throw Error("--truncation_strategy split is not supported for rlhf",
                "cut long rows with left or right, or drop them with delete");
  if (options.kto_kl_batch_size < 0)
    throw Error(
        fmt::format("the KTO batch size {} must not be negative", options.kto_kl_batch_size));
  if (kind == Kind::kKto && options.kto_kl_batch_size == 1)
    throw Error("the global batch size is 1: KTO's KL term would equal the implied reward",
                "raise --per_device_train_batch_size or --gradient_accumulation_steps, or use "
                "--loss_type apo_zero_unpaired (no KL term)");
}

std::string resolve_loss_scale(const std::string& given, const std::string& rlhf_type) {
  const std::string s = given.empty() ? rlhf_default_loss_scale(rlhf_type) : given;
  if (s != "last_round" && s != "default" && s != "all")
    throw Error(fmt::format("--loss_scale {} is not supported for rlhf", s),
                "use last_round (the final reply, the rlhf default), default (every reply) or all "
                "(every token)");
  return s;
}

void report_set(Report& report, const char* what, Kind kind, size_t rows, const EncodeTotals& t,
                const DataArgs& a, const std::vector<PreferenceSample>& samples) {
  report_totals(report, what, kind == Kind::kKto ? "rows" : "pairs", rows, t, a);
  LengthStats chosen, rejected;
  size_t desirable = 0, margins = 0;
  for (const PreferenceSample& s : samples) {
    chosen.add(int64_t(s.chosen.input_ids.size()));
    if (!s.rejected.input_ids.empty()) rejected.add(int64_t(s.rejected.input_ids.size()));
    desirable += s.label.value_or(false);
    margins += s.margin.has_value();
  }
  if (kind == Kind::kKto) {
    report.add("{}: {}", what, chosen.str());
    report.add("{}: {} desirable (label true), {} undesirable", what, desirable,
               samples.size() - desirable);
    if (rejected.count) report.add("{} KL completions: {}", what, rejected.str());
    return;
  }
  report.add("{} chosen: {}", what, chosen.str());
  report.add("{} rejected: {}", what, rejected.str());
  if (margins) report.add("{}: {} of {} pairs have a margin", what, margins, samples.size());
}

std::string cache_key(const DataArgs& a, const std::string& rlhf_type,
                      const PreferenceOptions& options, const std::vector<DatasetSpec>& train_specs,
                      const std::vector<DatasetSpec>& val_specs,
                      const std::optional<std::string>& system, const std::string& loss_scale,
                      const std::string& model_dir) {
  ContentHasher h;
  h.field("swiftlet preference datasets v1");
  h.field(rlhf_type);
  h.field(std::to_string(rlhf_type == "kto" ? options.kto_kl_batch_size : 0));
  hash_common_inputs(h, a, train_specs, val_specs, system, loss_scale, model_dir);
  return h.hex();
}

}  // namespace

PreferenceBundle load_preference_datasets(const DataArgs& a, const std::string& model_arg,
                                          const std::string& rlhf_type,
                                          const PreferenceOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const Kind kind = kind_of(rlhf_type);
  check_preference_args(a, kind, options);
  const std::string loss_scale = resolve_loss_scale(a.loss_scale, rlhf_type);
  const std::string model_dir = resolve_model_path(model_arg);
  std::vector<DatasetSpec> train_specs, val_specs;
  parse_specs(a, train_specs, val_specs);
  const std::optional<std::string> system = resolve_system(a.system);

  const std::string cache_dir = a.load_from_cache_file ? dataset_cache_dir() : "";
  std::string key;
  if (!cache_dir.empty()) {
    key = cache_key(a, rlhf_type, options, train_specs, val_specs, system, loss_scale, model_dir);
    if (std::optional<CachedPreferences> hit = read_preference_cache(cache_dir, key)) {
      log_info(
          "reusing the tokenized {} datasets of an earlier run from the cache {} (template {}); "
          "what that run reported:",
          rlhf_type, io::path_join(cache_dir, key + ".bin"), hit->template_name);
      for (const std::string& line : hit->report) log_info("  {}", line);
      write_carved_val(a, hit->val_jsonl);
      log_info("datasets loaded from the cache in {:.2f} s", seconds());
      return std::move(hit->bundle);
    }
  }

  Report report;
  ReadOptions ro;
  ro.strict = a.strict;
  ro.parse.columns = a.columns;
  ro.builtin = {a.model_name, a.model_author};
  std::vector<PreferenceRow> train_rows, val_rows;
  bool carved = false;
  read_all(
      a, train_specs, val_specs, report,
      [&](const DatasetSpec& spec) {
        return read_rows<PreferenceRow>(spec, ro, [&](const DataRow& r) {
          return parse_preference_row(r.value, r.where, ro.parse, rlhf_type);
        });
      },
      train_rows, val_rows, carved);
  std::string val_jsonl;
  if (carved)
    for (const PreferenceRow& r : val_rows)
      val_jsonl += row_to_json(r, kind == Kind::kKto).dump() + "\n";
  size_t system_chosen_only = 0;
  for (const auto* rows : {&train_rows, &val_rows})
    for (const PreferenceRow& r : *rows) system_chosen_only += r.system_chosen_only;
  if (system_chosen_only)
    report.add(
        "{} rows have a system column and rejected_messages without a system message: as in "
        "ms-swift, the column is the chosen side's system prompt only",
        system_chosen_only);
  if (kind == Kind::kKto && options.kto_kl_batch_size > 1) {
    const size_t batch = size_t(options.kto_kl_batch_size);
    std::vector<size_t> order(train_rows.size());
    std::iota(order.begin(), order.end(), size_t(0));  // already shuffled
    add_kl_completions(train_rows, batch, order);
    order.resize(val_rows.size());
    std::iota(order.begin(), order.end(), size_t(0));
    Rng rng(derive_seed(a.data_seed, kKto, 0));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    add_kl_completions(val_rows, batch, order);
    report.add("kto: KL completions from the previous row in chunks of {} rows", batch);
  }

  const Tokenizer tok = Tokenizer::load(model_dir);
  const std::string template_name = template_name_for(a, tok, model_dir);
  const ChatTemplate tmpl =
      ChatTemplate::by_name(template_name, {tok.bos_token(), tok.eos_token()});
  EncodeSettings settings;
  settings.options.system = system;
  settings.options.preserve_thinking = a.preserve_thinking.value_or(loss_scale != "last_round");
  settings.loss_all = loss_scale == "all";
  settings.last_round = loss_scale == "last_round";
  settings.max_length = a.max_length;
  settings.truncation_strategy = a.truncation_strategy;
  report.add("rlhf {}: template {}, loss on {} (--loss_scale {}), max_length {} for each side",
             rlhf_type, template_name,
             settings.loss_all     ? "every token"
             : settings.last_round ? "the final reply"
                                   : "assistant replies",
             loss_scale, a.max_length);
  log_info("tokenizing {} train and {} val rows in {} thread(s)", train_rows.size(),
           val_rows.size(), a.dataset_num_proc);

  ThreadPool pool(int(a.dataset_num_proc));
  PreferenceBundle bundle;
  EncodeTotals train_totals, val_totals;
  bundle.train = encode_pairs(train_rows, tok, tmpl, settings, a, pool, train_totals);
  bundle.val = encode_pairs(val_rows, tok, tmpl, settings, a, pool, val_totals);
  report_set(report, "train", kind, train_rows.size(), train_totals, a, bundle.train);
  if (!val_rows.empty())
    report_set(report, "val", kind, val_rows.size(), val_totals, a, bundle.val);
  if (bundle.train.empty())
    throw Error(fmt::format("no training {} is left after reading and encoding the datasets",
                            kind == Kind::kKto ? "row" : "pair"),
                "check --dataset, --max_length and --truncation_strategy (see the log above)");
  const PreferenceSample& first = bundle.train[0];
  if (kind == Kind::kKto) {
    report_first_sample(report, tok, first.chosen,
                        fmt::format("first train row (label {})", *first.label));
  } else {
    report_first_sample(report, tok, first.chosen, "first train pair, chosen");
    report_first_sample(report, tok, first.rejected, "first train pair, rejected");
  }

  if (!cache_dir.empty()) {
    CachedPreferences entry{bundle, template_name, report.lines, val_jsonl};
    const std::string path = write_preference_cache(cache_dir, key, entry);
    if (!path.empty()) log_info("tokenized datasets cached in {}", path);
  }
  write_carved_val(a, val_jsonl);  // only once everything succeeded: a failed run leaves no files
  log_info("datasets read and tokenized in {:.2f} s", seconds());
  return bundle;
}

}  // namespace swiftlet
