#pragma once
// Dataset files -> tokenized training samples, as ms-swift prepares them: every supported row
// format, `#N` sampling, validation split, template rendering with loss masks, truncation,
// parallel tokenization and a cache of the result.
//
// --dataset / --val_dataset entries: a .jsonl/.json/.csv/.txt file, a folder of them (read in
// sorted order), or a built-in ID (data/builtin.h: swiftlet/self-cognition, swiftlet/arithmetic,
// swiftlet/preference-arithmetic), each optionally followed by #N: N below the row count takes a
// seeded random sample without replacement; N above it repeats every row N / rows times plus a
// random N % rows remainder.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/sample.h"

namespace swiftlet {

struct DataArgs {
  std::vector<std::string> dataset;      // files, folders or built-in IDs, each with optional #N
  std::vector<std::string> val_dataset;  // given: split_dataset_ratio is ignored (as ms-swift)
  double split_dataset_ratio = 0.0;      // share of each --dataset held out as validation
  uint64_t data_seed = 42;               // sampling, splitting, shuffling, packing order
  int64_t max_length = 2048;
  std::string truncation_strategy = "delete";  // delete | left | right | split (pt only)
  int64_t dataset_num_proc = 1;                // tokenizing threads (same result for any value)
  bool packing = false;
  bool group_by_length = false;
  int64_t train_batch_size = 1;  // per_device_train_batch_size: the group size of group_by_length
  bool strict = true;            // false: bad rows are skipped and counted instead of an Error
  std::string template_name;     // "" = detected from the model folder
  std::optional<std::string> system;    // --system: text, or a .txt file; "\n" escapes expanded
  std::vector<std::string> model_name;  // self-cognition (Chinese, English)
  std::vector<std::string> model_author;
  // default | all (pt); rlhf also last_round. "" = the command's default: default for sft, the
  // rlhf type's for load_preference_datasets (data/preference.h).
  std::string loss_scale;
  bool use_chat_template = true;  // false: the `plain` template (pt)
  // ms-swift --preserve_thinking; unset: true, ms-swift's choice for training under loss_scale
  // default/all (every turn keeps a think block, an empty untrained one when it has none); false
  // under last_round (history turns rendered as the Jinja template does).
  std::optional<bool> preserve_thinking;
  std::map<std::string, std::string> columns;  // --columns: rename row keys ({"q": "query"})
  bool load_from_cache_file = true;  // reuse (and store) tokenized results in the dataset cache
  std::string output_dir;            // where val_dataset.jsonl goes ("" = not written)
};

struct DatasetBundle {
  std::vector<TokenizedSample> train;
  std::vector<TokenizedSample> val;
  // group_by_length: each train item is one whole micro-batch of similar-length samples (joined
  // through packed_lengths); train with one item a micro-batch.
  bool train_grouped = false;
};

// Reads, renders and tokenizes the datasets with the tokenizer and template of `model_dir`.
// Errors (missing files, malformed rows with --strict, bad arguments) name the file and line.
DatasetBundle load_datasets(const DataArgs& args, const std::string& model_dir);

}  // namespace swiftlet
