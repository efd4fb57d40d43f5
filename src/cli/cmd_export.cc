// swiftlet export: merge a LoRA adapter into its base model (a plain HF folder).
#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "export/merge.h"

namespace swiftlet::cli {

namespace {

const char* kSummary = "Export a model: --merge_lora true folds a LoRA adapter into its base model.";

int run(int argc, char** argv) {
  Flags f("export", {
      {"adapters", FlagKind::kList, "", "the LoRA checkpoint folder to merge"},
      {"model", FlagKind::kString, "", "base model (default: named by the adapter's args.json)"},
      {"merge_lora", FlagKind::kBool, "false", "merge the adapter into the base weights"},
      {"output_dir", FlagKind::kString, "", "where to write (default: <adapter>-merged)"},
      {"exist_ok", FlagKind::kBool, "false", "overwrite an existing --output_dir"},
      {"quant_method", FlagKind::kString, "", "quantisation (not supported yet)"},
      {"to_ollama", FlagKind::kBool, "false", "write an Ollama Modelfile (not supported yet)"},
      {"push_to_hub", FlagKind::kBool, "false", "push to a model hub (not available: no network)"},
  });
  if (!f.parse(argc, argv)) {
    std::cout << f.help_text(kSummary);
    return 0;
  }
  if (!f.str("quant_method").empty())
    throw Error(fmt::format("--quant_method {} is not supported yet", f.str("quant_method")),
                "export a bf16/f16 model and quantise it with llama.cpp or another tool");
  if (f.boolean("to_ollama")) throw Error("--to_ollama is not supported yet");
  if (f.boolean("push_to_hub")) throw Error("--push_to_hub is not available: swiftlet does not reach a model hub");
  if (!f.boolean("merge_lora"))
    throw Error("nothing to export", "swiftlet export currently does --merge_lora true");
  const auto adapters = f.list("adapters");
  if (adapters.size() != 1) throw Error("--merge_lora takes exactly one adapter folder in --adapters");
  MergeOptions o;
  o.adapter_dir = adapters.front();
  o.model = f.str("model");
  o.output_dir = f.str("output_dir");
  o.exist_ok = f.boolean("exist_ok");
  std::cout << "merged model: " << merge_lora(o) << "\n";
  return 0;
}

const bool registered = register_command({"export", kSummary, run});

}  // namespace
}  // namespace swiftlet::cli
