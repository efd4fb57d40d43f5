#pragma once
// Scoring with a sequence classifier (a reward model trained by `swiftlet rlhf --rlhf_type rm`, or
// any Hugging Face ...ForSequenceClassification folder): what `infer` and `deploy` do instead of
// generating when the model has a score head, as ms-swift's seq_cls inference does.
//
// A conversation is scored whole: it is rendered as training renders it (the final reply and its
// end of turn included, no generation prompt) and the score head is read at its last token, the
// token the reward model was trained on. The answer's text is the score as Python prints it (one
// label: the value, "0.8125"; several: the index of the largest, with the log-softmax of all as
// log-probabilities), which is ms-swift's response for seq_cls models.
#include <optional>
#include <string>
#include <vector>

#include "infer/infer_runner.h"
#include "infer/runtime.h"
#include "template/chat_template.h"

namespace swiftlet {

// The token ids scored for `messages`. Throws Error (naming `where` when given) when the
// conversation does not fit the model's context.
std::vector<int32_t> encode_for_scoring(Runtime& rt, const std::vector<ChatMessage>& messages,
                                        const std::optional<std::string>& system,
                                        const std::string& where = "");

// The response text of a score: the value for one label, the argmax index for several.
std::string score_text(const std::vector<float>& scores);
// log_softmax of the scores (several labels); empty for one label.
std::vector<float> score_logprobs(const std::vector<float>& scores);

// `infer --val_dataset` with a classifier: each row is scored whole and appended to the result
// jsonl (its fields plus `response` (score_text) and `score`). A preference row
// (rejected_response / rejected_messages) scores both sides (`rejected_score`), and the log ends
// with how often the chosen side scored higher (the rm's rewards/accuracies) and the mean margin.
// Returns the result path.
std::string run_dataset_scoring(Runtime& rt, const InferOptions& opt,
                                const std::string& default_dir);

}  // namespace swiftlet
