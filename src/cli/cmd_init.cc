// swiftlet init: a new Hugging Face model folder with random weights, from a preset or a
// config.json.
#include <cctype>
#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/init.h"

namespace swiftlet::cli {

namespace {

constexpr const char* kSummary =
    "create a model folder with random weights (preset or config.json)";

// "2GB" = 2e9 bytes, "500MB", "1GiB" = 2^30, plain digits = bytes (transformers' max_shard_size).
uint64_t parse_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  std::string unit = text.substr(i);
  for (auto& ch : unit) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B")
    scale = 1;
  else if (unit == "KB")
    scale = 1e3;
  else if (unit == "MB")
    scale = 1e6;
  else if (unit == "GB")
    scale = 1e9;
  else if (unit == "KIB")
    scale = 1024.0;
  else if (unit == "MIB")
    scale = 1024.0 * 1024;
  else if (unit == "GIB")
    scale = 1024.0 * 1024 * 1024;
  double value = i > 0 ? std::strtod(text.substr(0, i).c_str(), nullptr) : 0;
  if (scale == 0 || !(value > 0))
    throw Error(
        fmt::format("--max_shard_size expects a size like 2GB, 500MB or 1GiB, got '{}'", text));
  return uint64_t(value * scale);
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

int run_init(int argc, char** argv) {
  std::string presets;
  for (const auto& p : init_preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  Flags flags(
      "init",
      {
          {"preset", FlagKind::kString, "", "model shape: " + presets},
          {"config", FlagKind::kString, "",
           "a config.json to take the shape from (instead of --preset)"},
          {"tokenizer_dir", FlagKind::kString, "",
           "folder with tokenizer.json + tokenizer_config.json (copied; sets vocab and special "
           "ids)"},
          {"output_dir", FlagKind::kString, "", "the new model folder"},
          {"overwrite", FlagKind::kBool, "false", "allow writing into a non-empty --output_dir"},
          {"torch_dtype", FlagKind::kString, "",
           "float32, bfloat16 or float16 (default: float32 for tiny presets, bfloat16 for "
           "full-size "
           "ones, the config's own with --config)"},
          {"seed", FlagKind::kInt, "42", "random seed of the weights"},
          {"initializer_range", FlagKind::kFloat, "0", "std of the random weights (0: the config's, default 0.02)"},
          {"max_shard_size", FlagKind::kString, "2GB", "largest weight file before sharding"},
          {"threads", FlagKind::kInt, "0", "threads filling the weights (0: all cores given)"},
      });
  if (!flags.parse(argc, argv)) {
    std::printf("%s", flags.help_text(kSummary).c_str());
    return 0;
  }
  InitOptions o;
  o.preset = flags.str("preset");
  o.config_path = flags.str("config");
  o.tokenizer_dir = flags.str("tokenizer_dir");
  o.output_dir = flags.str("output_dir");
  o.overwrite = flags.boolean("overwrite");
  o.torch_dtype = flags.str("torch_dtype");
  if (flags.i64("seed") < 0) throw Error("--seed must not be negative");
  o.seed = uint64_t(flags.i64("seed"));
  o.initializer_range = flags.f64("initializer_range");
  o.max_shard_bytes = parse_size(flags.str("max_shard_size"));
  int64_t threads = flags.i64("threads");
  if (threads < 0) throw Error("--threads must not be negative");
  ThreadPool pool(threads > 0 ? int(threads) : ThreadPool::default_threads());
  o.pool = &pool;

  InitResult r = init_model_folder(o);
  std::printf("wrote %s: %s, %s parameters (%.2fB), %s, vocab %lld\n", r.output_dir.c_str(),
              r.config.architecture.c_str(), with_commas(r.num_parameters).c_str(),
              double(r.num_parameters) / 1e9, r.config.torch_dtype.c_str(),
              static_cast<long long>(r.config.vocab_size));
  for (const auto& f : r.files) std::printf("  %s\n", f.c_str());
  return 0;
}

const bool registered = register_command({"init", kSummary, run_init});

}  // namespace

}  // namespace swiftlet::cli
