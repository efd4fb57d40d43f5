#include "cli/parallel_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/log.h"

namespace swiftlet::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The presets of --deepspeed, with the settings of ms-swift's swift/config/<name>.json: batch,
// accumulation, clipping and precision left to the command line ("auto"), ZeRO's communication
// knobs as tuning only.
std::optional<json> deepspeed_preset(const std::string& name) {
  int stage = -1;
  bool offload = false;
  if (name == "zero0" || name == "zero1" || name == "zero2" || name == "zero3") {
    stage = name[4] - '0';
  } else if (name == "zero2_offload" || name == "zero3_offload") {
    stage = name[4] - '0';
    offload = true;
  } else {
    return std::nullopt;
  }
  json j = {
      {"fp16",
       {{"enabled", "auto"},
        {"loss_scale", 0},
        {"loss_scale_window", 1000},
        {"initial_scale_power", 16},
        {"hysteresis", 2},
        {"min_loss_scale", 1}}},
      {"bf16", {{"enabled", "auto"}}},
      {"gradient_accumulation_steps", "auto"},
      {"gradient_clipping", "auto"},
      {"steps_per_print", 2000},
      {"train_batch_size", "auto"},
      {"train_micro_batch_size_per_gpu", "auto"},
      {"wall_clock_breakdown", false},
  };
  const json device = {{"device", offload ? "cpu" : "none"}, {"pin_memory", true}};
  json z = {{"stage", stage}, {"overlap_comm", false}, {"contiguous_gradients", true}};
  if (stage >= 1) z["offload_optimizer"] = device;
  if (stage <= 2) {
    z["allgather_partitions"] = true;
    z["allgather_bucket_size"] = 2e8;
    z["reduce_scatter"] = true;
    z["reduce_bucket_size"] = 2e8;
  } else {
    z["offload_param"] = device;
    z["sub_group_size"] = 1e9;
    z["reduce_bucket_size"] = "auto";
    z["stage3_prefetch_bucket_size"] = "auto";
    z["stage3_param_persistence_threshold"] = "auto";
    z["stage3_max_live_parameters"] = 1e9;
    z["stage3_max_reuse_distance"] = 1e9;
    z["stage3_gather_16bit_weights_on_model_save"] = true;
  }
  j["zero_optimization"] = z;
  return j;
}

// --fsdp fsdp2: ms-swift's swift/config/fsdp2.json.
std::optional<json> fsdp_preset(const std::string& name) {
  if (name != "fsdp2") return std::nullopt;
  return json{{"fsdp", "full_shard auto_wrap"},
              {"fsdp_config",
               {{"fsdp_version", 2},
                {"reshard_after_forward", true},
                {"auto_wrap_policy", "TRANSFORMER_BASED_WRAP"},
                {"cpu_ram_efficient_loading", true},
                {"state_dict_type", "SHARDED_STATE_DICT"},
                {"activation_checkpointing", true}}}};
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_auto(const json& v) { return v.is_string() && v.get<std::string>() == "auto"; }

// One config, for messages: "--deepspeed ds.json: <what>".
class Config {
 public:
  Config(const std::string& flag, const std::string& value)
      : where_(fmt::format("--{} {}", flag,
                           !value.empty() && value[0] == '{' ? "(inline JSON)" : value)) {}
  const std::string& where() const { return where_; }

  [[noreturn]] void fail(const std::string& what, const std::string& hint = "") const {
    throw Error(fmt::format("{}: {}", where_, what), hint);
  }
  // A key swiftlet does not read: refused, so that nothing the config asks for is dropped.
  [[noreturn]] void unknown(const std::string& key) const {
    fail(fmt::format("{} is not a setting swiftlet supports", key),
         "remove it (README.md lists the keys swiftlet reads and the ones it accepts as tuning)");
  }

  int64_t whole(const std::string& key, const json& v) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9e18) return int64_t(d);
    }
    fail(fmt::format("{} must be a whole number or \"auto\", not {}", key, v.dump()));
  }
  double number(const std::string& key, const json& v) const {
    if (!v.is_number()) fail(fmt::format("{} must be a number or \"auto\", not {}", key, v.dump()));
    return v.get<double>();
  }
  bool boolean(const std::string& key, const json& v) const {
    if (!v.is_boolean()) fail(fmt::format("{} must be true or false, not {}", key, v.dump()));
    return v.get<bool>();
  }
  const json& object(const std::string& key, const json& v) const {
    if (!v.is_object()) fail(fmt::format("{} must be a JSON object, not {}", key, v.dump()));
    return v;
  }

  // The rule for a value the config and a flag both carry: the flag, when given, must agree; when
  // not given, the config's value is taken.
  template <class T>
  void agree(const Flags& f, const std::string& key, T value, const std::string& flag,
             T& target) const {
    if (value == target) return;
    if (f.given(flag))
      fail(fmt::format("{} is {} and --{} is {}", key, value, flag, target),
           fmt::format("set {} to \"auto\" to take --{}, or make the two equal", key, flag));
    log_info("{}: {} {} sets --{} (default {})", where_, key, value, flag, target);
    target = value;
  }

 private:
  std::string where_;
};

// Reads `value` as a preset, inline JSON or a JSON file; Error naming the path when it cannot.
json load(const Config& c, const std::string& flag, const std::string& value,
          const std::optional<json>& preset, const std::string& presets) {
  if (preset) return *preset;
  std::string text;
  if (value[0] == '{') {
    text = value;
  } else {
    std::error_code ec;
    if (!fs::exists(value, ec))
      throw Error(fmt::format("--{} {} is neither a preset ({}) nor an existing JSON file", flag,
                              value, presets),
                  "pass a preset name, or the path of a JSON config");
    std::ifstream in(value, std::ios::binary);
    std::stringstream ss;
    if (in) ss << in.rdbuf();
    if (!in || fs::is_directory(value, ec))
      throw Error(fmt::format("--{} {} cannot be read", flag, value));
    text = ss.str();
  }
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann reports a byte offset; a line and column are what an editor shows.
    const size_t at = std::min(text.size(), e.byte > 0 ? size_t(e.byte - 1) : size_t(0));
    const size_t nl = text.rfind('\n', at == 0 ? 0 : at - 1);
    const size_t line = size_t(std::count(text.begin(), text.begin() + long(at), '\n')) + 1;
    const size_t column = nl == std::string::npos || at == 0 ? at + 1 : at - nl;
    throw Error(fmt::format("{} is not valid JSON (line {}, column {})", c.where(), line, column));
  }
  if (!j.is_object()) c.fail("the config must be a JSON object");
  return j;
}

// offload_optimizer / offload_param: {"device": "none" | "cpu" | "nvme", ...}.
bool offload_device(const Config& c, const std::string& key, const json& v) {
  static const std::set<std::string> knobs = {"pin_memory",    "buffer_count",  "buffer_size",
                                              "max_in_cpu",    "fast_init",     "pipeline",
                                              "pipeline_read", "pipeline_write"};
  bool on = false;
  for (const auto& [k, x] : c.object(key, v).items()) {
    const std::string path = key + "." + k;
    if (k == "device") {
      const std::string d = x.is_null() ? "none" : x.is_string() ? lower(x.get<std::string>()) : "";
      if (d == "cpu") {
        on = true;
      } else if (d == "nvme") {
        c.fail(fmt::format("{} nvme is not supported: swiftlet offloads to host memory only", path),
               fmt::format("set {} to \"cpu\"", path));
      } else if (d != "none") {
        c.fail(fmt::format("{} must be \"none\", \"cpu\" or \"nvme\", not {}", path, x.dump()));
      }
    } else if (k == "ratio") {
      if (c.number(path, x) != 1.0)
        c.fail(fmt::format("{} {} (offloading part of the optimizer) is not supported", path,
                           x.dump()),
               fmt::format("remove {} (the whole optimizer is offloaded)", path));
    } else if (k == "nvme_path" || knobs.count(k)) {
    } else {
      c.unknown(path);
    }
  }
  return on;
}

void apply_zero_optimization(const Config& c, const json& z, TrainArgs& a) {
  // Communication and memory tuning of DeepSpeed's own implementation: they change how and when
  // states move, not what is trained. swiftlet's gradient buckets are --ddp_bucket_cap_mb (not
  // reduce_bucket_size, which DeepSpeed counts in elements and which bounds its reduction buffer
  // only, while swiftlet's bucket size also lays out the parameters and sets the overlap of the
  // all-reduce with backward).
  static const std::set<std::string> knobs = {
      "allgather_partitions",
      "allgather_bucket_size",
      "overlap_comm",
      "reduce_scatter",
      "reduce_bucket_size",
      "contiguous_gradients",
      "round_robin_gradients",
      "sub_group_size",
      "stage3_prefetch_bucket_size",
      "stage3_param_persistence_threshold",
      "stage3_model_persistence_threshold",
      "stage3_max_live_parameters",
      "stage3_max_reuse_distance",
      "stage3_gather_16bit_weights_on_model_save",
      "stage3_gather_fp16_weights_on_model_save",
      "gather_16bit_weights_on_model_save",
      "prefetch_bucket_size",
      "param_persistence_threshold",
      "model_persistence_threshold",
      "max_live_parameters",
      "max_reuse_distance",
      "stage3_module_granularity_threshold",
      "module_granularity_threshold",
      "stage3_use_all_reduce_for_fetch_params",
      "use_all_reduce_for_fetch_params",
      "use_multi_rank_bucket_allreduce",
      "memory_efficient_linear",
      "load_from_fp32_weights",
      "elastic_checkpoint",
      "ignore_unused_parameters",
      "legacy_stage1",
      "log_trace_cache_warnings",
      "cpu_offload_use_pin_memory",
      "pipeline_loading_checkpoint",
      "override_module_apply",
  };
  for (const auto& [k, v] : c.object("zero_optimization", z).items()) {
    const std::string path = "zero_optimization." + k;
    if (k == "stage") {
      const int64_t s = c.whole(path, v);
      if (s < 0 || s > 3) c.fail(fmt::format("{} must be 0, 1, 2 or 3, not {}", path, s));
      a.zero_stage = int(s);
    } else if (k == "offload_optimizer") {
      a.offload_optimizer = offload_device(c, path, v);
    } else if (k == "offload_param") {
      a.offload_param = offload_device(c, path, v);
    } else if (k == "cpu_offload") {  // DeepSpeed's older spelling of offload_optimizer cpu
      a.offload_optimizer = c.boolean(path, v);
    } else if (k == "cpu_offload_params") {
      a.offload_param = c.boolean(path, v);
    } else if (k == "zero_quantized_weights" || k == "zero_quantized_gradients" ||
               k == "zero_quantized_nontrainable_weights") {
      if (c.boolean(path, v))
        c.fail(fmt::format("{} true is not supported: states move in f32, never quantized", path));
    } else if (k == "zero_hpz_partition_size") {
      if (c.whole(path, v) > 1)
        c.fail(
            fmt::format("{} {} (ZeRO++ hierarchical partitioning) is not supported: states are "
                        "sharded over every rank of the job",
                        path, v.dump()));
    } else if (k == "mics_shard_size") {
      if (c.whole(path, v) > 0)
        c.fail(
            fmt::format("{} {} (MiCS) is not supported: states are sharded over every rank of "
                        "the job",
                        path, v.dump()));
    } else if (k == "mics_hierarchical_params_gather" || knobs.count(k)) {
    } else {
      c.unknown(path);
    }
  }
}

void apply_optimizer(const Config& c, const json& o, const Flags& f, TrainArgs& a) {
  for (const auto& [k, v] : c.object("optimizer", o).items()) {
    if (k == "type") {
      const std::string t = v.is_string() ? lower(v.get<std::string>()) : "";
      // DeepSpeed's "Adam" decays decoupled too (adam_w_mode defaults to true).
      if (t != "adamw" && t != "adam")
        c.fail(
            fmt::format("optimizer.type {} is not supported: swiftlet trains with AdamW", v.dump()),
            "set optimizer.type to \"AdamW\", or remove the optimizer section");
    } else if (k == "params") {
      for (const auto& [p, x] : c.object("optimizer.params", v).items()) {
        const std::string path = "optimizer.params." + p;
        if (is_auto(x) || x.is_null()) continue;
        if (p == "lr") {
          c.agree(f, path, c.number(path, x), "learning_rate", a.learning_rate);
        } else if (p == "betas") {
          if (!x.is_array() || x.size() != 2)
            c.fail(fmt::format("{} must be [beta1, beta2] or \"auto\", not {}", path, x.dump()));
          if (!is_auto(x[0]))
            c.agree(f, path + "[0]", c.number(path, x[0]), "adam_beta1", a.adam_beta1);
          if (!is_auto(x[1]))
            c.agree(f, path + "[1]", c.number(path, x[1]), "adam_beta2", a.adam_beta2);
        } else if (p == "eps") {
          c.agree(f, path, c.number(path, x), "adam_epsilon", a.adam_epsilon);
        } else if (p == "weight_decay") {
          c.agree(f, path, c.number(path, x), "weight_decay", a.weight_decay);
        } else if (p == "adam_w_mode" || p == "bias_correction") {
          if (!c.boolean(path, x))
            c.fail(
                fmt::format("{} false is not supported: swiftlet's AdamW decays decoupled and "
                            "corrects the moments' bias",
                            path));
        } else if (p == "amsgrad") {
          if (c.boolean(path, x)) c.fail(fmt::format("{} true is not supported", path));
        } else if (p == "torch_adam" || p == "fused") {  // which implementation runs
        } else {
          c.unknown(path);
        }
      }
    } else {
      c.unknown("optimizer." + k);
    }
  }
}

void apply_deepspeed(const Config& c, const json& j, const Flags& f, TrainArgs& a, int world) {
  // Logging, profiling and checkpoint-format settings of DeepSpeed's engine.
  static const std::set<std::string> knobs = {"steps_per_print",
                                              "wall_clock_breakdown",
                                              "memory_breakdown",
                                              "dump_state",
                                              "flops_profiler",
                                              "tensorboard",
                                              "wandb",
                                              "csv_monitor",
                                              "comet",
                                              "comms_logger",
                                              "checkpoint",
                                              "zero_allow_untested_optimizer",
                                              "zero_force_ds_cpu_optimizer",
                                              "prescale_gradients",
                                              "gradient_predivide_factor"};
  for (const auto& [k, v] : j.items()) {
    if (!k.empty() && k[0] == '_') continue;  // comments
    if (k == "train_micro_batch_size_per_gpu") {
      if (!is_auto(v))
        c.agree(f, k, c.whole(k, v), "per_device_train_batch_size", a.per_device_train_batch_size);
    } else if (k == "gradient_accumulation_steps") {
      if (!is_auto(v))
        c.agree(f, k, c.whole(k, v), "gradient_accumulation_steps", a.gradient_accumulation_steps);
    } else if (k == "gradient_clipping") {
      if (!is_auto(v)) c.agree(f, k, c.number(k, v), "max_grad_norm", a.max_grad_norm);
    } else if (k == "train_batch_size") {  // checked below, once the other two are known
    } else if (k == "fp16") {
      const json& e = c.object(k, v).value("enabled", json(false));
      if (!is_auto(e) && c.boolean("fp16.enabled", e))
        c.fail(
            "fp16.enabled true is not supported: swiftlet trains f32 master weights with no "
            "fp16 loss scaling",
            "set fp16.enabled to \"auto\" (--torch_dtype float16 keeps frozen weights in "
            "float16; bf16.enabled true keeps them in bfloat16)");
    } else if (k == "bf16" || k == "bfloat16") {
      const json& e = c.object(k, v).value("enabled", json("auto"));
      if (is_auto(e)) continue;
      const bool on = c.boolean(k + ".enabled", e);
      const std::string dt = lower(a.torch_dtype);
      const bool bf = dt == "bfloat16" || dt == "bf16";
      // Compute, gradients and optimizer states are f32 either way; bf16 is the dtype of the
      // frozen weights (LoRA's base), --torch_dtype.
      if (f.given("torch_dtype") && on != bf)
        c.fail(fmt::format("{}.enabled is {} and --torch_dtype is {}", k, on, a.torch_dtype),
               fmt::format("set {}.enabled to \"auto\" to take --torch_dtype", k));
      if (on && !bf) {
        log_info("{}: {}.enabled true sets --torch_dtype bfloat16", c.where(), k);
        a.torch_dtype = "bfloat16";
      }
    } else if (k == "amp") {
      const json& e = c.object(k, v).value("enabled", json(false));
      if (c.boolean("amp.enabled", e))
        c.fail("amp.enabled true (Apex mixed precision) is not supported",
               "remove the amp section");
    } else if (k == "zero_optimization") {
      apply_zero_optimization(c, v, a);
    } else if (k == "optimizer") {
      apply_optimizer(c, v, f, a);
    } else if (k == "scheduler") {
      c.fail(
          "scheduler is not supported: the learning-rate schedule is --lr_scheduler_type with "
          "--warmup_ratio or --warmup_steps",
          "remove the scheduler section and pass those flags");
    } else if (k == "communication_data_type") {
      const std::string t = v.is_null() ? "fp32" : v.is_string() ? lower(v.get<std::string>()) : "";
      if (t != "fp32" && t != "float32")
        c.fail(
            fmt::format("communication_data_type {} is not supported: gradients are summed in "
                        "f32",
                        v.dump()));
    } else if (k == "data_types") {
      for (const auto& [d, x] : c.object(k, v).items()) {
        const std::string t = x.is_null()     ? "fp32"
                              : x.is_string() ? lower(x.get<std::string>())
                                              : "";
        if (d != "grad_accum_dtype") c.unknown("data_types." + d);
        if (t != "fp32" && t != "float32")
          c.fail(
              fmt::format("data_types.grad_accum_dtype {} is not supported: gradients "
                          "accumulate in f32",
                          x.dump()));
      }
    } else if (k == "sparse_gradients") {
      if (c.boolean(k, v)) c.fail("sparse_gradients true is not supported");
    } else if (knobs.count(k)) {
    } else {
      c.unknown(k);
    }
  }
  // DeepSpeed's train_batch_size is micro-batch x accumulation x ranks; with the accumulation
  // left automatic it sets the accumulation, as DeepSpeed derives the one value not given.
  if (const auto it = j.find("train_batch_size"); it != j.end() && !is_auto(*it)) {
    const int64_t tbs = c.whole("train_batch_size", *it);
    const int64_t bs = a.per_device_train_batch_size, gas = a.gradient_accumulation_steps;
    if (gas > 0 && bs * gas * world != tbs)
      c.fail(fmt::format("train_batch_size is {} and --per_device_train_batch_size x "
                         "--gradient_accumulation_steps x ranks is {} x {} x {} = {}",
                         tbs, bs, gas, world, bs * gas * world),
             "set train_batch_size to \"auto\", or make them agree");
    if (gas <= 0) {
      if (bs < 1 || tbs < bs * world || tbs % (bs * world) != 0)
        c.fail(fmt::format("train_batch_size {} is not a multiple of --per_device_train_batch_size "
                           "x ranks = {} x {}",
                           tbs, bs, world),
               "set train_batch_size to \"auto\", or pass --gradient_accumulation_steps");
      a.gradient_accumulation_steps = tbs / (bs * world);
      log_info("{}: train_batch_size {} sets --gradient_accumulation_steps {}", c.where(), tbs,
               a.gradient_accumulation_steps);
    }
  }
}

// FSDP's sharding strategies by their names in accelerate and torch (ShardingStrategy 1..5) as
// ZeRO stages; Error for the hybrid ones.
int fsdp_strategy_stage(const Config& c, const std::string& key, const std::string& name) {
  const std::string n = lower(name);
  if (n == "full_shard" || n == "1") return 3;
  if (n == "shard_grad_op" || n == "2") return 2;
  if (n == "no_shard" || n == "3") return 0;
  if (n == "hybrid_shard" || n == "hybrid_shard_zero2" || n == "_hybrid_shard_zero2" || n == "4" ||
      n == "5")
    c.fail(fmt::format("{} {} is not supported: swiftlet shards over every rank of the job, not "
                       "within nodes",
                       key, name),
           "use full_shard or shard_grad_op");
  c.fail(fmt::format("{} {} is not a sharding strategy", key, name),
         "use full_shard, shard_grad_op or no_shard");
}

void apply_fsdp(const Config& c, const json& j, TrainArgs& a) {
  // fsdp: the strategy string (or list of its words); full_shard when neither it nor fsdp_config
  // names a strategy, as ms-swift's default "full_shard auto_wrap".
  std::vector<std::string> words;
  bool strategy_given = false;
  if (const auto it = j.find("fsdp"); it != j.end()) {
    std::vector<std::string> parts;
    if (it->is_string()) {
      parts.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& w : *it)
        if (w.is_string())
          parts.push_back(w.get<std::string>());
        else
          c.fail(fmt::format("fsdp must be a string of options, not {}", it->dump()));
    } else {
      c.fail(fmt::format("fsdp must be a string of options, not {}", it->dump()));
    }
    for (const auto& p : parts) {
      std::istringstream in(p);
      for (std::string w; in >> w;) words.push_back(w);
    }
  }
  std::optional<int> stage;
  std::string stage_from;
  bool offload = false;
  for (const auto& w : words) {
    const std::string lw = lower(w);
    if (lw == "offload") {
      offload = true;
    } else if (lw == "auto_wrap") {  // which modules FSDP wraps: no effect on what is trained
    } else if (lw == "full_shard" || lw == "shard_grad_op" || lw == "no_shard" ||
               lw == "hybrid_shard" || lw == "hybrid_shard_zero2") {
      const int s = fsdp_strategy_stage(c, "fsdp", w);
      if (stage && *stage != s)
        c.fail(fmt::format("fsdp names two sharding strategies, {} and {}", stage_from, w));
      stage = s;
      stage_from = w;
      strategy_given = true;
    } else {
      c.fail(fmt::format("fsdp option {} is not supported", w),
             "options: full_shard, shard_grad_op, no_shard, offload, auto_wrap");
    }
  }
  // fsdp_config: keys with or without accelerate's "fsdp_" prefix (transformers strips it).
  static const std::set<std::string> knobs = {"auto_wrap_policy",  "transformer_layer_cls_to_wrap",
                                              "min_num_params",    "cpu_ram_efficient_loading",
                                              "state_dict_type",   "sync_module_states",
                                              "use_orig_params",   "limit_all_gathers",
                                              "backward_prefetch", "forward_prefetch",
                                              "offload_pin_memory"};
  bool activation_checkpointing = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "fsdp" || (!k.empty() && k[0] == '_')) continue;
    if (k != "fsdp_config") c.unknown(k);
    for (const auto& [raw, x] : c.object(k, v).items()) {
      if (!raw.empty() && raw[0] == '_') continue;
      const std::string key = raw.rfind("fsdp_", 0) == 0 ? raw.substr(5) : raw;
      const std::string path = "fsdp_config." + raw;
      if (key == "version") {
        const int64_t ver = c.whole(path, x);
        if (ver != 1 && ver != 2) c.fail(fmt::format("{} must be 1 or 2, not {}", path, ver));
      } else if (key == "reshard_after_forward" || key == "sharding_strategy") {
        // FSDP2's switch (true: FULL_SHARD, false: SHARD_GRAD_OP), or a strategy's name / number.
        const int s = x.is_boolean() ? (x.get<bool>() ? 3 : 2)
                      : x.is_string()
                          ? fsdp_strategy_stage(c, path, x.get<std::string>())
                          : fsdp_strategy_stage(c, path, std::to_string(c.whole(path, x)));
        if (strategy_given && stage && *stage != s)
          c.fail(fmt::format("{} is {} and fsdp names {}", path, x.dump(), stage_from),
                 "make them agree, or leave one of them out");
        stage = s;
        stage_from = path + " " + x.dump();
        strategy_given = true;
      } else if (key == "offload_params") {
        offload = offload || c.boolean(path, x);
      } else if (key == "activation_checkpointing") {
        activation_checkpointing = c.boolean(path, x);
      } else if (knobs.count(key)) {
      } else {
        c.unknown(path);
      }
    }
  }
  a.zero_stage = stage.value_or(3);
  // FSDP's CPU offload keeps the sharded parameters (the optimizer's masters) and the optimizer
  // step on the host: optimizer offload at every stage, and from FULL_SHARD, where the
  // parameters are sharded, parameter offload as well.
  a.offload_optimizer = offload;
  a.offload_param = offload && a.zero_stage == 3;
  // FSDP's activation checkpointing is swiftlet's gradient checkpointing (ms-swift turns its own
  // off in favour of FSDP's).
  if (activation_checkpointing && !a.gradient_checkpointing) {
    log_info("{}: activation_checkpointing true sets --gradient_checkpointing true", c.where());
    a.gradient_checkpointing = true;
  }
}

}  // namespace

void apply_parallel_config(const Flags& f, TrainArgs& a, int world) {
  const std::string ds = f.str("deepspeed"), fsdp = f.str("fsdp");
  a.zero_stage = 0;
  a.offload_optimizer = a.offload_param = false;
  if (!ds.empty()) {
    const Config c("deepspeed", ds);
    apply_deepspeed(c,
                    load(c, "deepspeed", ds, deepspeed_preset(ds),
                         "zero0, zero1, zero2, zero3, zero2_offload, zero3_offload"),
                    f, a, world);
  } else if (!fsdp.empty()) {
    const Config c("fsdp", fsdp);
    const std::string lv = lower(fsdp);
    std::error_code ec;  // a strategy string is no path: no error, just not a file
    const bool json_like = fsdp[0] == '{' || fsdp_preset(fsdp) ||
                           (lv.size() > 5 && lv.compare(lv.size() - 5, 5, ".json") == 0) ||
                           fs::is_regular_file(fsdp, ec);
    // A bare strategy string is the "fsdp" value of a config with no fsdp_config.
    apply_fsdp(
        c, json_like ? load(c, "fsdp", fsdp, fsdp_preset(fsdp), "fsdp2") : json{{"fsdp", fsdp}}, a);
  }
}

}  // namespace swiftlet::cli
