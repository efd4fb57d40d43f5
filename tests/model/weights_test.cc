#include "model/weights.h"

#include <gtest/gtest.h>

#include "model/init.h"

namespace swiftlet {
namespace {

ModelConfig small(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 512, c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 16;
  c.qk_norm = family == ModelFamily::kQwen3;
  c.attention_bias = family == ModelFamily::kQwen2;
  return c;
}

std::vector<std::string> names_of_layer(const std::vector<WeightSpec>& specs, int64_t layer) {
  std::vector<std::string> out;
  for (const auto& s : specs)
    if (s.layer == layer) out.push_back(s.name);
  return out;
}

TEST(WeightSpecs, Qwen3NamesAndShapes) {
  auto specs = model_weight_specs(small(ModelFamily::kQwen3));
  EXPECT_EQ(
      names_of_layer(specs, 1),
      (std::vector<std::string>{
          "model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
          "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
          "model.layers.1.self_attn.o_proj.weight", "model.layers.1.self_attn.q_norm.weight",
          "model.layers.1.self_attn.k_norm.weight",
          "model.layers.1.post_attention_layernorm.weight", "model.layers.1.mlp.gate_proj.weight",
          "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"}));
  ASSERT_EQ(specs.size(), 1u + 2 * 11 + 1 + 1);
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs.front().shape, (Shape{512, 32}));
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  EXPECT_EQ(specs.back().shape, (Shape{512, 32}));
  // q: 4 heads x 16 = 64 rows, k/v: 2 x 16 = 32 rows, o back to hidden.
  EXPECT_EQ(specs[2].shape, (Shape{64, 32}));
  EXPECT_EQ(specs[3].shape, (Shape{32, 32}));
  EXPECT_EQ(specs[5].shape, (Shape{32, 64}));
  EXPECT_EQ(specs[6].shape, (Shape{16}));
  EXPECT_EQ(specs[6].kind, WeightKind::kNorm);
  EXPECT_EQ(specs[9].shape, (Shape{48, 32}));
  EXPECT_EQ(specs[11].shape, (Shape{32, 48}));
  EXPECT_EQ(specs[specs.size() - 2].name, "model.norm.weight");
}

TEST(WeightSpecs, BiasesAndTying) {
  ModelConfig q2 = small(ModelFamily::kQwen2);
  q2.tie_word_embeddings = true;
  auto specs = model_weight_specs(q2);
  auto layer0 = names_of_layer(specs, 0);
  // Each bias follows its projection's weight (one visit per module).
  EXPECT_EQ(std::vector<std::string>(layer0.begin() + 1, layer0.begin() + 8),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj.weight",
                                      "model.layers.0.self_attn.q_proj.bias",
                                      "model.layers.0.self_attn.k_proj.weight",
                                      "model.layers.0.self_attn.k_proj.bias",
                                      "model.layers.0.self_attn.v_proj.weight",
                                      "model.layers.0.self_attn.v_proj.bias",
                                      "model.layers.0.self_attn.o_proj.weight"}));
  EXPECT_EQ(specs[3].shape, (Shape{64}));
  EXPECT_EQ(specs[5].shape, (Shape{32}));
  EXPECT_EQ(specs[3].kind, WeightKind::kBias);
  EXPECT_EQ(specs[2].module, "q_proj");
  EXPECT_TRUE(specs[3].module.empty());  // a bias is not a LoRA target
  EXPECT_EQ(specs.back().name, "model.norm.weight");  // tied: no lm_head

  ModelConfig llama = small(ModelFamily::kLlama);
  llama.attention_bias = llama.o_proj_bias = true;
  auto l = names_of_layer(model_weight_specs(llama), 0);
  EXPECT_EQ(l[8], "model.layers.0.self_attn.o_proj.bias");
  EXPECT_EQ(l.size(), 13u);
}

TEST(WeightSpecs, CountsQwen3_0_6B) {
  ModelConfig c = init_preset_config("qwen3-0.6b");
  c.vocab_size = 151936;
  // Embedding 151936*1024 = 155,582,464; per layer q 2048*1024 + k,v 2*1024*1024 + o 1024*2048 +
  // mlp 3*3072*1024 + norms 2*1024 + 2*128 = 15,730,944; 28 layers + final norm 1024.
  EXPECT_EQ(count_parameters(c), 155582464 + 28 * 15730944 + 1024);
  EXPECT_EQ(count_parameters(c), 596049920);  // Qwen3-0.6B: "0.6B, 0.44B non-embedding"
}

}  // namespace
}  // namespace swiftlet
