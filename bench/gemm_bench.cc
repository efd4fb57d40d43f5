// GEMM and memory benchmarks for the CPU device: prefill GEMMs with f32 and bf16 weights
// (GFLOP/s), decode GEMVs (GB/s of weights streamed), the M at which GEMV hands over to BLAS,
// attention decode against a long KV cache, and the machine's memory read bandwidth.
//   ./build/gemm_bench [--threads N] [--seconds S] [--only SECTION]
// SECTION is one of prefill, gemv, smallm, bank, attention, memory (default: all).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_device.h"
#include "backend/cpu/cpu_info.h"
#include "core/rng.h"

using namespace swiftlet;

namespace {

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double g_budget = 0.4;  // seconds per measurement

// Best and median time of fn over repeats filling the time budget (after one warm-up call).
struct Timing {
  double best, median;
};
Timing time_it(const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  double start = seconds_now();
  while (t.size() < 3 || (seconds_now() - start < g_budget && t.size() < 1000)) {
    double t0 = seconds_now();
    fn();
    t.push_back(seconds_now() - t0);
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed) {
  Rng rng(seed);
  Tensor h = Tensor::host(shape, dtype);
  for (int64_t i = 0; i < h.numel(); ++i) {
    float v = float(rng.normal() * 0.05);
    if (dtype == DType::kF32) h.data<float>()[i] = v;
    if (dtype == DType::kBF16) h.data<uint16_t>()[i] = f32_to_bf16(v);
    if (dtype == DType::kF16) h.data<uint16_t>()[i] = f32_to_f16(v);
  }
  return h;
}

// y = x W^T with x [M, K] f32 and W [N, K] of dtype d.
Timing bench_linear(Device& dev, int64_t M, int64_t N, int64_t K, DType d) {
  Tensor x = random_tensor({M, K}, DType::kF32, 1), w = random_tensor({N, K}, d, 2);
  Tensor y = dev.empty({M, N}, DType::kF32);
  return time_it([&] { dev.gemm(x, false, w, true, y); });
}

std::string g_only;  // run only this section (empty: all)

bool section(const char* key, const char* title) {
  if (!g_only.empty() && g_only != key) return false;
  std::printf("\n%s\n", title);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seconds"))
      g_budget = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--only"))
      g_only = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: gemm_bench [--threads N] [--seconds S] [--only SECTION]\n");
      return 2;
    }
  }
  ThreadPool pool(threads);
  CpuDevice dev(pool);
  const blas::BlasInfo& b = blas::info();
  std::printf("cpu %s | %d threads | %s kernels | %s, %s kernels\n", cpu_features().model.c_str(),
              threads, build_simd_level().c_str(), b.library.c_str(), b.core.c_str());

  if (section("prefill", "prefill GEMM  y = x W^T  (GFLOP/s, best / median)")) {
    std::printf("  %-22s %18s %18s %18s\n", "M x N x K", "W f32", "W bf16", "W f16");
    const int64_t prefill[][3] = {{512, 1024, 1024}, {512, 3072, 1024}, {512, 1024, 3072}};
    for (const auto& s : prefill) {
      std::printf("  %-22s", fmt::format("{} x {} x {}", s[0], s[1], s[2]).c_str());
      for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
        Timing t = bench_linear(dev, s[0], s[1], s[2], d);
        double flops = 2.0 * double(s[0] * s[1] * s[2]);
        std::printf(" %8.1f / %7.1f", flops / t.best / 1e9, flops / t.median / 1e9);
      }
      std::printf("\n");
    }
  }

  if (section(
          "gemv",
          "decode GEMV  y = x W^T, M = 1  (GB/s of weights read, best / median; ms per call)")) {
    std::printf("  %-22s %26s %26s\n", "W [N, K]", "bf16", "f32");
    const int64_t gemv[][2] = {{1024, 3072}, {3072, 1024}, {151936, 1024}};
    for (const auto& s : gemv) {
      std::printf("  %-22s", fmt::format("{} x {}", s[0], s[1]).c_str());
      for (DType d : {DType::kBF16, DType::kF32}) {
        Timing t = bench_linear(dev, 1, s[0], s[1], d);
        double bytes = double(s[0] * s[1]) * double(dtype_size(d));
        std::printf("   %6.1f / %6.1f  %7.3f ms", bytes / t.best / 1e9, bytes / t.median / 1e9,
                    t.median * 1e3);
      }
      std::printf("\n");
    }
  }

  if (section("smallm", "small M, W 3072 x 1024 in cache  (GFLOP/s by M)")) {
    std::printf("  %-6s %12s %12s\n", "M", "W bf16", "W f32");
    for (int64_t M : {1, 2, 4, 8, 9, 16, 32, 64}) {
      std::printf("  %-6lld", static_cast<long long>(M));
      for (DType d : {DType::kBF16, DType::kF32}) {
        Timing t = bench_linear(dev, M, 3072, 1024, d);
        std::printf(" %12.1f", 2.0 * double(M) * 3072 * 1024 / t.median / 1e9);
      }
      std::printf("\n");
    }
  }

  // Decode of a batch as the model runs it: every matmul streams weights that are not in cache.
  // The bank holds 16 layers of Qwen3-0.6B's shapes (q, k, v, o, gate, up, down; 480 MiB in bf16)
  // and is walked once per timed call.
  if (section("bank",
              "small M over 16 layers of Qwen3-0.6B shapes (not in cache)  (GFLOP/s; GB/s of "
              "weights)")) {
    std::printf("  %-6s %22s %22s\n", "M", "W bf16", "W f32");
    const int64_t shapes[][2] = {{2048, 1024}, {1024, 1024}, {1024, 1024}, {1024, 2048},
                                 {3072, 1024}, {3072, 1024}, {1024, 3072}};
    for (int64_t M : {1, 2, 4, 8, 16, 32}) {
      std::printf("  %-6lld", static_cast<long long>(M));
      for (DType d : {DType::kBF16, DType::kF32}) {
        struct Item {
          Tensor x, w, y;
        };
        std::vector<Item> bank;
        double flops = 0, bytes = 0;
        uint64_t seed = 10;
        for (int layer = 0; layer < 16; ++layer)
          for (const auto& s : shapes) {
            bank.push_back({random_tensor({M, s[1]}, DType::kF32, seed),
                            random_tensor({s[0], s[1]}, d, seed + 1),
                            dev.empty({M, s[0]}, DType::kF32)});
            seed += 2;
            flops += 2.0 * double(M * s[0] * s[1]);
            bytes += double(s[0] * s[1] * int64_t(dtype_size(d)));
          }
        Timing t = time_it([&] {
          for (const Item& it : bank) dev.gemm(it.x, false, it.w, true, it.y);
        });
        std::printf(" %9.1f  %6.1f GB/s", flops / t.median / 1e9, bytes / t.median / 1e9);
      }
      std::printf("\n");
    }
  }

  // Decode attention reads each layer's cache once per token, long after writing it: the rows come
  // from DRAM. "layers" cycles over caches of 28 layers (at least 256 MiB), as a model's step does;
  // "1 cache" repeats one (in the CPU caches up to a few MB).
  if (section("attention",
              "attention decode  q_len 1, 16 query heads, 8 kv heads, head_dim 128  (GB/s of KV "
              "read)")) {
    for (int64_t kv_len : {576, 2048, 4096}) {
      for (DType d : {DType::kF32, DType::kBF16}) {
        const double bytes = 2.0 * double(kv_len * 8 * 128) * double(dtype_size(d));
        const int64_t layers = std::max<int64_t>(28, int64_t((256 << 20) / bytes) + 1);
        Tensor q = random_tensor({1, 16, 128}, DType::kF32, 3);
        Tensor out = dev.empty({1, 16, 128}, DType::kF32);
        std::vector<std::vector<AttnSegment>> segs;
        for (int64_t l = 0; l < layers; ++l) {
          Tensor k = random_tensor({kv_len, 8, 128}, d, 4 + 2 * uint64_t(l)),
                 v = random_tensor({kv_len, 8, 128}, d, 5 + 2 * uint64_t(l));
          segs.push_back({{0, 1, kv_len, k, v, {}, {}}});
        }
        Timing one = time_it([&] { dev.attention_forward(out, Tensor(), q, segs[0], 0.088f); });
        Timing all = time_it([&] {
          for (const auto& seg : segs) dev.attention_forward(out, Tensor(), q, seg, 0.088f);
        });
        const double per_layer = all.median / double(layers);
        std::printf("  kv_len %-6lld %-5s %2lld layers %7.1f GB/s %7.3f ms | 1 cache %7.1f GB/s\n",
                    static_cast<long long>(kv_len), std::string(dtype_name(d)).c_str(),
                    static_cast<long long>(layers), bytes / per_layer / 1e9, per_layer * 1e3,
                    bytes / one.median / 1e9);
      }
    }
  }

  if (section(
          "attention",
          "attention prefill  T 512, 16 query heads, 8 kv heads, head_dim 128  (GFLOP/s, ms)")) {
    const int64_t T = 512, Hq = 16, Hkv = 8, D = 128;
    Tensor q = random_tensor({T, Hq, D}, DType::kF32, 6),
           k = random_tensor({T, Hkv, D}, DType::kF32, 7);
    Tensor v = random_tensor({T, Hkv, D}, DType::kF32, 8),
           dout = random_tensor({T, Hq, D}, DType::kF32, 9);
    Tensor out = dev.empty({T, Hq, D}, DType::kF32), lse = dev.empty({T, Hq}, DType::kF32);
    Tensor dq = dev.zeros({T, Hq, D}, DType::kF32), dk = dev.zeros({T, Hkv, D}, DType::kF32);
    Tensor dv = dev.zeros({T, Hkv, D}, DType::kF32);
    std::vector<AttnSegment> seg = {{0, T, T, k, v, dk, dv}};
    // Causal: q k^T and p v over T (T + 1) / 2 pairs, 2 D flops each.
    double flops = 4.0 * double(T * (T + 1) / 2) * double(Hq * D);
    Timing f = time_it([&] { dev.attention_forward(out, lse, q, seg, 0.088f); });
    Timing b = time_it([&] { dev.attention_backward(dq, dout, q, out, lse, seg, 0.088f); });
    std::printf("  forward  %7.1f GFLOP/s  %7.2f ms\n", flops / f.median / 1e9, f.median * 1e3);
    std::printf("  backward %7.1f GFLOP/s  %7.2f ms  (2.5x the forward's flops)\n",
                2.5 * flops / b.median / 1e9, b.median * 1e3);
  }

  if (section("memory", "memory read bandwidth  (1 GiB, GB/s, best / median)")) {
    const int64_t n = int64_t(1) << 28;  // floats
    Tensor big = Tensor::host({n}, DType::kF32);
    std::memset(big.raw_ptr(), 1, big.nbytes());
    const uint64_t* words = static_cast<const uint64_t*>(big.raw_ptr());
    const int64_t nwords = n / 2;
    std::vector<uint64_t> sink(size_t(threads) * 8);
    // Plain loads, 8 independent 64-bit sums per thread (one cache line per iteration): no SIMD
    // is needed to saturate memory. With and without a software prefetch 2 KiB ahead, since the
    // hardware prefetchers alone do not reach full bandwidth on some machines.
    double bytes = double(big.nbytes());
    for (bool prefetch : {false, true}) {
      Timing t = time_it([&] {
        pool.parallel_for(nwords / 8, [&](int64_t b, int64_t e, int tid) {
          uint64_t s[8] = {};
          for (int64_t i = b; i < e; ++i) {
            if (prefetch) __builtin_prefetch(words + (i + 32) * 8, 0, 3);
            for (int j = 0; j < 8; ++j) s[j] += words[i * 8 + j];
          }
          for (int j = 0; j < 8; ++j) sink[size_t(tid) * 8 + size_t(j)] = s[j];
        });
      });
      std::printf("  plain loads%-10s %7.1f / %7.1f\n", prefetch ? " + pref." : "",
                  bytes / t.best / 1e9, bytes / t.median / 1e9);
    }
    Timing t2 = time_it([&] { (void)dev.sum_squares(big); });
    std::printf("  sum_squares           %7.1f / %7.1f\n", bytes / t2.best / 1e9,
                bytes / t2.median / 1e9);
  }
  return 0;
}
