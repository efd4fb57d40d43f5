#pragma once
// `swiftlet export --adapters CKPT --merge_lora true`: folds a LoRA adapter into its base model
// (W += s B A) and writes a plain Hugging Face folder, `<CKPT>-merged` by default.
#include <string>

namespace swiftlet {

struct MergeOptions {
  std::string adapter_dir;
  std::string model;       // base model; "" = the adapter's args.json / adapter_config.json
  std::string output_dir;  // "" = <adapter_dir>-merged
  bool exist_ok = false;   // allow an existing output_dir
};

// Returns the folder written. Written under a temporary name and renamed when complete.
std::string merge_lora(const MergeOptions& opt);

}  // namespace swiftlet
