// CpuDevice: RMSNorm and rotary position embedding.
#include <cmath>

#include "backend/cpu/cpu_device.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet {

using namespace cpu;  // NOLINT: the kernel helpers
namespace s = simd;
constexpr int W = s::kWidth;

namespace {

// sum_i a[i] * b[i] over n floats, f32 lanes.
inline float dot(const float* a, const float* b, int64_t n) {
  s::V acc = s::zero();
  int64_t i = 0;
  for (; i + W <= n; i += W) acc = s::fma(s::load(a + i), s::load(b + i), acc);
  if (i < n)
    acc = s::fma(s::load_partial(a + i, int(n - i)), s::load_partial(b + i, int(n - i)), acc);
  return s::reduce_add(acc);
}

int64_t rows_grain(int64_t dim) {
  return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(dim, 1));
}

}  // namespace

void CpuDevice::rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                                const Tensor& w, float eps) {
  const char* k = "rmsnorm_forward";
  check_here(k, y);
  check_here(k, x);
  check_here(k, w);
  check_here_optional(k, rstd);
  expect_dtype(k, "x", x, DType::kF32);
  expect_dtype(k, "y", y, DType::kF32);
  expect_float(k, "w", w);
  int64_t dim = w.numel();
  SWIFTLET_CHECK(w.ndim() == 1 && x.ndim() >= 1 && x.dim(-1) == dim, "{}: x {} and w {} disagree",
                 k, x.describe(), w.describe());
  expect_shape(k, "y", y, x.shape());
  int64_t rows = dim ? x.numel() / dim : 0;
  if (rstd.defined()) {
    expect_dtype(k, "rstd", rstd, DType::kF32);
    expect_numel(k, "rstd", rstd, rows);
  }
  float *yp = f32(y), *xp = f32(x), *rp = rstd.defined() ? f32(rstd) : nullptr;
  const void* wp = w.raw_ptr();
  s::with_float_dtype(w.dtype(), [&](auto d) {
    constexpr DType Dw = decltype(d)::value;
    parallel(pool(), rows, rows_grain(dim), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const float* xr = xp + r * dim;
        float* yr = yp + r * dim;
        float ms = dot(xr, xr, dim) / float(dim);
        float inv = 1.0f / std::sqrt(ms + eps);
        if (rp) rp[r] = inv;
        s::V vi = s::set1(inv);
        int64_t i = 0;
        for (; i + W <= dim; i += W)
          s::store(yr + i, s::mul(s::mul(s::load(xr + i), vi), s::load_as<Dw>(wp, i)));
        for (; i < dim; ++i) yr[i] = xr[i] * inv * s::load1_as<Dw>(wp, i);
      }
    });
  });
}

// With y = x r w and r = (mean(x^2) + eps)^-1/2:
//   dx_i += r (w_i dy_i - x_i r^2 (1/D) sum_j dy_j w_j x_j),   dw_i += sum_rows dy_i x_i r.
void CpuDevice::rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                 const Tensor& x, const Tensor& w, const Tensor& rstd) {
  const char* k = "rmsnorm_backward";
  for (const Tensor* t : {&dx, &dy, &x, &w, &rstd}) check_here(k, *t);
  check_here_optional(k, dw);
  for (const Tensor* t : {&dx, &dy, &x, &rstd}) expect_dtype(k, "argument", *t, DType::kF32);
  expect_float(k, "w", w);
  int64_t dim = w.numel();
  SWIFTLET_CHECK(w.ndim() == 1 && x.ndim() >= 1 && x.dim(-1) == dim, "{}: x {} and w {} disagree",
                 k, x.describe(), w.describe());
  expect_shape(k, "dx", dx, x.shape());
  expect_shape(k, "dy", dy, x.shape());
  int64_t rows = dim ? x.numel() / dim : 0;
  expect_numel(k, "rstd", rstd, rows);
  if (dw.defined()) {
    expect_dtype(k, "dw", dw, DType::kF32);
    expect_numel(k, "dw", dw, dim);
  }
  float *dxp = f32(dx), *dyp = f32(dy), *xp = f32(x), *rp = f32(rstd);
  const void* wp = w.raw_ptr();
  s::with_float_dtype(w.dtype(), [&](auto d) {
    constexpr DType Dw = decltype(d)::value;
    parallel(pool(), rows, rows_grain(dim), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const float *xr = xp + r * dim, *gr = dyp + r * dim;
        float* dxr = dxp + r * dim;
        float inv = rp[r];
        s::V acc = s::zero();
        for (int64_t i = 0; i < dim; i += W) {
          int len = int(std::min<int64_t>(W, dim - i));
          acc = s::fma(s::mul(s::load_partial(gr + i, len), s::load_partial_as<Dw>(wp, i, len)),
                       s::load_partial(xr + i, len), acc);
        }
        float c = inv * inv * s::reduce_add(acc) / float(dim);
        s::V vi = s::set1(inv), vc = s::set1(c);
        for (int64_t i = 0; i < dim; i += W) {
          int len = int(std::min<int64_t>(W, dim - i));
          s::V wdy = s::mul(s::load_partial_as<Dw>(wp, i, len), s::load_partial(gr + i, len));
          s::V g = s::mul(vi, s::sub(wdy, s::mul(s::load_partial(xr + i, len), vc)));
          s::store_partial(dxr + i, s::add(s::load_partial(dxr + i, len), g), len);
        }
      }
    });
  });
  if (!dw.defined()) return;
  float* dwp = f32(dw);
  // dw: split over column vectors, rows summed in order by one thread.
  int64_t blocks = (dim + W - 1) / W;
  parallel(pool(), blocks, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(rows * W, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t blk = lo; blk < hi; ++blk) {
               int64_t c = blk * W;
               int len = int(std::min<int64_t>(W, dim - c));
               s::V acc = s::zero();
               for (int64_t r = 0; r < rows; ++r)
                 acc = s::fma(s::mul(s::load_partial(dyp + r * dim + c, len), s::set1(rp[r])),
                              s::load_partial(xp + r * dim + c, len), acc);
               s::store_partial(dwp + c, s::add(s::load_partial(dwp + c, len), acc), len);
             }
           });
}

namespace {

// Rotates each head's pairs (x[i], x[i + D/2]) of the rows [lo, hi) by +angle (forward) or
// -angle (backward, R^T), then scales by attention_scaling. The angle pos * inv_freq[i] is rounded
// to f32 and its cos/sin taken in f32 (glibc's cosf/sinf, within 1 ulp), as HF computes them.
void rope_rows(float* x, const int32_t* pos, const float* inv_freq, int64_t H, int64_t D,
               int64_t half, float scaling, bool inverse, int64_t lo, int64_t hi) {
  // rotates channels [0, 2 half) of each head; the rest (partial rotary) pass through
  float* cs = scratch_floats(0, size_t(2 * half));
  float* sn = cs + half;
  for (int64_t t = lo; t < hi; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      float angle = float(pos[t]) * inv_freq[i];
      cs[i] = std::cos(angle) * scaling;
      sn[i] = std::sin(angle) * scaling * (inverse ? -1.0f : 1.0f);
    }
    for (int64_t h = 0; h < H; ++h) {
      float* x1 = x + (t * H + h) * D;
      float* x2 = x1 + half;
      for (int64_t i = 0; i < half; i += W) {
        int len = int(std::min<int64_t>(W, half - i));
        s::V a = s::load_partial(x1 + i, len), b = s::load_partial(x2 + i, len);
        s::V c = s::load_partial(cs + i, len), sv = s::load_partial(sn + i, len);
        s::store_partial(x1 + i, s::sub(s::mul(a, c), s::mul(b, sv)), len);  // x1 c - x2 s
        s::store_partial(x2 + i, s::fma(a, sv, s::mul(b, c)), len);          // x2 c + x1 s
      }
    }
  }
}

}  // namespace

static void check_rope(const char* k, const Tensor& x, const Tensor& positions,
                       const Tensor& inv_freq) {
  expect_dtype(k, "x", x, DType::kF32);
  expect_dtype(k, "positions", positions, DType::kI32);
  expect_dtype(k, "inv_freq", inv_freq, DType::kF32);
  SWIFTLET_CHECK(x.ndim() == 3 && x.dim(2) % 2 == 0, "{}: x {} must be [T, H, D] with even D", k,
                 x.describe());
  expect_numel(k, "positions", positions, x.dim(0));
  SWIFTLET_CHECK(inv_freq.numel() >= 1 && inv_freq.numel() <= x.dim(2) / 2,
                 "{}: inv_freq {} must hold 1 to D/2 = {} frequencies", k, inv_freq.describe(),
                 x.dim(2) / 2);
}

void CpuDevice::rope_forward(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                             float attention_scaling) {
  for (const Tensor* t : {&x, &positions, &inv_freq}) check_here("rope_forward", *t);
  check_rope("rope_forward", x, positions, inv_freq);
  int64_t T = x.dim(0), H = x.dim(1), D = x.dim(2);
  parallel(pool(), T, std::max<int64_t>(1, 4096 / std::max<int64_t>(H * D, 1)),
           [&](int64_t lo, int64_t hi) {
             rope_rows(f32(x), i32(positions), f32(inv_freq), H, D, inv_freq.numel(), attention_scaling, false, lo,
                       hi);
           });
}

void CpuDevice::rope_backward(const Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                              float attention_scaling) {
  for (const Tensor* t : {&dx, &positions, &inv_freq}) check_here("rope_backward", *t);
  check_rope("rope_backward", dx, positions, inv_freq);
  int64_t T = dx.dim(0), H = dx.dim(1), D = dx.dim(2);
  parallel(pool(), T, std::max<int64_t>(1, 4096 / std::max<int64_t>(H * D, 1)),
           [&](int64_t lo, int64_t hi) {
             rope_rows(f32(dx), i32(positions), f32(inv_freq), H, D, inv_freq.numel(), attention_scaling, true, lo,
                       hi);
           });
}

}  // namespace swiftlet
