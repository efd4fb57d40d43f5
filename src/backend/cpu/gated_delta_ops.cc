#include "backend/cpu/gated_delta_ops.h"

#include <cmath>

namespace swiftlet::cpu {

namespace {
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// xx[t + j, c] for the concatenation of state_in (K-1 rows) and x.
inline float window(const float* x, const float* state_in, int64_t K, int64_t C, int64_t row,
                    int64_t c) {
  if (row >= K - 1) return x[(row - (K - 1)) * C + c];
  return state_in ? state_in[row * C + c] : 0.0f;
}
}  // namespace

void causal_conv_silu_forward(int64_t T, int64_t C, int64_t K, const float* x, const float* w,
                              const float* state_in, float* y, float* state_out) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      float u = 0;
      for (int64_t j = 0; j < K; ++j) u += w[c * K + j] * window(x, state_in, K, C, t + j, c);
      y[t * C + c] = u * sigmoid(u);
    }
  if (state_out) {
    // The last K-1 rows of xx. In place (state_out == state_in) is safe: row r is written after
    // xx row T + r > r is read, and later reads are of rows above r.
    for (int64_t r = 0; r < K - 1; ++r)
      for (int64_t c = 0; c < C; ++c) state_out[r * C + c] = window(x, state_in, K, C, T + r, c);
  }
}

void causal_conv_silu_backward(int64_t T, int64_t C, int64_t K, const float* x, const float* w,
                               const float* state_in, const float* dy, float* dx, float* dw,
                               float* d_state_in) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      float u = 0;
      for (int64_t j = 0; j < K; ++j) u += w[c * K + j] * window(x, state_in, K, C, t + j, c);
      const float s = sigmoid(u);
      const float du = dy[t * C + c] * s * (1.0f + u * (1.0f - s));  // silu'(u)
      for (int64_t j = 0; j < K; ++j) {
        const int64_t row = t + j;
        dw[c * K + j] += du * window(x, state_in, K, C, row, c);
        if (row >= K - 1)
          dx[(row - (K - 1)) * C + c] += du * w[c * K + j];
        else if (d_state_in)
          d_state_in[row * C + c] += du * w[c * K + j];
      }
    }
}

void l2norm_forward(int64_t rows, int64_t dim, const float* x, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float s = 0;
    for (int64_t i = 0; i < dim; ++i) s += xr[i] * xr[i];
    const float rs = 1.0f / std::sqrt(s + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = xr[i] * rs;
  }
}

void l2norm_backward(int64_t rows, int64_t dim, const float* x, float eps, const float* dy,
                     float* dx) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* g = dy + r * dim;
    float s = 0;
    for (int64_t i = 0; i < dim; ++i) s += xr[i] * xr[i];
    const float rs = 1.0f / std::sqrt(s + eps);
    float yg = 0;
    for (int64_t i = 0; i < dim; ++i) yg += xr[i] * rs * g[i];
    for (int64_t i = 0; i < dim; ++i) dx[r * dim + i] += rs * (g[i] - xr[i] * rs * yg);
  }
}

void gated_rmsnorm_forward(int64_t rows, int64_t dim, const float* o, const float* z,
                           const float* w, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* orow = o + r * dim;
    float s = 0;
    for (int64_t i = 0; i < dim; ++i) s += orow[i] * orow[i];
    const float rs = 1.0f / std::sqrt(s / float(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      const float zi = z[r * dim + i];
      out[r * dim + i] = w[i] * orow[i] * rs * zi * sigmoid(zi);
    }
  }
}

void gated_rmsnorm_backward(int64_t rows, int64_t dim, const float* o, const float* z,
                            const float* w, float eps, const float* dout, float* d_o, float* dz,
                            float* dw) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* orow = o + r * dim;
    float s = 0;
    for (int64_t i = 0; i < dim; ++i) s += orow[i] * orow[i];
    const float rs = 1.0f / std::sqrt(s / float(dim) + eps);
    // n = o rs; dn = dout w silu(z); do = rs (dn - n mean(dn n))
    float mean_dn_n = 0;
    for (int64_t i = 0; i < dim; ++i) {
      const float zi = z[r * dim + i], sg = sigmoid(zi), n = orow[i] * rs;
      const float g = dout[r * dim + i];
      mean_dn_n += g * w[i] * zi * sg * n;
      dw[i] += g * n * zi * sg;
      dz[r * dim + i] += g * w[i] * n * sg * (1.0f + zi * (1.0f - sg));
    }
    mean_dn_n /= float(dim);
    for (int64_t i = 0; i < dim; ++i) {
      const float zi = z[r * dim + i], n = orow[i] * rs;
      const float dn = dout[r * dim + i] * w[i] * zi * sigmoid(zi);
      d_o[r * dim + i] += rs * (dn - n * mean_dn_n);
    }
  }
}

}  // namespace swiftlet::cpu
