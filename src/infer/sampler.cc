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
  float mx;
  double sum = 0;
  if (keep < V) {
    std::partial_sort(idx.begin(), idx.begin() + long(keep), idx.end(), better);
    idx.resize(keep);
    mx = logits[size_t(idx[0])];
    for (size_t i = 0; i < keep; ++i) sum += std::exp(double(logits[size_t(idx[i])] - mx));
  } else {
    // No top-k: the normaliser takes one pass, and only the prefix that the top-p / min-p cuts
    // can reach gets sorted (sorting a 150k vocabulary costs more than a small model's step).
    mx = *std::max_element(logits.begin(), logits.end());
    for (float l : logits) sum += std::exp(double(l - mx));
    if (p.top_p >= 1.0 && p.min_p <= 0.0) {  // the whole distribution: draw in id order
      double r = rng.uniform() * sum;
      size_t last = 0;
      for (size_t i = 0; i < V; ++i) {
        const double q = std::exp(double(logits[i] - mx));
        if (q > 0) last = i;
        r -= q;
        if (r < 0) return int32_t(i);
      }
      return int32_t(last);
    }
    size_t above_min_p = V;  // tokens with p >= min_p * p_max, i.e. exp(l - mx) >= min_p
    if (p.min_p > 0.0) {
      above_min_p = 0;
      for (float l : logits) above_min_p += std::exp(double(l - mx)) >= p.min_p;
    }
    size_t m = std::min<size_t>(V, 256);
    for (;;) {
      if (m == V) {
        std::sort(idx.begin(), idx.end(), better);
        break;
      }
      std::partial_sort(idx.begin(), idx.begin() + long(m), idx.end(), better);
      if (m >= above_min_p) break;
      double acc = 0;
      for (size_t i = 0; i < m; ++i) acc += std::exp(double(logits[size_t(idx[i])] - mx)) / sum;
      if (p.top_p < 1.0 && acc >= p.top_p) break;
      m = m * 16 >= V / 4 ? V : m * 16;  // a flat distribution: sort it all at once
    }
    idx.resize(m);
    keep = m;
  }
  std::vector<double> prob(keep);
  for (size_t i = 0; i < keep; ++i) prob[i] = std::exp(double(logits[size_t(idx[i])] - mx)) / sum;
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
