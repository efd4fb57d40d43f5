#pragma once
// A tokenized training sample as the trainer consumes it.
#include <cstdint>
#include <vector>

namespace swiftlet {

inline constexpr int32_t kIgnoreIndex = -100;

struct TokenizedSample {
  std::vector<int32_t> input_ids;
  // Aligned with input_ids (Hugging Face convention: labels[t] is the token at t, -100 where no
  // loss); the trainer shifts them so position t predicts labels[t + 1].
  std::vector<int32_t> labels;
  // --packing: lengths of the original samples packed into this one (they attend only within
  // themselves and their positions restart). Empty: a single sample.
  std::vector<int64_t> packed_lengths;
};

}  // namespace swiftlet
