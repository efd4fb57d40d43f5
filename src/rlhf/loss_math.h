#pragma once
// Scalar functions of the preference losses, stable for large |x| (as torch's float64 kernels).
#include <cmath>
#include <numbers>

namespace swiftlet::rlhf {

// log(1 + e^x)
inline double softplus(double x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}
inline double sigmoid(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}
inline double log_sigmoid(double x) { return -softplus(-x); }
// log(1 − e^x) for x < 0: log(−expm1(x)) near 0, log1p(−e^x) below −ln 2.
inline double log1mexp(double x) {
  return x > -std::numbers::ln2 ? std::log(-std::expm1(x)) : std::log1p(-std::exp(x));
}

}  // namespace swiftlet::rlhf
