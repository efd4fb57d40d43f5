#pragma once
// Creates a new Hugging Face model folder with random weights (`swiftlet init`): real
// architectures and a real tokenizer, so tests and demos run without downloading a model.
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/folder.h"

namespace swiftlet {

struct InitOptions {
  std::string preset;       // a name of init_preset_names(), or empty when config_path is given
  std::string config_path;  // a config.json to take the shape from (exactly one of the two)
  std::string
      tokenizer_dir;  // holds tokenizer.json + tokenizer_config.json; copied into the folder
  std::string output_dir;
  bool overwrite = false;  // allow a non-empty output_dir
  // float32 | bfloat16 | float16; empty: float32 for the tiny presets (exact tests and training),
  // bfloat16 for the full-size presets (as Qwen ships them), config.json's own for config_path.
  std::string torch_dtype;
  uint64_t seed = 42;
  double initializer_range = 0;  // > 0: std of the random weights (default: the config's, 0.02)
  uint64_t max_shard_bytes = io::kDefaultMaxShardBytes;
  ThreadPool* pool = nullptr;  // fills the weights in parallel when given; same bytes either way
};

struct InitResult {
  std::string output_dir;
  ModelConfig config;
  GenerationConfig generation;
  int64_t num_parameters = 0;
  std::vector<std::string> files;  // everything written, names within output_dir
};

// tiny, tiny-qwen2, tiny-llama, small, qwen3-0.6b, qwen3-1.7b, tiny-moe, tiny-qwen35,
// qwen3-30b-a3b.
std::vector<std::string> init_preset_names();
// The shape of a preset; vocab_size and the special token ids are left to the tokenizer.
ModelConfig init_preset_config(const std::string& name);

// The vocabulary facts init takes from a tokenizer folder.
struct TokenizerFacts {
  int64_t num_tokens = 0;  // 1 + the largest id in tokenizer.json (model vocab and added tokens)
  std::string tokenizer_class;
  int64_t eos_token_id = -1;
  int64_t bos_token_id = -1;  // -1: none
  int64_t pad_token_id = -1;
  int64_t endoftext_id = -1;  // "<|endoftext|>" when the vocabulary has it (Qwen's end of document)
};
TokenizerFacts read_tokenizer_facts(const std::string& tokenizer_dir);

// Rows of the embedding for a tokenizer of `facts.num_tokens` tokens: Qwen2/Qwen3 tokenizers get
// 151936 as every Qwen release has; others the token count rounded up to a multiple of 64.
int64_t padded_vocab_size(const TokenizerFacts& facts);

// What init_model_folder would write (config, generation config, parameter count), without
// touching the disk beyond reading the tokenizer and config files. `files` stays empty.
InitResult plan_model_folder(const InitOptions& options);

// Writes config.json, generation_config.json, the weights (model.safetensors, or shards with
// model.safetensors.index.json above max_shard_bytes) and copies of the tokenizer files.
// Linear and embedding weights ~ Normal(0, 0.02) (transformers' initializer_range), norm scales 1,
// biases 0; the same seed gives the same bytes whatever the thread count.
// Special ids: config eos = the tokenizer's eos_token; bos = its bos_token, else <|endoftext|> (as
// Qwen's configs); generation_config eos = [eos_token, <|endoftext|> if different], pad = pad_token.
// qwen3-0.6b / qwen3-1.7b also get Qwen3's published sampling defaults (do_sample, temperature 0.6,
// top_p 0.95, top_k 20); the tiny presets and --config folders decode greedily unless asked, so
// tests and demos are deterministic.
InitResult init_model_folder(const InitOptions& options);

}  // namespace swiftlet
