#include "rlhf/ppo_objective.h"

#include "core/error.h"
#include "rlhf/rollout.h"
#include "rlhf/value_model.h"

namespace swiftlet::rlhf {

PpoPolicyObjective::PpoPolicyObjective(const PpoConfig& cfg, const TrainBatch& b,
                                       std::vector<PpoPolicyTarget> targets, float temperature,
                                       float grad_scale)
    : cfg_(cfg), t_(temperature), scale_(grad_scale), targets_(std::move(targets)) {
  const auto rows = target_rows(b);
  SWIFTLET_CHECK(rows.size() == targets_.size(), "{} samples for {} responses", rows.size(),
                 targets_.size());
  seq_.assign(b.input_ids.size(), -1);
  pos_.assign(b.input_ids.size(), -1);
  for (size_t i = 0; i < rows.size(); ++i) {
    SWIFTLET_CHECK(targets_[i].old_logps->size() == rows[i].size() &&
                       targets_[i].advantages->size() >= rows[i].size(),
                   "response {}: {} tokens, {} old log-probs, {} advantages", i, rows[i].size(),
                   targets_[i].old_logps->size(), targets_[i].advantages->size());
    tokens += double(rows[i].size());
    for (size_t k = 0; k < rows[i].size(); ++k) {
      seq_[size_t(rows[i][k])] = int64_t(i);
      pos_[size_t(rows[i][k])] = int64_t(k);
    }
  }
}

void PpoPolicyObjective::chunk(const HeadChunk& c, std::span<float> dlogp) {
  if (c.logits.defined()) {
    Device& dev = *c.logits.device();
    Tensor h = dev.empty({c.rows()}, DType::kF32);
    dev.softmax_entropy(h, c.logits, 1.0f);  // the chunk's logits are already over temperature()
    const Tensor host = dev.download(h);
    for (int64_t k = 0; k < c.rows(); ++k) entropy_sum += host.data<float>()[k];
  }
  for (int64_t k = 0; k < c.rows(); ++k) {
    const size_t row = size_t(c.begin + k);
    const int64_t i = seq_[row];
    SWIFTLET_CHECK(i >= 0, "row {} of a PPO batch belongs to no response", row);
    const size_t t = size_t(pos_[row]);
    const PpoPolicyTarget& g = targets_[size_t(i)];
    const double x = c.logprobs[size_t(k)], o = (*g.old_logps)[t];
    const PpoPolicyToken tok = ppo_policy_token(cfg_, x, o, (*g.advantages)[t]);
    loss += tok.loss / tokens;
    clipped += tok.clipped;
    ratio_sum += tok.ratio;
    approxkl_sum += 0.5 * (x - o) * (x - o);
    if (!dlogp.empty()) dlogp[size_t(k)] = float(scale_ * tok.dlogp / tokens);
  }
}

PpoValueObjective::PpoValueObjective(const PpoConfig& cfg, const TrainBatch& b, const Tensor& score,
                                     const Tensor& dscore, std::vector<PpoValueTarget> targets,
                                     float grad_scale)
    : cfg_(cfg),
      batch_(b),
      score_(score),
      dscore_(dscore),
      targets_(std::move(targets)),
      scale_(grad_scale) {
  SWIFTLET_CHECK(targets_.empty() || targets_.size() == b.samples.size(),
                 "{} value targets for {} samples", targets_.size(), b.samples.size());
  for (const auto& t : targets_) positions += double(t.positions);
}

void PpoValueObjective::hidden_states(const Tensor& h, const Tensor& dh) {
  Device& dev = *h.device();
  const auto rows = value_rows(batch_);
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const int64_t n = int64_t(flat.size()), H = h.dim(1);
  Tensor hv = dev.empty({n, H}, DType::kF32);
  for (int64_t i = 0; i < n; ++i)
    dev.copy(hv.slice(i, i + 1), h.slice(flat[size_t(i)], flat[size_t(i)] + 1));
  Tensor v = dev.empty({n, 1}, DType::kF32);
  dev.gemm(hv, false, score_, true, v);  // v = h score^T
  const Tensor host = dev.download(v);
  values.clear();
  size_t k = 0;
  for (const auto& r : rows) {
    std::vector<double> vs;
    for (size_t j = 0; j < r.size(); ++j) vs.push_back(host.data<float>()[k++]);
    values.push_back(std::move(vs));
  }
  if (targets_.empty()) return;
  Tensor dv = Tensor::host({n, 1}, DType::kF32);
  k = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const PpoValueTarget& t = targets_[i];
    SWIFTLET_CHECK(int64_t(rows[i].size()) >= t.positions, "response {}: {} value rows for {}", i,
                   rows[i].size(), t.positions);
    for (size_t j = 0; j < rows[i].size(); ++j, ++k) {
      dv.data<float>()[k] = 0.0f;
      if (int64_t(j) >= t.positions) continue;
      const PpoValueToken tok =
          ppo_value_token(cfg_, values[i][j], (*t.old_values)[j], (*t.returns)[j]);
      loss += tok.loss / positions;
      clipped += tok.clipped;
      dv.data<float>()[k] = float(scale_ * cfg_.vf_coef * tok.dvalue / positions);
    }
  }
  if (!dh.defined()) return;
  Tensor ddv = dev.upload(dv);
  if (dscore_.defined()) dev.gemm(ddv, true, hv, false, dscore_, 1.0f, 1.0f);  // dW += dv^T h
  Tensor dhv = dev.empty({n, H}, DType::kF32);
  dev.gemm(ddv, false, score_, false, dhv);  // dh = dv W
  for (int64_t i = 0; i < n; ++i)
    dev.add_inplace(dh.slice(flat[size_t(i)], flat[size_t(i)] + 1), dhv.slice(i, i + 1));
}

}  // namespace swiftlet::rlhf
