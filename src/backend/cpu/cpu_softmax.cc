// CpuDevice: cross-entropy (loss, accuracy and the logits gradient in one pass), log-softmax and
// the softmax's entropy.
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_device.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet {

using namespace cpu;  // NOLINT: the kernel helpers
namespace s = simd;
constexpr int W = s::kWidth;

namespace {

float row_max(const float* x, int64_t n) {
  s::V m = s::set1(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + W <= n; i += W) m = s::max(m, s::load(x + i));
  float r = s::reduce_max(m);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// log sum_i exp(x_i) = m + log sum_i exp(x_i - m) with m the row maximum (stable for any range).
float row_logsumexp(const float* x, int64_t n, float m) {
  if (m == -std::numeric_limits<float>::infinity()) return m;  // every entry -inf
  s::V acc = s::zero(), vm = s::set1(m);
  int64_t i = 0;
  for (; i + W <= n; i += W) acc = s::add(acc, s::exp(s::sub(s::load(x + i), vm)));
  float sum = s::reduce_add(acc);
  for (; i < n; ++i) sum += std::exp(x[i] - m);
  return m + std::log(sum);
}

}  // namespace

void CpuDevice::cross_entropy(const Tensor& loss, const Tensor& correct, const Tensor& dlogits,
                              const Tensor& logits, const Tensor& labels, float grad_scale,
                              const Tensor& row_scale) {
  const char* k = "cross_entropy";
  for (const Tensor* t : {&loss, &correct, &logits, &labels}) check_here(k, *t);
  check_here_optional(k, dlogits);
  check_here_optional(k, row_scale);
  expect_dtype(k, "logits", logits, DType::kF32);
  expect_dtype(k, "labels", labels, DType::kI32);
  expect_dtype(k, "loss", loss, DType::kF32);
  expect_dtype(k, "correct", correct, DType::kF32);
  SWIFTLET_CHECK(logits.ndim() == 2, "{}: logits {} must be [N, V]", k, logits.describe());
  int64_t N = logits.dim(0), V = logits.dim(1);
  expect_numel(k, "labels", labels, N);
  expect_numel(k, "loss", loss, N);
  expect_numel(k, "correct", correct, N);
  if (dlogits.defined()) {
    expect_dtype(k, "dlogits", dlogits, DType::kF32);
    expect_shape(k, "dlogits", dlogits, logits.shape());
  }
  if (row_scale.defined()) {
    expect_dtype(k, "row_scale", row_scale, DType::kF32);
    expect_numel(k, "row_scale", row_scale, N);
  }
  const int32_t* lab = i32(labels);
  const float* rs = row_scale.defined() ? f32(row_scale) : nullptr;
  for (int64_t r = 0; r < N; ++r)
    if (lab[r] != -100 && (lab[r] < 0 || lab[r] >= V))
      throw Error(
          fmt::format("label {} at row {} is outside the vocabulary of {} tokens", lab[r], r, V),
          "labels must be token ids of the model's vocabulary, or -100 to ignore a token");
  float *lp = f32(loss), *cp = f32(correct), *xp = f32(logits);
  float* gp = dlogits.defined() ? f32(dlogits) : nullptr;
  parallel(pool(), N, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* x = xp + r * V;
      float* g = gp ? gp + r * V : nullptr;
      int32_t label = lab[r];
      if (label == -100) {
        lp[r] = 0.0f;
        cp[r] = 0.0f;
        if (g) std::fill(g, g + V, 0.0f);
        continue;
      }
      float m = row_max(x, V);
      int64_t argmax = 0;
      while (argmax < V && !(x[argmax] == m)) ++argmax;  // first maximum, as torch.argmax
      float lse = row_logsumexp(x, V, m), target = x[label];
      lp[r] = lse - target;
      cp[r] = argmax == label ? 1.0f : 0.0f;
      if (!g) continue;
      // g = softmax(x) * scale, written over x when they alias (everything read above).
      const float scale = rs ? grad_scale * rs[r] : grad_scale;
      s::V vl = s::set1(lse), vs = s::set1(scale);
      for (int64_t i = 0; i < V; i += W) {
        int len = int(std::min<int64_t>(W, V - i));
        s::store_partial(g + i, s::mul(s::exp(s::sub(s::load_partial(x + i, len), vl)), vs), len);
      }
      g[label] -= scale;
    }
  });
}

void CpuDevice::log_softmax_inplace(const Tensor& x) {
  check_here("log_softmax_inplace", x);
  expect_dtype("log_softmax_inplace", "x", x, DType::kF32);
  SWIFTLET_CHECK(x.ndim() >= 1, "log_softmax_inplace: x {} has no rows", x.describe());
  int64_t V = x.dim(-1), N = V ? x.numel() / V : 0;
  float* xp = f32(x);
  parallel(pool(), N, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(V, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r) {
               float* row = xp + r * V;
               float lse = row_logsumexp(row, V, row_max(row, V));
               s::V vl = s::set1(lse);
               int64_t i = 0;
               for (; i + W <= V; i += W) s::store(row + i, s::sub(s::load(row + i), vl));
               for (; i < V; ++i) row[i] -= lse;
             }
           });
}

void CpuDevice::softmax_entropy(const Tensor& out, const Tensor& logits, float scale) {
  const char* k = "softmax_entropy";
  check_here(k, out);
  check_here(k, logits);
  expect_dtype(k, "out", out, DType::kF32);
  expect_dtype(k, "logits", logits, DType::kF32);
  SWIFTLET_CHECK(logits.ndim() == 2 && scale > 0, "{}: logits {} must be [N, V], scale {} > 0", k,
                 logits.describe(), scale);
  const int64_t N = logits.dim(0), V = logits.dim(1);
  expect_numel(k, "out", out, N);
  const float* xp = f32(logits);
  float* op = f32(out);
  parallel(pool(), N, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(V, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r) {
               const float* row = xp + r * V;
               // y = scale * x - m (m the scaled maximum), e = exp(y): H = log sum e - sum e y /
               // sum e. y is floored at -88 (e < 1e-38) so that masked -inf logits add 0, not 0 *
               // -inf.
               const float m = scale * row_max(row, V);
               const s::V vs = s::set1(scale), vm = s::set1(m), floor = s::set1(-88.0f);
               s::V se = s::zero(), sey = s::zero();
               int64_t i = 0;
               for (; i + W <= V; i += W) {
                 const s::V y = s::max(s::sub(s::mul(s::load(row + i), vs), vm), floor);
                 const s::V e = s::exp(y);
                 se = s::add(se, e);
                 sey = s::fma(e, y, sey);
               }
               double sum_e = s::reduce_add(se), sum_ey = s::reduce_add(sey);
               for (; i < V; ++i) {
                 const double y = std::max(double(scale * row[i] - m), -88.0), e = std::exp(y);
                 sum_e += e;
                 sum_ey += e * y;
               }
               op[r] = float(std::log(sum_e) - sum_ey / sum_e);
             }
           });
}

}  // namespace swiftlet
