#pragma once
// The gated delta rule of Qwen3.5's linear-attention layers, for one sequence, in its two forms:
// the recurrent one (decode, one token at a time) and the chunked WY form (prefill, training).
// Per value head h (key head h / (HV / HK)), with state S [dk, dv]:
//   S = exp(g_t) S;  delta = beta_t (v_t - S^T k_t);  S += k_t delta^T;  o_t = S^T q_t
// q is expected l2-normalised and scaled by dk^-0.5, k l2-normalised. Internal to backend/cpu.
#include <cstdint>

namespace swiftlet::cpu {

struct GatedDeltaDims {
  int64_t T = 0;           // tokens
  int64_t HK = 0, HV = 0;  // key heads, value heads (HV a multiple of HK)
  int64_t dk = 0, dv = 0;  // head dims
  // Value heads computed: [h_begin, h_end) (h_end < 0: all); other heads' outputs are untouched,
  // so threads may split the heads between them.
  int64_t h_begin = 0, h_end = -1;
  int64_t head_end() const { return h_end < 0 ? HV : h_end; }
};

// q, k [T, HK, dk]; v [T, HV, dv]; g, beta [T, HV]; state [HV, dk, dv] read as the start state
// and overwritten with the end state; o [T, HV, dv].
void gated_delta_rule_recurrent(const GatedDeltaDims& d, const float* q, const float* k,
                                const float* v, const float* g, const float* beta, float* state,
                                float* o);

// The same result through chunks of `chunk` tokens (the last may be shorter): for a chunk with
// in-chunk cumulative decay G and start state S0, M = I + strict_lower(diag(beta) K K^T * Gamma),
// U = M^-1 diag(beta) V, W = M^-1 diag(beta e^G) K, Delta = U - W S0,
// O = diag(e^G) Q S0 + (Q K^T * Gamma) Delta, S_end = e^{G_L} S0 + (diag(e^{G_L - G}) K)^T Delta,
// Gamma_ij = exp(G_i - G_j) for i >= j (never exponentiating a positive difference).
void gated_delta_rule_chunked(const GatedDeltaDims& d, int64_t chunk, const float* q,
                              const float* k, const float* v, const float* g, const float* beta,
                              float* state, float* o);

// Backward of gated_delta_rule_chunked (the chunked form's backward: recompute each chunk's start
// state forward, then walk the chunks in reverse carrying dS, the gradient of the chunk's end
// state). Inputs as the forward with `state0` the start state (not modified); d_o [T, HV, dv];
// d_state_end [HV, dk, dv] or null (zero). Gradients are accumulated (+=): dq, dk [T, HK, dk] (the
// r value heads of a key head summed), dv [T, HV, dv], dg, dbeta [T, HV], d_state0 [HV, dk, dv].
void gated_delta_rule_chunked_backward(const GatedDeltaDims& d, int64_t chunk, const float* q,
                                       const float* k, const float* v, const float* g,
                                       const float* beta, const float* state0, const float* d_o,
                                       const float* d_state_end, float* dq, float* dk, float* dv,
                                       float* dg, float* dbeta, float* d_state0);

}  // namespace swiftlet::cpu
