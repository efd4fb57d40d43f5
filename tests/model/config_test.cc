#include "model/config.h"

#include <gtest/gtest.h>

#include "io/json.h"
#include "io/test_util.h"
#include "model/weights.h"

namespace swiftlet {
namespace {

using io::Json;

// The config.json files of Qwen/Qwen3-0.6B, Qwen/Qwen2.5-0.5B-Instruct and
// meta-llama/Llama-3.2-1B-Instruct as published.
const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";
const char* kQwen2 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";
const char* kLlama = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

ModelConfig parse(const Json& j) { return parse_model_config(j.dump(), "cfg.json"); }
Json base(const char* text) { return Json::parse(text); }

TEST(ModelConfig, ParsesQwen3) {
  ModelConfig c = parse_model_config(kQwen3, "config.json");
  EXPECT_EQ(c.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_EQ(c.family, ModelFamily::kQwen3);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_hidden_layers, 28);
  EXPECT_EQ(c.num_attention_heads, 16);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);  // not hidden/heads = 64: Qwen3 sets it explicitly
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.rope_type, "default");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.o_proj_bias);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{151645}));
  EXPECT_EQ(c.bos_token_id, 151643);
}

TEST(ModelConfig, ParsesQwen2WithBiases) {
  ModelConfig c = parse_model_config(kQwen2, "config.json");
  EXPECT_EQ(c.family, ModelFamily::kQwen2);
  EXPECT_TRUE(c.attention_bias);  // Qwen2 always has q/k/v biases ...
  EXPECT_FALSE(c.o_proj_bias);    // ... and none on o_proj
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 64);  // 896 / 14
  EXPECT_EQ(c.num_key_value_heads, 2);
}

TEST(ModelConfig, ParsesLlama3WithRopeScaling) {
  ModelConfig c = parse_model_config(kLlama, "config.json");
  EXPECT_EQ(c.family, ModelFamily::kLlama);
  EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.rope_scaling.rope_type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);

  Json j = base(kLlama);
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // the older key name
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.rope_type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse(j).rope_scaling.rope_type, "default");
  j["attention_bias"] = true;  // transformers then adds biases to q, k, v and o
  c = parse(j);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.o_proj_bias);
}

TEST(ModelConfig, DefaultsFollowTransformers) {
  Json j = base(kLlama);
  for (const char* k :
       {"num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
        "torch_dtype", "eos_token_id", "bos_token_id", "rope_scaling"})
    j.erase(k);
  ModelConfig c = parse(j);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_TRUE(c.eos_token_id.empty());
  EXPECT_EQ(c.bos_token_id, -1);
  Json q = base(kQwen3);
  q.erase("head_dim");
  EXPECT_EQ(parse(q).head_dim, 128);  // Qwen3Config's default, not hidden/heads
  q.erase("architectures");           // model_type alone names the class
  EXPECT_EQ(parse(q).architecture, "Qwen3ForCausalLM");
  q["dtype"] = "float16";  // newer transformers write dtype instead of torch_dtype
  q.erase("torch_dtype");
  EXPECT_EQ(parse(q).torch_dtype, "float16");
}

// Reward models: ...ForSequenceClassification with num_labels (or id2label's size), a score head
// in place of the LM head, written back with id2label / label2id.
TEST(ModelConfig, SequenceClassifiers) {
  Json j = base(kQwen3);
  j["architectures"] = {"Qwen3ForSequenceClassification"};
  j["id2label"] = {{"0", "LABEL_0"}};
  ModelConfig c = parse(j);
  EXPECT_TRUE(c.seq_cls());
  EXPECT_EQ(c.num_labels, 1);
  const auto specs = model_weight_specs(c);
  EXPECT_EQ(specs.back().name, "score.weight");
  EXPECT_EQ(specs.back().shape, (Shape{1, c.hidden_size}));
  ModelConfig back = parse_model_config(model_config_to_json(c), "back.json");
  EXPECT_EQ(back.architecture, "Qwen3ForSequenceClassification");
  EXPECT_EQ(back.num_labels, 1);
  j.erase("id2label");
  EXPECT_EQ(parse(j).num_labels, 2);  // HF's default
  j["num_labels"] = 0;
  EXPECT_ERROR_HAS(parse(j), "num_labels must be at least 1");
  // A causal LM turned into a reward model, as AutoModelForSequenceClassification loads one.
  ModelConfig rm = as_sequence_classifier(parse(base(kQwen3)), 1);
  EXPECT_EQ(rm.architecture, "Qwen3ForSequenceClassification");
  EXPECT_EQ(rm.model_type, "qwen3");
}

TEST(ModelConfig, LayerTypesFullAttentionOnly) {
  Json j = base(kQwen3);
  j["layer_types"] = Json::array();
  for (int i = 0; i < int(parse(j).num_hidden_layers); ++i)
    j["layer_types"].push_back("full_attention");
  EXPECT_EQ(parse(j).num_hidden_layers, int64_t(j["layer_types"].size()));
  j["layer_types"][0] = "linear_attention";
  EXPECT_ERROR_HAS(parse(j),
                   "cfg.json: layer_types holds \"linear_attention\"; only full_attention");
  j["layer_types"] = "full_attention";
  EXPECT_ERROR_HAS(parse(j), "field layer_types of cfg.json must be a list");
}

TEST(ModelConfig, RefusesUnsupportedModels) {
  Json j = base(kQwen3);
  j["architectures"] = {"MistralForCausalLM"};
  EXPECT_ERROR_HAS(parse(j),
                   "cfg.json: architecture MistralForCausalLM is not supported (supported: "
                   "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, "
                   "Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration, Qwen3_5MoeForCausalLM, "
                   "Qwen3_5MoeForConditionalGeneration, Qwen3NextForCausalLM, "
                   "LlamaForSequenceClassification, Qwen2ForSequenceClassification, "
                   "Qwen3ForSequenceClassification, Qwen3MoeForSequenceClassification)");
  j["architectures"] = {"Qwen3MoeForCausalLM"};
  EXPECT_ERROR_HAS(parse(j), "model_type 'qwen3' does not match architecture Qwen3MoeForCausalLM");

  j = base(kQwen3);
  j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  EXPECT_ERROR_HAS(parse(j), "cfg.json describes a quantized model (quant_method fp8)");
  EXPECT_ERROR_HAS(parse(j), "use a bf16/f16 copy of the model");
  j["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}};
  EXPECT_ERROR_HAS(parse(j), "(quant_method awq)");

  j = base(kLlama);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_ERROR_HAS(parse(j),
                   "rope type 'yarn' is not supported (supported: default, linear, llama3)");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_ERROR_HAS(parse(j), "field low_freq_factor is missing from rope_scaling in cfg.json");

  j = base(kQwen2);
  j["use_sliding_window"] = true;
  EXPECT_ERROR_HAS(parse(j),
                   "use_sliding_window is true; sliding-window attention is not supported");
  j = base(kLlama);
  j["hidden_act"] = "gelu";
  EXPECT_ERROR_HAS(parse(j), "hidden_act 'gelu' is not supported");
  j = base(kLlama);
  j["mlp_bias"] = true;
  EXPECT_ERROR_HAS(parse(j), "mlp_bias is true");
  j = base(kQwen3);
  j["model_type"] = "llama";
  EXPECT_ERROR_HAS(parse(j), "model_type 'llama' does not match architecture Qwen3ForCausalLM");
  j = base(kQwen3);
  j["torch_dtype"] = "float64";
  EXPECT_ERROR_HAS(parse(j), "torch_dtype 'float64' is not supported");
}

TEST(ModelConfig, RefusesMissingOrMalformedFields) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "max_position_embeddings"}) {
    Json j = base(kQwen3);
    j.erase(field);
    EXPECT_ERROR_HAS(parse(j), fmt::format("field {} is missing from cfg.json", field));
  }
  Json j = base(kQwen3);
  j["hidden_size"] = "1024";
  EXPECT_ERROR_HAS(parse(j), "field hidden_size of cfg.json must be an integer, got \"1024\"");
  j = base(kQwen3);
  j["num_key_value_heads"] = 3;
  EXPECT_ERROR_HAS(parse(j), "num_attention_heads 16 is not a multiple of num_key_value_heads 3");
  j = base(kQwen3);
  j["eos_token_id"] = "<|im_end|>";
  EXPECT_ERROR_HAS(parse(j), "field eos_token_id of cfg.json must be an integer");
  j["eos_token_id"] = 999999;
  EXPECT_ERROR_HAS(parse(j), "eos_token_id 999999 is not below vocab_size 151936");
  j = base(kQwen3);
  j["num_hidden_layers"] = 0;
  EXPECT_ERROR_HAS(parse(j), "field num_hidden_layers of cfg.json must be positive, got 0");
  EXPECT_ERROR_HAS(parse_model_config("{\"a\": }", "cfg.json"),
                   "cfg.json is not valid JSON: line 1, column 7");
  EXPECT_ERROR_HAS(parse_model_config("[]", "cfg.json"), "cfg.json must hold a JSON object");
}

TEST(ModelConfig, RoundTripsThroughConfigJson) {
  for (const char* text : {kQwen3, kQwen2, kLlama}) {
    ModelConfig a = parse_model_config(text, "in.json");
    std::string out = model_config_to_json(a);
    Json j = Json::parse(out);
    EXPECT_EQ(j["architectures"][0], a.architecture);
    EXPECT_EQ(j["hidden_act"], "silu");
    ModelConfig b = parse_model_config(out, "out.json");
    EXPECT_EQ(b.architecture, a.architecture);
    EXPECT_EQ(b.model_type, a.model_type);
    EXPECT_EQ(b.vocab_size, a.vocab_size);
    EXPECT_EQ(b.hidden_size, a.hidden_size);
    EXPECT_EQ(b.intermediate_size, a.intermediate_size);
    EXPECT_EQ(b.num_hidden_layers, a.num_hidden_layers);
    EXPECT_EQ(b.num_attention_heads, a.num_attention_heads);
    EXPECT_EQ(b.num_key_value_heads, a.num_key_value_heads);
    EXPECT_EQ(b.head_dim, a.head_dim);
    EXPECT_EQ(b.max_position_embeddings, a.max_position_embeddings);
    EXPECT_EQ(b.rms_norm_eps, a.rms_norm_eps);
    EXPECT_EQ(b.rope_theta, a.rope_theta);
    EXPECT_EQ(b.rope_scaling.rope_type, a.rope_scaling.rope_type);
    EXPECT_EQ(b.rope_scaling.factor, a.rope_scaling.factor);
    EXPECT_EQ(b.rope_scaling.original_max_position_embeddings,
              a.rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
    EXPECT_EQ(b.attention_bias, a.attention_bias);
    EXPECT_EQ(b.o_proj_bias, a.o_proj_bias);
    EXPECT_EQ(b.qk_norm, a.qk_norm);
    EXPECT_EQ(b.torch_dtype, a.torch_dtype);
    EXPECT_EQ(b.eos_token_id, a.eos_token_id);
    EXPECT_EQ(b.bos_token_id, a.bos_token_id);
  }
  // Qwen2 writes no attention_bias key (transformers' Qwen2Config has none).
  EXPECT_FALSE(Json::parse(model_config_to_json(parse_model_config(kQwen2, "q")))
                   .contains("attention_bias"));
}

}  // namespace
}  // namespace swiftlet
