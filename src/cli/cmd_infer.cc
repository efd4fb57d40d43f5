// swiftlet infer: chat with a model folder, or run batch inference over a dataset.
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags.h"
#include "infer/infer_runner.h"

namespace swiftlet::cli {

namespace {

const char* kSummary =
    "Chat with a model on the terminal, or run batch inference over --val_dataset into a jsonl.";

int run(int argc, char** argv) {
  std::vector<FlagSpec> specs = runtime_flag_specs();
  for (auto& s : generation_flag_specs()) specs.push_back(s);
  specs.insert(specs.end(), {
      {"stream", FlagKind::kBool, "", "print text as it is generated (default: true for chat, false for a dataset)"},
      {"val_dataset", FlagKind::kString, "", "jsonl/json file to run batch inference on"},
      {"val_dataset_sample", FlagKind::kInt, "-1", "only the first N rows of --val_dataset (-1: all)"},
      {"load_data_args", FlagKind::kBool, "false", "reuse the training run's validation data (and its template/system) from the adapter's args.json"},
      {"result_path", FlagKind::kString, "", "where batch results are appended (default: <model or adapter>/infer_result/<time>.jsonl)"},
  });
  Flags flags("infer", specs);
  if (!flags.parse(argc, argv)) {
    std::cout << flags.help_text(kSummary);
    return 0;
  }
  RuntimeOptions ro = runtime_options(flags);
  InferOptions io = infer_options(flags);
  if (flags.given("stream")) io.stream = flags.boolean("stream");
  io.val_dataset = flags.str("val_dataset");
  io.val_dataset_sample = flags.i64("val_dataset_sample");
  io.result_path = flags.str("result_path");
  // ms-swift's load_args: a checkpoint's args.json fills what the command line left unset.
  if (!ro.adapters.empty()) {
    SavedRunArgs saved = read_saved_run_args(ro.adapters.front());
    if (ro.template_name.empty()) ro.template_name = saved.template_name;
    if (ro.torch_dtype.empty()) ro.torch_dtype = saved.torch_dtype;
    if (!io.system && !saved.system.empty()) io.system = saved.system;
    if (flags.boolean("load_data_args") && io.val_dataset.empty()) {
      if (saved.val_datasets.empty())
        throw Error(fmt::format("--load_data_args: the run of {} kept no validation data", ro.adapters.front()),
                    "pass --val_dataset, or train with --split_dataset_ratio or --val_dataset");
      if (saved.val_datasets.size() > 1) throw Error("--load_data_args: the run used several --val_dataset files; pass one with --val_dataset");
      io.val_dataset = saved.val_datasets.front();
    }
  } else if (flags.boolean("load_data_args")) {
    throw Error("--load_data_args needs --adapters (a checkpoint of a swiftlet run)");
  }
  Runtime rt(ro);
  if (io.val_dataset.empty()) {
    run_chat(rt, io, std::cin, std::cout);
    return 0;
  }
  std::string default_dir = ro.adapters.empty()
                                ? (std::filesystem::path("result") / std::filesystem::path(rt.folder().path).filename()).string()
                                : ro.adapters.front();
  std::string path = run_dataset_inference(rt, io, default_dir);
  std::cout << "results written to " << path << "\n";
  return 0;
}

const bool registered = register_command({"infer", kSummary, run});

}  // namespace
}  // namespace swiftlet::cli
