// CpuDevice: element-wise kernels, bias, reductions, embedding, SwiGLU, AdamW and dropout.
#include <cmath>

#include "backend/cpu/cpu_device.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet {

using namespace cpu;  // NOLINT: the kernel helpers
namespace s = simd;
constexpr int W = s::kWidth;
constexpr int64_t kElementGrain = 1
                                  << 14;  // elements per thread below which a kernel runs serially

void CpuDevice::add(const Tensor& out, const Tensor& a, const Tensor& b) {
  for (const Tensor* t : {&out, &a, &b}) {
    check_here("add", *t);
    expect_dtype("add", "argument", *t, DType::kF32);
  }
  expect_numel("add", "a", a, out.numel());
  expect_numel("add", "b", b, out.numel());
  float *o = f32(out), *x = f32(a), *y = f32(b);
  parallel(pool(), out.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + W <= hi; i += W) s::store(o + i, s::add(s::load(x + i), s::load(y + i)));
    for (; i < hi; ++i) o[i] = x[i] + y[i];
  });
}

void CpuDevice::add_inplace(const Tensor& a, const Tensor& b, float scale) {
  check_here("add_inplace", a);
  check_here("add_inplace", b);
  expect_dtype("add_inplace", "a", a, DType::kF32);
  expect_dtype("add_inplace", "b", b, DType::kF32);
  expect_numel("add_inplace", "b", b, a.numel());
  float *x = f32(a), *y = f32(b);
  s::V sv = s::set1(scale);
  parallel(pool(), a.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + W <= hi; i += W) s::store(x + i, s::fma(sv, s::load(y + i), s::load(x + i)));
    for (; i < hi; ++i) x[i] = std::fma(scale, y[i], x[i]);
  });
}

void CpuDevice::scale_inplace(const Tensor& a, float factor) {
  check_here("scale_inplace", a);
  expect_dtype("scale_inplace", "a", a, DType::kF32);
  float* x = f32(a);
  s::V sv = s::set1(factor);
  parallel(pool(), a.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + W <= hi; i += W) s::store(x + i, s::mul(sv, s::load(x + i)));
    for (; i < hi; ++i) x[i] *= factor;
  });
}

void CpuDevice::add_bias(const Tensor& x, const Tensor& bias) {
  check_here("add_bias", x);
  check_here("add_bias", bias);
  expect_dtype("add_bias", "x", x, DType::kF32);
  expect_float("add_bias", "bias", bias);
  int64_t n = bias.numel();
  SWIFTLET_CHECK(bias.ndim() == 1 && x.ndim() >= 1 && x.dim(-1) == n,
                 "add_bias: x {} and bias {} disagree", x.describe(), bias.describe());
  int64_t rows = n ? x.numel() / n : 0;
  float* xp = f32(x);
  const void* bp = bias.raw_ptr();
  s::with_float_dtype(bias.dtype(), [&](auto d) {
    constexpr DType D = decltype(d)::value;
    parallel(pool(), rows, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(n, 1)),
             [&](int64_t lo, int64_t hi) {
               for (int64_t r = lo; r < hi; ++r) {
                 float* row = xp + r * n;
                 int64_t i = 0;
                 for (; i + W <= n; i += W)
                   s::store(row + i, s::add(s::load(row + i), s::load_as<D>(bp, i)));
                 for (; i < n; ++i) row[i] += s::load1_as<D>(bp, i);
               }
             });
  });
}

void CpuDevice::bias_backward(const Tensor& dbias, const Tensor& dy) {
  check_here("bias_backward", dbias);
  check_here("bias_backward", dy);
  expect_dtype("bias_backward", "dbias", dbias, DType::kF32);
  expect_dtype("bias_backward", "dy", dy, DType::kF32);
  int64_t n = dbias.numel();
  SWIFTLET_CHECK(dbias.ndim() == 1 && dy.ndim() >= 1 && dy.dim(-1) == n,
                 "bias_backward: dbias {} and dy {} disagree", dbias.describe(), dy.describe());
  int64_t rows = n ? dy.numel() / n : 0;
  float *db = f32(dbias), *g = f32(dy);
  // Split over column vectors so each dbias element is summed by one thread, rows in order.
  int64_t blocks = (n + W - 1) / W;
  parallel(pool(), blocks, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(rows * W, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t blk = lo; blk < hi; ++blk) {
               int64_t c = blk * W;
               int len = int(std::min<int64_t>(W, n - c));
               s::V acc = s::zero();
               for (int64_t r = 0; r < rows; ++r)
                 acc = s::add(acc, s::load_partial(g + r * n + c, len));
               s::store_partial(db + c, s::add(s::load_partial(db + c, len), acc), len);
             }
           });
}

double CpuDevice::sum_squares(const Tensor& a) {
  check_here("sum_squares", a);
  expect_float("sum_squares", "a", a);
  // Fixed blocks (not one per thread) so the sum does not depend on the thread count: squares are
  // summed in f32 lanes over 256 elements, then in f64 within and across blocks.
  constexpr int64_t kBlock = 4096;
  int64_t n = a.numel(), nblocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(nblocks), 0.0);
  const void* p = a.raw_ptr();
  s::with_float_dtype(a.dtype(), [&](auto d) {
    constexpr DType D = decltype(d)::value;
    parallel(pool(), nblocks, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t blk = lo; blk < hi; ++blk) {
        int64_t b = blk * kBlock, e = std::min(n, b + kBlock);
        double total = 0;
        for (int64_t i0 = b; i0 < e; i0 += 256) {
          int64_t i1 = std::min(e, i0 + 256), i = i0;
          s::V acc = s::zero();
          for (; i + W <= i1; i += W) {
            s::V x = s::load_as<D>(p, i);
            acc = s::fma(x, x, acc);
          }
          if (i < i1) {
            s::V x = s::load_partial_as<D>(p, i, int(i1 - i));
            acc = s::fma(x, x, acc);
          }
          total += double(s::reduce_add(acc));
        }
        partial[size_t(blk)] = total;
      }
    });
  });
  double sum = 0;
  for (double v : partial) sum += v;
  return sum;
}

void CpuDevice::embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table) {
  check_here("embedding_forward", out);
  check_here("embedding_forward", ids);
  check_here("embedding_forward", table);
  expect_dtype("embedding_forward", "out", out, DType::kF32);
  expect_dtype("embedding_forward", "ids", ids, DType::kI32);
  expect_float("embedding_forward", "table", table);
  SWIFTLET_CHECK(table.ndim() == 2 && ids.ndim() == 1, "embedding_forward: table {} ids {}",
                 table.describe(), ids.describe());
  int64_t T = ids.numel(), V = table.dim(0), D = table.dim(1);
  expect_shape("embedding_forward", "out", out, {T, D});
  const int32_t* id = i32(ids);
  for (int64_t t = 0; t < T; ++t)
    if (id[t] < 0 || id[t] >= V)
      throw Error(
          fmt::format("token id {} at position {} is outside the embedding table of {} rows", id[t],
                      t, V),
          "the tokenizer does not match the model's vocabulary");
  float* o = f32(out);
  const void* tp = table.raw_ptr();
  s::with_float_dtype(table.dtype(), [&](auto d) {
    constexpr DType Dt = decltype(d)::value;
    parallel(pool(), T, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(D, 1)),
             [&](int64_t lo, int64_t hi) {
               for (int64_t t = lo; t < hi; ++t) {
                 int64_t src = int64_t(id[t]) * D, i = 0;
                 for (; i + W <= D; i += W) s::store(o + t * D + i, s::load_as<Dt>(tp, src + i));
                 for (; i < D; ++i) o[t * D + i] = s::load1_as<Dt>(tp, src + i);
               }
             });
  });
}

void CpuDevice::embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  check_here("embedding_backward", dtable);
  check_here("embedding_backward", dout);
  check_here("embedding_backward", ids);
  expect_dtype("embedding_backward", "dtable", dtable, DType::kF32);
  expect_dtype("embedding_backward", "dout", dout, DType::kF32);
  expect_dtype("embedding_backward", "ids", ids, DType::kI32);
  SWIFTLET_CHECK(dtable.ndim() == 2 && ids.ndim() == 1, "embedding_backward: dtable {} ids {}",
                 dtable.describe(), ids.describe());
  int64_t T = ids.numel(), V = dtable.dim(0), D = dtable.dim(1);
  expect_shape("embedding_backward", "dout", dout, {T, D});
  const int32_t* id = i32(ids);
  for (int64_t t = 0; t < T; ++t)
    SWIFTLET_CHECK(id[t] >= 0 && id[t] < V, "embedding_backward: id {} at {} outside [0, {})",
                   id[t], t, V);
  float *dt = f32(dtable), *g = f32(dout);
  // Split over columns: every thread walks all tokens, so repeated ids never race.
  parallel(pool(), D, std::max<int64_t>(W, kElementGrain / std::max<int64_t>(T, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t t = 0; t < T; ++t) {
               float* dst = dt + int64_t(id[t]) * D;
               const float* src = g + t * D;
               int64_t i = lo;
               for (; i + W <= hi; i += W)
                 s::store(dst + i, s::add(s::load(dst + i), s::load(src + i)));
               for (; i < hi; ++i) dst[i] += src[i];
             }
           });
}

void CpuDevice::scale_rows_forward(const Tensor& out, const Tensor& x, const Tensor& sc) {
  for (const Tensor* t : {&out, &x, &sc}) {
    check_here("scale_rows_forward", *t);
    expect_dtype("scale_rows_forward", "argument", *t, DType::kF32);
  }
  SWIFTLET_CHECK(x.ndim() == 2 && sc.ndim() == 1 && sc.dim(0) == x.dim(0),
                 "scale_rows_forward: x {} s {}", x.describe(), sc.describe());
  expect_shape("scale_rows_forward", "out", out, x.shape());
  const int64_t rows = x.dim(0), n = x.dim(1);
  float *o = f32(out), *xp = f32(x), *sp = f32(sc);
  parallel(pool(), rows, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(n, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r) {
               const s::V sv = s::set1(sp[r]);
               float *dst = o + r * n, *src = xp + r * n;
               int64_t i = 0;
               for (; i + W <= n; i += W) s::store(dst + i, s::mul(sv, s::load(src + i)));
               for (; i < n; ++i) dst[i] = sp[r] * src[i];
             }
           });
}

void CpuDevice::scale_rows_backward(const Tensor& dx, const Tensor& ds, const Tensor& dout,
                                    const Tensor& x, const Tensor& sc) {
  for (const Tensor* t : {&dx, &ds, &dout, &x, &sc}) {
    if (!t->defined()) continue;
    check_here("scale_rows_backward", *t);
    expect_dtype("scale_rows_backward", "argument", *t, DType::kF32);
  }
  SWIFTLET_CHECK(x.ndim() == 2 && sc.ndim() == 1 && sc.dim(0) == x.dim(0),
                 "scale_rows_backward: x {} s {}", x.describe(), sc.describe());
  expect_shape("scale_rows_backward", "dout", dout, x.shape());
  if (dx.defined()) expect_shape("scale_rows_backward", "dx", dx, x.shape());
  if (ds.defined()) expect_shape("scale_rows_backward", "ds", ds, sc.shape());
  const int64_t rows = x.dim(0), n = x.dim(1);
  float *g = f32(dout), *xp = f32(x), *sp = f32(sc);
  float* dxp = dx.defined() ? f32(dx) : nullptr;
  float* dsp = ds.defined() ? f32(ds) : nullptr;
  parallel(pool(), rows, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(n, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r) {
               const float* gr = g + r * n;
               if (dxp) {
                 const s::V sv = s::set1(sp[r]);
                 float* d = dxp + r * n;
                 int64_t i = 0;
                 for (; i + W <= n; i += W)
                   s::store(d + i, s::fma(sv, s::load(gr + i), s::load(d + i)));
                 for (; i < n; ++i) d[i] = std::fma(sp[r], gr[i], d[i]);
               }
               if (dsp) {
                 const float* xr = xp + r * n;
                 double acc = 0;
                 for (int64_t i = 0; i < n; ++i) acc += double(gr[i]) * xr[i];
                 dsp[r] += float(acc);
               }
             }
           });
}

namespace {
inline s::V sigmoid(s::V x) {
  return s::div(s::set1(1.0f), s::add(s::set1(1.0f), s::exp(s::sub(s::zero(), x))));
}
}  // namespace

void CpuDevice::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  for (const Tensor* t : {&out, &gate, &up}) {
    check_here("swiglu_forward", *t);
    expect_dtype("swiglu_forward", "argument", *t, DType::kF32);
  }
  expect_shape("swiglu_forward", "gate", gate, out.shape());
  expect_shape("swiglu_forward", "up", up, out.shape());
  float *o = f32(out), *g = f32(gate), *u = f32(up);
  parallel(pool(), out.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i += W) {
      int len = int(std::min<int64_t>(W, hi - i));
      s::V x = s::load_partial(g + i, len);
      s::store_partial(o + i, s::mul(s::mul(x, sigmoid(x)), s::load_partial(u + i, len)), len);
    }
  });
}

// silu(g) = g s(g), silu'(g) = s(g) (1 + g (1 - s(g)))
void CpuDevice::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                const Tensor& gate, const Tensor& up) {
  for (const Tensor* t : {&dgate, &dup, &dout, &gate, &up}) {
    check_here("swiglu_backward", *t);
    expect_dtype("swiglu_backward", "argument", *t, DType::kF32);
    expect_shape("swiglu_backward", "argument", *t, dout.shape());
  }
  float *dg = f32(dgate), *du = f32(dup), *go = f32(dout), *g = f32(gate), *u = f32(up);
  parallel(pool(), dout.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    const s::V one = s::set1(1.0f);
    for (int64_t i = lo; i < hi; i += W) {
      int len = int(std::min<int64_t>(W, hi - i));
      s::V x = s::load_partial(g + i, len), sg = sigmoid(x), d = s::load_partial(go + i, len);
      s::V dsilu = s::mul(sg, s::fma(x, s::sub(one, sg), one));
      s::V ddg = s::mul(s::mul(d, s::load_partial(u + i, len)), dsilu);
      s::store_partial(dg + i, s::add(s::load_partial(dg + i, len), ddg), len);
      s::store_partial(du + i, s::fma(d, s::mul(x, sg), s::load_partial(du + i, len)), len);
    }
  });
}

void CpuDevice::adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m,
                           const Tensor& v, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int64_t step) {
  for (const Tensor* t : {&param, &grad, &m, &v}) {
    check_here("adamw_step", *t);
    expect_dtype("adamw_step", "argument", *t, DType::kF32);
    expect_numel("adamw_step", "argument", *t, param.numel());
  }
  SWIFTLET_CHECK(step >= 1, "adamw_step: step {} (steps count from 1)", step);
  // m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
  float c1 = float(1.0 / (1.0 - std::pow(double(beta1), double(step))));
  float c2 = float(1.0 / (1.0 - std::pow(double(beta2), double(step))));
  float *p = f32(param), *g = f32(grad), *mp = f32(m), *vp = f32(v);
  parallel(pool(), param.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    const s::V b1 = s::set1(beta1), b2 = s::set1(beta2), ob1 = s::set1(1 - beta1),
               ob2 = s::set1(1 - beta2), vc1 = s::set1(c1), vc2 = s::set1(c2), ve = s::set1(eps),
               vlr = s::set1(lr), vwd = s::set1(weight_decay);
    for (int64_t i = lo; i < hi; i += W) {
      int len = int(std::min<int64_t>(W, hi - i));
      s::V gi = s::load_partial(g + i, len), pi = s::load_partial(p + i, len);
      s::V mi = s::fma(b1, s::load_partial(mp + i, len), s::mul(ob1, gi));
      s::V vi = s::fma(b2, s::load_partial(vp + i, len), s::mul(ob2, s::mul(gi, gi)));
      s::V upd = s::div(s::mul(mi, vc1), s::add(s::sqrt(s::mul(vi, vc2)), ve));
      pi = s::sub(pi, s::mul(vlr, s::fma(vwd, pi, upd)));
      s::store_partial(mp + i, mi, len);
      s::store_partial(vp + i, vi, len);
      s::store_partial(p + i, pi, len);
    }
  });
}

namespace {
// Keep element i with probability 1 - p: a stateless hash of (seed, i) (splitmix64's finaliser)
// compared with p in 24-bit fixed point, so the mask is recomputed exactly in backward.
inline bool dropout_keep(uint64_t seed, uint64_t i, uint32_t threshold) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return uint32_t(z >> 40) >= threshold;
}
uint64_t dropout_key(uint64_t seed) { return seed * 0xd1b54a32d192ed03ull + 0x2545f4914f6cdd1dull; }
}  // namespace

void CpuDevice::dropout_forward(const Tensor& out, const Tensor& in, float p, uint64_t seed) {
  check_here("dropout_forward", out);
  check_here("dropout_forward", in);
  expect_dtype("dropout_forward", "out", out, DType::kF32);
  expect_dtype("dropout_forward", "in", in, DType::kF32);
  expect_numel("dropout_forward", "out", out, in.numel());
  SWIFTLET_CHECK(p >= 0.0f && p < 1.0f, "dropout_forward: p = {} outside [0, 1)", p);
  if (p == 0.0f) return copy(out, in);
  float *o = f32(out), *x = f32(in), keep_scale = 1.0f / (1.0f - p);
  uint32_t threshold = uint32_t(double(p) * 16777216.0);
  uint64_t key = dropout_key(seed);
  parallel(pool(), in.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      o[i] = dropout_keep(key, uint64_t(i), threshold) ? x[i] * keep_scale : 0.0f;
  });
}

void CpuDevice::dropout_backward(const Tensor& din, const Tensor& dout, float p, uint64_t seed) {
  check_here("dropout_backward", din);
  check_here("dropout_backward", dout);
  expect_dtype("dropout_backward", "din", din, DType::kF32);
  expect_dtype("dropout_backward", "dout", dout, DType::kF32);
  expect_numel("dropout_backward", "din", din, dout.numel());
  SWIFTLET_CHECK(p >= 0.0f && p < 1.0f, "dropout_backward: p = {} outside [0, 1)", p);
  if (p == 0.0f) return add_inplace(din, dout, 1.0f);
  float *d = f32(din), *g = f32(dout), keep_scale = 1.0f / (1.0f - p);
  uint32_t threshold = uint32_t(double(p) * 16777216.0);
  uint64_t key = dropout_key(seed);
  parallel(pool(), dout.numel(), kElementGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      if (dropout_keep(key, uint64_t(i), threshold)) d[i] += g[i] * keep_scale;
  });
}

}  // namespace swiftlet
