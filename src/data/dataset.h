#pragma once
// Dataset files -> tokenized training samples, as ms-swift prepares them: every supported row
// format, `#N` sampling, validation split, template rendering with loss masks, truncation,
// parallel tokenization and a cache of the result.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/sample.h"

namespace swiftlet {

struct DataArgs {
  std::vector<std::string> dataset;      // files, folders or built-in IDs, each with optional #N
  std::vector<std::string> val_dataset;
  double split_dataset_ratio = 0.0;
  uint64_t data_seed = 42;
  int64_t max_length = 2048;
  std::string truncation_strategy = "delete";  // delete | left | right
  int64_t dataset_num_proc = 1;
  bool packing = false;
  bool group_by_length = false;
  bool strict = true;
  std::string template_name;               // "" = detected from the model folder
  std::optional<std::string> system;
  std::vector<std::string> model_name;     // self-cognition (Chinese, English)
  std::vector<std::string> model_author;
  std::string loss_scale = "default";      // default | all (pt)
  bool use_chat_template = true;
  std::string output_dir;                  // where val_dataset.jsonl / the cache go ("" = none)
};

struct DatasetBundle {
  std::vector<TokenizedSample> train;
  std::vector<TokenizedSample> val;
};

// Reads, renders and tokenizes the datasets with the tokenizer and template of `model_dir`.
DatasetBundle load_datasets(const DataArgs& args, const std::string& model_dir);

}  // namespace swiftlet
