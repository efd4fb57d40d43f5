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
  log_info("reference model: a frozen copy of {}", path);
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
