#pragma once
// `swiftlet infer`: an interactive multi-turn chat on a stream, or batch inference over a dataset
// writing a result jsonl.
#include <fstream>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "data/sources.h"
#include "infer/runtime.h"

namespace swiftlet {

struct InferOptions {
  std::optional<std::string> system;
  std::optional<bool> enable_thinking;
  int64_t max_new_tokens = -1;  // -1: up to the context limit
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<int64_t> top_k;
  uint64_t seed = 42;
  std::optional<bool> stream;  // default: true for chat, false for a dataset
  std::vector<std::string> stop_words;
  bool logprobs = false;
  int top_logprobs = 0;
  std::string val_dataset;
  std::string result_path;
  int64_t val_dataset_sample = -1;
};

// The sampling and stop settings of a request from the options and the model's defaults.
GenerationRequest make_request(Runtime& rt, const InferOptions& opt, std::vector<int32_t> prompt);

// Chat on `in`/`out` until EOF or "exit"; "clear" resets the history.
void run_chat(Runtime& rt, const InferOptions& opt, std::istream& in, std::ostream& out);

// The rows of opt.val_dataset (files, folders and built-in IDs with #N, read as training reads
// them), each parsed by `parse(const DataRow&) -> Row`, cut to --val_dataset_sample.
template <class Row, class Parse>
std::vector<Row> read_infer_rows(const InferOptions& opt, Parse parse) {
  const DatasetSpec spec = parse_dataset_spec(opt.val_dataset);
  LoadedRows<Row> loaded = read_rows<Row>(spec, ReadOptions{}, parse);
  std::vector<Row> rows;
  if (spec.sample) {
    for (size_t i : sample_indices(loaded.rows.size(), *spec.sample, 42)) rows.push_back(loaded.rows[i]);
  } else {
    rows = std::move(loaded.rows);
  }
  if (opt.val_dataset_sample >= 0 && int64_t(rows.size()) > opt.val_dataset_sample)
    rows.resize(size_t(opt.val_dataset_sample));
  return rows;
}

// Opens the result jsonl for appending: --result_path, or <default_dir>/infer_result/<time>.jsonl.
// Returns its path.
std::string open_result_file(const InferOptions& opt, const std::string& default_dir, std::ofstream& f);

// Runs every row of opt.val_dataset (its final assistant reply, if any, is the label) and appends
// one JSON line per row to the result path, which it returns.
std::string run_dataset_inference(Runtime& rt, const InferOptions& opt, const std::string& default_dir);

}  // namespace swiftlet
