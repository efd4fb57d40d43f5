#pragma once
// PPO's critic: a second load of the reward model folder (a sequence classifier with one label)
// whose score head, read at every position instead of the last, is the value head
// V_t = score . h_t (h: the final hidden states). It is trained with the policy's tuner — full:
// every weight; LoRA: an adapter of the same settings with the score head trained in full
// (PEFT's SEQ_CLS modules_to_save) — by the trainer's one optimizer, clipped jointly with the
// policy (TRL's PolicyAndValueWrapper). Checkpoints hold it in value_model/ (a sequence-classifier
// folder, or a PEFT adapter) so that a resumed run continues exactly.
#include <memory>
#include <string>
#include <vector>

#include "model/folder.h"
#include "model/transformer.h"
#include "train/param_buckets.h"
#include "train/task.h"
#include "tuner/lora.h"

namespace swiftlet::rlhf {

// Per sample of a packed batch, the rows whose hidden states give its values: position t of the
// response is the row that predicts response token t (t < L), and t = L the response's last token.
std::vector<std::vector<int64_t>> value_rows(const TrainBatch& b);

class ValueModel {
 public:
  // `lora` null: full training. `resume`: a checkpoint to restore value_model/ from ("": none).
  ValueModel(Device& dev, const std::string& path, DType base_dtype, const LoraConfig* lora,
             uint64_t seed, const std::string& resume);
  ~ValueModel();

  const ModelConfig& config() const { return folder_->config; }
  // Its trainable tensors, named "value_model.<name>", for the trainer's optimizer.
  std::vector<TrainableSlot> trainable();
  // After the trainer moved them into its buckets: the model reads the bucket views.
  void ready();
  // Values at value_rows(b), without gradients.
  std::vector<std::vector<double>> values(const TrainBatch& b);
  Transformer& model() { return *model_; }
  ModelGrads& grads() { return grads_; }
  // Writes value_model/ into the checkpoint folder `dir`.
  void save(const std::string& dir) const;

 private:
  std::unique_ptr<ModelFolder> folder_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<LoraAdapter> adapter_;
  ModelGrads grads_;
};

}  // namespace swiftlet::rlhf
