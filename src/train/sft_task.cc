#include "train/sft_task.h"

namespace swiftlet {

TrainBatch make_train_batch(const std::vector<const TokenizedSample*>& samples) {
  TrainBatch b;
  int64_t row = 0;
  for (const TokenizedSample* s : samples) {
    const int64_t n = int64_t(s->input_ids.size());
    SWIFTLET_CHECK(n > 0 && s->labels.size() == s->input_ids.size(), "sample: {} ids, {} labels",
                   s->input_ids.size(), s->labels.size());
    std::vector<int64_t> parts = s->packed_lengths;
    if (parts.empty()) parts.push_back(n);
    int64_t at = 0;
    for (int64_t len : parts) {
      SWIFTLET_CHECK(len > 0 && at + len <= n, "packed lengths exceed the sample of {} tokens", n);
      b.samples.emplace_back(row + at, len);
      for (int64_t t = 0; t < len; ++t) {
        b.input_ids.push_back(s->input_ids[size_t(at + t)]);
        b.positions.push_back(int32_t(t));
        b.targets.push_back(t + 1 < len ? s->labels[size_t(at + t + 1)] : kIgnoreIndex);
      }
      at += len;
    }
    SWIFTLET_CHECK(at == n, "packed lengths cover {} of {} tokens", at, n);
    row += n;
  }
  return b;
}

namespace {
TrainBatch batch_of(const std::vector<TokenizedSample>& set, std::span<const size_t> idx) {
  std::vector<const TokenizedSample*> group;
  for (size_t i : idx) group.push_back(&set[i]);
  return make_train_batch(group);
}

void add_metrics(Metrics& m, const CrossEntropyObjective& ce) {
  m.add("loss", ce.loss_sum, double(ce.tokens));
  m.add("token_acc", double(ce.correct), double(ce.tokens));
}
}  // namespace

namespace {
// The targets make_train_batch gives a sample: within each packed part, labels[t + 1].
int64_t target_tokens(const TokenizedSample& s) {
  std::vector<int64_t> parts = s.packed_lengths;
  if (parts.empty()) parts.push_back(int64_t(s.labels.size()));
  int64_t n = 0, at = 0;
  for (int64_t len : parts) {
    for (int64_t t = 1; t < len; ++t) n += s.labels[size_t(at + t)] != kIgnoreIndex;
    at += len;
  }
  return n;
}
}  // namespace

void SftTask::begin_step(std::span<const std::vector<size_t>> micro_batches) {
  int64_t tokens = 0;
  for (const auto& mb : micro_batches)
    for (size_t i : mb) tokens += target_tokens(train_[i]);
  grad_scale_ = 1.0f / float(std::max<int64_t>(1, tokens));  // mean over the step's tokens
}

int64_t SftTask::train_micro(Transformer& model, ModelGrads& grads, std::span<const size_t> samples,
                             const TrainStepOptions& opt, Metrics& metrics) {
  const TrainBatch batch = batch_of(train_, samples);
  CrossEntropyObjective ce(grad_scale_);
  // The load-balancing loss of each micro-batch weighs as its share of the step's target tokens,
  // so one micro-batch per step gives HF's loss = CE + coef * aux exactly.
  TrainStepOptions o = opt;
  int64_t targets = 0;
  for (int32_t t : batch.targets) targets += t != kIgnoreIndex;
  o.router_aux_weight = opt.router_aux_weight * float(targets) * grad_scale_;
  model.train_step(batch, grads, o, ce);
  add_metrics(metrics, ce);
  if (opt.router_aux_weight > 0) metrics.add("aux_loss", model.router_aux_loss(), 1.0);
  return int64_t(batch.input_ids.size());
}

Metrics SftTask::evaluate(Transformer& model, int64_t batch_size) {
  Metrics m;
  for (size_t i = 0; i < val_.size(); i += size_t(batch_size)) {
    std::vector<size_t> idx;
    for (size_t j = i; j < std::min(val_.size(), i + size_t(batch_size)); ++j) idx.push_back(j);
    CrossEntropyObjective ce;
    model.evaluate(batch_of(val_, idx), ce);
    add_metrics(m, ce);
  }
  return m;
}

}  // namespace swiftlet
