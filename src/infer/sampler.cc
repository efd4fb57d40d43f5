#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace swiftlet {

void apply_penalties(std::span<float> logits, const SamplingParams& p, const TokenHistory& h) {
  const int64_t V = int64_t(logits.size());
  if (p.repetition_penalty != 1.0) {
    const float rp = float(p.repetition_penalty);
    auto penalise = [&](int32_t t) {
      if (t < 0 || t >= V) return;
      float& l = logits[size_t(t)];
      l = l > 0 ? l / rp : l * rp;
    };
    for (const auto& [t, n] : h.prompt_counts) penalise(t);
    for (const auto& [t, n] : h.generated_counts)
      if (!h.prompt_counts.count(t)) penalise(t);
  }
  if (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
    for (const auto& [t, n] : h.generated_counts) {
      if (t < 0 || t >= V) continue;
      logits[size_t(t)] -= float(p.presence_penalty + p.frequency_penalty * n);
    }
  }
}

void log_softmax(std::span<const float> logits, std::span<float> out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float l : logits) mx = std::max(mx, l);
  double sum = 0;
  for (float l : logits) sum += std::exp(double(l - mx));
  const float lse = mx + float(std::log(sum));
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
}

std::vector<std::pair<int32_t, float>> top_entries(std::span<const float> row, int k) {
  k = std::min<int>(k, int(row.size()));
  std::vector<int32_t> idx(row.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)] || (row[size_t(a)] == row[size_t(b)] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  std::vector<std::pair<int32_t, float>> out;
  for (int i = 0; i < k; ++i) out.emplace_back(idx[size_t(i)], row[size_t(idx[size_t(i)])]);
  return out;
}

int32_t sample_token(std::span<float> logits, const SamplingParams& p, Rng& rng) {
  const size_t V = logits.size();
  if (p.temperature <= 0.0) {
    size_t best = 0;
    for (size_t i = 1; i < V; ++i)
      if (logits[i] > logits[best]) best = i;
    return int32_t(best);
  }
  const float inv_t = float(1.0 / p.temperature);
  for (auto& l : logits) l *= inv_t;
  // Candidates sorted by logit (descending), cut by top-k, then by top-p / min-p mass.
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  size_t keep = V;
  if (p.top_k > 0 && size_t(p.top_k) < V) keep = size_t(p.top_k);
  auto better = [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + long(keep), idx.end(), better);
  idx.resize(keep);
  const float mx = logits[size_t(idx[0])];
  std::vector<double> prob(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += prob[i] = std::exp(double(logits[size_t(idx[i])] - mx));
  for (auto& q : prob) q /= sum;
  size_t cut = keep;
  if (p.top_p < 1.0) {
    // HF keeps the smallest prefix whose mass reaches top_p (at least one token).
    double acc = 0;
    for (size_t i = 0; i < keep; ++i) {
      acc += prob[i];
      if (acc >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0) {
    const double floor = p.min_p * prob[0];
    size_t n = 1;
    while (n < cut && prob[n] >= floor) ++n;
    cut = n;
  }
  double total = 0;
  for (size_t i = 0; i < cut; ++i) total += prob[i];
  double r = rng.uniform() * total;
  for (size_t i = 0; i < cut; ++i) {
    r -= prob[i];
    if (r < 0) return idx[i];
  }
  return idx[cut - 1];
}

}  // namespace swiftlet
