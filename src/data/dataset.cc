// load_datasets: read -> parse -> #N sample -> split -> shuffle -> render + tokenize (threads) ->
// truncate -> pack / group -> report, with the tokenized result cached by content.
#include "data/dataset.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/cache.h"
#include "data/encode.h"
#include "data/packing.h"
#include "data/pipeline.h"
#include "io/file.h"
#include "model/folder.h"

namespace swiftlet {

namespace fs = std::filesystem;
namespace {

using namespace data_pipeline;

void check_args(const DataArgs& a) {
  check_common_args(a);
  if (a.loss_scale != "default" && a.loss_scale != "all")
    throw Error(fmt::format("--loss_scale {} is not supported", a.loss_scale),
                "use default (assistant replies are trained) or all (every token)");
}

// Everything the samples depend on, hashed.
std::string cache_key(const DataArgs& a, const std::vector<DatasetSpec>& train_specs,
                      const std::vector<DatasetSpec>& val_specs,
                      const std::optional<std::string>& system, const std::string& model_dir) {
  ContentHasher h;
  h.field("swiftlet datasets v1");
  hash_common_inputs(h, a, train_specs, val_specs, system, a.loss_scale, model_dir);
  return h.hex();
}

std::vector<TokenizedSample> encode_rows(const std::vector<ParsedRow>& rows, const Tokenizer& tok,
                                         const ChatTemplate& tmpl, const EncodeSettings& settings,
                                         const DataArgs& a, ThreadPool& pool,
                                         EncodeTotals& totals) {
  std::vector<std::optional<EncodedRow>> encoded = encode_parallel<EncodedRow>(
      rows, pool, a.strict, totals.skipped,
      [&](const ParsedRow& r) { return encode_conversation(tok, tmpl, r.conversation, settings); });
  std::vector<TokenizedSample> out;
  for (std::optional<EncodedRow>& r : encoded) {
    if (!r) continue;
    totals.over_length += r->over_length;
    totals.no_trained += r->no_trained_token;
    totals.truncated_away += r->no_trained_token && r->over_length;
    totals.per_segment += r->per_segment;
    for (TokenizedSample& s : r->samples) out.push_back(std::move(s));
  }
  return out;
}

void report_encoding(Report& report, const char* what, size_t rows, const EncodeTotals& t,
                     const DataArgs& a, const std::vector<TokenizedSample>& samples) {
  report_totals(report, what, "rows", rows, t, a);
  LengthStats st;
  for (const TokenizedSample& s : samples) st.add(int64_t(s.input_ids.size()));
  report.add("{}: {}", what, st.str());
}

}  // namespace

DatasetBundle load_datasets(const DataArgs& args, const std::string& model_arg) {
  DataArgs a = args;
  if (a.loss_scale.empty()) a.loss_scale = "default";
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  check_args(a);
  const std::string model_dir = resolve_model_path(model_arg);
  std::vector<DatasetSpec> train_specs, val_specs;
  parse_specs(a, train_specs, val_specs);
  const std::optional<std::string> system = resolve_system(a.system);

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
  std::vector<ParsedRow> train_rows, val_rows;
  bool carved = false;
  read_all(
      a, train_specs, val_specs, report,
      [&](const DatasetSpec& spec) { return read_dataset(spec, ro); }, train_rows, val_rows,
      carved);
  std::string val_jsonl;
  if (carved)
    for (const ParsedRow& r : val_rows)
      val_jsonl += conversation_to_json(r.conversation).dump() + "\n";

  const Tokenizer tok = Tokenizer::load(model_dir);
  const std::string template_name = template_name_for(a, tok, model_dir);
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
  if (!bundle.train.empty())
    report_first_sample(report, tok, bundle.train[0], "first train sample");
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
  write_carved_val(a, val_jsonl);  // only once everything succeeded: a failed run leaves no files
  log_info("datasets read and tokenized in {:.2f} s", seconds());
  return bundle;
}

}  // namespace swiftlet
