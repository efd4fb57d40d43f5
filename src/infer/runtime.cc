#include "infer/runtime.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "core/log.h"

namespace swiftlet {

namespace fs = std::filesystem;

SavedRunArgs read_saved_run_args(const std::string& ckpt) {
  SavedRunArgs s;
  const fs::path p = fs::path(ckpt) / "args.json";
  if (!fs::exists(p)) return s;
  nlohmann::json j;
  try {
    std::ifstream f(p);
    j = nlohmann::json::parse(f);
  } catch (const std::exception&) {
    throw Error(fmt::format("{} is not valid JSON", p.string()));
  }
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  s.model = str("model");
  s.template_name = str("template");
  s.system = str("system");
  s.torch_dtype = str("torch_dtype");
  std::string run_dir = fs::path(ckpt).lexically_normal().parent_path().string();
  if (fs::path(ckpt).filename().empty()) run_dir = fs::path(ckpt).parent_path().parent_path().string();
  const fs::path carved = fs::path(run_dir) / "val_dataset.jsonl";
  if (fs::exists(carved)) {
    s.val_datasets.push_back(carved.string());
  } else if (j.contains("val_dataset") && j["val_dataset"].is_string() && !str("val_dataset").empty()) {
    std::string v = str("val_dataset");  // saved as space-separated values
    for (size_t i = 0; i < v.size();) {
      size_t e = v.find(' ', i);
      if (e == std::string::npos) e = v.size();
      if (e > i) s.val_datasets.push_back(v.substr(i, e - i));
      i = e + 1;
    }
  }
  return s;
}

namespace {

class TokenizerDecoder : public TextDecoder {
 public:
  explicit TokenizerDecoder(const Tokenizer& t) : dec_(t) {}
  std::string push(int32_t id) override { return dec_.feed(id); }
  std::string flush() override { return dec_.flush(); }

 private:
  IncrementalDecoder dec_;
};

}  // namespace

std::vector<int32_t> generation_stop_ids(const ModelFolder& folder, const Tokenizer& tokenizer,
                                         const ChatTemplate& chat_template) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end())
      ids.push_back(int32_t(id));
  };
  for (int64_t id : folder.generation.eos_token_id) add(id);
  for (int64_t id : folder.config.eos_token_id) add(id);
  add(tokenizer.eos_token_id());
  for (const auto& w : chat_template.stop_words()) add(tokenizer.token_to_id(w));
  return ids;
}

Runtime::Runtime(const RuntimeOptions& opt) {
  std::string model = opt.model;
  if (model.empty() && !opt.adapters.empty()) model = adapter_base_model(opt.adapters.front());
  if (model.empty())
    throw Error("no model given", "pass --model DIR (or --adapters CKPT whose args.json names the base model)");
  folder_ = load_model_folder(model);
  if (!opt.adapters.empty()) prepare_base_for_adapter(folder_, opt.adapters.front());
  const DType dtype = parse_torch_dtype(opt.torch_dtype.empty() ? folder_.config.torch_dtype : opt.torch_dtype);
  pool_ = std::make_unique<ThreadPool>(opt.threads > 0 ? opt.threads : ThreadPool::default_threads());
  device_ = DeviceRegistry::create(opt.device, *pool_);
  model_ = std::make_unique<Transformer>(*device_, folder_.config, folder_.weights, dtype);
  for (const auto& dir : opt.adapters) {
    adapters_.push_back(std::make_unique<LoraAdapter>(LoraAdapter::load(*device_, dir, folder_.config)));
  }
  if (adapters_.size() > 1)
    throw Error("more than one adapter applied to the base model is not supported",
                "merge them one at a time with swiftlet export --merge_lora true");
  if (!adapters_.empty()) adapters_.front()->attach(*model_);

  if (!fs::exists(fs::path(folder_.path) / "tokenizer.json"))
    throw Error(fmt::format("{} has no tokenizer.json", folder_.path),
                "copy the tokenizer files of the base model into the folder");
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(folder_.path));
  template_name_ = opt.template_name.empty()
                       ? ChatTemplate::detect(folder_.config.model_type, tokenizer_->chat_template())
                       : opt.template_name;
  template_ = std::make_unique<ChatTemplate>(ChatTemplate::by_name(template_name_));

  stop_ids_ = generation_stop_ids(folder_, *tokenizer_, *template_);

  EngineOptions eo;
  eo.max_batch_size = opt.max_batch_size;
  eo.max_model_len = opt.max_model_len;
  eo.base_adapter = adapter();
  engine_ = std::make_unique<Engine>(*model_, decoder_factory(), eo);
}

Runtime::~Runtime() = default;

SamplingParams Runtime::default_sampling() const {
  SamplingParams p;
  const GenerationConfig& g = folder_.generation;
  if (g.do_sample.has_value() && !*g.do_sample) {
    p.temperature = 0;
  } else if (g.temperature) {
    p.temperature = *g.temperature;
  }
  if (g.top_k) p.top_k = *g.top_k;
  if (g.top_p) p.top_p = *g.top_p;
  if (g.repetition_penalty) p.repetition_penalty = *g.repetition_penalty;
  return p;
}

std::optional<bool> Runtime::default_enable_thinking() const {
  if (template_name_ == "qwen3") return false;
  return std::nullopt;
}

DecoderFactory Runtime::decoder_factory() {
  const Tokenizer* t = tokenizer_.get();
  return [t] { return std::make_unique<TokenizerDecoder>(*t); };
}

}  // namespace swiftlet
