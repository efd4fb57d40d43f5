#pragma once
// --packing and --group_by_length: samples joined into longer TokenizedSamples whose
// packed_lengths keep them apart (each attends only to itself, positions restart: the trainer's
// make_train_batch handles both).
#include <cstdint>
#include <vector>

#include "data/sample.h"

namespace swiftlet {

// One sample made of several, in order: ids and labels concatenated, packed_lengths listing the
// parts (a part that is itself packed contributes its own parts).
TokenizedSample join_samples(const std::vector<const TokenizedSample*>& parts);

// --packing: best-fit decreasing bin packing into sequences of at most `capacity` tokens (every
// sample must fit). Ties keep the input order; the sequences come out in a seeded random order.
std::vector<TokenizedSample> pack_samples(const std::vector<TokenizedSample>& samples,
                                          int64_t capacity, uint64_t seed);

// --group_by_length, as transformers' LengthGroupedSampler: a seeded permutation cut into
// mega-batches of 50 x batch_size samples, each sorted by length (longest first) and cut into
// micro-batches of batch_size; each micro-batch becomes one joined sample (the trainer then takes
// one such sample a micro-batch and shuffles whole micro-batches between epochs).
std::vector<TokenizedSample> group_by_length(const std::vector<TokenizedSample>& samples,
                                             int64_t batch_size, uint64_t seed);

}  // namespace swiftlet
