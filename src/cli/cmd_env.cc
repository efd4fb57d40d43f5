// swiftlet env: what this build and machine offer (version, CPU and SIMD, memory, GEMM library,
// threads, visible devices), and with --check a small numerical self-test on every visible device
// (the analogue of checking that an accelerator is usable before a long run).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_device.h"
#include "backend/cpu/cpu_info.h"
#include "backend/device.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/rng.h"

namespace swiftlet::cli {
namespace {

constexpr const char* kSummary =
    "Print the build, CPU, SIMD, memory, GEMM library and devices; --check tests every device";

std::string join(const std::vector<std::string>& v, const char* sep = " ") {
  std::string r;
  for (const auto& s : v) r += (r.empty() ? "" : sep) + s;
  return r.empty() ? "none" : r;
}

std::string gib(size_t bytes) {
  return fmt::format("{:.1f} GiB", double(bytes) / double(1ull << 30));
}

std::vector<float> random_values(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

// ||got - want|| / ||want||; infinity for NaN.
double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// One check: runs kernels on `dev` and returns the error against a plain loop.
struct Check {
  const char* name;
  std::function<double(Device&)> run;
};

Tensor to_device(Device& dev, const std::vector<float>& v, const Shape& shape, DType dtype) {
  Tensor h = Tensor::host(shape, dtype);
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) h.data<float>()[i] = v[i];
    if (dtype == DType::kBF16) h.data<uint16_t>()[i] = f32_to_bf16(v[i]);
  }
  return dev.upload(h);
}

// y = x W^T (x [M, K], W [N, K] of dtype d) against a double loop over the rounded weights.
double check_matmul(Device& dev, int64_t M, int64_t N, int64_t K, DType d) {
  auto x = random_values(size_t(M * K), 1), w = random_values(size_t(N * K), 2);
  Tensor X = to_device(dev, x, {M, K}, DType::kF32), Wt = to_device(dev, w, {N, K}, d);
  Tensor Y = dev.empty({M, N}, DType::kF32);
  dev.gemm(X, false, Wt, true, Y);
  auto rounded = [&](float v) { return d == DType::kBF16 ? bf16_to_f32(f32_to_bf16(v)) : v; };
  // With bf16 weights a device may round x to bf16 too (bf16 dot products): either reference.
  double err = INFINITY;
  for (bool round_x : {false, true}) {
    std::vector<double> want(size_t(M * N));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          float xv = x[size_t(m * K + k)];
          s += double(round_x ? rounded(xv) : xv) * rounded(w[size_t(n * K + k)]);
        }
        want[size_t(m * N + n)] = s;
      }
    err = std::min(err, rel_error(dev.download(Y).to_f32_vector(), want));
  }
  return err;
}

double check_rmsnorm(Device& dev) {
  const int64_t rows = 4, dim = 100;
  auto x = random_values(size_t(rows * dim), 3), w = random_values(size_t(dim), 4);
  Tensor Y = dev.empty({rows, dim}, DType::kF32);
  dev.rmsnorm_forward(Y, Tensor(), to_device(dev, x, {rows, dim}, DType::kF32),
                      to_device(dev, w, {dim}, DType::kF32), 1e-6f);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[size_t(r * dim + i)]) * x[size_t(r * dim + i)];
    double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t i = 0; i < dim; ++i)
      want[size_t(r * dim + i)] = x[size_t(r * dim + i)] * inv * w[size_t(i)];
  }
  return rel_error(dev.download(Y).to_f32_vector(), want);
}

// Causal attention of one 6-token sequence, 4 query heads over 2 kv heads.
double check_attention(Device& dev) {
  const int64_t T = 6, Hq = 4, Hkv = 2, D = 16;
  auto q = random_values(size_t(T * Hq * D), 5), k = random_values(size_t(T * Hkv * D), 6),
       v = random_values(size_t(T * Hkv * D), 7);
  Tensor K = to_device(dev, k, {T, Hkv, D}, DType::kF32),
         V = to_device(dev, v, {T, Hkv, D}, DType::kF32);
  Tensor out = dev.empty({T, Hq, D}, DType::kF32);
  std::vector<AttnSegment> seg = {{0, T, T, K, V, {}, {}}};
  const double scale = 0.25;
  dev.attention_forward(out, Tensor(), to_device(dev, q, {T, Hq, D}, DType::kF32), seg,
                        float(scale));
  std::vector<double> want(q.size(), 0.0);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t h = 0; h < Hq; ++h) {
      int64_t g = h / (Hq / Hkv);
      std::vector<double> p(static_cast<size_t>(i + 1));
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t e = 0; e < D; ++e)
          s += double(q[size_t((i * Hq + h) * D + e)]) * k[size_t((j * Hkv + g) * D + e)];
        p[size_t(j)] = s * scale;
        m = std::max(m, p[size_t(j)]);
      }
      for (auto& x : p) sum += (x = std::exp(x - m));
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t e = 0; e < D; ++e)
          want[size_t((i * Hq + h) * D + e)] +=
              p[size_t(j)] / sum * v[size_t((j * Hkv + g) * D + e)];
    }
  return rel_error(dev.download(out).to_f32_vector(), want);
}

// Runs the checks on every visible device; true when all pass.
bool run_checks(ThreadPool& pool) {
  const double kTolerance = 1e-4;  // f32 accumulation over <= 300 terms stays near 1e-6
  const Check checks[] = {
      {"gemm f32", [](Device& d) { return check_matmul(d, 33, 70, 300, DType::kF32); }},
      {"gemv bf16", [](Device& d) { return check_matmul(d, 2, 300, 130, DType::kBF16); }},
      {"rmsnorm", check_rmsnorm},
      {"attention", check_attention},
  };
  bool all_ok = true;
  std::printf("\ncheck (relative error against plain loops, tolerance %.0e):\n", kTolerance);
  for (const std::string& name : DeviceRegistry::visible()) {
    std::string detail;
    bool ok = true;
    try {
      auto dev = DeviceRegistry::create(name, pool);
      for (const Check& c : checks) {
        double err = c.run(*dev);
        bool pass = err <= kTolerance;
        ok = ok && pass;
        detail += fmt::format("{}{} {:.1e}{}", detail.empty() ? "" : ", ", c.name, err,
                              pass ? "" : " FAIL");
      }
    } catch (const std::exception& e) {
      ok = false;
      detail += fmt::format("{}error: {}", detail.empty() ? "" : ", ", e.what());
    }
    std::printf("  %-8s %s  (%s)\n", name.c_str(), ok ? "pass" : "FAIL", detail.c_str());
    all_ok = all_ok && ok;
  }
  return all_ok;
}

int run_env(int argc, char** argv) {
  Flags flags("env", {
                         {"threads", FlagKind::kInt, "",
                          "threads for kernels and GEMM (default: OMP_NUM_THREADS, else all cores "
                          "this process may use)"},
                         {"check", FlagKind::kBool, "false",
                          "run a small matmul, rmsnorm and attention on every visible device, "
                          "compare with plain loops, exit 1 if any fails"},
                     });
  if (!flags.parse(argc, argv)) {
    std::printf("%s", flags.help_text(kSummary).c_str());
    return 0;
  }
  int threads = ThreadPool::default_threads();
  if (flags.given("threads")) {
    int64_t t = flags.i64("threads");
    if (t < 1 || t > 4096)
      throw Error(fmt::format("--threads must be between 1 and 4096, got {}", t));
    threads = int(t);
  }
  const CpuFeatures& cpu = cpu_features();
  MemoryInfo mem = memory_info();
  std::printf("swiftlet      %s (%s build)\n", SWIFTLET_VERSION, SWIFTLET_BUILD_TYPE);
  std::printf("cpu           %s\n", cpu.model.c_str());
  std::printf("cores         %d available to this process (%u online)\n", cpu.cores_available,
              std::thread::hardware_concurrency());
  std::printf("simd (cpu)    %s\n", join(cpu.names()).c_str());
  std::vector<std::string> built = build_simd_features();
  std::printf("simd (build)  %s kernels, compiled with %s\n", build_simd_level().c_str(),
              built.empty() ? "no SIMD extensions" : join(built).c_str());
  std::printf("memory        %s total, %s available\n", gib(mem.total_bytes).c_str(),
              gib(mem.available_bytes).c_str());
  ThreadPool pool(threads);
  std::string gemm;
  try {
    const blas::BlasInfo& b = blas::info();
    gemm = fmt::format(
        "{}, {} kernels ({}); f32 GEMM split over the pool, one single-threaded "
        "call per thread; bf16/f16 weights converted in panels; {}",
        b.library, b.core, b.how, CpuDevice::gemv_summary());
  } catch (const Error& e) {
    gemm = fmt::format("unavailable: {}", e.what());
  }
  std::printf("gemm          %s\n", gemm.c_str());
  std::printf("threads       %d%s\n", threads, flags.given("threads") ? " (--threads)" : "");
  const char* env = std::getenv("SWIFTLET_VISIBLE_DEVICES");
  std::vector<std::string> visible = DeviceRegistry::visible();
  std::printf("devices       %s (SWIFTLET_VISIBLE_DEVICES=%s; known: %s)\n",
              join(visible, ", ").c_str(), env ? env : "<unset>",
              join(DeviceRegistry::available(), ", ").c_str());
  for (const std::string& name : visible) {
    try {
      DeviceInfo info = DeviceRegistry::create(name, pool)->info();
      std::printf("  %-8s %s; memory %s\n", info.name.c_str(), info.description.c_str(),
                  gib(info.memory_bytes).c_str());
    } catch (const Error& e) {
      std::printf("  %-8s unavailable: %s\n", name.c_str(), e.what());
    }
  }
  if (!flags.boolean("check")) return 0;
  bool ok = run_checks(pool);
  std::printf("%s\n", ok ? "all devices pass" : "some devices FAILED");
  return ok ? 0 : 1;
}

const bool registered = register_command({"env", kSummary, run_env});

}  // namespace
}  // namespace swiftlet::cli
