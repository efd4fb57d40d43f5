#pragma once
// The elementwise and short-range ops around the gated delta rule (Qwen3.5 linear attention),
// each a forward/backward pair; backward accumulates (+=). Internal to backend/cpu.
#include <cstdint>

namespace swiftlet::cpu {

// y[t, c] = silu(sum_j w[c, j] * xx[t + j, c]), xx = state_in (K-1 rows, oldest first; zeros when
// null) followed by x [T, C]; w [C, K] (tap K-1 multiplies the current token). state_out [K-1, C]
// (may be null) receives the last K-1 rows of xx: the decode cache's conv state.
void causal_conv_silu_forward(int64_t T, int64_t C, int64_t K, const float* x, const float* w,
                              const float* state_in, float* y, float* state_out);
// Recomputes the pre-activation; dx [T, C], dw [C, K], d_state_in [K-1, C] (null: not wanted).
void causal_conv_silu_backward(int64_t T, int64_t C, int64_t K, const float* x, const float* w,
                               const float* state_in, const float* dy, float* dx, float* dw,
                               float* d_state_in);

// y = x * rsqrt(sum(x^2) + eps) per row of `dim` (eps inside the root, as the FLA l2norm).
void l2norm_forward(int64_t rows, int64_t dim, const float* x, float eps, float* y);
// dx += rs (dy - y (y . dy)), rs = rsqrt(sum(x^2) + eps); y recomputed from x.
void l2norm_backward(int64_t rows, int64_t dim, const float* x, float eps, const float* dy,
                     float* dx);

// out = w * (o * rsqrt(mean(o^2) + eps)) * silu(z), per row of `dim` (norm before gate).
void gated_rmsnorm_forward(int64_t rows, int64_t dim, const float* o, const float* z,
                           const float* w, float eps, float* out);
void gated_rmsnorm_backward(int64_t rows, int64_t dim, const float* o, const float* z,
                            const float* w, float eps, const float* dout, float* d_o, float* dz,
                            float* dw);

}  // namespace swiftlet::cpu
