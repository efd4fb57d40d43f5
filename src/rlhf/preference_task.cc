#include "rlhf/preference_task.h"

#include <cmath>

#include "core/log.h"
#include "core/rng.h"
#include "train/sft_task.h"

namespace swiftlet::rlhf {

namespace {

// The label-token log-probs of sequence `s` of a packed batch, in token order.
std::vector<double> sequence_logps(const TrainBatch& b, size_t s, const std::vector<float>& logp) {
  std::vector<double> out;
  const auto [first, len] = b.samples[s];
  for (int64_t r = first; r < first + len; ++r)
    if (b.targets[size_t(r)] >= 0) out.push_back(logp[size_t(r)]);
  return out;
}

// Writes per-token gradients of sequence `s` back to its rows (scaled).
void scatter(const TrainBatch& b, size_t s, const std::vector<double>& d, float scale,
             std::span<float> dlogp) {
  const auto [first, len] = b.samples[s];
  size_t k = 0;
  for (int64_t r = first; r < first + len; ++r)
    if (b.targets[size_t(r)] >= 0) dlogp[size_t(r)] = float(scale * d.at(k++));
  SWIFTLET_CHECK(k == d.size(), "scatter: {} label tokens, {} gradients", k, d.size());
}

// A sequence-level loss over the whole batch: every row's log-prob first, then `loss_fn` turns
// the sequences' log-probs into the loss, its per-token gradients and metrics.
class SequenceObjective : public LogprobCollector {
 public:
  using LossFn = std::function<PairLossResult(const std::vector<std::vector<double>>& policy)>;
  SequenceObjective(const TrainBatch& b, float grad_scale, LossFn fn)
      : LogprobCollector(int64_t(b.input_ids.size())),
        logit_mean(b.input_ids.size(), 0.0f),
        batch_(b),
        scale_(grad_scale),
        fn_(std::move(fn)) {}
  bool whole_batch() const override { return true; }
  bool wants_logits() const override { return true; }
  void chunk(const HeadChunk& c, std::span<float> dlogp) override {
    LogprobCollector::chunk(c, dlogp);
    // Each row's mean logit over the vocabulary: logits [n, V] times a column of 1/V.
    Device& dev = *c.logits.device();
    const int64_t V = c.logits.dim(1);
    if (!inv_v_.defined()) {
      Tensor h = Tensor::host({1, V}, DType::kF32);
      std::fill_n(h.data<float>(), V, 1.0f / float(V));
      inv_v_ = dev.upload(h);
    }
    Tensor mean = dev.empty({c.rows(), 1}, DType::kF32);
    dev.gemm(c.logits, false, inv_v_, true, mean);
    const Tensor host = dev.download(mean);
    for (int64_t i = 0; i < c.rows(); ++i) logit_mean[size_t(c.begin + i)] = host.data<float>()[i];
  }
  // Sum of the rows' mean logits over the label tokens of sequences [from, to), and their count.
  std::pair<double, double> logit_sum(size_t from, size_t to) const {
    double sum = 0, count = 0;
    for (size_t s = from; s < to; ++s) {
      const auto [first, len] = batch_.samples[s];
      for (int64_t r = first; r < first + len; ++r)
        if (batch_.targets[size_t(r)] >= 0) {
          sum += logit_mean[size_t(r)];
          ++count;
        }
    }
    return {sum, count};
  }
  void batch_grad(std::span<float> dlogp) override {
    result = compute();
    for (size_t s = 0; s < batch_.samples.size(); ++s) scatter(batch_, s, grads_[s], scale_, dlogp);
  }
  // After an evaluation pass (no batch_grad): the loss and metrics of what chunk() saw.
  PairLossResult compute() {
    std::vector<std::vector<double>> policy;
    for (size_t s = 0; s < batch_.samples.size(); ++s)
      policy.push_back(sequence_logps(batch_, s, logp));
    PairLossResult r = fn_(policy);
    grads_.clear();
    for (auto& d : r.d_chosen) grads_.push_back(d);
    for (auto& d : r.d_rejected) grads_.push_back(d);
    return r;
  }
  PairLossResult result;
  std::vector<float> logit_mean;  // per row: its logits' mean over the vocabulary

 private:
  const TrainBatch& batch_;
  float scale_;
  LossFn fn_;
  Tensor inv_v_;  // [1, V] of 1/V on the device
  std::vector<std::vector<double>> grads_;
};

// The reward model's objective: r_i = score . h[last token of sequence i], on the final hidden
// states (no LM head); chosen sequences first, then rejected. The score head is read through its
// slot when the head runs (a sharded model gathers it only then); dscore may be null.
class RewardObjective : public Objective {
 public:
  RewardObjective(const TrainBatch& b, const Tensor* score, const Tensor* dscore, float grad_scale,
                  const PreferenceConfig& cfg, std::vector<double> margins)
      : batch_(b),
        score_(score),
        dscore_(dscore),
        scale_(grad_scale),
        cfg_(cfg),
        margins_(std::move(margins)) {}
  bool uses_lm_head() const override { return false; }
  void chunk(const HeadChunk&, std::span<float>) override {}
  void hidden_states(const Tensor& h, const Tensor& dh) override {
    Device& dev = *h.device();
    const int64_t n = int64_t(batch_.samples.size()), H = h.dim(1);
    Tensor last = dev.empty({n, H}, DType::kF32);
    for (int64_t i = 0; i < n; ++i) {
      const auto [first, len] = batch_.samples[size_t(i)];
      dev.copy(last.slice(i, i + 1), h.slice(first + len - 1, first + len));
    }
    Tensor r = dev.empty({n, 1}, DType::kF32);
    dev.gemm(last, false, *score_, true, r);  // r = h_last score^T
    Tensor hr = dev.download(r);
    const int64_t pairs = n / 2;
    std::vector<double> rc, rr;
    for (int64_t i = 0; i < pairs; ++i) {
      rc.push_back(hr.data<float>()[i]);
      rr.push_back(hr.data<float>()[pairs + i]);
    }
    result = reward_loss(cfg_, rc, rr, margins_);
    if (!dh.defined()) return;
    Tensor dr = Tensor::host({n, 1}, DType::kF32);
    for (int64_t i = 0; i < pairs; ++i) {
      dr.data<float>()[i] = float(scale_ * result.d_chosen[size_t(i)]);
      dr.data<float>()[pairs + i] = float(scale_ * result.d_rejected[size_t(i)]);
    }
    Tensor ddr = dev.upload(dr);
    if (dscore_ && dscore_->defined()) dev.gemm(ddr, true, last, false, *dscore_, 1.0f, 1.0f);  // dW += dr^T h
    Tensor dlast = dev.empty({n, H}, DType::kF32);
    dev.gemm(ddr, false, *score_, false, dlast);  // dh_last = dr W
    for (int64_t i = 0; i < n; ++i) {
      const auto [first, len] = batch_.samples[size_t(i)];
      dev.add_inplace(dh.slice(first + len - 1, first + len), dlast.slice(i, i + 1));
    }
  }
  RewardLossResult result;

 private:
  const TrainBatch& batch_;
  const Tensor* score_;
  const Tensor* dscore_;
  float scale_;
  const PreferenceConfig& cfg_;
  std::vector<double> margins_;
};

void add_metrics(Metrics& m, double loss, const std::map<std::string, double>& metrics) {
  m.add("loss", loss, 1.0);
  for (const auto& [k, v] : metrics) m.add(k, v, 1.0);
}

// logits/chosen and logits/rejected: the mean over the label tokens of each token's mean logit
// over the vocabulary (TRL's DPO definition), token-weighted over the logging window. TRL's CPO
// and ORPO average the whole logits tensor (prompt and padding included) and its KTO sums over
// tokens and vocabulary; the one per-token definition is used for every type instead, so the
// values are comparable across types and independent of padding.
void add_logit_metrics(Metrics& m, const SequenceObjective& obj, size_t n, size_t end) {
  const auto [cs, cc] = obj.logit_sum(0, n);
  const auto [rs, rc] = obj.logit_sum(n, end);
  if (cc > 0) m.add("logits/chosen", cs, cc);
  if (rc > 0) m.add("logits/rejected", rs, rc);
}

bool has_reference(const PreferenceConfig& c) {
  return c.type == RlhfType::kDpo || c.type == RlhfType::kKto;
}

}  // namespace

PreferenceTask::PreferenceTask(PreferenceTaskArgs args, std::vector<PreferenceSample> train,
                               std::vector<PreferenceSample> val)
    : args_(std::move(args)), train_(std::move(train)), val_(std::move(val)) {}

PreferenceTask::~PreferenceTask() = default;

void make_reward_model(ModelFolder& folder, uint64_t seed) {
  if (folder.config.seq_cls()) {
    if (folder.config.num_labels != 1)
      throw Error(fmt::format("{} is a classifier with {} labels; a reward model has one",
                              folder.path, folder.config.num_labels));
    return;
  }
  folder.config = as_sequence_classifier(folder.config, 1);
  const int64_t H = folder.config.hidden_size;
  Tensor w = Tensor::host({1, H}, DType::kF32);
  Rng rng(seed ^ 0x5c07e5c07eull);
  for (int64_t i = 0; i < H; ++i)
    w.data<float>()[i] = float(folder.config.initializer_range * rng.normal());
  folder.weights["score.weight"] = w;
  folder.weights.erase("lm_head.weight");
}

void PreferenceTask::prepare_model(ModelFolder& folder) {
  if (args_.loss.type == RlhfType::kRm) make_reward_model(folder, args_.seed);
}

void PreferenceTask::attach(const TrainSetup& s) {
  if (!has_reference(args_.loss)) return;
  ref_ = std::make_unique<ReferenceModel>(s, args_.ref_model, args_.ref_adapters);
}

void PreferenceTask::begin_step(std::span<const std::vector<size_t>> micro_batches) {
  // Each micro-batch's loss is a mean over its pairs; the step averages its micro-batches.
  grad_scale_ = 1.0f / float(std::max<size_t>(1, micro_batches.size()));
}

int64_t PreferenceTask::run(Transformer& model, ModelGrads* grads,
                            const std::vector<const PreferenceSample*>& rows,
                            const TrainStepOptions& opt, float grad_scale, Metrics& metrics) {
  const PreferenceConfig& cfg = args_.loss;
  const size_t n = rows.size();
  std::vector<const TokenizedSample*> seqs;
  for (const auto* r : rows) seqs.push_back(&r->chosen);
  if (cfg.type != RlhfType::kKto)
    for (const auto* r : rows) seqs.push_back(&r->rejected);
  const TrainBatch batch = make_train_batch(seqs);
  auto step = [&](Objective& obj) {
    if (grads)
      model.train_step(batch, *grads, opt, obj);
    else
      model.evaluate(batch, obj);
  };

  if (cfg.type == RlhfType::kRm) {
    std::vector<double> margins;
    for (const auto* r : rows) margins.push_back(r->margin.value_or(0.0));
    RewardObjective obj(batch, &model.weights().score, grads ? &grads->score : nullptr, grad_scale,
                        cfg, margins);
    step(obj);
    add_metrics(metrics, obj.result.loss, obj.result.metrics);
    return int64_t(batch.input_ids.size());
  }

  std::vector<float> ref_lp;
  if (ref_) ref_lp = ref_->logprobs(model, batch);
  auto reference = [&](const TrainBatch& b, const std::vector<float>& lp, size_t s) {
    return lp.empty() ? std::vector<double>() : sequence_logps(b, s, lp);
  };

  if (cfg.type == RlhfType::kKto) {
    // The mismatched completions (x, y'): policy log-probs without gradient, and the reference's.
    std::vector<const TokenizedSample*> kl_seqs;
    for (const auto* r : rows) kl_seqs.push_back(&r->rejected);
    const bool need_kl = cfg.has(LossType::kKto);
    std::vector<SequenceLogps> kl(n);
    if (need_kl) {
      const TrainBatch kl_batch = make_train_batch(kl_seqs);
      LogprobCollector policy_kl(int64_t(kl_batch.input_ids.size()));
      model.evaluate(kl_batch, policy_kl);
      const std::vector<float> ref_kl =
          ref_ ? ref_->logprobs(model, kl_batch) : std::vector<float>();
      for (size_t i = 0; i < n; ++i)
        kl[i] = {sequence_logps(kl_batch, i, policy_kl.logp), reference(kl_batch, ref_kl, i)};
    }
    std::map<std::string, double> kto_metrics;
    auto fn = [&](const std::vector<std::vector<double>>& policy) {
      std::vector<KtoExample> examples(n);
      for (size_t i = 0; i < n; ++i)
        examples[i] = {
            {policy[i], reference(batch, ref_lp, i)}, kl[i], rows[i]->label.value_or(true), {}};
      KtoLossResult k = kto_loss(cfg, examples);
      kto_metrics = k.metrics;
      PairLossResult r;
      r.loss = k.loss;
      r.d_chosen = k.d_policy;
      return r;
    };
    SequenceObjective obj(batch, grad_scale, fn);
    step(obj);
    if (!grads) obj.result = obj.compute();
    metrics.add("loss", obj.result.loss, 1.0);
    // TRL's KTO metrics: sums and counts over the logging window, then their ratios.
    metrics.add("kl", kto_metrics.count("kl") ? kto_metrics["kl"] : 0.0, 1.0);
    for (const char* side : {"chosen", "rejected"}) {
      const std::string count = std::string("count/") + side;
      if (!kto_metrics.count(count)) continue;
      for (const char* what : {"rewards/", "logps/"})
        metrics.add(std::string(what) + side, kto_metrics[std::string(what) + side + "_sum"],
                    kto_metrics[count]);
    }
    metrics.add_difference("rewards/margins", "rewards/chosen", "rewards/rejected");
    // Desirable rows are the "chosen" side, undesirable the "rejected" one.
    std::vector<size_t> side[2];
    for (size_t i = 0; i < n; ++i) side[rows[i]->label.value_or(true) ? 0 : 1].push_back(i);
    for (int k = 0; k < 2; ++k) {
      double sum = 0, count = 0;
      for (size_t i : side[k]) {
        const auto [si, ci] = obj.logit_sum(i, i + 1);
        sum += si;
        count += ci;
      }
      if (count > 0) metrics.add(k == 0 ? "logits/chosen" : "logits/rejected", sum, count);
    }
    return int64_t(batch.input_ids.size());
  }

  auto fn = [&](const std::vector<std::vector<double>>& policy) {
    std::vector<SequenceLogps> chosen, rejected;
    for (size_t i = 0; i < n; ++i) {
      chosen.push_back({policy[i], reference(batch, ref_lp, i)});
      rejected.push_back({policy[n + i], reference(batch, ref_lp, n + i)});
    }
    return pair_loss(cfg, chosen, rejected, pair_state_);
  };
  SequenceObjective obj(batch, grad_scale, fn);
  step(obj);
  if (!grads) obj.result = obj.compute();
  add_metrics(metrics, obj.result.loss, obj.result.metrics);
  add_logit_metrics(metrics, obj, n, 2 * n);
  return int64_t(batch.input_ids.size());
}

int64_t PreferenceTask::train_micro(Transformer& model, ModelGrads& grads,
                                    std::span<const size_t> samples, const TrainStepOptions& opt,
                                    Metrics& metrics) {
  std::vector<const PreferenceSample*> rows;
  for (size_t i : samples) rows.push_back(&train_[i]);
  TrainStepOptions o = opt;
  o.lora_dropout = 0.0f;  // TRL disables dropout for the offline preference trainers
  o.router_aux_weight = opt.router_aux_weight * grad_scale_;  // mean over the micro-batches
  return run(model, &grads, rows, o, grad_scale_, metrics);
}

nlohmann::json PreferenceTask::state() const {
  if (!args_.loss.has(LossType::kBcoPair)) return nullptr;
  return {{"pair_loss", pair_state_.to_json()}};
}

void PreferenceTask::restore(const nlohmann::json& state) {
  if (state.contains("pair_loss")) pair_state_ = PairLossState::from_json(state["pair_loss"]);
}

Metrics PreferenceTask::evaluate(Transformer& model, int64_t batch_size) {
  Metrics m;
  TrainStepOptions opt;
  const PairLossState training = pair_state_;  // evaluation does not move bco_pair's running mean
  for (size_t i = 0; i < val_.size(); i += size_t(batch_size)) {
    std::vector<const PreferenceSample*> rows;
    for (size_t j = i; j < std::min(val_.size(), i + size_t(batch_size)); ++j)
      rows.push_back(&val_[j]);
    run(model, nullptr, rows, opt, 1.0f, m);
  }
  pair_state_ = training;
  return m;
}

}  // namespace swiftlet::rlhf
