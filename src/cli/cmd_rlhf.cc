// swiftlet rlhf: preference alignment (dpo, cpo, simpo, orpo, kto) and reward models (rm) with
// ms-swift's flags and defaults, on the one trainer loop.
#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "cli/train_args.h"
#include "core/log.h"
#include "data/preference.h"
#include "rlhf/preference_task.h"

namespace swiftlet::cli {

namespace {

std::vector<FlagSpec> rlhf_flags() {
  std::vector<FlagSpec> f = train_flags(false);
  std::vector<FlagSpec> more = {
      {"rlhf_type", FlagKind::kString, "dpo", "dpo, orpo, simpo, cpo, kto or rm"},
      {"ref_model", FlagKind::kString, "",
       "full training: the reference model folder (default: --model)"},
      {"ref_adapters", FlagKind::kString, "",
       "LoRA: an adapter used as the reference (default: the base without the adapter)"},
      {"beta", FlagKind::kString, "", "0.1 (simpo 2.0)"},
      {"loss_type", FlagKind::kList, "",
       "dpo: sigmoid hinge ipo robust bco_pair sppo_hard nca_pair exo_pair aot aot_unpaired "
       "apo_zero apo_down discopop sft (several with --loss_weights); cpo: sigmoid hinge ipo "
       "simpo; kto: kto apo_zero_unpaired"},
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
  return f;
}

std::optional<double> opt_number(const Flags& f, const std::string& name) {
  if (!f.given(name) || f.str(name).empty()) return std::nullopt;
  return f.f64(name);
}

int run_rlhf(int argc, char** argv) {
  Flags f("rlhf", rlhf_flags());
  if (!f.parse(argc, argv)) {
    std::cout << f.help_text(
        "Preference alignment (DPO, CPO, SimPO, ORPO, KTO) and reward models.");
    return 0;
  }
  const std::string type = f.str("rlhf_type");
  if (type == "grpo" || type == "ppo" || type == "gkd")
    throw Error(fmt::format("--rlhf_type {} is not supported yet", type),
                "supported: dpo, orpo, simpo, cpo, kto, rm");
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
  std::cout << "run folder: " << r.run_dir << "\nlast checkpoint: " << r.last_checkpoint << "\n";
  if (!r.best_checkpoint.empty()) std::cout << "best checkpoint: " << r.best_checkpoint << "\n";
  return 0;
}

const bool rlhf_registered = register_command(
    {"rlhf", "Preference alignment (dpo, orpo, simpo, cpo, kto) and reward models (rm).",
     [](int c, char** v) { return run_rlhf(c, v); }});

}  // namespace
}  // namespace swiftlet::cli
