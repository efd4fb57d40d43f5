#pragma once
// --deepspeed and --fsdp as ms-swift users pass them: a preset name, a JSON file or inline JSON.
//
// --deepspeed: zero0 | zero1 | zero2 | zero3 | zero2_offload | zero3_offload (built in, the same
// settings as ms-swift's swift/config/<name>.json) or a DeepSpeed config. zero_optimization.stage
// gives TrainArgs::zero_stage, offload_optimizer/offload_param.device "cpu" the offload flags.
// --fsdp: a strategy string ("full_shard auto_wrap", "shard_grad_op offload", "no_shard"), the
// preset fsdp2, or an FSDP config ({"fsdp": "...", "fsdp_config": {...}}).
//
// One rule for values the config and the command line both carry (batch size, accumulation,
// clipping, AdamW's hyperparameters, bf16): "auto" takes the flag; an explicit value is used when
// the flag was not given (and logged), and is an error naming both when the flag was given with
// another value. Keys that only tune communication or file layout are accepted and have no
// effect; any other key, or a value that asks for something swiftlet does not do, is an error
// naming it.
#include <string>

#include "cli/flags.h"
#include "train/trainer.h"

namespace swiftlet::cli {

// Applies f's --deepspeed / --fsdp to `a` (whose other fields are already set from f). `world`:
// the ranks of the job (DeepSpeed's train_batch_size counts all of them).
void apply_parallel_config(const Flags& f, TrainArgs& a, int world);

}  // namespace swiftlet::cli
