#pragma once
// --dataset entries -> conversations: the `path#N` syntax, files / folders / built-in IDs, row
// parsing with --strict, `#N` sampling and the seeded validation split, as ms-swift does them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/builtin.h"
#include "data/conversation.h"
#include "data/readers.h"

namespace swiftlet {

struct DatasetSpec {
  std::string text;               // as given
  std::string id;                 // path or built-in ID, without #N
  std::optional<int64_t> sample;  // #N
  bool builtin = false;
};

// Parses "path", "path#N", "swiftlet/arithmetic:test#100". Hub prefixes (hf::, ms::) are an
// Error: swiftlet reads local data only.
DatasetSpec parse_dataset_spec(const std::string& text);

// The files a spec reads, in order (one file, or a folder's files sorted); empty for a built-in
// ID. A path that does not exist is an Error naming it.
std::vector<std::string> dataset_files(const DatasetSpec& spec);

struct ParsedRow {
  std::string where;  // "file line N"
  Conversation conversation;
};

struct ReadOptions {
  bool strict = true;
  ParseOptions parse;
  BuiltinOptions builtin;
};

// The rows of one spec: parsed rows, rows read per file and why bad rows were left out.
template <class Row>
struct LoadedRows {
  std::vector<Row> rows;
  std::vector<std::pair<std::string, size_t>> rows_per_file;  // rows read (good ones) per file
  std::vector<std::string> skipped;  // strict = false: why each bad row was left out
};
using LoadedDataset = LoadedRows<ParsedRow>;

// Reads every row of a spec (before #N sampling) and parses each with `parse(const DataRow&) ->
// Row`, which throws Error naming the row when it is bad; with options.strict false such rows are
// skipped and their messages kept.
template <class Row, class Parse>
LoadedRows<Row> read_rows(const DatasetSpec& spec, const ReadOptions& options, Parse parse) {
  LoadedRows<Row> out;
  auto parse_rows = [&](std::vector<DataRow>& rows, const std::string& name) {
    size_t good = 0;
    for (DataRow& r : rows) {
      try {
        out.rows.push_back(parse(r));
        ++good;
      } catch (const Error& e) {
        if (options.strict) throw;
        out.skipped.push_back(e.what());
      }
    }
    out.rows_per_file.emplace_back(name, good);
  };
  if (spec.builtin) {
    std::vector<DataRow> rows = builtin_dataset_rows(spec.id, options.builtin);
    parse_rows(rows, spec.id);
    return out;
  }
  for (const std::string& file : dataset_files(spec)) {
    FileRows rows = read_data_file(file, options.strict);
    out.skipped.insert(out.skipped.end(), rows.skipped.begin(), rows.skipped.end());
    parse_rows(rows.rows, file);
  }
  return out;
}

// Reads and parses every row of a spec as a conversation (before #N sampling).
LoadedDataset read_dataset(const DatasetSpec& spec, const ReadOptions& options);

// A seed for one purpose (tag) and one dataset (index) derived from --data_seed.
uint64_t derive_seed(uint64_t data_seed, uint64_t tag, uint64_t index);

// ms-swift's #N rule over `rows` rows: N < rows: the first N of a seeded permutation; N >= rows:
// every row N / rows times (in order) plus the first N % rows of a seeded permutation.
std::vector<size_t> sample_indices(size_t rows, int64_t n, uint64_t seed);

// Splits [0, rows) at random: ceil(ratio * rows) go to validation (at least one row stays in
// training), both parts in the permutation's order.
void split_indices(size_t rows, double ratio, uint64_t seed, std::vector<size_t>& train,
                   std::vector<size_t>& val);

}  // namespace swiftlet
