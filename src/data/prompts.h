#pragma once
// Prompt datasets for online RL (`swiftlet rlhf --rlhf_type grpo`), as ms-swift reads them: any
// row format load_datasets reads; a trailing assistant turn is dropped (the model writes the
// reply), and the rest is rendered with the template's generation prompt and tokenized. Prompts
// longer than --max_length are cut from the left (ms-swift's GRPO truncation_strategy left) or
// dropped (delete). Every column of the row (messages, solution, anything else) is kept for the
// reward functions. #N sampling, --split_dataset_ratio, --val_dataset and the shuffle are
// load_datasets'. No cache: a prompt costs one tokenization.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "template/chat_template.h"

namespace swiftlet {

struct PromptSample {
  std::string where;                  // "file line N"
  std::vector<int32_t> prompt;        // rendered with the generation prompt, tokenized
  nlohmann::json row;                 // the row as read (columns renamed), for the rewards
  std::vector<ChatMessage> messages;  // the prompt conversation (a reward model scores it)
};

struct PromptBundle {
  std::vector<PromptSample> train, val;
  std::string template_name;
};

PromptBundle load_prompt_datasets(const DataArgs& args, const std::string& model_dir);

}  // namespace swiftlet
