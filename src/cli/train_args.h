#pragma once
// Flags and arguments shared by the training commands (sft, pt, rlhf): ms-swift's names and
// defaults, parsed once into TrainArgs / DataArgs.
#include <string>
#include <vector>

#include "cli/flags.h"
#include "data/dataset.h"
#include "train/trainer.h"

namespace swiftlet::cli {

std::vector<FlagSpec> train_flags(bool pt);
TrainArgs train_args(const Flags& f, const std::string& command);
// Also fixes the run folder (a.output_dir, with the version) so val_dataset.jsonl lands in it.
DataArgs data_args(const Flags& f, TrainArgs& a);

}  // namespace swiftlet::cli
