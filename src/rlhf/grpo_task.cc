#include "rlhf/grpo_task.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/log.h"
#include "core/rng.h"
#include "infer/runtime.h"
#include "rlhf/grpo_objective.h"
#include "template/chat_template.h"
#include "train/sft_task.h"

namespace swiftlet::rlhf {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double nanmean(const std::vector<double>& v, size_t* count = nullptr) {
  double s = 0;
  size_t n = 0;
  for (double x : v)
    if (!std::isnan(x)) {
      s += x;
      ++n;
    }
  if (count) *count = n;
  return n ? s / double(n) : 0.0;
}

// Scored completions as text for all_gather_strings, and back (doubles round-trip exactly).
std::string rollouts_to_string(const std::vector<GrpoTask::Rollout>& rs) {
  nlohmann::json a = nlohmann::json::array();
  for (const GrpoTask::Rollout& r : rs) {
    nlohmann::json rewards = nlohmann::json::array();
    for (double v : r.rewards)
      rewards.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
    a.push_back({{"prompt", r.prompt},
                 {"completion", r.completion},
                 {"text", r.text},
                 {"truncated", r.truncated},
                 {"rewards", rewards},
                 {"reward", r.reward}});
  }
  return a.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void rollouts_from_string(const std::string& s, std::vector<GrpoTask::Rollout>& out) {
  for (const auto& x : nlohmann::json::parse(s)) {
    GrpoTask::Rollout r;
    r.prompt = x.at("prompt").get<size_t>();
    r.completion = x.at("completion").get<std::vector<int32_t>>();
    r.text = x.at("text").get<std::string>();
    r.truncated = x.at("truncated").get<bool>();
    for (const auto& v : x.at("rewards"))
      r.rewards.push_back(v.is_null() ? std::nan("") : v.get<double>());
    r.reward = x.at("reward").get<double>();
    out.push_back(std::move(r));
  }
}

}  // namespace

GrpoTask::GrpoTask(GrpoArgs args, PromptBundle data,
                   std::vector<std::unique_ptr<RewardFunction>> rewards, Tokenizer tokenizer)
    : args_(std::move(args)),
      data_(std::move(data)),
      rewards_(std::move(rewards)),
      tok_(std::move(tokenizer)) {
  SWIFTLET_CHECK(!rewards_.empty(), "grpo needs a reward function");
  if (args_.reward_weights.empty()) args_.reward_weights.assign(rewards_.size(), 1.0);
  SWIFTLET_CHECK(args_.reward_weights.size() == rewards_.size(), "{} reward weights for {}",
                 args_.reward_weights.size(), rewards_.size());
  const int64_t per_gen = args_.generation_batch_size() / args_.num_generations;
  if (int64_t(data_.train.size()) < per_gen)
    throw Error(fmt::format("{} training prompts are fewer than the {} prompts of one generation "
                            "batch ({} completions in groups of {})",
                            data_.train.size(), per_gen, args_.generation_batch_size(),
                            args_.num_generations),
                "add prompts, or lower --per_device_train_batch_size or --steps_per_generation");
}

GrpoTask::~GrpoTask() = default;

size_t GrpoTask::train_size() const {
  const size_t per_gen = size_t(args_.generation_batch_size() / args_.num_generations);
  const size_t gens = data_.train.size() / per_gen;
  return gens * size_t(args_.generation_batch_size() * args_.num_iterations);
}

void GrpoTask::attach(const TrainSetup& s) {
  adapter_ = s.adapter;
  model_ = &s.model;
  for (auto& r : rewards_) r->bind(s.device);
  args_.stop_token_ids =
      generation_stop_ids(s.folder, tok_, ChatTemplate::by_name(data_.template_name));
  if (args_.loss.beta == 0) return;
  ref_ = std::make_unique<ReferenceModel>(s, args_.ref_model, args_.ref_adapters);
}

bool GrpoTask::old_is_current() const {
  return args_.num_iterations == 1 &&
         args_.steps_per_generation <= args_.gradient_accumulation_steps &&
         args_.gradient_accumulation_steps % args_.steps_per_generation == 0;
}

// Prompts of generation `g`: consecutive slices of a per-epoch seeded permutation; a resample
// attempt draws from a permutation of its own.
std::vector<size_t> GrpoTask::prompts_of(int64_t g, int64_t attempt) const {
  const size_t n = data_.train.size();
  const size_t per_gen = size_t(args_.generation_batch_size() / args_.num_generations);
  const size_t gens = std::max<size_t>(1, n / per_gen);
  const int64_t epoch = g / int64_t(gens);
  const size_t k = size_t(g % int64_t(gens));
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  Rng rng(
      mix(args_.data_seed, attempt == 0 ? uint64_t(epoch) : mix(uint64_t(g), uint64_t(attempt))));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  const size_t first = attempt == 0 ? k * per_gen : 0;
  return std::vector<size_t>(order.begin() + long(first), order.begin() + long(first + per_gen));
}

std::vector<GrpoTask::Rollout> GrpoTask::sample(Transformer& model,
                                                const std::vector<PromptSample>& prompts,
                                                const std::vector<size_t>& which, uint64_t seed,
                                                size_t first) {
  RolloutSampling rs{args_.max_completion_length, args_.sampling, args_.stop_token_ids};
  SampledBatch b = sample_completions(model, adapter_, tok_, prompts, which, args_.num_generations,
                                      rs, seed, first);
  sample_s_ += b.engine_seconds;
  sample_tokens_ += b.tokens;
  std::vector<Rollout> out(b.completions.size());
  for (size_t i = 0; i < out.size(); ++i)
    static_cast<SampledCompletion&>(out[i]) = std::move(b.completions[i]);
  return out;
}

std::vector<GrpoTask::Rollout> GrpoTask::sample_scored(Transformer& model,
                                                       const std::vector<size_t>& which,
                                                       uint64_t seed) {
  const int ranks = args_.ranks();
  const Share mine = share_of(which.size(), ranks > 1 ? args_.comm->rank() : 0, ranks);
  std::vector<Rollout> rs =
      sample(model, data_.train,
             std::vector<size_t>(which.begin() + long(mine.begin), which.begin() + long(mine.end)),
             seed, mine.begin * size_t(args_.num_generations));
  if (!rs.empty()) score(rs, data_.train);
  if (ranks == 1) return rs;
  args_.comm->set_activity("gathering the scored completions of a generation");
  std::vector<Rollout> all;
  for (const std::string& part : dist::all_gather_strings(*args_.comm, rollouts_to_string(rs)))
    rollouts_from_string(part, all);
  return all;
}

int GrpoTask::rank_of(int64_t m) const {
  const int ranks = args_.ranks();
  if (ranks == 1) return 0;
  // The trainer cuts every epoch's micro-batches into steps of gas x ranks, rank r taking the
  // r-th gas of each.
  const int64_t per_epoch = int64_t(train_size()) / args_.per_device_train_batch_size;
  const int64_t gas = args_.gradient_accumulation_steps;
  return int((m % per_epoch) % (gas * ranks) / gas);
}

void GrpoTask::score(std::vector<Rollout>& rollouts, const std::vector<PromptSample>& prompts) {
  RewardBatch b;
  for (const Rollout& r : rollouts) {
    b.completions.push_back(r.text);
    b.lengths.push_back(int64_t(r.completion.size()));
    b.truncated.push_back(r.truncated);
    b.rows.push_back(prompts[r.prompt].row);
    b.prompts.push_back(prompts[r.prompt].messages);
  }
  for (Rollout& r : rollouts) r.rewards.clear();
  for (size_t f = 0; f < rewards_.size(); ++f) {
    const std::vector<double> v = rewards_[f]->score(b);
    SWIFTLET_CHECK(v.size() == rollouts.size(), "reward {} gave {} values for {} completions",
                   rewards_[f]->name(), v.size(), rollouts.size());
    for (size_t i = 0; i < v.size(); ++i) rollouts[i].rewards.push_back(v[i]);
  }
  for (Rollout& r : rollouts) {
    r.reward = 0;  // nansum of the weighted rewards
    for (size_t f = 0; f < r.rewards.size(); ++f)
      if (!std::isnan(r.rewards[f])) r.reward += args_.reward_weights[f] * r.rewards[f];
  }
}

std::vector<std::vector<double>> GrpoTask::logprobs(Transformer& model,
                                                    const std::vector<Rollout>& r, size_t begin,
                                                    size_t end,
                                                    const std::vector<PromptSample>& prompts,
                                                    bool ref) {
  const TrainBatch b = rollout_batch(r, begin, end, prompts);
  const float t = float(args_.sampling.temperature);
  if (ref) return per_sample(b, ref_->logprobs(model, b, t));
  return completion_logprobs(model, b, t);
}

GrpoTask::Generation GrpoTask::generate(Transformer& model, int64_t g, Metrics& m) {
  const Transformer::WholeWeights whole(model);  // ZeRO-3: ranks sample different lengths
  const auto ref_whole = ref_ ? ref_->whole() : nullptr;  // and score different shares
  const auto t0 = Clock::now();
  sample_s_ = sample_tokens_ = 0;
  const int64_t G = args_.num_generations;
  const size_t groups = size_t(args_.generation_batch_size() / G);
  const uint64_t seed = mix(args_.seed, uint64_t(g));
  std::vector<Rollout> rollouts = sample_scored(model, prompts_of(g, 0), seed);
  // Every rank holds the whole generation: rank 0 alone adds the metrics of it.
  const bool main = !args_.comm || args_.comm->is_main();
  auto group_std = [&](const std::vector<Rollout>& rs, size_t k) {
    std::vector<double> v;
    for (size_t i = 0; i < size_t(G); ++i) v.push_back(rs[k * size_t(G) + i].reward);
    return unbiased_std(v);
  };
  // Metrics of what was sampled (before dynamic sampling picks groups).
  const size_t n = rollouts.size();
  if (main) {
    double sum = 0, mn = 1e300, mx = 0, clipped = 0;
    for (const Rollout& r : rollouts) {
      const double len = double(r.completion.size());
      sum += len;
      mn = std::min(mn, len);
      mx = std::max(mx, len);
      clipped += r.truncated;
    }
    m.add("completions/mean_length", sum / double(n), 1);
    m.add("completions/min_length", mn, 1);
    m.add("completions/max_length", mx, 1);
    m.add("completions/clipped_ratio", clipped / double(n), 1);
    for (size_t f = 0; f < rewards_.size(); ++f) {
      std::vector<double> v;
      for (const Rollout& r : rollouts) v.push_back(r.rewards[f]);
      size_t count = 0;
      const double mean = nanmean(v, &count);
      std::vector<double> finite;
      for (double x : v)
        if (!std::isnan(x)) finite.push_back(x);
      m.add("rewards/" + rewards_[f]->name() + "/mean", mean, 1);
      m.add("rewards/" + rewards_[f]->name() + "/std", unbiased_std(finite), 1);
    }
  }
  if (args_.dynamic_sample) {
    std::vector<Rollout> kept, flat;
    auto sort_groups = [&](std::vector<Rollout>& rs) {
      for (size_t k = 0; k < rs.size() / size_t(G); ++k) {
        auto& dst = group_std(rs, k) > 0 ? kept : flat;
        for (size_t i = 0; i < size_t(G); ++i) dst.push_back(std::move(rs[k * size_t(G) + i]));
      }
    };
    sort_groups(rollouts);
    for (int64_t attempt = 1;
         attempt <= args_.max_resample_times && kept.size() < groups * size_t(G); ++attempt) {
      std::vector<Rollout> more =
          sample_scored(model, prompts_of(g, attempt), mix(seed, uint64_t(attempt)));
      sort_groups(more);
    }
    if (kept.size() < groups * size_t(G))
      log_warning(
          "dynamic sampling: {} of {} groups have different rewards after {} resamplings; the "
          "rest are groups whose rewards are all equal",
          kept.size() / size_t(G), groups, args_.max_resample_times);
    for (size_t i = 0; kept.size() < groups * size_t(G); ++i) kept.push_back(std::move(flat[i]));
    kept.resize(groups * size_t(G));
    rollouts = std::move(kept);
  }
  std::vector<double> R;
  for (const Rollout& r : rollouts) R.push_back(r.reward);
  const AdvantageResult adv = grpo_advantages(R, G, args_.advantage_estimator, args_.scale_rewards);
  for (size_t i = 0; i < rollouts.size(); ++i) rollouts[i].advantage = adv.advantages[i];
  if (main) {
    m.add("reward", adv.reward_mean, 1);
    m.add("reward_std", adv.reward_std, 1);
    m.add("frac_reward_zero_std", adv.frac_zero_std, 1);
  }
  m.add("rollout/tokens_per_second", sample_tokens_, sample_s_);

  // Reference and old log-probs of the micro-batches this rank trains, one micro-batch at a time.
  const size_t bs = size_t(args_.per_device_train_batch_size);
  const int64_t spg = steps_per_generation(), per_gen = spg * args_.num_iterations;
  const int rank = args_.comm ? args_.comm->rank() : 0;
  std::set<size_t> slices;
  for (int64_t mb = g * per_gen; mb < (g + 1) * per_gen; ++mb)
    if (rank_of(mb) == rank) slices.insert(size_t(mb % spg));
  for (size_t k : slices) {
    const size_t b = k * bs, e = std::min(rollouts.size(), b + bs);
    if (ref_) {
      auto lp = logprobs(model, rollouts, b, e, data_.train, true);
      for (size_t i = b; i < e; ++i) rollouts[i].ref_logps = std::move(lp[i - b]);
    }
    if (!old_is_current()) {
      auto lp = logprobs(model, rollouts, b, e, data_.train, false);
      for (size_t i = b; i < e; ++i) rollouts[i].old_logps = std::move(lp[i - b]);
    }
  }
  if (args_.log_completions && main) log_completions(g, rollouts);
  rollout_s_ += seconds_since(t0);
  return {std::move(rollouts)};
}

void GrpoTask::log_completions(int64_t g, const std::vector<Rollout>& rollouts) {
  const std::string path = (std::filesystem::path(args_.output_dir) / "completions.jsonl").string();
  std::filesystem::create_directories(args_.output_dir);
  std::ofstream f(path, std::ios::app);
  const int64_t step =
      (g * args_.steps_per_generation * args_.num_iterations) / args_.gradient_accumulation_steps +
      1;
  for (const Rollout& r : rollouts) {
    nlohmann::ordered_json j;
    j["step"] = step;
    j["prompt"] = tok_.decode(data_.train[r.prompt].prompt);
    j["completion"] = r.text;
    for (size_t f2 = 0; f2 < rewards_.size(); ++f2) {
      const double v = r.rewards[f2];
      j[rewards_[f2]->name()] =
          std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
    }
    j["reward"] = r.reward;
    j["advantage"] = r.advantage;
    f << j.dump() << "\n";
  }
}

void GrpoTask::begin_step(std::span<const std::vector<size_t>> micro_batches) {
  const int64_t n = int64_t(micro_batches.size());
  step_first_ = micro_;
  micro_ += n;
  // This rank's micro-batches of the step, as the trainer assigns them.
  const int64_t rank = args_.comm ? args_.comm->rank() : 0;
  rank_first_ = cursor_ = step_first_ + std::min(n, args_.gradient_accumulation_steps * rank);
  rollout_s_ = 0;
  // grpo, bnpo, dr_grpo: each micro-batch's loss is a mean; the step averages its micro-batches.
  // dapo: the sum over the step's completion tokens (set once the rollouts are known).
  grad_scale_ =
      args_.loss.loss_type == GrpoLossType::kDapo ? 1.0f : 1.0f / float(std::max<int64_t>(1, n));
  step_tokens_ = 0;
  step_micros_ = n;
  // Every rollout this step trains on exists before its first micro-batch (dapo counts their
  // tokens): generate what is missing. Here, not in train_micro: every rank takes part in every
  // generation, also one that trains no micro-batch of this step.
  const int64_t per_gen = steps_per_generation() * args_.num_iterations;
  for (auto it = generations_.begin(); it != generations_.end();)
    it = it->first < step_first_ / per_gen ? generations_.erase(it) : std::next(it);
  for (int64_t m = step_first_; m < step_first_ + n; ++m) {
    const int64_t g = m / per_gen;
    if (!generations_.count(g)) generations_[g] = generate(*model_, g, pending_);
  }
  if (args_.loss.loss_type == GrpoLossType::kDapo) {
    const size_t bs = size_t(args_.per_device_train_batch_size);
    for (int64_t m = step_first_; m < step_first_ + n; ++m) {
      const auto& rs = generations_.at(m / per_gen).rollouts;
      const size_t k = size_t(m % steps_per_generation());
      for (size_t i = k * bs; i < std::min(rs.size(), (k + 1) * bs); ++i)
        step_tokens_ += double(rs[i].completion.size());
    }
  }
}

int64_t GrpoTask::train_micro(Transformer& model, ModelGrads& grads,
                              std::span<const size_t> samples, const TrainStepOptions& opt,
                              Metrics& metrics) {
  const int64_t per_gen = steps_per_generation() * args_.num_iterations;
  const bool first_of_step = cursor_ == rank_first_;
  if (first_of_step) {
    metrics.merge(pending_);
    pending_.clear();
    metrics.add("time/rollout_s", rollout_s_, 1);
  }
  const auto t0 = Clock::now();
  const int64_t g = cursor_ / per_gen;
  const auto& rs = generations_.at(g).rollouts;
  const size_t bs = size_t(args_.per_device_train_batch_size);
  const size_t k = size_t(cursor_ % steps_per_generation());
  const size_t begin = k * bs, end = std::min(rs.size(), begin + bs);
  SWIFTLET_CHECK(samples.size() == end - begin, "micro-batch of {} samples for {} completions",
                 samples.size(), end - begin);
  const TrainBatch b = rollout_batch(rs, begin, end, data_.train);
  GrpoLossConfig cfg = args_.loss;
  cfg.dapo_tokens = step_tokens_;
  std::vector<GrpoTarget> targets;
  for (size_t i = begin; i < end; ++i)
    targets.push_back({rs[i].advantage, old_is_current() ? nullptr : &rs[i].old_logps,
                       cfg.beta != 0 ? &rs[i].ref_logps : nullptr});
  GrpoObjective obj(cfg, b, std::move(targets), float(args_.sampling.temperature), grad_scale_);
  model.train_step(b, grads, opt, obj);
  ++cursor_;
  metrics.add("loss", obj.loss, 1);
  if (cfg.beta != 0) metrics.add("kl", obj.kl_sum, obj.tokens);
  metrics.add("clip_ratio/low_mean", obj.clip_low, obj.tokens);
  metrics.add("clip_ratio/high_mean", obj.clip_high, obj.tokens);
  metrics.add("clip_ratio/region_mean", obj.clip_region, obj.tokens);
  // ms-swift's min / max over ranks: one process is its own minimum and maximum.
  metrics.add("clip_ratio/low_min", obj.clip_low, obj.tokens);
  metrics.add("clip_ratio/high_max", obj.clip_high, obj.tokens);
  metrics.add("time/train_s", seconds_since(t0), first_of_step ? 1 : 0);
  return int64_t(b.input_ids.size());
}

Metrics GrpoTask::evaluate(Transformer& model, int64_t batch_size) {
  const Transformer::WholeWeights whole(model);
  Metrics m;
  // --per_device_eval_batch_size counts completions: prompts are sampled that many at a time.
  const size_t per_run = size_t(std::max<int64_t>(1, batch_size / args_.num_generations));
  std::vector<Rollout> rs;
  for (size_t first = 0; first < data_.val.size(); first += per_run) {
    std::vector<size_t> which;
    for (size_t i = first; i < std::min(data_.val.size(), first + per_run); ++i) which.push_back(i);
    std::vector<Rollout> part = sample(model, data_.val, which, mix(args_.seed, 0xe7a1ull + first));
    for (auto& r : part) rs.push_back(std::move(r));
  }
  score(rs, data_.val);
  std::vector<double> R;
  for (const Rollout& r : rs) R.push_back(r.reward);
  const AdvantageResult adv =
      grpo_advantages(R, args_.num_generations, args_.advantage_estimator, args_.scale_rewards);
  m.add("reward", adv.reward_mean, 1);
  m.add("reward_std", adv.reward_std, 1);
  for (size_t f = 0; f < rewards_.size(); ++f) {
    std::vector<double> v;
    for (const Rollout& r : rs) v.push_back(r.rewards[f]);
    m.add("rewards/" + rewards_[f]->name() + "/mean", nanmean(v), 1);
  }
  double len = 0;
  for (const Rollout& r : rs) len += double(r.completion.size());
  m.add("completions/mean_length", len / double(std::max<size_t>(1, rs.size())), 1);
  return m;
}

nlohmann::json GrpoTask::state() const { return {{"grpo_micro_batches", micro_}}; }

void GrpoTask::restore(const nlohmann::json& state) {
  if (state.contains("grpo_micro_batches")) micro_ = state["grpo_micro_batches"].get<int64_t>();
  const int64_t per_gen = steps_per_generation() * args_.num_iterations;
  if (micro_ % per_gen != 0)
    log_warning(
        "resuming inside a generation: its completions are sampled again with the restored "
        "weights (the run continues, not bit for bit as uninterrupted)");
}

}  // namespace swiftlet::rlhf
