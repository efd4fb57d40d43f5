#pragma once
// Attention for segments with many query rows (prefill, training) as blocks of small matrix
// products through BLAS: for a block of query rows of one head, S = scale Q K^T, P = softmax(S)
// under the causal mask, O = P V. Internal to backend/cpu; cpu_attention.cc dispatches to it.
#include <cstdint>
#include <span>

#include "backend/device.h"
#include "core/thread_pool.h"

namespace swiftlet::cpu {

// Segments with at least this many query rows go through BLAS; fewer (decode, short chunks) use
// the per-row kernels of cpu_attention.cc, which avoid the blocking overheads.
constexpr int64_t kBlasMinRows = 16;
inline bool attention_uses_blas(const AttnSegment& sg) { return sg.q_len >= kBlasMinRows; }

struct AttnDims {
  int64_t Hq = 0, Hkv = 0, D = 0;
};

// Forward for the segments where attention_uses_blas (others untouched). lse may be null.
// k/v may be f32, bf16 or f16 (converted block by block).
void attention_forward_blas(ThreadPool& pool, const AttnDims& d,
                            std::span<const AttnSegment> segments, const float* q, float* out,
                            float* lse, float scale);

// Backward for the same segments (k/v f32): dq, and each segment's dk/dv, accumulated.
void attention_backward_blas(ThreadPool& pool, const AttnDims& d,
                             std::span<const AttnSegment> segments, const float* q,
                             const float* out, const float* dout, const float* lse, float* dq,
                             float scale);

}  // namespace swiftlet::cpu
