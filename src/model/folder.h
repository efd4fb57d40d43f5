#pragma once
// A Hugging Face model folder: config.json, generation_config.json (optional) and the weights in
// model.safetensors or the shards named by model.safetensors.index.json. `--model` takes such a
// folder or a hub ID (`Qwen/Qwen3-0.6B`) already in the local ModelScope / Hugging Face cache.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace swiftlet {

// generation_config.json: the sampling defaults a model ships with.
struct GenerationConfig {
  std::vector<int64_t> eos_token_id;  // from generation_config.json, else config.json
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> repetition_penalty;
  std::optional<bool> do_sample;
  std::optional<int64_t> max_new_tokens;
};

// Parses a generation_config.json text; `where` names the file in errors.
GenerationConfig parse_generation_config(const std::string& json_text, const std::string& where);
// Serialises the fields that are set (keys sorted, as transformers writes the file).
std::string generation_config_to_json(const GenerationConfig& g);

struct ModelFolder {
  std::string path;  // the resolved folder
  ModelConfig config;
  GenerationConfig generation;
  // Every weight of model_weight_specs(config) by HF name: host tensors mapped read-only from the
  // safetensors files (copy before writing). Each keeps its file's mapping alive.
  std::map<std::string, Tensor> weights;
  std::vector<std::string> weight_files;  // file names in the folder, in load order
};

// A local folder is returned as given. A hub ID "org/name" is looked up in
// ModelScope's cache ($MODELSCOPE_CACHE, else ~/.cache/modelscope/hub: models/<org>/<name> and
// <org>/<name>, names also with '.' escaped as '___') and then Hugging Face's
// ($HF_HUB_CACHE, $HF_HOME/hub, else ~/.cache/huggingface/hub:
// models--<org>--<name>/snapshots/<rev> with <rev> from refs/main). Throws Error listing the
// folders searched, with download commands.
std::string resolve_model_path(const std::string& model_arg);

// Loads config.json, generation_config.json and the weights, refusing unsupported or damaged
// models before mapping any data: unknown architecture, quantization, missing config or shards,
// FP8 or integer weights, missing / unexpected tensors, shapes that disagree with the config.
// Rotary `inv_freq` buffers and a tied `lm_head.weight` are ignored (transformers does the same).
ModelFolder load_model_folder(const std::string& model_arg);

}  // namespace swiftlet
