#include "rlhf/ppo_task.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/log.h"
#include "core/rng.h"
#include "infer/runtime.h"
#include "io/file.h"
#include "rlhf/ppo_objective.h"
#include "template/chat_template.h"

namespace swiftlet::rlhf {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<size_t> permutation(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  Rng rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

const char* kRolloutsFile = "ppo_rollouts.json";

json rollout_json(const PpoTask::Rollout& r) {
  return {{"prompt", r.prompt},
          {"completion", r.completion},
          {"text", r.text},
          {"truncated", r.truncated},
          {"logps", r.response.logps},
          {"ref_logps", r.response.ref_logps},
          {"values", r.response.values},
          {"score", r.response.score}};
}

PpoTask::Rollout rollout_of(const json& x) {
  PpoTask::Rollout r;
  r.prompt = x.at("prompt").get<size_t>();
  r.completion = x.at("completion").get<std::vector<int32_t>>();
  r.text = x.at("text").get<std::string>();
  r.truncated = x.at("truncated").get<bool>();
  r.response.logps = x.at("logps").get<std::vector<double>>();
  r.response.ref_logps = x.at("ref_logps").get<std::vector<double>>();
  r.response.values = x.at("values").get<std::vector<double>>();
  r.response.score = x.at("score").get<double>();
  return r;
}

}  // namespace

PpoTask::PpoTask(PpoArgs args, PromptBundle data, Tokenizer tokenizer)
    : args_(std::move(args)), data_(std::move(data)), tok_(std::move(tokenizer)) {
  const int64_t B = args_.rollout_batch();
  if (int64_t(data_.train.size()) < B)
    throw Error(fmt::format("{} training prompts are fewer than the {} prompts of one rollout "
                            "batch (batch size {} x accumulation {} x {} rank{})",
                            data_.train.size(), B, args_.per_device_train_batch_size,
                            args_.gradient_accumulation_steps, args_.ranks(),
                            args_.ranks() == 1 ? "" : "s"),
                "add prompts, or lower --per_device_train_batch_size or "
                "--gradient_accumulation_steps");
  reward_ = std::make_unique<RewardModelReward>(args_.reward_model);
  sampling_.max_completion_length = args_.max_completion_length;
  sampling_.sampling = args_.sampling;
}

PpoTask::~PpoTask() = default;

size_t PpoTask::train_size() const {
  const size_t B = size_t(args_.rollout_batch());
  return data_.train.size() / B * B * size_t(args_.num_ppo_epochs);
}

void PpoTask::attach(const TrainSetup& s) {
  adapter_ = s.adapter;
  model_ = &s.model;
  sampling_.stop_token_ids =
      generation_stop_ids(s.folder, tok_, ChatTemplate::by_name(data_.template_name));
  reward_->bind(s.device);
  critic_ =
      std::make_unique<ValueModel>(s.device, args_.reward_model, s.base_dtype,
                                   args_.lora ? &args_.lora_config : nullptr, args_.seed, s.resume);
  if (critic_->config().vocab_size != s.folder.config.vocab_size)
    throw Error(
        fmt::format("--reward_model {} has a vocabulary of {} tokens, the model {}",
                    args_.reward_model, critic_->config().vocab_size, s.folder.config.vocab_size),
        "the value model reads the policy's tokens: use a reward model trained from the "
        "same tokenizer");
  ref_ = std::make_unique<ReferenceModel>(s, args_.ref_model, "");
  if (!s.resume.empty()) load_rollouts(s.resume);
}

// Prompts of update u: consecutive slices of a per-epoch seeded permutation.
std::vector<size_t> PpoTask::prompts_of(int64_t u) const {
  const size_t n = data_.train.size(), B = size_t(args_.rollout_batch());
  const int64_t per_epoch = int64_t(n / B);
  const std::vector<size_t> order = permutation(n, mix(args_.data_seed, uint64_t(u / per_epoch)));
  const size_t first = size_t(u % per_epoch) * B;
  return std::vector<size_t>(order.begin() + long(first), order.begin() + long(first + B));
}

// The order PPO epoch e of update u visits the rollout batch in (TRL shuffles every epoch).
std::vector<size_t> PpoTask::order_of(int64_t u, int64_t e) const {
  return permutation(size_t(args_.rollout_batch()),
                     mix(mix(args_.seed, uint64_t(u)), 0x99 + uint64_t(e)));
}

std::vector<double> PpoTask::scores(const std::vector<Rollout>& rs,
                                    const std::vector<PromptSample>& prompts) {
  RewardBatch b;
  for (const Rollout& r : rs) {
    b.completions.push_back(r.text);
    b.lengths.push_back(int64_t(r.completion.size()));
    b.truncated.push_back(r.truncated);
    b.rows.push_back(prompts[r.prompt].row);
    b.prompts.push_back(prompts[r.prompt].messages);
  }
  std::vector<double> s = reward_->score(b);
  for (size_t i = 0; i < rs.size(); ++i) {
    if (std::isnan(s[i])) throw Error("the reward model gave no score for a completion");
    // TRL: the penalty applies to responses holding no end-of-sequence token.
    if (args_.missing_eos_penalty && rs[i].truncated) s[i] -= *args_.missing_eos_penalty;
  }
  return s;
}

void PpoTask::roll_out(Transformer& model, int64_t u, Metrics& m) {
  // ZeRO-3: the policy (and a full run's reference) gathered whole, since ranks sample
  // completions of different lengths.
  const Transformer::WholeWeights whole(model);
  const auto ref_whole = ref_->whole();
  const auto t0 = Clock::now();
  const int ranks = args_.ranks(), rank = ranks > 1 ? args_.comm->rank() : 0;
  // This rank's share of the prompts: the rollouts of its own micro-batches (a multiple of the
  // batch size, so the log-prob and value batches below are those of one process).
  const std::vector<size_t> prompts = prompts_of(u);
  const Share mine = share_of(prompts.size(), rank, ranks);
  SampledBatch sb = sample_completions(
      model, adapter_, tok_, data_.train,
      std::vector<size_t>(prompts.begin() + long(mine.begin), prompts.begin() + long(mine.end)), 1,
      sampling_, mix(args_.seed, uint64_t(u)), mine.begin);
  Update up;
  up.index = u;
  up.rollouts.resize(sb.completions.size());
  for (size_t i = 0; i < up.rollouts.size(); ++i)
    static_cast<SampledCompletion&>(up.rollouts[i]) = std::move(sb.completions[i]);
  const std::vector<double> s =
      up.rollouts.empty() ? std::vector<double>{} : scores(up.rollouts, data_.train);
  int64_t W = 0;
  for (const Rollout& r : up.rollouts) W = std::max<int64_t>(W, int64_t(r.completion.size()));
  if (ranks > 1)  // the values' width is the whole batch's longest response
    W = int64_t(dist::all_reduce_doubles(*args_.comm, {double(W)}, dist::ReduceOp::kMax,
                                         "longest response of the rollout batch")[0]);
  const size_t bs = size_t(args_.per_device_train_batch_size);
  const float temp = float(args_.sampling.temperature);
  for (size_t b = 0; b < up.rollouts.size(); b += bs) {
    const size_t e = std::min(up.rollouts.size(), b + bs);
    const TrainBatch batch = rollout_batch(up.rollouts, b, e, data_.train);
    auto old = completion_logprobs(model, batch, temp);
    auto ref = per_sample(batch, ref_->logprobs(model, batch, temp));
    auto values = critic_->values(batch);
    for (size_t i = b; i < e; ++i) {
      PpoResponse& r = up.rollouts[i].response;
      r.logps = std::move(old[i - b]);
      r.ref_logps = std::move(ref[i - b]);
      r.values.assign(size_t(W), 0.0);
      for (size_t t = 0; t < values[i - b].size() && t < size_t(W); ++t)
        r.values[t] = values[i - b][t];
      r.score = s[i];
    }
  }
  if (ranks > 1) {
    args_.comm->set_activity(fmt::format("gathering the responses of PPO update {}", u + 1));
    json mine_json = json::array();
    for (const Rollout& r : up.rollouts) mine_json.push_back(rollout_json(r));
    up.rollouts.clear();
    for (const std::string& part : dist::all_gather_strings(
             *args_.comm, mine_json.dump(-1, ' ', false, json::error_handler_t::replace)))
      for (const auto& x : json::parse(part)) up.rollouts.push_back(rollout_of(x));
  }
  update_ = std::move(up);
  finish_update();
  m.add("rollout/tokens_per_second", sb.tokens, sb.engine_seconds);
  rollout_s_ += seconds_since(t0);
}

void PpoTask::finish_update() {
  std::vector<PpoResponse> responses;
  for (const Rollout& r : update_.rollouts) responses.push_back(r.response);
  update_.math = ppo_rollout(args_.loss, responses);
  update_.micro_ratio.clear();
}

void PpoTask::begin_step(std::span<const std::vector<size_t>> micro_batches) {
  const int64_t gas = args_.gradient_accumulation_steps;
  step_first_ = micro_;
  step_micros_ = int64_t(micro_batches.size());
  micro_ += step_micros_;
  rollout_s_ = 0;
  SWIFTLET_CHECK(step_micros_ == gas * args_.ranks(),
                 "a PPO step of {} micro-batches, accumulation {} on {} ranks", step_micros_, gas,
                 args_.ranks());
  // This rank's micro-batches of the step, as the trainer assigns them.
  rank_first_ = cursor_ = step_first_ + gas * (args_.comm ? args_.comm->rank() : 0);
  step_ratio_.clear();
  // The update's rollouts, before any micro-batch: every rank takes part in sampling them.
  const int64_t u = step_first_ / (step_micros_ * args_.num_ppo_epochs);
  if (update_.index == u) return;
  roll_out(*model_, u, pending_);
  if (args_.comm && !args_.comm->is_main()) return;
  // Once per update, as TRL logs them (rank 0: every rank holds the whole update).
  const PpoRollout& pm = update_.math;
  double entropy = 0, eos = 0;
  for (const Rollout& r : update_.rollouts) {
    // TRL's objective/entropy: the sum of -logp over the full width, padding counting as -1.
    for (double lp : r.response.logps) entropy -= lp;
    entropy -= double(pm.width - int64_t(r.response.logps.size()));
    eos += !r.truncated;
  }
  const double B = double(args_.rollout_batch());
  pending_.add("objective/kl", pm.kl, 1);
  pending_.add("objective/entropy", entropy / B, 1);
  pending_.add("objective/non_score_reward", pm.non_score_reward, 1);
  pending_.add("objective/rlhf_reward", pm.non_score_reward + pm.scores, 1);
  pending_.add("objective/scores", pm.scores, 1);
  pending_.add("val/num_eos_tokens", eos, 1);
}

int64_t PpoTask::train_micro(Transformer& model, ModelGrads& grads, std::span<const size_t> samples,
                             const TrainStepOptions& opt, Metrics& metrics) {
  const int64_t gas = args_.gradient_accumulation_steps, per_step = step_micros_;
  const int64_t per_update = per_step * args_.num_ppo_epochs;
  const int64_t u = cursor_ / per_update, e = (cursor_ % per_update) / per_step,
                k = cursor_ % per_step;
  const bool first_of_step = cursor_ == rank_first_;
  const int64_t B = args_.rollout_batch();
  if (first_of_step) {
    metrics.merge(pending_);
    pending_.clear();
    metrics.add("time/rollout_s", rollout_s_, 1);
    metrics.add("episode", double((u + 1) * B), 1);
  }
  const auto t0 = Clock::now();
  const std::vector<size_t> order = order_of(u, e);
  const size_t bs = size_t(args_.per_device_train_batch_size);
  std::vector<Rollout> micro;
  std::vector<size_t> which;
  for (size_t i = size_t(k) * bs; i < std::min(order.size(), size_t(k + 1) * bs); ++i) {
    which.push_back(order[i]);
    micro.push_back(update_.rollouts[order[i]]);
  }
  SWIFTLET_CHECK(samples.size() == which.size(), "micro-batch of {} samples for {} responses",
                 samples.size(), which.size());
  const TrainBatch b = rollout_batch(micro, 0, micro.size(), data_.train);
  const float scale = 1.0f / float(step_micros_);
  TrainStepOptions so = opt;
  so.lora_dropout = 0.0f;  // TRL's PPO disables dropout in every model
  std::vector<PpoPolicyTarget> pt;
  std::vector<PpoValueTarget> vt;
  const int64_t W = update_.math.width;
  for (size_t j = 0; j < which.size(); ++j) {
    const Rollout& r = micro[j];
    pt.push_back({&r.response.logps, &update_.math.advantages[which[j]]});
    vt.push_back({&r.response.values, &update_.math.returns[which[j]],
                  std::min<int64_t>(int64_t(r.response.logps.size()) + 1, W)});
  }
  PpoPolicyObjective pobj(args_.loss, b, std::move(pt), float(args_.sampling.temperature), scale);
  model.train_step(b, grads, so, pobj);
  Transformer& critic = critic_->model();
  PpoValueObjective vobj(args_.loss, b, critic.weights().score, critic_->grads().score,
                         std::move(vt), scale);
  TrainStepOptions co = so;
  co.on_grads_ready = nullptr;
  co.router_aux_weight = 0.0f;
  critic.train_step(b, critic_->grads(), co, vobj);
  ++cursor_;

  // TRL's statistics: per micro-batch means, averaged; approxkl and the ratio over the full
  // width (padding: a log-prob difference of 0, a ratio of 1).
  const double all = double(which.size()) * double(W);
  const double ratio = (pobj.ratio_sum + (all - pobj.tokens)) / all;
  metrics.add("loss", pobj.loss + args_.loss.vf_coef * vobj.loss, 1);
  metrics.add("loss/policy_avg", pobj.loss, 1);
  metrics.add("loss/value_avg", vobj.loss, 1);
  metrics.add("policy/approxkl_avg", pobj.approxkl_sum / all, 1);
  // TRL averages over the full width; padding has no logits here, so over response tokens.
  metrics.add("policy/entropy_avg", pobj.entropy_sum / pobj.tokens, 1);
  metrics.add("policy/clipfrac_avg", pobj.clipped / pobj.tokens, 1);
  metrics.add("val/clipfrac_avg", vobj.clipped / vobj.positions, 1);
  metrics.add("val/ratio", ratio, 1);
  step_ratio_.push_back(ratio);
  if (cursor_ == rank_first_ + gas) {
    // This rank's last micro-batch of the step (every rank has gas): the step's ratios of all
    // ranks, in the order of their micro-batches, join the update's.
    if (args_.ranks() == 1) {
      for (double x : step_ratio_) update_.micro_ratio.push_back(x);
    } else {
      for (const std::string& part :
           dist::all_gather_strings(*args_.comm, json(step_ratio_).dump()))
        for (double x : json::parse(part).get<std::vector<double>>())
          update_.micro_ratio.push_back(x);
    }
  }
  if (cursor_ == rank_first_ + gas && micro_ % per_update == 0 && update_.micro_ratio.size() > 1 &&
      (!args_.comm || args_.comm->is_main())) {
    // val/ratio_var: the unbiased variance of the update's per-micro-batch ratios.
    const auto& v = update_.micro_ratio;
    double mean = 0, ss = 0;
    for (double x : v) mean += x / double(v.size());
    for (double x : v) ss += (x - mean) * (x - mean);
    metrics.add("val/ratio_var", ss / double(v.size() - 1), 1);
  }
  metrics.add("time/train_s", seconds_since(t0), first_of_step ? 1 : 0);
  return int64_t(b.input_ids.size());
}

Metrics PpoTask::evaluate(Transformer& model, int64_t batch_size) {
  const Transformer::WholeWeights whole(model);
  Metrics m;
  const size_t per_run = size_t(std::max<int64_t>(1, batch_size));
  std::vector<Rollout> rs;
  for (size_t first = 0; first < data_.val.size(); first += per_run) {
    std::vector<size_t> which;
    for (size_t i = first; i < std::min(data_.val.size(), first + per_run); ++i) which.push_back(i);
    SampledBatch sb = sample_completions(model, adapter_, tok_, data_.val, which, 1, sampling_,
                                         mix(args_.seed, 0xe7a1ull + first));
    for (auto& c : sb.completions) {
      Rollout r;
      static_cast<SampledCompletion&>(r) = std::move(c);
      rs.push_back(std::move(r));
    }
  }
  const std::vector<double> s = scores(rs, data_.val);
  double sum = 0, len = 0;
  for (size_t i = 0; i < rs.size(); ++i) {
    sum += s[i];
    len += double(rs[i].completion.size());
  }
  const double n = double(std::max<size_t>(1, rs.size()));
  m.add("objective/scores", sum / n, 1);
  m.add("completions/mean_length", len / n, 1);
  return m;
}

json PpoTask::rollouts_json() const {
  json rs = json::array();
  for (const Rollout& r : update_.rollouts) rs.push_back(rollout_json(r));
  return {{"update", update_.index}, {"micro_ratio", update_.micro_ratio}, {"rollouts", rs}};
}

void PpoTask::save_files(const std::string& dir) const {
  critic_->save(dir);
  if (update_.index >= 0)
    io::write_file_atomic(
        (fs::path(dir) / kRolloutsFile).string(),
        rollouts_json().dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

// The update a checkpoint was saved in: its rollouts as they were (not sampled again with the
// restored weights), so that the rest of its PPO epochs train on the same data.
void PpoTask::load_rollouts(const std::string& ckpt) {
  const fs::path p = fs::path(ckpt) / kRolloutsFile;
  if (!fs::exists(p)) return;
  json j;
  try {
    std::ifstream f(p);
    j = json::parse(f);
  } catch (const std::exception&) {
    throw Error(fmt::format("{} is not valid JSON", p.string()));
  }
  Update up;
  up.index = j.at("update").get<int64_t>();
  for (const auto& x : j.at("rollouts")) {
    Rollout r = rollout_of(x);
    if (r.prompt >= data_.train.size())
      throw Error(fmt::format("{} names prompt {} of {}", p.string(), r.prompt, data_.train.size()),
                  "resume with the dataset the run was started with");
    up.rollouts.push_back(std::move(r));
  }
  // Micro-batches are numbered in steps of the global batch: another global batch would train
  // other rollouts than the checkpoint's run (on any number of ranks the same one resumes exactly).
  if (up.rollouts.size() != size_t(args_.rollout_batch()))
    throw Error(
        fmt::format("{} holds a PPO rollout batch of {} prompts, and this run's is {} "
                    "(batch size {} x accumulation {} x {} rank{})",
                    p.string(), up.rollouts.size(), args_.rollout_batch(),
                    args_.per_device_train_batch_size, args_.gradient_accumulation_steps,
                    args_.ranks(), args_.ranks() == 1 ? "" : "s"),
        "resume with the global batch the run was started with: per_device_train_batch_size "
        "x gradient_accumulation_steps x ranks");
  update_ = std::move(up);
  const std::vector<double> ratios = j.at("micro_ratio").get<std::vector<double>>();
  finish_update();
  update_.micro_ratio = ratios;
}

void PpoTask::restore(const nlohmann::json& state) {
  if (state.contains("ppo_micro_batches")) micro_ = state["ppo_micro_batches"].get<int64_t>();
}

}  // namespace swiftlet::rlhf
