#include "data/pipeline.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>

#include "core/log.h"
#include "io/file.h"
#include "io/json.h"
#include "template/chat_template.h"

namespace swiftlet::data_pipeline {

void check_common_args(const DataArgs& a) {
  if (a.dataset.empty())
    throw Error("--dataset is required",
                "pass a .jsonl/.json/.csv/.txt file, a folder, or a built-in ID such as "
                "swiftlet/self-cognition");
  if (a.max_length < 1)
    throw Error(fmt::format("--max_length {} must be at least 1", a.max_length));
  const std::string& t = a.truncation_strategy;
  if (t != "delete" && t != "left" && t != "right" && t != "split")
    throw Error(fmt::format("--truncation_strategy {} is not supported", t),
                "use delete (drop long rows), left, right, or split (pt only)");
  if (t == "split" && a.use_chat_template)
    throw Error("--truncation_strategy split is for pre-training (--use_chat_template false)",
                "cut chat rows with left or right, or drop them with delete");
  if (!a.use_chat_template && a.system && !a.system->empty())
    throw Error("--system needs a chat template, but --use_chat_template is false (pt)",
                "leave --system out for pre-training, or train with swiftlet sft");
  if (!(a.split_dataset_ratio >= 0.0 && a.split_dataset_ratio < 1.0))
    throw Error(fmt::format("--split_dataset_ratio {} must be in [0, 1)", a.split_dataset_ratio));
  if (a.dataset_num_proc < 1)
    throw Error(fmt::format("--dataset_num_proc {} must be at least 1", a.dataset_num_proc));
  if (a.train_batch_size < 1)
    throw Error(fmt::format("the batch size {} must be at least 1", a.train_batch_size));
}

std::optional<std::string> resolve_system(const std::optional<std::string>& system) {
  if (!system) return std::nullopt;
  const std::string& s = *system;
  if (s.ends_with(".txt")) {
    if (!io::is_regular_file(s))
      throw Error(fmt::format("--system {}: the file does not exist", s),
                  "pass the system prompt text, or the path of a .txt file holding it");
    return io::read_file(s);
  }
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string model_type_of(const std::string& model_dir) {
  const std::string path = io::path_join(model_dir, "config.json");
  if (!io::is_regular_file(path)) return "";
  const nlohmann::json config = io::read_json_file(path);
  return config.value("model_type", "");
}

void write_carved_val(const DataArgs& a, const std::string& jsonl) {
  if (jsonl.empty() || a.output_dir.empty()) return;
  const std::string path = io::path_join(a.output_dir, "val_dataset.jsonl");
  std::filesystem::create_directories(a.output_dir);
  io::write_file_atomic(path, jsonl);
  log_info("validation rows carved from --dataset written to {}", path);
}

void parse_specs(const DataArgs& a, std::vector<DatasetSpec>& train_specs,
                 std::vector<DatasetSpec>& val_specs) {
  for (const std::string& s : a.dataset) train_specs.push_back(parse_dataset_spec(s));
  for (const std::string& s : a.val_dataset) val_specs.push_back(parse_dataset_spec(s));
  for (const auto* list : {&train_specs, &val_specs})
    for (const DatasetSpec& s : *list) (void)dataset_files(s);  // a missing path fails first
  if (!a.val_dataset.empty() && a.split_dataset_ratio > 0)
    log_warning("--val_dataset is given: --split_dataset_ratio {} is ignored (as in ms-swift)",
                a.split_dataset_ratio);
}

namespace {

// Hash of the running executable (Linux), so that a rebuilt swiftlet never reuses samples an
// older build made; "" where it cannot be read.
const std::string& program_identity() {
  static const std::string id = [] {
    try {
      return hash_file("/proc/self/exe");
    } catch (const Error&) {
      return std::string();
    }
  }();
  return id;
}

}  // namespace

void hash_common_inputs(ContentHasher& h, const DataArgs& a,
                        const std::vector<DatasetSpec>& train_specs,
                        const std::vector<DatasetSpec>& val_specs,
                        const std::optional<std::string>& system, const std::string& loss_scale,
                        const std::string& model_dir) {
  // The program itself: another build may render or tokenize differently.
  h.field(program_identity());
  auto specs = [&](const char* kind, const std::vector<DatasetSpec>& list) {
    for (const DatasetSpec& s : list) {
      h.field(kind);
      h.field(s.text);
      for (const std::string& f : dataset_files(s)) {
        h.field(f);
        h.field(hash_file(f));
      }
    }
  };
  specs("train", train_specs);
  specs("val", val_specs);
  h.field(fmt::format("{:.17g} {} {} {} {} {} {} {} {}", a.split_dataset_ratio, a.data_seed,
                      a.max_length, a.truncation_strategy, a.packing, a.group_by_length,
                      a.group_by_length ? a.train_batch_size : 1, a.strict, a.use_chat_template));
  h.field(a.template_name);
  h.field(system ? "system:" + *system : "no system");
  h.field(fmt::format("{}", fmt::join(a.model_name, "\x1f")));
  h.field(fmt::format("{}", fmt::join(a.model_author, "\x1f")));
  h.field(loss_scale);
  h.field(a.preserve_thinking ? (*a.preserve_thinking ? "1" : "0") : "-");
  for (const auto& [from, to] : a.columns) h.field(from + "\x1f" + to);
  h.field(model_type_of(model_dir));
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}) {
    const std::string path = io::path_join(model_dir, file);
    h.field(io::is_regular_file(path) ? hash_file(path) : "-");
  }
}

std::string template_name_for(const DataArgs& a, const Tokenizer& tok,
                              const std::string& model_dir) {
  if (!a.use_chat_template) return "plain";
  return a.template_name.empty()
             ? ChatTemplate::detect(model_type_of(model_dir), tok.chat_template())
             : a.template_name;
}

void log_skipped(Report& report, const std::vector<std::string>& skipped, const std::string& what) {
  if (skipped.empty()) return;
  report.add("{}: skipped {} bad row(s) (--strict false), the first: {}", what, skipped.size(),
             skipped.front());
}

void LengthStats::add(int64_t n) {
  min = count ? std::min(min, n) : n;
  max = count ? std::max(max, n) : n;
  total += n;
  ++count;
}

std::string LengthStats::str() const {
  if (!count) return "no samples";
  return fmt::format("{} samples, tokens min {} / mean {:.1f} / max {}, {} in all", count, min,
                     double(total) / double(count), max, total);
}

void report_first_sample(Report& report, const Tokenizer& tok, const TokenizedSample& s,
                         const std::string& what) {
  constexpr size_t kMaxChars = 2000;
  auto cut = [&](std::string text) {
    if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + " ...";
    return text;
  };
  std::string labels;
  for (size_t i = 0; i < s.labels.size();) {
    size_t j = i;
    if (s.labels[i] == kIgnoreIndex) {
      while (j < s.labels.size() && s.labels[j] == kIgnoreIndex) ++j;
      labels += fmt::format("[-100 * {}]", j - i);
    } else {
      while (j < s.labels.size() && s.labels[j] != kIgnoreIndex) ++j;
      labels += tok.decode(std::span<const int32_t>(s.labels.data() + i, j - i));
    }
    i = j;
  }
  report.add("{}, {} tokens: [INPUT] {}", what, s.input_ids.size(), cut(tok.decode(s.input_ids)));
  report.add("{}: [LABELS] {}", what, cut(labels));
}

void report_totals(Report& report, const std::string& what, const std::string& unit, size_t rows,
                   const EncodeTotals& t, const DataArgs& a) {
  log_skipped(report, t.skipped, what);
  if (t.over_length) {
    const std::string& s = a.truncation_strategy;
    report.add("{}: {} of {} {} are longer than --max_length {}: {}", what, t.over_length, rows,
               unit, a.max_length,
               s == "delete" ? "dropped (--truncation_strategy delete)"
               : s == "split"
                   ? "cut into pieces of max_length (--truncation_strategy split)"
                   : fmt::format("truncated from the {} (--truncation_strategy {})", s, s));
  }
  if (t.no_trained)
    report.add("{}: dropped {} {} with no trained token{}", what, t.no_trained, unit,
               t.truncated_away
                   ? fmt::format(" ({} of them lost their replies to truncation)", t.truncated_away)
                   : "");
  if (t.per_segment)
    report.add("{}: {} {} were tokenized piece by piece (Unicode normalization changed their text)",
               what, t.per_segment, unit);
}

}  // namespace swiftlet::data_pipeline
