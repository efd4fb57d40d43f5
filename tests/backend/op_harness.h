#pragma once
// The op-test harness: every kernel runs on every device (cpu:0 and the memory-protected sim:0)
// against a plain scalar reference loop written in the test in double precision, compared by
// normalised error ||got - want|| / ||want|| with tolerances derived from the f32 unit roundoff and
// the accumulation length, and with NaN checks. Backward kernels are also compared with central
// finite differences of the f64 reference forward (numeric_grad).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/device.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace swiftlet::test {

constexpr double kEps = 5.9604644775390625e-08;  // f32 unit roundoff 2^-24

// Error bound for results accumulated over n f32 terms (random-sign rounding errors grow like
// sqrt(n)); the factor 16 covers the few roundings per term (products, exp, division).
inline double tol_f32(double n) { return 16.0 * kEps * std::sqrt(std::max(1.0, n)); }
// Finite differences against f32 kernels: the kernel's own rounding dominates (the f64 central
// difference is exact to ~1e-10), so the same bound with a little more room.
inline double tol_grad(double n) { return 2.0 * tol_f32(n); }

// Sets an environment variable for a scope and restores the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

inline ThreadPool& test_pool() {
  static ThreadPool pool(3);  // 3 threads on any machine: uneven splits get exercised
  return pool;
}

inline std::vector<float> random_floats(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal() * scale);
  return v;
}

// Values rounded through a dtype and back, so the reference sees exactly what the kernel sees.
inline std::vector<float> round_to(const std::vector<float>& v, DType d) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    r[i] = d == DType::kBF16  ? bf16_to_f32(f32_to_bf16(v[i]))
           : d == DType::kF16 ? f16_to_f32(f32_to_f16(v[i]))
                              : v[i];
  return r;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||got - want|| / ||want|| (absolute when want is zero); infinity when got holds a NaN.
inline double normalised_error(const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    if (std::isnan(got[i])) continue;
    double d = double(got[i]) - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

#define SWIFTLET_EXPECT_CLOSE(got, want, tol)                                          \
  do {                                                                                 \
    double err_ = ::swiftlet::test::normalised_error((got), (want));                   \
    EXPECT_LE(err_, (tol)) << #got << " vs " << #want << ": normalised error " << err_ \
                           << " above tolerance " << (tol);                            \
  } while (0)

// Central differences of a scalar function of x, step h (relative to max(1, |x_i|)).
inline std::vector<double> numeric_grad(const std::vector<double>& x,
                                        const std::function<double(const std::vector<double>&)>& f,
                                        double h = 1e-5) {
  std::vector<double> g(x.size()), xp = x;
  for (size_t i = 0; i < x.size(); ++i) {
    double step = h * std::max(1.0, std::fabs(x[i]));
    xp[i] = x[i] + step;
    double fp = f(xp);
    xp[i] = x[i] - step;
    double fm = f(xp);
    xp[i] = x[i];
    g[i] = (fp - fm) / (2 * step);
  }
  return g;
}

// The same at chosen coordinates only (for tensors too large to difference entirely).
inline std::vector<double> numeric_grad_at(
    const std::vector<double>& x, const std::vector<size_t>& at,
    const std::function<double(const std::vector<double>&)>& f, double h = 1e-5) {
  std::vector<double> g, xp = x;
  for (size_t i : at) {
    double step = h * std::max(1.0, std::fabs(x[i]));
    xp[i] = x[i] + step;
    double fp = f(xp);
    xp[i] = x[i] - step;
    double fm = f(xp);
    xp[i] = x[i];
    g.push_back((fp - fm) / (2 * step));
  }
  return g;
}

// sum_i r_i y_i: the scalar whose gradient a backward kernel computes when handed dout = r.
inline double project(const std::vector<double>& y, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * double(r[i]);
  return s;
}

// Fixture: one device per parameter ("cpu:0", "sim:0"); host <-> device helpers.
class DeviceTest : public ::testing::TestWithParam<std::string> {
 public:
  void SetUp() override {
    ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
    dev_ = DeviceRegistry::create(GetParam(), test_pool());
  }

  Device& dev() { return *dev_; }

  // A device tensor holding v (converted to dtype d).
  Tensor up(const std::vector<float>& v, const Shape& shape, DType d = DType::kF32) {
    Tensor h = Tensor::host(shape, d);
    EXPECT_EQ(int64_t(v.size()), h.numel());
    for (size_t i = 0; i < v.size(); ++i) {
      if (d == DType::kF32) h.data<float>()[i] = v[i];
      if (d == DType::kBF16) h.data<uint16_t>()[i] = f32_to_bf16(v[i]);
      if (d == DType::kF16) h.data<uint16_t>()[i] = f32_to_f16(v[i]);
    }
    return dev_->upload(h);
  }
  Tensor up_i32(const std::vector<int32_t>& v, const Shape& shape) {
    return dev_->upload(Tensor::host_from_i32(v, shape));
  }
  // Device tensor contents as f32 (any float dtype).
  std::vector<float> down(const Tensor& t) { return dev_->download(t).to_f32_vector(); }

 protected:
  std::unique_ptr<Device> dev_;
};

#define SWIFTLET_ALL_DEVICES(Suite)                                             \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite, ::testing::Values("cpu:0", "sim:0"), \
                           [](const auto& info) { return info.param.substr(0, 3); })

}  // namespace swiftlet::test
