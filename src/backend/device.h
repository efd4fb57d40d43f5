#pragma once
// The device boundary. Everything above backend/ asks a Device for memory, transfers and kernels;
// nothing above it touches SIMD intrinsics, BLAS or another device's memory. A new accelerator
// (CUDA, Ascend) implements this interface in its own folder under backend/.
//
// Conventions for every kernel:
//  - tensors are contiguous row-major and live on this device (checked), unless noted;
//  - activations, gradients, optimizer states are f32; weights may be f32, bf16 or f16;
//  - *_backward kernels ACCUMULATE into their gradient outputs (+=), so a tensor used twice simply
//    receives two contributions; callers zero gradients when a step begins;
//  - shapes are checked and a mismatch is an InternalError naming the kernel and the shapes.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace swiftlet {

// One causal attention segment: query rows [q_begin, q_begin + q_len) of q/out attend to the first
// kv_len rows of k/v. Query i (0-based in the segment) sees keys j <= kv_len - q_len + i, so a
// prefill has kv_len == q_len and a decode step with a cache of n tokens has q_len 1, kv_len n + 1.
// k, v: [>= kv_len, num_kv_heads, head_dim] views (a slice of a packed batch, or a KV cache).
struct AttnSegment {
  int64_t q_begin = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  Tensor k, v;
  Tensor dk, dv;  // backward only: gradient views shaped like k, v (accumulated)
};

struct DeviceInfo {
  std::string name;         // "cpu:0"
  std::string description;  // CPU model, SIMD level, GEMM library and kernel
  size_t memory_bytes = 0;  // total memory the device can allocate
};

class Device {
 public:
  virtual ~Device() = default;

  virtual const std::string& name() const = 0;
  virtual DeviceInfo info() const = 0;
  // True when host code may read this device's memory directly (the CPU device).
  virtual bool host_accessible() const = 0;

  // ---- memory and transfers ----
  virtual Tensor empty(const Shape& shape, DType dtype) = 0;  // uninitialised
  Tensor zeros(const Shape& shape, DType dtype);
  // A tensor on this device with the shape, dtype and contents `host` (host memory) has at the
  // call. On any device the result stays valid after the caller drops `host` (it keeps what it
  // needs alive), and it may either share `host`'s memory or be a copy: do not write `host` while
  // the result is in use (the change may or may not show through), upload again instead.
  // The CPU device shares `host`'s storage, except that a tensor of a memory-mapped file of
  // Tensor::kHugePageBytes or more is copied to huge pages while memory allows (1 GiB left free).
  virtual Tensor upload(const Tensor& host) = 0;
  // A host tensor holding a copy of a tensor of this device.
  virtual Tensor download(const Tensor& t) = 0;
  // dst = src element-wise with dtype conversion (f32 <-> bf16/f16); same element count.
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  virtual void fill(const Tensor& t, float value) = 0;

  // ---- linear algebra ----
  // C = alpha * op(A) op(B) + beta * C, all 2-D. op(X) = X^T when trans_X.
  // A and C are f32; B is f32, bf16 or f16 (weights are stored [out, in], so y = x W^T is
  // gemm(x, false, W, true, y)). beta == 0 overwrites C (C may hold garbage).
  virtual void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                    float alpha = 1.0f, float beta = 0.0f) = 0;

  // ---- element-wise and row ops (f32 activations) ----
  virtual void add(const Tensor& out, const Tensor& a, const Tensor& b) = 0;  // out = a + b
  virtual void add_inplace(const Tensor& a, const Tensor& b, float scale = 1.0f) = 0;  // a += s*b
  virtual void scale_inplace(const Tensor& a, float s) = 0;                            // a *= s
  // x[r, :] += bias  (x [rows, n], bias [n] any float dtype)
  virtual void add_bias(const Tensor& x, const Tensor& bias) = 0;
  // dbias += sum_r dy[r, :]
  virtual void bias_backward(const Tensor& dbias, const Tensor& dy) = 0;
  // sum of squares of all elements, accumulated in f64 (grad norm)
  virtual double sum_squares(const Tensor& a) = 0;

  // out[t, :] = table[ids[t], :]   (ids i32 [T] on this device, table any float dtype, out f32)
  virtual void embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table) = 0;
  // dtable[ids[t], :] += dout[t, :]
  virtual void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) = 0;

  // y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps) per row. x,y [rows, dim]; w [dim] any
  // float dtype; rstd [rows] f32 saved for backward (may be undefined in inference).
  virtual void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                               const Tensor& w, float eps) = 0;
  // dx += ..., dw += ... (dw may be undefined when the weight is frozen)
  virtual void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                const Tensor& x, const Tensor& w, const Tensor& rstd) = 0;

  // Rotary embedding in place, HF "rotate_half" layout over the first R = 2 * inv_freq.numel() <= D
  // channels of each head (partial rotary; the rest pass through): for i < R/2, the pair (x[i], x[i
  // + R/2]) of each head is rotated by angle positions[t] * inv_freq[i]; then both are multiplied
  // by attention_scaling (1 unless YaRN-like scalings ask otherwise). x [T, H, D] f32; positions
  // i32 [T]; inv_freq f32 [R/2].
  virtual void rope_forward(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                            float attention_scaling) = 0;
  // In-place inverse map for gradients: dx <- R^T dx * attention_scaling.
  virtual void rope_backward(const Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                             float attention_scaling) = 0;

  // Causal grouped-query attention. q, out [Tq, Hq, D]; k/v of each segment [*, Hkv, D] with
  // Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv)). lse [Tq, Hq] f32 receives the
  // log-sum-exp of the scaled scores (saved for backward; may be undefined in inference).
  // Rows of q not covered by a segment are left untouched.
  virtual void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                 std::span<const AttnSegment> segments, float scale) = 0;
  // dq += ..., and for each segment dk += ..., dv += ... (recomputes probabilities from lse).
  virtual void attention_backward(const Tensor& dq, const Tensor& dout, const Tensor& q,
                                  const Tensor& out, const Tensor& lse,
                                  std::span<const AttnSegment> segments, float scale) = 0;

  // out[r, :] = s[r] * x[r, :]   (out, x [rows, n] f32, s [rows] f32; out may alias x). With
  // embedding_forward (gather rows) and embedding_backward (scatter-add rows) it weights each
  // token's expert outputs by its router probabilities.
  virtual void scale_rows_forward(const Tensor& out, const Tensor& x, const Tensor& s) = 0;
  // dx[r, :] += s[r] * dout[r, :], ds[r] += dot(dout[r, :], x[r, :]); dx or ds may be undefined.
  virtual void scale_rows_backward(const Tensor& dx, const Tensor& ds, const Tensor& dout,
                                   const Tensor& x, const Tensor& s) = 0;

  // out = silu(gate) * up   (all [rows, n] f32)
  virtual void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) = 0;
  // dgate += dout * up * silu'(gate), dup += dout * silu(gate)
  virtual void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                               const Tensor& gate, const Tensor& up) = 0;

  // Cross-entropy over rows of logits [N, V] f32 with labels i32 [N] (-100 = ignored).
  // Writes loss[r] = logsumexp(logits[r]) - logits[r, label] = -log p(label) (0 when ignored),
  // correct[r] = 1 when argmax equals the label (0 when ignored), and, when dlogits is defined,
  // OVERWRITES dlogits[r] = (softmax(logits[r]) - onehot(label)) * s_r (zero rows when ignored),
  // with s_r = grad_scale * row_scale[r] when row_scale (f32 [N]) is defined, else grad_scale:
  // the gradient of sum_r s_r * loss[r], so per-row and per-token loss weights (and any loss whose
  // derivative by log p(label) is -s_r) need no other kernel. dlogits may alias logits.
  // loss, correct: f32 [N].
  virtual void cross_entropy(const Tensor& loss, const Tensor& correct, const Tensor& dlogits,
                             const Tensor& logits, const Tensor& labels, float grad_scale,
                             const Tensor& row_scale = Tensor()) = 0;

  // Row-wise log-softmax in place ([N, V] f32), for log-probabilities.
  virtual void log_softmax_inplace(const Tensor& x) = 0;
  // out[r] = entropy of softmax(scale * logits[r]) = logsumexp(z) - sum_i softmax(z)_i z_i with
  // z = scale * logits[r]   (logits [N, V] f32, out [N] f32, scale > 0: 1 / temperature).
  virtual void softmax_entropy(const Tensor& out, const Tensor& logits, float scale) = 0;

  // AdamW with decoupled weight decay on f32 param/grad/m/v of equal shape; step counts from 1.
  // p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)
  virtual void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                          float lr, float beta1, float beta2, float eps, float weight_decay,
                          int64_t step) = 0;

  // Inverted dropout, 0 <= p < 1 (p == 0 copies): out[i] = keep(i) ? in[i] * scale : 0.0f with
  // scale = 1.0f / (1.0f - p) in f32. The mask is a fixed function of (seed, p, i), i the flat
  // element index in the tensor (0-based), so backward recomputes it; every device gives exactly
  // this one (uint64_t arithmetic, wrapping; the steps on z are splitmix64's):
  //   key = seed * 0xd1b54a32d192ed03 + 0x2545f4914f6cdd1d
  //   z = key + (i + 1) * 0x9e3779b97f4a7c15
  //   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
  //   z = (z ^ (z >> 27)) * 0x94d049bb133111eb
  //   z = z ^ (z >> 31)
  //   keep(i) = (z >> 40) >= uint32_t(double(p) * 16777216)  (top 24 bits against p * 2^24)
  virtual void dropout_forward(const Tensor& out, const Tensor& in, float p, uint64_t seed) = 0;
  // din[i] += dout[i] * scale where keep(i), with the forward's keep and scale for this seed and p
  // (p == 0 adds dout); the product may be fused into the sum.
  virtual void dropout_backward(const Tensor& din, const Tensor& dout, float p, uint64_t seed) = 0;
  // ---- Gated DeltaNet (Qwen3.5 linear attention) kernels, f32 throughout ----
  // out_i[r, :] = in[r, off_i : off_i + n_i] with off_i = n_0 + ... + n_{i-1}: splits the columns
  // of in [R, sum n_i] into the contiguous outs [R, n_i].
  virtual void split_columns(std::span<const Tensor> outs, const Tensor& in) = 0;
  // The inverse: out[r, off_i : off_i + n_i] = ins_i[r, :] (overwrites out).
  virtual void concat_columns(const Tensor& out, std::span<const Tensor> ins) = 0;
  // out[r, j] = in[r, index[j]]   (out [R, n], in [R, m] f32, index i32 [n] of columns below m).
  // Reorders fused projections' outputs (Qwen3-Next's per-key-head in_proj_qkvz); for a
  // permutation, its gradient is the same call with the inverse permutation.
  virtual void gather_columns(const Tensor& out, const Tensor& in, const Tensor& index) = 0;
  // Causal depthwise conv then SiLU over one sequence: y[t, c] = silu(sum_j w[c, j] x'[t-K+1+j, c])
  // where x' is x [T, C] preceded by the K-1 rows of state [K-1, C] (the previous raw inputs, zeros
  // at the start); state is then advanced to the last K-1 rows of x'. w [C, K].
  virtual void causal_conv1d_silu(const Tensor& y, const Tensor& x, const Tensor& w,
                                  const Tensor& state) = 0;
  // Backward of causal_conv1d_silu from the start state `state` (as it was before the forward; not
  // modified): dx [T, C] += ..., dw [C, K] += ... (dw may be undefined). Recomputes the conv.
  virtual void causal_conv1d_silu_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                           const Tensor& x, const Tensor& w,
                                           const Tensor& state) = 0;
  // Per row of x [R, d], in place: x = x * rsqrt(sum(x^2) + eps) * scale.
  virtual void l2norm_rows(const Tensor& x, float eps, float scale) = 0;
  // Backward of y = x * rsqrt(sum(x^2) + eps) * scale per row, from the input x:
  // dx += scale * rs (dy - u (u . dy)), u = x rs, rs = rsqrt(sum(x^2) + eps).
  virtual void l2norm_rows_backward(const Tensor& dx, const Tensor& dy, const Tensor& x, float eps,
                                    float scale) = 0;
  // beta = sigmoid(b), g = -exp(A_log[h]) * softplus(a + dt_bias[h]); a, b, g, beta [T, HV].
  virtual void gdn_gates(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b,
                         const Tensor& a_log, const Tensor& dt_bias) = 0;
  // da += dg * (-exp(A_log)) * sigmoid(a + dt_bias), db += dbeta * beta (1 - beta),
  // d_dt_bias[h] += sum_t (that da), d_a_log[h] += sum_t dg * g (the last two may be undefined).
  virtual void gdn_gates_backward(const Tensor& da, const Tensor& db, const Tensor& d_a_log,
                                  const Tensor& d_dt_bias, const Tensor& dg, const Tensor& dbeta,
                                  const Tensor& a, const Tensor& b, const Tensor& a_log,
                                  const Tensor& dt_bias) = 0;
  // The gated delta rule, recurrent form (decode), over one sequence; value head j reads key head
  // j / (HV / HK). Per t: S = e^{g_t} S; S += k_t (beta_t (v_t - S^T k_t))^T; o_t = S^T q_t.
  // q, k [T, HK, dk]; v, o [T, HV, dv]; g, beta [T, HV]; state S [HV, dk, dv] in and out.
  virtual void gated_delta_rule(const Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& g, const Tensor& beta, const Tensor& state) = 0;
  // The same result by the chunked (WY) form over chunks of `chunk` tokens (prefill, training).
  virtual void gated_delta_rule_chunked(const Tensor& o, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& g, const Tensor& beta,
                                        const Tensor& state, int64_t chunk) = 0;
  // Backward of the delta rule from the start state `state0` (not modified; the per-chunk states
  // are recomputed, so the forward saves nothing but its inputs): dq, dk, dv, dg, dbeta +=, and
  // d_state0 += the start state's gradient (may be undefined). The final state gets no gradient.
  virtual void gated_delta_rule_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                         const Tensor& dg, const Tensor& dbeta,
                                         const Tensor& d_state0, const Tensor& d_o, const Tensor& q,
                                         const Tensor& k, const Tensor& v, const Tensor& g,
                                         const Tensor& beta, const Tensor& state0,
                                         int64_t chunk) = 0;
  // Gated RMSNorm, norm before gate, per row of `dim` = w.numel():
  // out = w * (o * rsqrt(mean(o^2) + eps)) * silu(z). out, o, z [R, dim]; w [dim] f32.
  virtual void gated_rmsnorm_forward(const Tensor& out, const Tensor& o, const Tensor& z,
                                     const Tensor& w, float eps) = 0;
  // d_o, dz, dw += ... (dw may be undefined). Recomputes the norm from o.
  virtual void gated_rmsnorm_backward(const Tensor& d_o, const Tensor& dz, const Tensor& dw,
                                      const Tensor& dout, const Tensor& o, const Tensor& z,
                                      const Tensor& w, float eps) = 0;
  // out = x * sigmoid(gate)   (all the same size, f32; out may alias x)
  virtual void mul_sigmoid(const Tensor& out, const Tensor& x, const Tensor& gate) = 0;
  // dx += dout * sigmoid(gate), dgate += dout * x * sigmoid(gate) (1 - sigmoid(gate)).
  virtual void mul_sigmoid_backward(const Tensor& dx, const Tensor& dgate, const Tensor& dout,
                                    const Tensor& x, const Tensor& gate) = 0;
};

// The devices this build knows: "cpu:0" (backend/cpu) and "sim:0" (backend/sim, the test device).
// SWIFTLET_VISIBLE_DEVICES selects the visible ones: a comma-separated list in the order to use
// them ("cpu:0,sim:0"; "cpu" means "cpu:0"); unset, only cpu:0 is visible, so users never meet the
// test device by accident. A name it does not know is an Error listing the known devices.
// Tests that run on sim:0 set SWIFTLET_VISIBLE_DEVICES before create() (see tests/backend/).
struct DeviceRegistry {
  static std::vector<std::string> available();  // all known device names
  static std::vector<std::string> visible();    // after the env filter (throws Error when bad)
  // A device by name. Error for unknown names (listing the known ones) and for devices that are
  // known but not visible (the hint says how to make them visible).
  static std::unique_ptr<Device> create(const std::string& name, ThreadPool& pool);
};

}  // namespace swiftlet
