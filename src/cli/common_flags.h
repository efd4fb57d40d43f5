#pragma once
// Flags shared by the commands that load a model (infer, deploy, ...), declared once.
#include <vector>

#include "cli/flags.h"
#include "infer/infer_runner.h"

namespace swiftlet::cli {

// --model --adapters --torch_dtype --template --device --threads --max_model_len --max_batch_size
// --infer_backend
std::vector<FlagSpec> runtime_flag_specs();
RuntimeOptions runtime_options(const Flags& f);

// --system --enable_thinking --max_new_tokens --temperature --top_k --top_p --repetition_penalty
// --seed --stop_words --logprobs --top_logprobs
std::vector<FlagSpec> generation_flag_specs();
InferOptions infer_options(const Flags& f);

}  // namespace swiftlet::cli
