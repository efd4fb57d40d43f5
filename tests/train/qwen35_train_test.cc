// Qwen3.5 (Gated DeltaNet / gated attention hybrid) training: whole-model and LoRA gradients of
// the tiny-qwen35, tiny-qwen35-moe and tiny-qwen3-next presets against PyTorch autograd through the
// recurrent delta rule (tests/reference/torch_qwen35.py --grads, float64), on both devices and with
// and without gradient checkpointing; a packed batch against its samples run one by one; the delta
// rule's chunked form against its recurrent form through the Device; cached decode against one full
// forward; and the binary: LoRA and full sft, export --merge_lora, infer.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/device.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/folder.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "train/grad_reference.h"
#include "train/trainer.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// tiny-qwen35 with weights of standard deviation 0.2 (gradients well above round-off).
std::string model_dir() { return testing::tiny_model("tiny-qwen35", "float32", 0.2); }

io::SafetensorsFile torch_qwen35_grads(const TempDir& tmp, const std::string& dir,
                                       const TrainBatch& batch, const std::string& adapter = "") {
  testing::write_batch(tmp / "batch.json", batch);
  const std::string script =
      (fs::path(SWIFTLET_SOURCE_DIR) / "tests" / "reference" / "torch_qwen35.py").string();
  const std::string cmd = fmt::format("/usr/bin/python3 {} --grads {} {} {} {}", script, dir,
                                      tmp / "batch.json", tmp / "grads.safetensors", adapter);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  return io::load_safetensors(tmp / "grads.safetensors");
}

// `got` against the reference tensor `name` as testing::expect_close (max |diff| <= 1e-4 max
// |ref|); returns max |diff| / max |ref| for the report.
double expect_close_ratio(const io::SafetensorsFile& ref, const std::string& name,
                          const Tensor& got) {
  testing::expect_close(ref, name, got, name);
  const Tensor* want = ref.find(name);
  if (!want || want->numel() != got.numel()) return 1;
  double max_ref = 0, diff = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want->item_f32(i))));
    diff = std::max(diff, double(std::fabs(got.item_f32(i) - want->item_f32(i))));
  }
  return max_ref > 0 ? diff / max_ref : diff;
}

class Qwen35GradReference : public ::testing::TestWithParam<std::string> {};

// Every weight's gradient: (1 + w) norms, the output gate, partial rotary, conv, A_log, dt_bias,
// the gated norm, all projections, embeddings and the LM head.
TEST_P(Qwen35GradReference, FullGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = model_dir();
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  testing::ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto dev = DeviceRegistry::create(GetParam(), pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32, true);
  TrainBatch batch = testing::test_batch(folder.config.vocab_size);
  TempDir tmp;
  static io::SafetensorsFile ref = torch_qwen35_grads(tmp, dir, batch);
  for (bool ckpt : {true, false}) {
    ModelGrads grads;
    std::vector<WeightSlot> slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    if (folder.config.tie_word_embeddings) grads.lm_head = grads.embed_tokens;
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(testing::target_count(batch));
    opt.gradient_checkpointing = ckpt;
    LossStats st = model.train_step(batch, grads, opt);
    EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
    int linear_attn = 0;
    double worst = 0;
    for (auto& s : slots) {
      worst = std::max(worst, expect_close_ratio(ref, s.name, dev->download(*s.grad)));
      linear_attn += s.name.find("linear_attn") != std::string::npos;
    }
    EXPECT_EQ(linear_attn, 3 * 9);  // 3 Gated DeltaNet layers of 9 weights each
    std::printf("%s full gradients (checkpointing %d): worst max|diff|/max|grad| %.3g\n",
                GetParam().c_str(), int(ckpt), worst);
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, Qwen35GradReference, ::testing::Values("cpu:0", "sim:0"),
                         [](const auto& info) { return info.param == "cpu:0" ? "cpu" : "sim"; });

// LoRA on every module all-linear reaches (PEFT key names), lora_B made non-zero (the helper
// writes the adapter through host memory, so on the CPU device).
TEST(Qwen35LoraGradReference, LoraGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = model_dir();
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  TempDir tmp;
  LoraAdapter ad = testing::random_lora(*dev, folder.config, 5, tmp / "adapter");
  std::set<std::string> modules;
  for (auto& [name, t] : ad.named_tensors()) {
    const size_t end = name.find(".lora_");
    modules.insert(name.substr(name.rfind('.', end - 1) + 1, end - name.rfind('.', end - 1) - 1));
  }
  EXPECT_EQ(modules, (std::set<std::string>{"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a",
                                            "out_proj", "q_proj", "k_proj", "v_proj", "o_proj",
                                            "gate_proj", "up_proj", "down_proj"}));
  ad.attach(model);
  TrainBatch batch = testing::test_batch(folder.config.vocab_size);
  io::SafetensorsFile ref = torch_qwen35_grads(tmp, dir, batch, tmp / "adapter");
  for (bool ckpt : {true, false}) {
    ModelGrads grads;
    ad.make_grads(*dev, grads);
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(testing::target_count(batch));
    opt.gradient_checkpointing = ckpt;
    LossStats st = model.train_step(batch, grads, opt);
    EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
    auto named = ad.named_grads(grads);
    EXPECT_EQ(named.size(), 2u * (3 * 5 + 4 + 3 * 4));  // A, B of 31 modules
    double worst = 0;
    for (auto& [name, g] : named) worst = std::max(worst, expect_close_ratio(ref, name, g));
    std::printf("LoRA gradients (checkpointing %d): worst max|diff|/max|grad| %.3g\n", int(ckpt),
                worst);
  }
}

// Qwen3.5-MoE (every layer MoE with a shared expert) and Qwen3-Next (fused in_proj_qkvz /
// in_proj_ba, one dense layer): every weight's gradient, router and shared-expert gate included,
// and LoRA on every module all-linear reaches (per-expert projections, the router, the shared
// expert and its gate, the fused linear-attention projections).
// The weights' spread is chosen per preset so that f32 round-off stays well below the bound in
// every tensor: the gradients of the small per-head tensors (dt_bias, A_log) and those reaching
// the first layers through the l2norm backward of nearly-zero q/k rows come out of long sums with
// cancellation (tiny-qwen35-moe at std 0.2: 9e-5; tiny-qwen3-next at std 0.05: 3e-4 on dt_bias).
class Qwen35MoeGradReference : public ::testing::TestWithParam<std::tuple<std::string, double>> {};

TEST_P(Qwen35MoeGradReference, FullAndLoraGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const auto& [preset, std_dev] = GetParam();
  const std::string dir = testing::tiny_model(preset, "float32", std_dev);
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32, true);
  TrainBatch batch = testing::test_batch(folder.config.vocab_size);
  TempDir tmp;
  TrainStepOptions opt;
  opt.grad_scale = 1.0f / float(testing::target_count(batch));
  opt.gradient_checkpointing = true;
  {
    const io::SafetensorsFile ref = torch_qwen35_grads(tmp, dir, batch);
    ModelGrads grads;
    std::vector<WeightSlot> slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    LossStats st = model.train_step(batch, grads, opt);
    EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
    double worst = 0;
    int shared = 0;
    for (auto& s : slots) {
      worst = std::max(worst, expect_close_ratio(ref, s.name, dev->download(*s.grad)));
      shared += s.name.find("shared_expert") != std::string::npos;
    }
    EXPECT_GE(shared, 4 * 3);  // the shared expert's three projections and gate in >= 3 layers
    std::printf("%s full gradients: worst max|diff|/max|grad| %.3g\n", preset.c_str(), worst);
  }
  LoraAdapter ad = testing::random_lora(*dev, folder.config, 5, tmp / "adapter");
  std::set<std::string> modules;
  for (auto& [name, t] : ad.named_tensors()) {
    const size_t end = name.find(".lora_");
    modules.insert(name.substr(name.rfind('.', end - 1) + 1, end - name.rfind('.', end - 1) - 1));
  }
  const bool next = folder.config.linear_fused_projections;
  EXPECT_EQ(modules.count(next ? "in_proj_qkvz" : "in_proj_qkv"), 1u);
  EXPECT_EQ(modules.count("shared_expert_gate"), 1u);
  ad.attach(model);
  const io::SafetensorsFile ref = torch_qwen35_grads(tmp, dir, batch, tmp / "adapter");
  ModelGrads grads;
  ad.make_grads(*dev, grads);
  LossStats st = model.train_step(batch, grads, opt);
  EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
  double worst = 0;
  for (auto& [name, g] : ad.named_grads(grads))
    worst = std::max(worst, expect_close_ratio(ref, name, g));
  std::printf("%s LoRA gradients: worst max|diff|/max|grad| %.3g\n", preset.c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(Presets, Qwen35MoeGradReference,
                         ::testing::Values(std::make_tuple("tiny-qwen35-moe", 0.05),
                                           std::make_tuple("tiny-qwen3-next", 0.2)),
                         [](const auto& info) {
                           return std::get<0>(info.param) == "tiny-qwen3-next" ? "next" : "moe";
                         });

// A packed batch gives each sample the loss and gradient it has alone: conv and delta-rule state
// restart at every sample boundary in forward and backward.
TEST(Qwen35Packing, PackedBatchEqualsSamplesOneByOne) {
  ModelFolder folder = load_model_folder(model_dir());
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32, true);
  TokenizedSample a, b;
  for (int i = 0; i < 70; ++i) {  // longer than a chunk of the delta rule
    a.input_ids.push_back(int32_t((37 * i + 5) % 5000));
    a.labels.push_back(i < 3 ? kIgnoreIndex : a.input_ids.back());
  }
  for (int i = 0; i < 9; ++i) {
    b.input_ids.push_back(int32_t((91 * i + 1000) % 5000));
    b.labels.push_back(b.input_ids.back());
  }
  auto run = [&](const std::vector<const TokenizedSample*>& samples, ModelGrads& grads) {
    std::vector<WeightSlot> slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots)
      if (!s.grad->defined()) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / 64;
    return model.train_step(make_train_batch(samples), grads, opt).loss_sum;
  };
  ModelGrads packed, alone;
  const double loss_packed = run({&a, &b}, packed);
  const double loss_alone = run({&a}, alone) + run({&b}, alone);
  EXPECT_NEAR(loss_packed, loss_alone, 1e-5 * std::fabs(loss_alone));
  std::vector<WeightSlot> p = weight_slots(folder.config, nullptr, &packed);
  std::vector<WeightSlot> s = weight_slots(folder.config, nullptr, &alone);
  double worst = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    double max_ref = 0, diff = 0;
    for (int64_t j = 0; j < p[i].grad->numel(); ++j) {
      max_ref = std::max(max_ref, double(std::fabs(s[i].grad->item_f32(j))));
      diff = std::max(diff, double(std::fabs(p[i].grad->item_f32(j) - s[i].grad->item_f32(j))));
    }
    EXPECT_LE(diff, 1e-4 * max_ref + 1e-12) << p[i].name;  // f32 sums in another order
    if (max_ref > 0) worst = std::max(worst, diff / max_ref);
  }
  std::printf("packed vs one by one: worst relative gradient difference %.3g\n", worst);
}

// The Device's chunked delta rule (prefill, training) equals its recurrent form (decode): outputs
// and end state, with a start state and a sequence crossing two chunk boundaries.
TEST(Qwen35DeltaRule, ChunkedEqualsRecurrentOnEveryDevice) {
  ThreadPool pool(2);
  testing::ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  const int64_t T = 150, HK = 2, HV = 4, dk = 8, dv = 12;
  Rng rng(11);
  auto random = [&](Shape s, double scale, double shift = 0) {
    Tensor t = Tensor::host(s, DType::kF32);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<float>()[i] = float(shift + scale * rng.normal());
    return t;
  };
  Tensor q = random({T, HK, dk}, 0.3), k = random({T, HK, dk}, 0.3), v = random({T, HV, dv}, 1);
  Tensor g = random({T, HV}, 0.1, -0.2), beta = Tensor::host({T, HV}, DType::kF32);
  for (int64_t i = 0; i < beta.numel(); ++i) beta.data<float>()[i] = float(0.5 + 0.4 * std::sin(i));
  Tensor s0 = random({HV, dk, dv}, 0.5);
  for (const char* name : {"cpu:0", "sim:0"}) {
    auto dev = DeviceRegistry::create(name, pool);
    auto run = [&](bool chunked) {
      Tensor o = dev->empty({T, HV, dv}, DType::kF32), s = dev->empty(s0.shape(), DType::kF32);
      dev->copy(s, dev->upload(s0));  // a fresh start state per run
      if (chunked)
        dev->gated_delta_rule_chunked(o, dev->upload(q), dev->upload(k), dev->upload(v),
                                      dev->upload(g), dev->upload(beta), s, 64);
      else
        dev->gated_delta_rule(o, dev->upload(q), dev->upload(k), dev->upload(v), dev->upload(g),
                              dev->upload(beta), s);
      return std::pair{dev->download(o), dev->download(s)};
    };
    const auto [o_rec, s_rec] = run(false);
    const auto [o_ch, s_ch] = run(true);
    double max_o = 0, d_o = 0, max_s = 0, d_s = 0;
    for (int64_t i = 0; i < o_rec.numel(); ++i) {
      max_o = std::max(max_o, double(std::fabs(o_rec.data<float>()[i])));
      d_o = std::max(d_o, double(std::fabs(o_rec.data<float>()[i] - o_ch.data<float>()[i])));
    }
    for (int64_t i = 0; i < s_rec.numel(); ++i) {
      max_s = std::max(max_s, double(std::fabs(s_rec.data<float>()[i])));
      d_s = std::max(d_s, double(std::fabs(s_rec.data<float>()[i] - s_ch.data<float>()[i])));
    }
    std::printf("%s chunked vs recurrent: max |o| %.3g diff %.3g, max |S| %.3g diff %.3g\n", name,
                max_o, d_o, max_s, d_s);
    EXPECT_LE(d_o, 1e-5 * max_o) << name;
    EXPECT_LE(d_s, 1e-5 * max_s) << name;
  }
}

// Decoding token by token through the cache (recurrent form, conv state) ends with the logits of
// one full forward's last position (chunked form); so does a chunked prefill of 65 tokens with
// the rest decoded.
TEST(Qwen35Decode, CachedDecodeEqualsFullForward) {
  ModelFolder folder = load_model_folder(model_dir());
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  std::vector<int32_t> ids;
  for (int i = 0; i < 72; ++i) ids.push_back(int32_t((1009 * i + 17) % 120000));
  Tensor full = model.logits(ids);
  const int64_t V = full.dim(1), T = int64_t(ids.size());
  const float* want = full.data<float>() + (T - 1) * V;
  for (int64_t prefill : {1, 65}) {
    DecodeCache cache = model.new_cache(4);
    Tensor last;
    std::vector<int32_t> head(ids.begin(), ids.begin() + prefill);
    SequenceStep first{head, &cache, false};
    last = model.forward(std::span<SequenceStep>(&first, 1));
    for (int64_t t = prefill; t < T; ++t) {
      std::span<const int32_t> one(&ids[size_t(t)], 1);
      SequenceStep step{one, &cache, false};
      last = model.forward(std::span<SequenceStep>(&step, 1));
    }
    double max_ref = 0, diff = 0;
    for (int64_t i = 0; i < V; ++i) {
      max_ref = std::max(max_ref, double(std::fabs(want[i])));
      diff = std::max(diff, double(std::fabs(last.data<float>()[i] - want[i])));
    }
    std::printf("prefill %lld + decode vs full forward: max |logit| %.4g, diff %.3g\n",
                static_cast<long long>(prefill), max_ref, diff);
    EXPECT_LE(diff, 1e-4 * max_ref) << "prefill " << prefill;
  }
}

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The binary on tiny-qwen35: LoRA sft (all-linear, packing) lowers the loss, the adapter holds the
// linear-attention modules under PEFT's names, export --merge_lora writes a folder that answers as
// the adapter does; full sft trains and its checkpoint generates.
TEST(Qwen35Cli, SftLoraMergeInferAndFullSft) {
  TempDir tmp;
  const std::string model = testing::tiny_model("tiny-qwen35");
  {
    std::ofstream f(tmp / "data.jsonl");
    const char* words[] = {"red", "blue", "green", "cat"};
    for (int i = 0; i < 16; ++i)
      f << nlohmann::json{{"messages",
                           {{{"role", "user"}, {"content", fmt::format("Say {}.", words[i % 4])}},
                            {{"role", "assistant"}, {"content", words[i % 4]}}}}}
               .dump()
        << "\n";
    std::ofstream q(tmp / "ask.jsonl");
    q << R"({"query": "Say red."})"
      << "\n"
      << R"({"query": "Say cat."})"
      << "\n";
  }
  const std::string sft = fmt::format(
      "{} sft --model {} --dataset {} --output_dir {} --add_version false --max_steps 8 "
      "--save_steps 8 --logging_steps 1 --per_device_train_batch_size 4 "
      "--gradient_accumulation_steps 1 --learning_rate 2e-2 --lora_rank 8 --threads 2 "
      "--target_modules all-linear --packing true --max_length 256",
      SWIFTLET_BINARY, model, tmp / "data.jsonl", tmp / "lora");
  ASSERT_EQ(sh(sft + " > " + tmp / "sft.log" + " 2>&1"), 0) << testing::read_bytes(tmp / "sft.log");
  std::vector<double> losses;
  for (const auto& r : read_jsonl(tmp / "lora/logging.jsonl"))
    if (r.contains("loss")) losses.push_back(r["loss"].get<double>());
  ASSERT_GE(losses.size(), 8u);
  std::printf("tiny-qwen35 LoRA sft loss by step:");
  for (double l : losses) std::printf(" %.3f", l);
  std::printf("\n");
  EXPECT_LT(losses.back(), losses.front() - 0.5);  // from ln(vocab) ~ 11.9 on the random base
  const std::string ckpt = tmp / "lora/checkpoint-8";
  const std::string adapter = testing::read_bytes(ckpt + "/adapter_model.safetensors");
  for (const char* key : {"base_model.model.model.layers.0.linear_attn.in_proj_qkv.lora_A.weight",
                          "base_model.model.model.layers.1.linear_attn.in_proj_z.lora_B.weight",
                          "base_model.model.model.layers.2.linear_attn.in_proj_b.lora_A.weight",
                          "base_model.model.model.layers.2.linear_attn.in_proj_a.lora_A.weight",
                          "base_model.model.model.layers.0.linear_attn.out_proj.lora_B.weight",
                          "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight",
                          "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"})
    EXPECT_NE(adapter.find(key), std::string::npos) << key;
  ASSERT_EQ(sh(fmt::format("{} export --adapters {} --merge_lora true > {} 2>&1", SWIFTLET_BINARY,
                           ckpt, tmp / "merge.log")),
            0)
      << testing::read_bytes(tmp / "merge.log");
  auto infer = [&](const std::string& args, const std::string& out) {
    return sh(
        fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 6 "
                    "--temperature 0 > {}.log 2>&1",
                    SWIFTLET_BINARY, args, tmp / "ask.jsonl", out, out));
  };
  auto responses = [&](const std::string& path) {
    std::vector<std::string> out;
    for (const auto& r : read_jsonl(path)) out.push_back(r["response"].get<std::string>());
    return out;
  };
  ASSERT_EQ(infer("--model " + ckpt + "-merged", tmp / "merged.jsonl"), 0)
      << testing::read_bytes(tmp / "merged.jsonl.log");
  ASSERT_EQ(infer("--adapters " + ckpt, tmp / "adapter.jsonl"), 0)
      << testing::read_bytes(tmp / "adapter.jsonl.log");
  ASSERT_EQ(infer("--model " + model, tmp / "base.jsonl"), 0)
      << testing::read_bytes(tmp / "base.jsonl.log");
  const auto m = responses(tmp / "merged.jsonl"), a = responses(tmp / "adapter.jsonl");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m, a);
  EXPECT_NE(m, responses(tmp / "base.jsonl"));  // training changed the answers

  ASSERT_EQ(
      sh(fmt::format("{} sft --model {} --dataset {} --output_dir {} --add_version false "
                     "--tuner_type full --max_steps 2 --save_steps 2 --logging_steps 1 "
                     "--per_device_train_batch_size 2 --gradient_accumulation_steps 1 "
                     "--threads 2 > {} 2>&1",
                     SWIFTLET_BINARY, model, tmp / "data.jsonl", tmp / "full", tmp / "full.log")),
      0)
      << testing::read_bytes(tmp / "full.log");
  ASSERT_EQ(infer("--model " + tmp / "full/checkpoint-2", tmp / "full.jsonl"), 0)
      << testing::read_bytes(tmp / "full.jsonl.log");
}

}  // namespace
}  // namespace swiftlet
