// swiftlet sft / swiftlet pt: fine-tune or continue pre-training a model folder.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "cli/flags.h"
#include "data/dataset.h"
#include "cli/train_args.h"
#include "train/trainer.h"

namespace swiftlet::cli {

namespace {

int run_train(int argc, char** argv, bool pt) {
  const std::string name = pt ? "pt" : "sft";
  Flags f(name, train_flags(pt));
  const char* summary = pt ? "Continue pre-training a model on text (loss on every token)."
                           : "Supervised fine-tuning with LoRA or full training.";
  if (!f.parse(argc, argv)) {
    std::cout << f.help_text(summary);
    return 0;
  }
  TrainArgs a = train_args(f, name);
  DataArgs d = data_args(f, a);
  DatasetBundle data = load_datasets(d, a.model);
  if (data.train_grouped) {
    // Each train item is already a micro-batch of per_device_train_batch_size samples.
    if (a.gradient_accumulation_steps <= 0)
      a.gradient_accumulation_steps = std::max<int64_t>(
          1, (16 + a.per_device_train_batch_size - 1) / a.per_device_train_batch_size);
    a.per_device_train_batch_size = 1;
  }
  TrainResult r = train(a, data.train, data.val);
  if (!a.comm->is_main()) return 0;
  std::cout << "run folder: " << r.run_dir << "\nlast checkpoint: " << r.last_checkpoint << "\n";
  if (!r.best_checkpoint.empty()) std::cout << "best checkpoint: " << r.best_checkpoint << "\n";
  return 0;
}

const bool sft_registered =
    register_command({"sft", "Supervised fine-tuning (LoRA or full) on chat datasets.",
                      [](int c, char** v) { return run_train(c, v, false); }});
const bool pt_registered =
    register_command({"pt", "Continued pre-training on text (loss on every token).",
                      [](int c, char** v) { return run_train(c, v, true); }});

}  // namespace
}  // namespace swiftlet::cli
