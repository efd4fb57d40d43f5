#pragma once
// Everything needed to generate from (or score with) a model folder: the weights on a device, the tokenizer, the
// chat template and the generation defaults. Shared by `infer`, `deploy` and the demo.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/device.h"
#include "infer/engine.h"
#include "model/folder.h"
#include "model/transformer.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tuner/lora.h"

namespace swiftlet {

struct RuntimeOptions {
  std::string model;                  // folder or hub ID; may come from an adapter's config
  std::vector<std::string> adapters;  // LoRA checkpoint folders applied to the base
  std::string torch_dtype;            // "" = config.json's torch_dtype
  std::string template_name;          // "" = detected from the folder
  std::string device = "cpu:0";
  int threads = 0;                    // 0 = ThreadPool::default_threads()
  int64_t max_model_len = 0;          // 0 = config max_position_embeddings
  int64_t max_batch_size = 16;
};

class Runtime {
 public:
  explicit Runtime(const RuntimeOptions& opt);
  ~Runtime();

  ModelFolder& folder() { return folder_; }
  Transformer& model() { return *model_; }
  Tokenizer& tokenizer() { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return *template_; }
  const std::string& template_name() const { return template_name_; }
  Engine& engine() { return *engine_; }
  Device& device() { return *device_; }
  // A sequence classifier (reward model): requests are scored (infer/scoring.h), not continued.
  bool scores() const { return folder_.config.seq_cls(); }
  // The adapter applied to the base model (--adapters CKPT), or nullptr.
  const LoraAdapter* adapter() const {
    return adapters_.empty() ? nullptr : adapters_.front().get();
  }
  // Token ids that end generation: generation_config eos ids, the tokenizer's eos, and the
  // template's stop words that are single tokens.
  const std::vector<int32_t>& stop_token_ids() const { return stop_ids_; }
  // Sampling defaults from generation_config.json (greedy when do_sample is false).
  SamplingParams default_sampling() const;
  // Thinking when the request does not say: off for hybrid Qwen3 (as ms-swift's inference does,
  // and as SFT data without <think> blocks trains it); the template's own default otherwise.
  std::optional<bool> default_enable_thinking() const;
  // A decoder factory for the engine.
  DecoderFactory decoder_factory();

 private:
  ModelFolder folder_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ChatTemplate> template_;
  std::string template_name_;
  std::vector<std::unique_ptr<LoraAdapter>> adapters_;
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> stop_ids_;
};

// Token ids that end generation: generation_config eos ids, config eos ids, the tokenizer's eos,
// and the template's stop words that are single tokens (in that order, no repeats).
std::vector<int32_t> generation_stop_ids(const ModelFolder& folder, const Tokenizer& tokenizer,
                                         const ChatTemplate& chat_template);

// What a training run saved in a checkpoint's args.json that inference reuses (ms-swift's
// load_args / load_data_args). Empty fields were not set by the run.
struct SavedRunArgs {
  std::string model, template_name, system, torch_dtype;
  std::vector<std::string> val_datasets;  // the run's validation data: its carved split
                                          // (<run>/val_dataset.jsonl) or its --val_dataset
};
SavedRunArgs read_saved_run_args(const std::string& checkpoint_dir);


}  // namespace swiftlet
