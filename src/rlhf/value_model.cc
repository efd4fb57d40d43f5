#include "rlhf/value_model.h"

#include <filesystem>

#include "core/log.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "rlhf/ppo_objective.h"
#include "rlhf/rollout.h"
#include "train/checkpoint.h"

namespace swiftlet::rlhf {

namespace fs = std::filesystem;

std::vector<std::vector<int64_t>> value_rows(const TrainBatch& b) {
  std::vector<std::vector<int64_t>> out = target_rows(b);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto [first, len] = b.samples[i];
    SWIFTLET_CHECK(!out[i].empty() && out[i].back() == first + len - 2,
                   "sample {} does not end with its response", i);
    out[i].push_back(first + len - 1);
  }
  return out;
}

ValueModel::ValueModel(Device& dev, const std::string& path, DType base_dtype,
                       const LoraConfig* lora, uint64_t seed, const std::string& resume)
    : folder_(std::make_unique<ModelFolder>(load_model_folder(path))) {
  if (!folder_->config.seq_cls() || folder_->config.num_labels != 1)
    throw Error(fmt::format("--reward_model {} is not a sequence classifier with one label", path),
                "train one with --rlhf_type rm --tuner_type full (or merge a LoRA rm checkpoint)");
  const std::string saved = resume.empty() ? "" : (fs::path(resume) / "value_model").string();
  if (!saved.empty() && !fs::exists(saved))
    throw Error(fmt::format("{} has no value_model/ folder", resume),
                "resume a ppo run from one of its own checkpoints");
  const bool full = lora == nullptr;
  model_ = std::make_unique<Transformer>(dev, folder_->config, folder_->weights,
                                         full ? DType::kF32 : base_dtype, full);
  if (full) {
    if (!saved.empty()) load_full_weights(*model_, saved);
    model_->keep_current_weights();
    return;
  }
  if (!saved.empty()) {
    adapter_ = std::make_unique<LoraAdapter>(LoraAdapter::load(dev, saved, folder_->config));
    adapter_->set_base_model(folder_->path);
    return;
  }
  LoraConfig lc = *lora;
  lc.base_model_name_or_path = folder_->path;
  if (std::find(lc.modules_to_save.begin(), lc.modules_to_save.end(), "score") ==
      lc.modules_to_save.end())
    lc.modules_to_save.push_back("score");  // the value head is trained in full
  Rng rng(mix(seed, 0x7a1e));
  adapter_ = std::make_unique<LoraAdapter>(LoraAdapter::create(dev, folder_->config, lc, rng));
  adapter_->init_modules_to_save(dev, *model_);
}

ValueModel::~ValueModel() = default;

std::vector<TrainableSlot> ValueModel::trainable() {
  std::vector<TrainableSlot> out;
  if (adapter_) {
    for (auto& t : adapter_->trainable(&grads_))
      out.push_back({"value_model." + t.name, t.value, t.grad});
  } else {
    for (auto& s : weight_slots(folder_->config, &model_->weights(), &grads_))
      out.push_back({"value_model." + s.name, s.weight, s.grad});
  }
  return out;
}

void ValueModel::ready() {
  if (adapter_) {
    adapter_->attach(*model_);
  } else {
    model_->keep_current_weights();
  }
}

std::vector<std::vector<double>> ValueModel::values(const TrainBatch& b) {
  PpoValueObjective obj(PpoConfig{}, b, model_->weights().score, Tensor(), {}, 1.0f);
  model_->evaluate(b, obj);
  return obj.values;
}

void ValueModel::save(const std::string& dir) const {
  const fs::path out = fs::path(dir) / "value_model";
  fs::create_directories(out);
  if (adapter_) {
    adapter_->save(out.string());
  } else {
    Device& dev = model_->device();
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (auto& s : weight_slots(folder_->config, &model_->weights())) {
      Tensor h = s.weight->host_accessible() ? *s.weight : dev.download(*s.weight);
      Tensor copy = Tensor::host(h.shape(), h.dtype());
      std::memcpy(copy.raw_ptr(), h.raw_ptr(), h.nbytes());
      tensors.emplace_back(s.name, copy);
    }
    io::save_safetensors((out / "model.safetensors").string(), tensors, {{"format", "pt"}});
    ModelConfig cfg = folder_->config;
    cfg.torch_dtype = "float32";
    io::write_file_atomic((out / "config.json").string(), model_config_to_json(cfg) + "\n");
  }
  copy_tokenizer_files(folder_->path, out.string());
}

}  // namespace swiftlet::rlhf
