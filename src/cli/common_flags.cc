#include "cli/common_flags.h"

#include "core/error.h"

namespace swiftlet::cli {

std::vector<FlagSpec> runtime_flag_specs() {
  return {
      {"model", FlagKind::kString, "", "model folder or hub ID found in the local ModelScope/HF cache"},
      {"adapters", FlagKind::kList, "", "LoRA checkpoint folder(s) applied to the model"},
      {"torch_dtype", FlagKind::kString, "", "weight dtype: bfloat16, float16, float32 (default: config.json)"},
      {"template", FlagKind::kString, "", "chat template name (default: detected from the model)"},
      {"device", FlagKind::kString, "cpu:0", "device to run on (see swiftlet env)"},
      {"threads", FlagKind::kInt, "0", "compute threads (0: OMP_NUM_THREADS or all cores)"},
      {"max_model_len", FlagKind::kInt, "0", "prompt + generation token limit (0: the model's)"},
      {"max_batch_size", FlagKind::kInt, "16", "requests decoded together"},
      {"infer_backend", FlagKind::kString, "swiftlet", "generation backend (only swiftlet's own engine)"},
  };
}

RuntimeOptions runtime_options(const Flags& f) {
  const std::string backend = f.str("infer_backend");
  if (backend != "swiftlet" && backend != "transformers" && backend != "pt")
    throw Error(fmt::format("--infer_backend {} is not available in swiftlet", backend),
                "swiftlet runs its own engine; drop the flag");
  RuntimeOptions o;
  o.model = f.str("model");
  o.adapters = f.list("adapters");
  o.torch_dtype = f.str("torch_dtype");
  o.template_name = f.str("template");
  o.device = f.str("device");
  o.threads = int(f.i64("threads"));
  o.max_model_len = f.i64("max_model_len");
  o.max_batch_size = f.i64("max_batch_size");
  if (o.max_batch_size < 1) throw Error("--max_batch_size must be at least 1");
  if (o.threads < 0) throw Error("--threads must be 0 (automatic) or positive");
  return o;
}

std::vector<FlagSpec> generation_flag_specs() {
  return {
      {"system", FlagKind::kString, "", "system prompt ('' removes the template's default)"},
      {"enable_thinking", FlagKind::kBool, "", "Qwen3: think before answering (default: template)"},
      {"max_new_tokens", FlagKind::kInt, "-1", "tokens to generate at most (-1: up to the context limit)"},
      {"temperature", FlagKind::kFloat, "", "0 = greedy (default: generation_config.json)"},
      {"top_k", FlagKind::kInt, "", "sample among the k most likely tokens (default: generation_config.json)"},
      {"top_p", FlagKind::kFloat, "", "nucleus sampling mass (default: generation_config.json)"},
      {"repetition_penalty", FlagKind::kFloat, "", "HF repetition penalty (default: generation_config.json)"},
      {"seed", FlagKind::kInt, "42", "sampling seed"},
      {"stop_words", FlagKind::kList, "", "extra stop strings (kept in the output)"},
      {"logprobs", FlagKind::kBool, "false", "record token ids and log-probabilities"},
      {"top_logprobs", FlagKind::kInt, "0", "alternatives recorded per token with --logprobs"},
  };
}

InferOptions infer_options(const Flags& f) {
  InferOptions o;
  if (f.given("system")) o.system = f.str("system");
  if (f.given("enable_thinking")) o.enable_thinking = f.boolean("enable_thinking");
  o.max_new_tokens = f.i64("max_new_tokens");
  if (f.given("temperature")) o.temperature = f.f64("temperature");
  if (f.given("top_k")) o.top_k = f.i64("top_k");
  if (f.given("top_p")) o.top_p = f.f64("top_p");
  if (f.given("repetition_penalty")) o.repetition_penalty = f.f64("repetition_penalty");
  o.seed = uint64_t(f.i64("seed"));
  o.stop_words = f.list("stop_words");
  o.logprobs = f.boolean("logprobs");
  o.top_logprobs = int(f.i64("top_logprobs"));
  if (o.temperature && *o.temperature < 0) throw Error("--temperature must be >= 0");
  if (o.top_p && (*o.top_p <= 0 || *o.top_p > 1)) throw Error("--top_p must be in (0, 1]");
  if (o.repetition_penalty && *o.repetition_penalty <= 0) throw Error("--repetition_penalty must be > 0");
  if (o.top_logprobs < 0 || o.top_logprobs > 20) throw Error("--top_logprobs must be between 0 and 20");
  if (o.max_new_tokens < -1 || o.max_new_tokens == 0) throw Error("--max_new_tokens must be positive (or -1)");
  return o;
}

}  // namespace swiftlet::cli
