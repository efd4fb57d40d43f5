#pragma once
// Preference datasets for `swiftlet rlhf --rlhf_type dpo|orpo|simpo|cpo|kto|rm`, prepared as
// ms-swift prepares them, on top of the SFT pipeline (dataset.h: files, folders, built-ins, #N,
// split, --columns, --strict, cache, threads):
//
//   pairs (dpo, orpo, simpo, cpo, rm): a row in any format load_datasets reads (messages /
//     conversations / ShareGPT, Alpaca instruction/input/output, query/response/history) is the
//     chosen conversation; it must end with an assistant reply. The rejected side is either
//       rejected_response  a string, or a list of assistant messages: the rejected conversation
//                          is messages[:i] + rejected_response, i one past the last user message
//                          (the whole final round is replaced). A string equal to the chosen final
//                          reply is an invalid row.
//       rejected_messages  a whole conversation (messages or ShareGPT). As in ms-swift, a row's
//                          `system` column belongs to the chosen side only (reported).
//     A rejected conversation equal to the chosen one is an invalid row. rm: an optional numeric
//     `margin` (a number, or a string holding one as CSV cells do); other types ignore it.
//     TRL-style prompt/chosen/rejected columns: --columns '{"chosen": "response", "rejected":
//     "rejected_response"}'.
//   kto: the same row formats, ending with an assistant reply, plus `label`: true/false (also 1/0,
//     and "true"/"false"/"1"/"0" in any case, as CSV cells hold them). Unpaired: `rejected` stays
//     empty, unless PreferenceOptions::kto_kl_batch_size asks for ms-swift's KL completions.
//
// Each side is rendered with the template in training mode and truncated on its own
// (--max_length, --truncation_strategy delete|left|right); a pair (or kto row) is dropped when a
// side is dropped (too long under delete, or no trained token left). Labels: --loss_scale, by
// default the rlhf type's (rlhf_default_loss_scale): last_round trains the final reply and its
// end-of-turn (ChatML: "<|im_end|>\n", both tokens), default every reply, all every token. Hybrid
// thinking templates put an empty "<think>\n\n</think>\n\n" before the final reply, untrained.
//
// Refused with an Error naming the file and line (or skipped and counted with --strict false): a
// row without what its type needs (no rejected side, no label), values of the wrong type, a
// rejected_response with user or system messages, both rejected_response and rejected_messages,
// conversations that do not end with an assistant reply or have no user message, rejected_* media
// or tools (as SFT refuses media and tools). Refused as arguments: --packing, --group_by_length,
// --truncation_strategy split, other rlhf types (grpo, ppo, gkd take prompts, not pairs).
//
// Pairs are units: #N sampling, the split and the shuffle move whole rows; val_dataset.jsonl
// holds the carved rows as {"messages", "rejected_messages", "label", "margin"}. The cache entry
// is keyed by the rlhf type too.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "data/conversation.h"
#include "data/dataset.h"
#include "data/sample.h"

namespace swiftlet {

struct PreferenceSample {
  TokenizedSample chosen;     // the row's conversation (kto: the labelled completion)
  TokenizedSample rejected;   // pairs: the rejected conversation; kto: the KL completion, or empty
  std::optional<bool> label;  // kto: true = desirable
  std::optional<double> margin;  // rm: the row's margin; unset when the row has none (use 0)
};

struct PreferenceBundle {
  std::vector<PreferenceSample> train, val;
};

struct PreferenceOptions {
  // kto: ms-swift's mismatched (KL) completions, made at dataset time: cut the (shuffled) rows
  // into chunks of this many (the global batch size: world x per-device batch x gradient
  // accumulation); inside a chunk row k gets row k-1's final reply (row 0 the chunk's last) as
  // `rejected`, rendered after row k's own prompt. Validation rows are paired in a seeded order
  // (they keep theirs). 0: none (loss_type apo_zero_unpaired, or the trainer makes its own); 1 is
  // an Error (the KL term would equal the implied reward), as in ms-swift.
  int64_t kto_kl_batch_size = 0;
};

// The rlhf types load_preference_datasets prepares data for.
const std::vector<std::string>& preference_rlhf_types();

// ms-swift's --loss_scale default per type: "default" for orpo (every reply), else "last_round".
std::string rlhf_default_loss_scale(const std::string& rlhf_type);

// One row as read: the chosen and rejected conversations, the kto label, the rm margin.
struct PreferenceRow {
  std::string where;  // "file line N"
  Conversation chosen;
  std::optional<Conversation> rejected;
  std::optional<bool> label;
  std::optional<double> margin;
  bool system_chosen_only = false;  // a system column that rejected_messages does not share
};

// Parses one row for `rlhf_type` (renaming options.columns first); a bad row is an Error naming
// `where`.
PreferenceRow parse_preference_row(const nlohmann::json& row, const std::string& where,
                                   const ParseOptions& options, const std::string& rlhf_type);

// Reads, renders and tokenizes the datasets with the tokenizer and template of `model_dir`.
// Errors (missing files, malformed rows with --strict, bad arguments) name the file and line.
PreferenceBundle load_preference_datasets(const DataArgs& args, const std::string& model_dir,
                                          const std::string& rlhf_type,
                                          const PreferenceOptions& options = {});

}  // namespace swiftlet
