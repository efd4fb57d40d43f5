#pragma once
// The steps load_datasets (SFT/pt) and load_preference_datasets (rlhf) share, for any row type
// with a `where` (file and line): the log report, argument checks, --system, reading every spec
// with #N sampling and the seeded split, the shuffle, parallel encoding with per-row errors, the
// cache key's common part, and the report of what encoding did. Internal to data/.
#include <fmt/format.h>

#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "data/cache.h"
#include "data/dataset.h"
#include "data/sources.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet::data_pipeline {

// derive_seed tags: one random stream per purpose.
enum SeedTag : uint64_t {
  kSample = 1,
  kSplit,
  kShuffle,
  kPack,
  kGroup,
  kValSample,
  kValPack,
  kKto
};

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

// Checks of the arguments every loader takes (not --loss_scale, --packing, --group_by_length,
// whose meaning depends on the command).
void check_common_args(const DataArgs& args);

// --system: a .txt file's text, or the text with "\n" escapes expanded (ms-swift).
std::optional<std::string> resolve_system(const std::optional<std::string>& system);

// config.json's model_type ("" when there is none).
std::string model_type_of(const std::string& model_dir);

// Writes the validation rows carved from --dataset (`jsonl`) to <output_dir>/val_dataset.jsonl,
// where `infer --load_data_args` finds them; nothing when either is empty.
void write_carved_val(const DataArgs& args, const std::string& jsonl);

// The parsed --dataset / --val_dataset entries; a missing path is an Error before anything is
// read.
void parse_specs(const DataArgs& args, std::vector<DatasetSpec>& train_specs,
                 std::vector<DatasetSpec>& val_specs);

// Hashes everything the samples depend on that both loaders share: the program build, data files
// by content, the arguments that change the result (not dataset_num_proc or output_dir), the
// tokenizer files and template inputs. `loss_scale` is the resolved one.
void hash_common_inputs(ContentHasher& h, const DataArgs& args,
                        const std::vector<DatasetSpec>& train_specs,
                        const std::vector<DatasetSpec>& val_specs,
                        const std::optional<std::string>& system, const std::string& loss_scale,
                        const std::string& model_dir);

// The template of a model folder (--template, else detected; `plain` without a chat template).
std::string template_name_for(const DataArgs& args, const Tokenizer& tokenizer,
                              const std::string& model_dir);

void log_skipped(Report& report, const std::vector<std::string>& skipped, const std::string& what);

struct LengthStats {
  size_t count = 0;
  int64_t min = 0, max = 0, total = 0;
  void add(int64_t n);
  std::string str() const;
};

// The first sample as ms-swift prints it: the text, and the labels with untrained runs written as
// [-100 * n], so that the loss mask can be checked by eye. `what`: "first train sample".
void report_first_sample(Report& report, const Tokenizer& tokenizer, const TokenizedSample& sample,
                         const std::string& what);

// What encoding did to the rows of one set (train or val).
struct EncodeTotals {
  size_t over_length = 0, no_trained = 0, truncated_away = 0, per_segment = 0;
  std::vector<std::string> skipped;
};
// Skipped rows, rows over max_length and what happened to them, rows without a trained token,
// rows tokenized piece by piece. `unit`: "rows", "pairs".
void report_totals(Report& report, const std::string& what, const std::string& unit, size_t rows,
                   const EncodeTotals& totals, const DataArgs& args);

// Copies of rows[idx[0]], rows[idx[1]], ...
template <class Row>
std::vector<Row> take(const std::vector<Row>& rows, const std::vector<size_t>& idx) {
  std::vector<Row> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(rows[i]);
  return out;
}

// Reads every spec with `read(spec) -> LoadedRows<Row>`, applies #N sampling and (for --dataset,
// without --val_dataset) the seeded split, and shuffles the concatenated training rows with
// --data_seed; validation keeps its order. `carved`: validation rows were split off --dataset.
template <class Row, class Read>
void read_all(const DataArgs& a, const std::vector<DatasetSpec>& train_specs,
              const std::vector<DatasetSpec>& val_specs, Report& report, Read read,
              std::vector<Row>& train, std::vector<Row>& val, bool& carved) {
  const bool split = a.val_dataset.empty() && a.split_dataset_ratio > 0;
  carved = split;
  auto load = [&](const DatasetSpec& spec, size_t index, bool is_val) {
    LoadedRows<Row> d = read(spec);
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
    std::vector<Row> rows = load(train_specs[i], i, false);
    if (!split) {
      train.insert(train.end(), rows.begin(), rows.end());
      continue;
    }
    std::vector<size_t> ti, vi;
    split_indices(rows.size(), a.split_dataset_ratio, derive_seed(a.data_seed, kSplit, i), ti, vi);
    report.add("dataset {}: split {} train / {} val (--split_dataset_ratio {})", train_specs[i].id,
               ti.size(), vi.size(), a.split_dataset_ratio);
    std::vector<Row> t = take(rows, ti), v = take(rows, vi);
    train.insert(train.end(), t.begin(), t.end());
    val.insert(val.end(), v.begin(), v.end());
  }
  for (size_t i = 0; i < val_specs.size(); ++i) {
    std::vector<Row> rows = load(val_specs[i], i, true);
    val.insert(val.end(), rows.begin(), rows.end());
  }
  // Concatenated datasets are shuffled (ms-swift dataset_shuffle); validation keeps its order.
  Rng rng(derive_seed(a.data_seed, kShuffle, 0));
  for (size_t i = train.size(); i > 1; --i) std::swap(train[i - 1], train[rng.below(i)]);
}

// encode(row) -> Out for every row, in `pool`'s threads; the result does not depend on the thread
// count. A row whose encoding throws Error is an Error naming row.where (strict), or is left out
// (nullopt) with its message in `skipped`. Anything else a worker throws (a broken invariant, out
// of memory) is rethrown here: the pool cannot carry exceptions across threads.
template <class Out, class Row, class Encode>
std::vector<std::optional<Out>> encode_parallel(const std::vector<Row>& rows, ThreadPool& pool,
                                                bool strict, std::vector<std::string>& skipped,
                                                Encode encode) {
  std::vector<std::optional<Out>> out(rows.size());
  std::vector<std::string> errors(rows.size()), hints(rows.size());
  std::vector<std::exception_ptr> failures(size_t(pool.size()));
  pool.parallel_for(int64_t(rows.size()), [&](int64_t begin, int64_t end, int thread) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        out[size_t(i)] = encode(rows[size_t(i)]);
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
  for (size_t i = 0; i < rows.size(); ++i) {
    if (errors[i].empty()) continue;
    if (strict) throw Error(errors[i], hints[i]);
    skipped.push_back(errors[i]);
  }
  return out;
}

}  // namespace swiftlet::data_pipeline
