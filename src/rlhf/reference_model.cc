#include "rlhf/reference_model.h"

#include "core/log.h"

namespace swiftlet::rlhf {

ReferenceModel::ReferenceModel(const TrainSetup& s, const std::string& ref_model,
                               const std::string& ref_adapters) {
  if (s.adapter) {
    adapter_ = s.adapter;
    if (!ref_adapters.empty())
      ref_adapter_ = std::make_unique<LoraAdapter>(
          LoraAdapter::load(s.device, ref_adapters, s.folder.config));
    return;
  }
  const std::string path = ref_model.empty() ? s.folder.path : ref_model;
  ModelFolder ref = ref_model.empty() ? s.folder : load_model_folder(path);
  if (ref.config.vocab_size != s.folder.config.vocab_size)
    throw Error(fmt::format("--ref_model {} has a vocabulary of {} tokens, the model {}", path,
                            ref.config.vocab_size, s.folder.config.vocab_size),
                "the reference must share the policy's tokenizer");
  frozen_ = std::make_unique<Transformer>(s.device, ref.config, ref.weights, s.base_dtype);
  if (s.zero_stage < 3) {
    log_info("reference model: a frozen copy of {}", path);
    return;
  }
  // ZeRO-3 partitions the reference as it does the policy (DeepSpeed prepares TRL's reference
  // model with the same stage): each rank keeps its slice, a part gathered while it computes.
  shards_ = std::make_unique<FrozenShards>(s.device, s.comm, *frozen_, nullptr);
  frozen_->set_weight_residency(shards_.get());
  log_info("reference model: a frozen copy of {}, sharded over {} ranks ({:.2f} MiB of {:.2f} MiB "
           "kept)",
           path, s.comm.size(), double(shards_->shard_bytes()) / (1 << 20),
           double(shards_->whole_bytes()) / (1 << 20));
}

std::unique_ptr<Transformer::WholeWeights> ReferenceModel::whole() {
  if (!shards_) return nullptr;
  return std::make_unique<Transformer::WholeWeights>(*frozen_);
}

std::vector<float> ReferenceModel::logprobs(Transformer& policy, const TrainBatch& b,
                                            float temperature) {
  LogprobCollector c(int64_t(b.input_ids.size()), temperature);
  if (frozen_) {
    frozen_->evaluate(b, c);
    return c.logp;
  }
  struct Reattach {
    Transformer& model;
    const LoraAdapter& adapter;
    ~Reattach() {
      LoraAdapter::detach(model);
      adapter.attach(model);
    }
  } reattach{policy, *adapter_};
  LoraAdapter::detach(policy);
  if (ref_adapter_) ref_adapter_->attach(policy);
  policy.evaluate(b, c);
  return c.logp;
}

}  // namespace swiftlet::rlhf
