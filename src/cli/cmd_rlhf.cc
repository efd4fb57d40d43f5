// swiftlet rlhf: preference alignment (dpo, cpo, simpo, orpo, kto), reward models (rm) and online
// RL (grpo, ppo) with ms-swift's flags and defaults, on the one trainer loop.
#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "cli/train_args.h"
#include "core/log.h"
#include "data/preference.h"
#include "data/prompts.h"
#include "model/folder.h"
#include "rlhf/grpo_task.h"
#include "rlhf/ppo_task.h"
#include "rlhf/preference_task.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet::cli {

namespace {

std::vector<FlagSpec> rlhf_flags() {
  std::vector<FlagSpec> f = train_flags(false);
  std::vector<FlagSpec> more = {
      {"rlhf_type", FlagKind::kString, "dpo", "dpo, orpo, simpo, cpo, kto, rm, grpo or ppo"},
      {"ref_model", FlagKind::kString, "",
       "full training: the reference model folder (default: --model)"},
      {"ref_adapters", FlagKind::kString, "",
       "LoRA: an adapter used as the reference (default: the base without the adapter)"},
      {"beta", FlagKind::kString, "", "0.1 (simpo 2.0, grpo 0.04; grpo 0 drops the reference)"},
      {"loss_type", FlagKind::kList, "",
       "dpo: sigmoid hinge ipo robust bco_pair sppo_hard nca_pair exo_pair aot aot_unpaired "
       "apo_zero apo_down discopop sft (several with --loss_weights); cpo: sigmoid hinge ipo "
       "simpo; kto: kto apo_zero_unpaired; grpo: grpo bnpo dr_grpo dapo"},
      {"loss_weights", FlagKind::kList, "", "weights of several --loss_type values"},
      {"rpo_alpha", FlagKind::kString, "", "dpo: add rpo_alpha x NLL of the chosen responses"},
      {"label_smoothing", FlagKind::kString, "", "conservative DPO / cDPO (0)"},
      {"ld_alpha", FlagKind::kString, "", "LD-DPO: weight of the tokens past the shorter response"},
      {"discopop_tau", FlagKind::kString, "", "discopop temperature (0.05)"},
      {"cpo_alpha", FlagKind::kString, "", "cpo/simpo: weight of the NLL term (1.0)"},
      {"simpo_gamma", FlagKind::kString, "", "simpo: target reward margin (1.0)"},
      {"desirable_weight", FlagKind::kString, "", "kto: weight of desirable examples (1.0)"},
      {"undesirable_weight", FlagKind::kString, "", "kto: weight of undesirable examples (1.0)"},
      {"center_rewards_coefficient", FlagKind::kString, "",
       "rm: weight of the (r_c + r_r)^2 term (off unless given)"},
  };
  f.insert(f.end(), more.begin(), more.end());
  more = {
      {"num_generations", FlagKind::kInt, "8", "grpo: completions per prompt (G > 1)"},
      {"max_completion_length", FlagKind::kInt, "512", "grpo/ppo: tokens per completion at most"},
      {"temperature", FlagKind::kFloat, "0.9", "grpo/ppo: rollout sampling temperature (> 0)"},
      {"top_p", FlagKind::kFloat, "1.0", "grpo: nucleus sampling (1: off)"},
      {"top_k", FlagKind::kInt, "-1", "grpo: top-k sampling (-1: off)"},
      {"epsilon", FlagKind::kFloat, "0.2", "grpo: lower clip range of the ratio"},
      {"epsilon_high", FlagKind::kString, "", "grpo: upper clip range (default --epsilon)"},
      {"num_iterations", FlagKind::kInt, "1", "grpo: updates per rollout (mu)"},
      {"steps_per_generation", FlagKind::kString, "",
       "grpo: micro-batches per generation (default --gradient_accumulation_steps)"},
      {"generation_batch_size", FlagKind::kString, "",
       "grpo: completions per generation (default batch size x steps_per_generation)"},
      {"advantage_estimator", FlagKind::kString, "grpo", "grpo, rloo or reinforce_plus_plus"},
      {"scale_rewards", FlagKind::kString, "",
       "grpo: group, batch or none (default: group; rloo none; reinforce_plus_plus batch)"},
      {"reward_funcs", FlagKind::kList, "",
       "grpo: accuracy format cosine repetition soft_overlong"},
      {"reward_weights", FlagKind::kList, "",
       "grpo: one weight per reward (functions, then the external command); default all 1"},
      {"external_reward_command", FlagKind::kString, "",
       "grpo: a command scoring completions through JSON on stdin/stdout (README: external "
       "rewards)"},
      {"reward_model", FlagKind::kString, "",
       "grpo: a sequence-classifier folder whose score is a reward (after the functions); ppo: "
       "the reward model, and the value model's starting point"},
      {"log_completions", FlagKind::kBool, "false", "grpo: write completions.jsonl in the run"},
      {"dynamic_sample", FlagKind::kBool, "false",
       "grpo: replace groups with equal rewards by other prompts' groups (DAPO)"},
      {"max_resample_times", FlagKind::kInt, "3", "grpo: --dynamic_sample resamplings at most"},
      {"cosine_min_len_value_wrong", FlagKind::kFloat, "-0.5", "cosine reward"},
      {"cosine_max_len_value_wrong", FlagKind::kFloat, "0.0", "cosine reward"},
      {"cosine_min_len_value_correct", FlagKind::kFloat, "1.0", "cosine reward"},
      {"cosine_max_len_value_correct", FlagKind::kFloat, "0.5", "cosine reward"},
      {"cosine_max_len", FlagKind::kString, "", "cosine reward (default max_completion_length)"},
      {"repetition_n_grams", FlagKind::kInt, "3", "repetition reward"},
      {"repetition_max_penalty", FlagKind::kFloat, "-1.0", "repetition reward"},
      {"soft_max_length", FlagKind::kString, "",
       "soft_overlong reward (default max_completion_length)"},
      {"soft_cache_length", FlagKind::kString, "", "soft_overlong reward (required by it)"},
      {"num_ppo_epochs", FlagKind::kInt, "4", "ppo: optimizer passes over each rollout batch"},
      {"kl_coef", FlagKind::kFloat, "0.05", "ppo: weight of the per-token KL penalty in the reward"},
      {"cliprange", FlagKind::kFloat, "0.2", "ppo: clip range of the policy ratio"},
      {"vf_coef", FlagKind::kFloat, "0.1", "ppo: weight of the value loss"},
      {"cliprange_value", FlagKind::kFloat, "0.2", "ppo: clip range of the value around its old value"},
      {"gamma", FlagKind::kFloat, "1.0", "ppo: GAE discount"},
      {"lam", FlagKind::kFloat, "0.95", "ppo: GAE lambda"},
      {"whiten_rewards", FlagKind::kBool, "false", "ppo: whiten the per-token rewards (mean kept)"},
      {"missing_eos_penalty", FlagKind::kString, "",
       "ppo: subtracted from the score of a completion that never reached a stop token (none)"},
  };
  f.insert(f.end(), more.begin(), more.end());
  return f;
}

std::optional<double> opt_number(const Flags& f, const std::string& name) {
  if (!f.given(name) || f.str(name).empty()) return std::nullopt;
  return f.f64(name);
}

const std::vector<std::string>& grpo_only_flags() {
  static const std::vector<std::string> k = {"num_generations",
                                             "max_completion_length",
                                             "temperature",
                                             "top_p",
                                             "top_k",
                                             "epsilon",
                                             "epsilon_high",
                                             "num_iterations",
                                             "steps_per_generation",
                                             "generation_batch_size",
                                             "advantage_estimator",
                                             "scale_rewards",
                                             "reward_funcs",
                                             "reward_weights",
                                             "external_reward_command",
                                             "reward_model",
                                             "log_completions",
                                             "dynamic_sample",
                                             "max_resample_times",
                                             "cosine_min_len_value_wrong",
                                             "cosine_max_len_value_wrong",
                                             "cosine_min_len_value_correct",
                                             "cosine_max_len_value_correct",
                                             "cosine_max_len",
                                             "repetition_n_grams",
                                             "repetition_max_penalty",
                                             "soft_max_length",
                                             "soft_cache_length"};
  return k;
}

const std::vector<std::string>& ppo_only_flags() {
  static const std::vector<std::string> k = {
      "num_ppo_epochs", "kl_coef", "cliprange",      "vf_coef",
      "cliprange_value", "gamma",  "lam",            "whiten_rewards",
      "missing_eos_penalty"};
  return k;
}

const std::vector<std::string>& preference_only_flags() {
  static const std::vector<std::string> k = {"loss_weights",       "rpo_alpha",
                                             "label_smoothing",    "ld_alpha",
                                             "discopop_tau",       "cpo_alpha",
                                             "simpo_gamma",        "desirable_weight",
                                             "undesirable_weight", "center_rewards_coefficient"};
  return k;
}

std::optional<int64_t> opt_int(const Flags& f, const std::string& name) {
  if (!f.given(name) || f.str(name).empty()) return std::nullopt;
  return f.i64(name);
}

std::vector<double> numbers(const Flags& f, const std::string& name) {
  std::vector<double> out;
  for (const auto& w : f.list(name)) {
    char* end = nullptr;
    const double v = std::strtod(w.c_str(), &end);
    if (w.empty() || *end != '\0') throw Error(fmt::format("--{}: '{}' is not a number", name, w));
    out.push_back(v);
  }
  return out;
}

int run_grpo(const Flags& f) {
  for (const auto& n : preference_only_flags())
    if (f.given(n)) throw Error(fmt::format("--{} does not apply to --rlhf_type grpo", n));
  for (const auto& n : ppo_only_flags())
    if (f.given(n)) throw Error(fmt::format("--{} only applies to --rlhf_type ppo", n));
  for (const char* n : {"loss_scale", "preserve_thinking"})
    if (f.given(n))
      throw Error(fmt::format("--{} does not apply to --rlhf_type grpo", n),
                  "the loss covers exactly the generated completion tokens");
  TrainArgs a = train_args(f, "rlhf");
  // ms-swift's GRPO accumulates over one micro-batch unless told otherwise.
  if (!f.given("gradient_accumulation_steps") && a.gradient_accumulation_steps == 0)
    a.gradient_accumulation_steps = 1;  // (a --deepspeed config may have set it)
  rlhf::GrpoArgs g;
  g.loss.beta = opt_number(f, "beta").value_or(0.04);
  const std::vector<std::string> lt = f.list("loss_type");
  if (lt.size() > 1) throw Error("grpo takes one --loss_type");
  g.loss.loss_type = rlhf::parse_grpo_loss_type(lt.empty() ? "grpo" : lt.front());
  g.num_generations = f.i64("num_generations");
  if (g.num_generations < 2)
    throw Error("--num_generations must be at least 2", "GRPO compares completions of a prompt");
  g.max_completion_length = f.i64("max_completion_length");
  if (g.max_completion_length < 1) throw Error("--max_completion_length must be at least 1");
  g.loss.max_completion_length = g.max_completion_length;
  g.sampling.temperature = f.f64("temperature");
  if (g.sampling.temperature <= 0)
    throw Error("--temperature must be positive for grpo",
                "rollouts are sampled and scored on logits / temperature");
  g.sampling.top_p = f.f64("top_p");
  if (g.sampling.top_p <= 0 || g.sampling.top_p > 1) throw Error("--top_p must be in (0, 1]");
  g.sampling.top_k = f.i64("top_k") <= 0 ? 0 : f.i64("top_k");
  g.loss.epsilon_low = f.f64("epsilon");
  g.loss.epsilon_high = opt_number(f, "epsilon_high").value_or(g.loss.epsilon_low);
  if (g.loss.epsilon_low < 0 || g.loss.epsilon_high < 0)
    throw Error("--epsilon and --epsilon_high must not be negative");
  g.num_iterations = f.i64("num_iterations");
  if (g.num_iterations < 1) throw Error("--num_iterations must be at least 1");
  g.per_device_train_batch_size = a.per_device_train_batch_size;
  g.gradient_accumulation_steps = a.gradient_accumulation_steps;
  g.comm = a.comm;
  const auto spg = opt_int(f, "steps_per_generation");
  const auto gbs = opt_int(f, "generation_batch_size");
  if (spg && gbs) throw Error("set --steps_per_generation or --generation_batch_size, not both");
  if (gbs) {
    // TRL: the generation batch covers every rank's micro-batches.
    const int64_t per_step = a.per_device_train_batch_size * g.ranks();
    if (*gbs < 1 || *gbs % per_step != 0)
      throw Error(g.ranks() == 1 ? fmt::format("--generation_batch_size {} must be a multiple of "
                                               "--per_device_train_batch_size {}",
                                               *gbs, a.per_device_train_batch_size)
                                 : fmt::format("--generation_batch_size {} must be a multiple of "
                                               "--per_device_train_batch_size {} x {} ranks",
                                               *gbs, a.per_device_train_batch_size, g.ranks()));
    g.steps_per_generation = *gbs / per_step;
  } else {
    g.steps_per_generation = spg.value_or(g.gradient_accumulation_steps);
  }
  if (g.steps_per_generation < 1) throw Error("--steps_per_generation must be at least 1");
  if (g.generation_batch_size() % g.num_generations != 0)
    throw Error(fmt::format("the generation batch of {} completions (batch size {} x {} steps per "
                            "generation x {} rank{}) is not divisible by --num_generations {}",
                            g.generation_batch_size(), a.per_device_train_batch_size,
                            g.steps_per_generation, g.ranks(), g.ranks() == 1 ? "" : "s",
                            g.num_generations),
                "choose --per_device_train_batch_size, --gradient_accumulation_steps or "
                "--generation_batch_size as a multiple of --num_generations");
  g.advantage_estimator = rlhf::parse_advantage_estimator(f.str("advantage_estimator"));
  g.scale_rewards = f.str("scale_rewards").empty()
                        ? rlhf::default_scale_rewards(g.advantage_estimator)
                        : rlhf::parse_scale_rewards(f.str("scale_rewards"));
  g.dynamic_sample = f.boolean("dynamic_sample");
  g.max_resample_times = f.i64("max_resample_times");
  g.log_completions = f.boolean("log_completions");
  g.ref_model = f.str("ref_model");
  g.ref_adapters = f.str("ref_adapters");
  if (!g.ref_model.empty() && (a.tuner_type != "full" || g.loss.beta == 0))
    throw Error("--ref_model is only used by full-parameter training with --beta other than 0");
  if (!g.ref_adapters.empty() && (a.tuner_type != "lora" || g.loss.beta == 0))
    throw Error("--ref_adapters is only used by LoRA training with --beta other than 0");
  g.seed = a.seed;
  g.data_seed = a.data_seed;

  rlhf::RewardOptions ro;
  ro.max_completion_length = g.max_completion_length;
  ro.cosine_min_len_value_wrong = f.f64("cosine_min_len_value_wrong");
  ro.cosine_max_len_value_wrong = f.f64("cosine_max_len_value_wrong");
  ro.cosine_min_len_value_correct = f.f64("cosine_min_len_value_correct");
  ro.cosine_max_len_value_correct = f.f64("cosine_max_len_value_correct");
  ro.cosine_max_len = opt_int(f, "cosine_max_len").value_or(0);
  ro.repetition_n_grams = f.i64("repetition_n_grams");
  ro.repetition_max_penalty = f.f64("repetition_max_penalty");
  ro.soft_max_length = opt_int(f, "soft_max_length").value_or(0);
  ro.soft_cache_length = opt_int(f, "soft_cache_length");
  std::vector<std::unique_ptr<rlhf::RewardFunction>> rewards;
  for (const auto& name : f.list("reward_funcs"))
    rewards.push_back(rlhf::make_builtin_reward(name, ro));
  if (!f.str("external_reward_command").empty())
    rewards.push_back(std::make_unique<rlhf::ExternalCommandReward>(
        f.str("external_reward_command"), "external"));
  if (!f.str("reward_model").empty())
    rewards.push_back(
        std::make_unique<rlhf::RewardModelReward>(resolve_model_path(f.str("reward_model"))));
  if (rewards.empty())
    throw Error(
        "grpo needs a reward: --reward_funcs, --external_reward_command and/or --reward_model",
        "built-ins: accuracy format cosine repetition soft_overlong");
  g.reward_weights = numbers(f, "reward_weights");
  if (!g.reward_weights.empty() && g.reward_weights.size() != rewards.size())
    throw Error(fmt::format("--reward_weights has {} values for {} rewards",
                            g.reward_weights.size(), rewards.size()));
  a.args_json["rlhf_type"] = "grpo";

  DataArgs d = data_args(f, a);
  if (!f.given("truncation_strategy")) d.truncation_strategy = "left";
  g.output_dir = a.output_dir;
  PromptBundle data = load_prompt_datasets(d, a.model);
  if (!data.val.empty() && data.val.size() * size_t(g.num_generations) > 4096)
    log_warning("evaluation samples {} completions at once", data.val.size() * g.num_generations);
  Tokenizer tok = Tokenizer::load(resolve_model_path(a.model));
  rlhf::GrpoTask task(std::move(g), std::move(data), std::move(rewards), std::move(tok));
  TrainResult r = train(a, task);
  if (!a.comm->is_main()) return 0;
  std::cout << "run folder: " << r.run_dir << "\nlast checkpoint: " << r.last_checkpoint << "\n";
  if (!r.best_checkpoint.empty()) std::cout << "best checkpoint: " << r.best_checkpoint << "\n";
  return 0;
}

int run_ppo(const Flags& f) {
  for (const auto& n : preference_only_flags())
    if (f.given(n)) throw Error(fmt::format("--{} does not apply to --rlhf_type ppo", n));
  static const std::vector<std::string> shared = {"max_completion_length", "temperature",
                                                  "reward_model"};
  for (const auto& n : grpo_only_flags())
    if (f.given(n) && std::find(shared.begin(), shared.end(), n) == shared.end())
      throw Error(fmt::format("--{} does not apply to --rlhf_type ppo", n),
                  "ppo samples one completion per prompt with top_k and top_p off, and its "
                  "reward is --reward_model");
  for (const char* n : {"beta", "loss_type", "ref_adapters"})
    if (f.given(n))
      throw Error(fmt::format("--{} does not apply to --rlhf_type ppo", n),
                  "the KL penalty's weight is --kl_coef; the reference is the model without "
                  "its adapter (LoRA) or --ref_model (full)");
  for (const char* n : {"loss_scale", "preserve_thinking"})
    if (f.given(n))
      throw Error(fmt::format("--{} does not apply to --rlhf_type ppo", n),
                  "the loss covers exactly the generated completion tokens");
  if (f.str("reward_model").empty())
    throw Error("--rlhf_type ppo needs --reward_model (a sequence classifier, the reward model "
                "and the value model's starting point)",
                "train one with --rlhf_type rm --tuner_type full");
  TrainArgs a = train_args(f, "rlhf");
  if (a.gradient_accumulation_steps <= 0)  // the trainer's default, resolved here for the task
    a.gradient_accumulation_steps =
        std::max<int64_t>(1, (16 + a.per_device_train_batch_size - 1) /
                                 a.per_device_train_batch_size);
  if (a.zero_stage > 0)
    log_info("ppo under ZeRO stage {}: the policy is sharded; the value model is whole on every "
             "rank, its gradients all-reduced",
             a.zero_stage);
  rlhf::PpoArgs p;
  p.per_device_train_batch_size = a.per_device_train_batch_size;
  p.gradient_accumulation_steps = a.gradient_accumulation_steps;
  p.comm = a.comm;
  if (p.rollout_batch() < 2)
    throw Error(
        "ppo whitens advantages over the rollout batch, so --per_device_train_batch_size "
        "x --gradient_accumulation_steps x ranks must be at least 2");
  p.num_ppo_epochs = f.i64("num_ppo_epochs");
  if (p.num_ppo_epochs < 1) throw Error("--num_ppo_epochs must be at least 1");
  p.loss.kl_coef = f.f64("kl_coef");
  p.loss.cliprange = f.f64("cliprange");
  p.loss.vf_coef = f.f64("vf_coef");
  p.loss.cliprange_value = f.f64("cliprange_value");
  p.loss.gamma = f.f64("gamma");
  p.loss.lam = f.f64("lam");
  p.loss.whiten_rewards = f.boolean("whiten_rewards");
  if (p.loss.kl_coef < 0 || p.loss.cliprange < 0 || p.loss.vf_coef < 0 ||
      p.loss.cliprange_value < 0)
    throw Error("--kl_coef, --cliprange, --vf_coef and --cliprange_value must not be negative");
  if (p.loss.gamma < 0 || p.loss.gamma > 1 || p.loss.lam < 0 || p.loss.lam > 1)
    throw Error("--gamma and --lam must be in [0, 1]");
  p.missing_eos_penalty = opt_number(f, "missing_eos_penalty");
  p.max_completion_length = f.i64("max_completion_length");
  if (p.max_completion_length < 1) throw Error("--max_completion_length must be at least 1");
  p.sampling.temperature = f.f64("temperature");
  if (p.sampling.temperature <= 0)
    throw Error("--temperature must be positive for ppo",
                "rollouts are sampled and scored on logits / temperature");
  p.sampling.top_k = 0;
  p.sampling.top_p = 1.0;
  p.reward_model = resolve_model_path(f.str("reward_model"));
  p.ref_model = f.str("ref_model");
  if (!p.ref_model.empty() && a.tuner_type != "full")
    throw Error("--ref_model is only used by full-parameter ppo training",
                "with LoRA the reference is the model without its adapter");
  p.lora = a.tuner_type == "lora";
  p.lora_config = a.lora;
  p.seed = a.seed;
  p.data_seed = a.data_seed;
  a.args_json["rlhf_type"] = "ppo";

  DataArgs d = data_args(f, a);
  if (!f.given("truncation_strategy")) d.truncation_strategy = "left";
  PromptBundle data = load_prompt_datasets(d, a.model);
  Tokenizer tok = Tokenizer::load(resolve_model_path(a.model));
  rlhf::PpoTask task(std::move(p), std::move(data), std::move(tok));
  TrainResult r = train(a, task);
  if (!a.comm->is_main()) return 0;
  std::cout << "run folder: " << r.run_dir << "\nlast checkpoint: " << r.last_checkpoint << "\n";
  if (!r.best_checkpoint.empty()) std::cout << "best checkpoint: " << r.best_checkpoint << "\n";
  return 0;
}

int run_rlhf(int argc, char** argv) {
  Flags f("rlhf", rlhf_flags());
  if (!f.parse(argc, argv)) {
    std::cout << f.help_text(
        "Preference alignment (DPO, CPO, SimPO, ORPO, KTO), reward models, GRPO and PPO.");
    return 0;
  }
  const std::string type = f.str("rlhf_type");
  if (type == "grpo") return run_grpo(f);
  if (type == "ppo") return run_ppo(f);
  if (type == "gkd")
    throw Error("--rlhf_type gkd is not supported yet",
                "supported: dpo, orpo, simpo, cpo, kto, rm, grpo, ppo");
  for (const auto& n : grpo_only_flags())
    if (f.given(n)) throw Error(fmt::format("--{} only applies to --rlhf_type grpo", n));
  for (const auto& n : ppo_only_flags())
    if (f.given(n)) throw Error(fmt::format("--{} only applies to --rlhf_type ppo", n));
  rlhf::RlhfArgs raw;
  raw.rlhf_type = type;
  raw.beta = opt_number(f, "beta");
  if (!f.list("loss_type").empty()) raw.loss_type = f.list("loss_type");
  if (!f.list("loss_weights").empty()) {
    raw.loss_weights.emplace();
    for (const auto& w : f.list("loss_weights")) {
      char* end = nullptr;
      const double v = std::strtod(w.c_str(), &end);
      if (w.empty() || *end != '\0')
        throw Error(fmt::format("--loss_weights: '{}' is not a number", w));
      raw.loss_weights->push_back(v);
    }
  }
  raw.rpo_alpha = opt_number(f, "rpo_alpha");
  raw.label_smoothing = opt_number(f, "label_smoothing");
  raw.ld_alpha = opt_number(f, "ld_alpha");
  raw.discopop_tau = opt_number(f, "discopop_tau");
  raw.cpo_alpha = opt_number(f, "cpo_alpha");
  raw.simpo_gamma = opt_number(f, "simpo_gamma");
  raw.desirable_weight = opt_number(f, "desirable_weight");
  raw.undesirable_weight = opt_number(f, "undesirable_weight");
  raw.center_rewards_coefficient = opt_number(f, "center_rewards_coefficient");

  TrainArgs a = train_args(f, "rlhf");
  rlhf::PreferenceTaskArgs t;
  t.loss = rlhf::resolve_config(raw);
  t.ref_model = f.str("ref_model");
  t.ref_adapters = f.str("ref_adapters");
  t.seed = a.seed;
  const rlhf::RlhfType rt = t.loss.type;  // simpo is cpo from here on
  const bool uses_ref = rt == rlhf::RlhfType::kDpo || rt == rlhf::RlhfType::kKto;
  if (!t.ref_model.empty() && (a.tuner_type != "full" || !uses_ref))
    throw Error("--ref_model is only used by full-parameter dpo/kto training",
                "CPO/ORPO/SimPO/RM or LoRA training does not require a ref_model");
  if (!t.ref_adapters.empty() && (a.tuner_type != "lora" || !uses_ref))
    throw Error("--ref_adapters is only used by LoRA dpo/kto training");
  if (rt == rlhf::RlhfType::kRm && a.tuner_type == "lora" &&
      std::find(a.lora.modules_to_save.begin(), a.lora.modules_to_save.end(), "score") ==
          a.lora.modules_to_save.end())
    a.lora.modules_to_save.push_back("score");  // PEFT's SEQ_CLS task trains the head in full
  a.args_json["rlhf_type"] = type;

  DataArgs d = data_args(f, a);
  if (!f.given("loss_scale")) d.loss_scale = rlhf_default_loss_scale(type);
  PreferenceOptions po;
  if (rt == rlhf::RlhfType::kKto && t.loss.has(rlhf::LossType::kKto)) {
    // ms-swift pairs each row with another row's reply inside every global batch (the KL term).
    const int64_t bs = a.per_device_train_batch_size;
    const int64_t gas = a.gradient_accumulation_steps > 0
                            ? a.gradient_accumulation_steps
                            : std::max<int64_t>(1, (16 + bs - 1) / bs);
    po.kto_kl_batch_size = bs * gas;
  }
  PreferenceBundle data =
      load_preference_datasets(d, a.model, std::string(rlhf::rlhf_type_name(rt)), po);
  if (rt == rlhf::RlhfType::kKto) {
    int64_t desirable = 0, undesirable = 0;
    for (const auto& r : data.train) (r.label.value_or(true) ? desirable : undesirable) += 1;
    if (auto w = rlhf::kto_weight_warning(t.loss, desirable, undesirable)) log_warning("{}", *w);
  }
  rlhf::PreferenceTask task(t, std::move(data.train), std::move(data.val));
  TrainResult r = train(a, task);
  if (!a.comm->is_main()) return 0;
  std::cout << "run folder: " << r.run_dir << "\nlast checkpoint: " << r.last_checkpoint << "\n";
  if (!r.best_checkpoint.empty()) std::cout << "best checkpoint: " << r.best_checkpoint << "\n";
  return 0;
}

const bool rlhf_registered = register_command(
    {"rlhf",
     "Preference alignment (dpo, orpo, simpo, cpo, kto), reward models (rm) and online RL "
     "(grpo, ppo).",
     [](int c, char** v) { return run_rlhf(c, v); }});

}  // namespace
}  // namespace swiftlet::cli
