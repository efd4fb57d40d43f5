// load_datasets: read -> parse -> #N sample -> split -> shuffle -> render + tokenize (threads) ->
// truncate -> pack / group -> report, with the tokenized result cached by content.
#include "data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "data/cache.h"
#include "data/encode.h"
#include "data/packing.h"
#include "data/sources.h"
#include "io/file.h"
#include "io/json.h"
#include "model/folder.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// derive_seed tags: one random stream per purpose.
enum SeedTag : uint64_t { kSample = 1, kSplit, kShuffle, kPack, kGroup, kValSample, kValPack };

// Log lines of a run, kept so that a cache hit can show what the original run did.
class Report {
 public:
  template <class... Args>
  void add(fmt::format_string<Args...> f, Args&&... args) {
    lines.push_back(fmt::format(f, std::forward<Args>(args)...));
    log_info("{}", lines.back());
  }
  std::vector<std::string> lines;
};

void check_args(const DataArgs& a) {
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
  if (a.loss_scale != "default" && a.loss_scale != "all")
    throw Error(fmt::format("--loss_scale {} is not supported", a.loss_scale),
                "use default (assistant replies are trained) or all (every token)");
  if (!(a.split_dataset_ratio >= 0.0 && a.split_dataset_ratio < 1.0))
    throw Error(fmt::format("--split_dataset_ratio {} must be in [0, 1)", a.split_dataset_ratio));
  if (a.dataset_num_proc < 1)
    throw Error(fmt::format("--dataset_num_proc {} must be at least 1", a.dataset_num_proc));
  if (a.train_batch_size < 1)
    throw Error(fmt::format("the batch size {} must be at least 1", a.train_batch_size));
}

// --system: a .txt file's text, or the text with "\n" escapes expanded (ms-swift).
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
  const json config = io::read_json_file(path);
  return config.value("model_type", "");
}

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

// Everything the samples depend on, hashed: data files by content, the arguments that change
// the result (not dataset_num_proc or output_dir), tokenizer files and template inputs.
std::string cache_key(const DataArgs& a, const std::vector<DatasetSpec>& train_specs,
                      const std::vector<DatasetSpec>& val_specs,
                      const std::optional<std::string>& system, const std::string& model_dir) {
  ContentHasher h;
  h.field("swiftlet datasets v1");
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
  h.field(a.loss_scale);
  h.field(a.preserve_thinking ? (*a.preserve_thinking ? "1" : "0") : "-");
  for (const auto& [from, to] : a.columns) h.field(from + "\x1f" + to);
  h.field(model_type_of(model_dir));
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}) {
    const std::string path = io::path_join(model_dir, file);
    h.field(io::is_regular_file(path) ? hash_file(path) : "-");
  }
  return h.hex();
}

struct LengthStats {
  size_t count = 0;
  int64_t min = 0, max = 0, total = 0;
  void add(int64_t n) {
    min = count ? std::min(min, n) : n;
    max = count ? std::max(max, n) : n;
    total += n;
    ++count;
  }
  std::string str() const {
    if (!count) return "no samples";
    return fmt::format("{} samples, tokens min {} / mean {:.1f} / max {}, {} in all", count, min,
                       double(total) / double(count), max, total);
  }
};

std::vector<ParsedRow> take(const std::vector<ParsedRow>& rows, const std::vector<size_t>& idx) {
  std::vector<ParsedRow> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(rows[i]);
  return out;
}

void log_skipped(Report& report, const std::vector<std::string>& skipped, const std::string& what) {
  if (skipped.empty()) return;
  report.add("{}: skipped {} bad row(s) (--strict false), the first: {}", what, skipped.size(),
             skipped.front());
}

// Reads, samples and (for --dataset) splits every spec.
void read_all(const DataArgs& a, const std::vector<DatasetSpec>& train_specs,
              const std::vector<DatasetSpec>& val_specs, const ReadOptions& ro, Report& report,
              std::vector<ParsedRow>& train, std::vector<ParsedRow>& val, bool& carved) {
  const bool split = a.val_dataset.empty() && a.split_dataset_ratio > 0;
  carved = split;
  auto load = [&](const DatasetSpec& spec, size_t index, bool is_val) {
    LoadedDataset d = read_dataset(spec, ro);
    for (const auto& [file, n] : d.rows_per_file) report.add("dataset {}: {} rows", file, n);
    log_skipped(report, d.skipped, spec.id);
    if (!spec.sample || d.rows.empty()) return std::move(d.rows);
    const std::vector<size_t> idx =
        sample_indices(d.rows.size(), *spec.sample,
                       derive_seed(a.data_seed, is_val ? kValSample : kSample, index));
    report.add("dataset {}: #{} takes {} of {} rows{}", spec.id, *spec.sample, idx.size(),
               d.rows.size(),
               size_t(*spec.sample) > d.rows.size() ? " (every row repeated, then a random rest)"
                                                    : " (random sample)");
    return take(d.rows, idx);
  };
  for (size_t i = 0; i < train_specs.size(); ++i) {
    std::vector<ParsedRow> rows = load(train_specs[i], i, false);
    if (!split) {
      train.insert(train.end(), rows.begin(), rows.end());
      continue;
    }
    std::vector<size_t> ti, vi;
    split_indices(rows.size(), a.split_dataset_ratio, derive_seed(a.data_seed, kSplit, i), ti, vi);
    report.add("dataset {}: split {} train / {} val (--split_dataset_ratio {})", train_specs[i].id,
               ti.size(), vi.size(), a.split_dataset_ratio);
    std::vector<ParsedRow> t = take(rows, ti), v = take(rows, vi);
    train.insert(train.end(), t.begin(), t.end());
    val.insert(val.end(), v.begin(), v.end());
  }
  for (size_t i = 0; i < val_specs.size(); ++i) {
    std::vector<ParsedRow> rows = load(val_specs[i], i, true);
    val.insert(val.end(), rows.begin(), rows.end());
  }
  // Concatenated datasets are shuffled (ms-swift dataset_shuffle); validation keeps its order.
  Rng rng(derive_seed(a.data_seed, kShuffle, 0));
  for (size_t i = train.size(); i > 1; --i) std::swap(train[i - 1], train[rng.below(i)]);
}

struct EncodeTotals {
  size_t over_length = 0, no_trained = 0, truncated_away = 0, per_segment = 0;
  std::vector<std::string> skipped;
};

std::vector<TokenizedSample> encode_rows(const std::vector<ParsedRow>& rows, const Tokenizer& tok,
                                         const ChatTemplate& tmpl, const EncodeSettings& settings,
                                         const DataArgs& a, ThreadPool& pool,
                                         EncodeTotals& totals) {
  std::vector<EncodedRow> encoded(rows.size());
  std::vector<std::string> errors(rows.size()), hints(rows.size());
  // Anything else a worker throws (a broken invariant, out of memory) is rethrown here: the pool
  // cannot carry exceptions across threads.
  std::vector<std::exception_ptr> failures(size_t(pool.size()));
  pool.parallel_for(int64_t(rows.size()), [&](int64_t begin, int64_t end, int thread) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        encoded[size_t(i)] = encode_conversation(tok, tmpl, rows[size_t(i)].conversation, settings);
      } catch (const Error& e) {
        errors[size_t(i)] = fmt::format("{}: {}", rows[size_t(i)].where, e.what());
        hints[size_t(i)] = e.hint();
      } catch (...) {
        failures[size_t(thread)] = std::current_exception();
        return;
      }
    }
  });
  for (const std::exception_ptr& f : failures)
    if (f) std::rethrow_exception(f);
  std::vector<TokenizedSample> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!errors[i].empty()) {
      if (a.strict) throw Error(errors[i], hints[i]);
      totals.skipped.push_back(errors[i]);
      continue;
    }
    EncodedRow& r = encoded[i];
    totals.over_length += r.over_length;
    totals.no_trained += r.no_trained_token;
    totals.truncated_away += r.no_trained_token && r.over_length;
    totals.per_segment += r.per_segment;
    for (TokenizedSample& s : r.samples) out.push_back(std::move(s));
  }
  return out;
}

// The first sample as ms-swift prints it: the text, and the labels with untrained runs written as
// [-100 * n], so that the loss mask can be checked by eye.
void report_first_sample(Report& report, const Tokenizer& tok, const TokenizedSample& s) {
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
  report.add("first train sample, {} tokens: [INPUT] {}", s.input_ids.size(),
             cut(tok.decode(s.input_ids)));
  report.add("first train sample: [LABELS] {}", cut(labels));
}

void report_encoding(Report& report, const char* what, size_t rows, const EncodeTotals& t,
                     const DataArgs& a, const std::vector<TokenizedSample>& samples) {
  log_skipped(report, t.skipped, what);
  if (t.over_length) {
    const std::string& s = a.truncation_strategy;
    report.add("{}: {} of {} rows are longer than --max_length {}: {}", what, t.over_length, rows,
               a.max_length,
               s == "delete" ? "dropped (--truncation_strategy delete)"
               : s == "split"
                   ? "cut into pieces of max_length (--truncation_strategy split)"
                   : fmt::format("truncated from the {} (--truncation_strategy {})", s, s));
  }
  if (t.no_trained)
    report.add("{}: dropped {} rows with no trained token{}", what, t.no_trained,
               t.truncated_away
                   ? fmt::format(" ({} of them lost their replies to truncation)", t.truncated_away)
                   : "");
  if (t.per_segment)
    report.add(
        "{}: {} rows were tokenized piece by piece (Unicode normalization changed their text)",
        what, t.per_segment);
  LengthStats st;
  for (const TokenizedSample& s : samples) st.add(int64_t(s.input_ids.size()));
  report.add("{}: {}", what, st.str());
}

}  // namespace

DatasetBundle load_datasets(const DataArgs& a, const std::string& model_arg) {
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  check_args(a);
  const std::string model_dir = resolve_model_path(model_arg);
  std::vector<DatasetSpec> train_specs, val_specs;
  for (const std::string& s : a.dataset) train_specs.push_back(parse_dataset_spec(s));
  for (const std::string& s : a.val_dataset) val_specs.push_back(parse_dataset_spec(s));
  for (const auto* list : {&train_specs, &val_specs})
    for (const DatasetSpec& s : *list) (void)dataset_files(s);  // a missing path fails first
  if (!a.val_dataset.empty() && a.split_dataset_ratio > 0)
    log_warning("--val_dataset is given: --split_dataset_ratio {} is ignored (as in ms-swift)",
                a.split_dataset_ratio);
  const std::optional<std::string> system = resolve_system(a.system);
  const fs::path val_path =
      a.output_dir.empty() ? fs::path() : fs::path(a.output_dir) / "val_dataset.jsonl";
  auto write_val = [&](const std::string& jsonl) {
    if (jsonl.empty() || a.output_dir.empty()) return;
    fs::create_directories(a.output_dir);
    io::write_file_atomic(val_path.string(), jsonl);
    log_info("validation rows carved from --dataset written to {}", val_path.string());
  };

  const std::string cache_dir = a.load_from_cache_file ? dataset_cache_dir() : "";
  std::string key;
  if (!cache_dir.empty()) {
    key = cache_key(a, train_specs, val_specs, system, model_dir);
    if (std::optional<CachedDatasets> hit = read_dataset_cache(cache_dir, key)) {
      log_info(
          "reusing the tokenized datasets of an earlier run from the cache {} (template {}); "
          "what that run reported:",
          io::path_join(cache_dir, key + ".bin"), hit->template_name);
      for (const std::string& line : hit->report) log_info("  {}", line);
      write_val(hit->val_jsonl);
      log_info("datasets loaded from the cache in {:.2f} s", seconds());
      return std::move(hit->bundle);
    }
  }

  Report report;
  ReadOptions ro;
  ro.strict = a.strict;
  ro.parse.columns = a.columns;
  ro.builtin = {a.model_name, a.model_author};
  std::vector<ParsedRow> train_rows, val_rows;
  bool carved = false;
  read_all(a, train_specs, val_specs, ro, report, train_rows, val_rows, carved);
  std::string val_jsonl;
  if (carved)
    for (const ParsedRow& r : val_rows)
      val_jsonl += conversation_to_json(r.conversation).dump() + "\n";

  const Tokenizer tok = Tokenizer::load(model_dir);
  std::string template_name =
      a.template_name.empty() ? ChatTemplate::detect(model_type_of(model_dir), tok.chat_template())
                              : a.template_name;
  if (!a.use_chat_template) template_name = "plain";
  const ChatTemplate tmpl =
      ChatTemplate::by_name(template_name, {tok.bos_token(), tok.eos_token()});
  EncodeSettings settings;
  settings.options.system = system;
  settings.options.preserve_thinking = a.preserve_thinking.value_or(true);
  settings.loss_all = a.loss_scale == "all";
  settings.max_length = a.max_length;
  settings.truncation_strategy = a.truncation_strategy;
  report.add("template {}, loss on {}, max_length {}", template_name,
             settings.loss_all ? "every token" : "assistant replies", a.max_length);
  log_info("tokenizing {} train and {} val rows in {} thread(s)", train_rows.size(),
           val_rows.size(), a.dataset_num_proc);

  ThreadPool pool(int(a.dataset_num_proc));
  DatasetBundle bundle;
  EncodeTotals train_totals, val_totals;
  bundle.train = encode_rows(train_rows, tok, tmpl, settings, a, pool, train_totals);
  bundle.val = encode_rows(val_rows, tok, tmpl, settings, a, pool, val_totals);
  report_encoding(report, "train", train_rows.size(), train_totals, a, bundle.train);
  if (!val_rows.empty()) report_encoding(report, "val", val_rows.size(), val_totals, a, bundle.val);
  if (!bundle.train.empty()) report_first_sample(report, tok, bundle.train[0]);
  if (bundle.train.empty())
    throw Error("no training sample is left after reading and encoding the datasets",
                "check --dataset, --max_length and --truncation_strategy (see the log above)");

  if (a.packing) {
    const size_t n_train = bundle.train.size(), n_val = bundle.val.size();
    bundle.train = pack_samples(bundle.train, a.max_length, derive_seed(a.data_seed, kPack, 0));
    bundle.val = pack_samples(bundle.val, a.max_length, derive_seed(a.data_seed, kValPack, 0));
    int64_t tokens = 0;
    for (const TokenizedSample& s : bundle.train) tokens += int64_t(s.input_ids.size());
    report.add(
        "packing: {} train samples into {} sequences of up to {} tokens ({:.1f}% full), "
        "{} val samples into {}",
        n_train, bundle.train.size(), a.max_length,
        100.0 * double(tokens) / double(bundle.train.size() * size_t(a.max_length)), n_val,
        bundle.val.size());
  }
  if (a.group_by_length && a.train_batch_size > 1) {
    const size_t n = bundle.train.size();
    bundle.train =
        group_by_length(bundle.train, a.train_batch_size, derive_seed(a.data_seed, kGroup, 0));
    bundle.train_grouped = true;
    report.add(
        "group_by_length: {} train samples in {} micro-batches of up to {} similar-length "
        "samples",
        n, bundle.train.size(), a.train_batch_size);
  } else if (a.group_by_length) {
    report.add("group_by_length: a batch holds one sample, there is nothing to group");
  }

  if (!cache_dir.empty()) {
    CachedDatasets entry{bundle, template_name, report.lines, val_jsonl};
    const std::string path = write_dataset_cache(cache_dir, key, entry);
    if (!path.empty()) log_info("tokenized datasets cached in {}", path);
  }
  write_val(val_jsonl);  // only once everything succeeded: a failed run leaves no files
  log_info("datasets read and tokenized in {:.2f} s", seconds());
  return bundle;
}

}  // namespace swiftlet
